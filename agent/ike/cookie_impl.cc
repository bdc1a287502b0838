#include "agent/ike/cookie_impl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace strait::ike {
namespace {

constexpr size_t kVersionSize = 4;

void PutBe32(uint32_t v, uint8_t* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

uint32_t GetBe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

}  // namespace

CookieGeneratorPtr CreateCookieGenerator(Clock& clock, RandomSource& random,
                                         CookieOptions options) {
  return std::make_unique<CookieGeneratorImpl>(clock, random, options);
}

CookieGeneratorImpl::CookieGeneratorImpl(Clock& clock, RandomSource& random, CookieOptions options)
    : clock_(clock), random_(random), options_(options) {
  // A random first version: cookies of an earlier run of ours never match
  // a version by chance after a restart (they would fail the hash anyway).
  uint8_t v[kVersionSize];
  random_.Fill(absl::MakeSpan(v));
  current_.version = GetBe32(v) - 1;
  Rotate(clock_.Now());
  previous_ = Key{};
  OPENSSL_cleanse(previous_.secret.data(), previous_.secret.size());
}

CookieGeneratorImpl::~CookieGeneratorImpl() {
  OPENSSL_cleanse(current_.secret.data(), current_.secret.size());
  OPENSSL_cleanse(previous_.secret.data(), previous_.secret.size());
}

void CookieGeneratorImpl::Rotate(absl::Time now) {
  previous_.version = current_.version;
  previous_.secret = current_.secret;
  previous_.valid = current_.valid;
  previous_.retired = now;
  current_.version = current_.version + 1;
  random_.Fill(absl::MakeSpan(current_.secret));
  current_.valid = true;
  current_.retired = absl::InfiniteFuture();
  current_since_ = now;
  made_with_current_ = 0;
}

void CookieGeneratorImpl::MaybeRotate(absl::Time now) {
  if (now - current_since_ >= options_.rotation ||
      made_with_current_ >= options_.max_cookies_per_secret) {
    Rotate(now);
  }
}

std::array<uint8_t, 32> CookieGeneratorImpl::Digest(const Key& key, absl::Span<const uint8_t> ni,
                                                    const Endpoint& from, uint64_t spi_i) {
  uint8_t version[kVersionSize];
  PutBe32(key.version, version);
  uint8_t ni_len[2] = {static_cast<uint8_t>(ni.size() >> 8), static_cast<uint8_t>(ni.size())};
  uint8_t ip_len[1] = {static_cast<uint8_t>(from.address.size())};
  uint8_t port[2] = {static_cast<uint8_t>(from.port >> 8), static_cast<uint8_t>(from.port)};
  uint8_t spi[8];
  for (int i = 0; i < 8; ++i) spi[i] = static_cast<uint8_t>(spi_i >> (56 - 8 * i));

  std::array<uint8_t, 32> out{};
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  unsigned int len = 0;
  // Failing SHA-256 is a broken OpenSSL, not a peer's doing.
  const bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx.get(), version, sizeof(version)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), ni_len, sizeof(ni_len)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), ni.data(), ni.size()) == 1 &&
                  EVP_DigestUpdate(ctx.get(), ip_len, sizeof(ip_len)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), from.address.data(), from.address.size()) == 1 &&
                  EVP_DigestUpdate(ctx.get(), port, sizeof(port)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), spi, sizeof(spi)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), key.secret.data(), key.secret.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx.get(), out.data(), &len) == 1 && len == out.size();
  if (!ok) std::abort();
  return out;
}

// CookieGenerator

Bytes CookieGeneratorImpl::Make(absl::Span<const uint8_t> ni, const Endpoint& from,
                                uint64_t spi_i) {
  MaybeRotate(clock_.Now());
  ++made_with_current_;
  Bytes cookie(kCookieSize);
  PutBe32(current_.version, cookie.data());
  const std::array<uint8_t, 32> digest = Digest(current_, ni, from, spi_i);
  std::copy(digest.begin(), digest.end(), cookie.begin() + kVersionSize);
  return cookie;
}

bool CookieGeneratorImpl::Verify(absl::Span<const uint8_t> cookie, absl::Span<const uint8_t> ni,
                                 const Endpoint& from, uint64_t spi_i) {
  const absl::Time now = clock_.Now();
  MaybeRotate(now);
  if (cookie.size() != kCookieSize) return false;
  const uint32_t version = GetBe32(cookie.data());
  const Key* key = nullptr;
  if (current_.valid && version == current_.version) {
    key = &current_;
  } else if (previous_.valid && version == previous_.version &&
             now - previous_.retired < options_.rotation) {
    key = &previous_;
  }
  if (key == nullptr) return false;
  const std::array<uint8_t, 32> expected = Digest(*key, ni, from, spi_i);
  return CRYPTO_memcmp(expected.data(), cookie.data() + kVersionSize, expected.size()) == 0;
}

}  // namespace strait::ike
