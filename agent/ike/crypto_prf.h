#ifndef STRAIT_AGENT_IKE_CRYPTO_PRF_H_
#define STRAIT_AGENT_IKE_CRYPTO_PRF_H_

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/secret.h"

namespace strait::ike {

// IANA IKEv2 Transform Type 2 (Pseudorandom Function) IDs that we implement.
enum class PrfId : uint16_t {
  kHmacSha2_256 = 5,
  kHmacSha2_384 = 6,
  kHmacSha2_512 = 7,
};

// An IKEv2 PRF (HMAC-SHA2) through OpenSSL's EVP_MAC. It holds only the
// fetched (immutable, reference-counted) algorithm and makes a fresh MAC
// context per call, so const use from several threads is safe.
class Prf {
 public:
  // prf+ may run at most this many iterations (RFC 7296 §2.13).
  static constexpr int kMaxPrfPlusIterations = 255;

  static absl::StatusOr<Prf> Create(PrfId id);

  Prf(Prf&&) noexcept;
  Prf& operator=(Prf&&) noexcept;
  ~Prf();

  PrfId id() const { return id_; }
  // Output length, which is also the preferred key length of the HMAC PRFs
  // (the length of SK_d, SK_pi and SK_pr).
  size_t output_size() const { return output_size_; }

  // prf(key, data[0] | data[1] | ...). The pieces are fed to the MAC one by
  // one, so callers need not concatenate (and wipe) secret inputs.
  absl::StatusOr<Secret> Compute(absl::string_view key,
                                 std::initializer_list<absl::string_view> data) const;
  absl::StatusOr<Secret> Compute(absl::string_view key, absl::string_view data) const {
    return Compute(key, {data});
  }

  // prf+(key, seed) truncated to `length` bytes (RFC 7296 §2.13):
  // T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n). InvalidArgument when
  // `length` would need more than 255 iterations.
  absl::StatusOr<Secret> PrfPlus(absl::string_view key, absl::string_view seed,
                                 size_t length) const;

 private:
  struct MacDeleter {
    void operator()(EVP_MAC* mac) const;
  };

  Prf(PrfId id, std::unique_ptr<EVP_MAC, MacDeleter> mac, const char* digest, size_t output_size);

  PrfId id_;
  std::unique_ptr<EVP_MAC, MacDeleter> mac_;
  const char* digest_;  // Static string: an OpenSSL digest name.
  size_t output_size_;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CRYPTO_PRF_H_
