#include "agent/ike/crypto_prf.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/ike/crypto_secret.h"
#include "common/status_macros.h"

namespace strait::ike {
namespace {

struct MacCtxDeleter {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};

absl::Status OpenSslError(absl::string_view what) {
  const unsigned long err = ERR_get_error();
  ERR_clear_error();
  char buf[256] = {0};
  if (err != 0) ERR_error_string_n(err, buf, sizeof(buf));
  return absl::InternalError(absl::StrCat(what, ": ", buf));
}

}  // namespace

void Prf::MacDeleter::operator()(EVP_MAC* mac) const { EVP_MAC_free(mac); }

Prf::Prf(PrfId id, std::unique_ptr<EVP_MAC, MacDeleter> mac, const char* digest, size_t output_size)
    : id_(id), mac_(std::move(mac)), digest_(digest), output_size_(output_size) {}
Prf::Prf(Prf&&) noexcept = default;
Prf& Prf::operator=(Prf&&) noexcept = default;
Prf::~Prf() = default;

absl::StatusOr<Prf> Prf::Create(PrfId id) {
  const char* digest = nullptr;
  size_t size = 0;
  switch (id) {
    case PrfId::kHmacSha2_256:
      digest = "SHA2-256";
      size = 32;
      break;
    case PrfId::kHmacSha2_384:
      digest = "SHA2-384";
      size = 48;
      break;
    case PrfId::kHmacSha2_512:
      digest = "SHA2-512";
      size = 64;
      break;
  }
  if (digest == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported PRF transform id ", static_cast<int>(id)));
  }
  std::unique_ptr<EVP_MAC, MacDeleter> mac(EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr));
  if (mac == nullptr) return OpenSslError("EVP_MAC_fetch(HMAC)");
  return Prf(id, std::move(mac), digest, size);
}

absl::StatusOr<Secret> Prf::Compute(absl::string_view key,
                                    std::initializer_list<absl::string_view> data) const {
  std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> ctx(EVP_MAC_CTX_new(mac_.get()));
  if (ctx == nullptr) return OpenSslError("EVP_MAC_CTX_new");
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest_), 0),
      OSSL_PARAM_construct_end(),
  };
  // A null key would mean "keep the previous key" to EVP_MAC_init.
  static const unsigned char kEmpty = 0;
  const auto* key_bytes =
      key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
  if (EVP_MAC_init(ctx.get(), key_bytes, key.size(), params) != 1) {
    return OpenSslError("EVP_MAC_init");
  }
  for (absl::string_view piece : data) {
    if (piece.empty()) continue;
    if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(piece.data()),
                       piece.size()) != 1) {
      return OpenSslError("EVP_MAC_update");
    }
  }
  SecretBuffer out(output_size_);
  size_t written = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &written, out.size()) != 1) {
    return OpenSslError("EVP_MAC_final");
  }
  if (written != output_size_) return absl::InternalError("HMAC output has an unexpected length");
  return std::move(out).Release();
}

absl::StatusOr<Secret> Prf::PrfPlus(absl::string_view key, absl::string_view seed,
                                    size_t length) const {
  const size_t iterations = (length + output_size_ - 1) / output_size_;
  if (iterations > kMaxPrfPlusIterations) {
    return absl::InvalidArgumentError(
        absl::StrCat("prf+ cannot produce ", length, " bytes: more than 255 iterations"));
  }
  SecretBuffer stream;
  Secret previous;
  for (size_t i = 1; i <= iterations; ++i) {
    const char counter = static_cast<char>(i);
    ASSIGN_OR_RETURN(Secret t,
                     Compute(key, {previous.view(), seed, absl::string_view(&counter, 1)}));
    stream.Append(t.view());
    previous = std::move(t);
  }
  stream.Resize(length);
  return std::move(stream).Release();
}

}  // namespace strait::ike
