#ifndef STRAIT_AGENT_IKE_CRYPTO_DH_H_
#define STRAIT_AGENT_IKE_CRYPTO_DH_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/secret.h"

namespace strait::ike {

// IANA IKEv2 Transform Type 4 (Key Exchange Method) IDs that we implement.
enum class DhGroup : uint16_t {
  kModp2048 = 14,    // RFC 3526
  kModp3072 = 15,    // RFC 3526
  kModp4096 = 16,    // RFC 3526
  kEcp256 = 19,      // RFC 5903
  kEcp384 = 20,      // RFC 5903
  kEcp521 = 21,      // RFC 5903
  kCurve25519 = 31,  // RFC 8031
};

// Length of the Key Exchange Data of a KE payload for `group`, 0 if the
// group is not implemented.
size_t DhPublicValueSize(DhGroup group);

// One ephemeral Diffie-Hellman key pair. The private key never leaves the
// object (OpenSSL wipes it when the key is freed).
class DiffieHellman {
 public:
  virtual ~DiffieHellman() = default;

  virtual DhGroup group() const = 0;

  // Our public value in IKE wire format: MODP g^x left-padded to the prime
  // length; ECP x | y without the 0x04 point prefix (RFC 5903 §7); X25519 the
  // 32-byte u-coordinate (RFC 8031).
  virtual const std::string& public_value() const = 0;

  // g^ir from the peer's Key Exchange Data, in the form RFC 7296 §2.14
  // feeds to the PRF: MODP padded to the prime length, ECP the x coordinate
  // (RFC 5903 §7), X25519 the 32-byte output. InvalidArgument when the peer
  // value is malformed: wrong length, MODP value <= 1 or >= p-1 or outside
  // the prime-order subgroup, a point not on the curve, or an X25519 result
  // of all zeros (RFC 8031 §2.3).
  virtual absl::StatusOr<Secret> ComputeSharedSecret(absl::string_view peer_public_value) const = 0;
};

using DiffieHellmanPtr = std::unique_ptr<DiffieHellman>;

// Generates a fresh key pair. The private key comes from OpenSSL's own DRBG
// (RAND_priv_bytes), not from an injected source: tests that need fixed keys
// use CreateDiffieHellmanForTest. InvalidArgument for an unknown group.
absl::StatusOr<DiffieHellmanPtr> CreateDiffieHellman(DhGroup group);

// For known-answer tests only: a key pair from a fixed private key, the
// big-endian scalar for ECP groups (exactly the field length) or the 32-byte
// X25519 private key. MODP groups are Unimplemented.
absl::StatusOr<DiffieHellmanPtr> CreateDiffieHellmanForTest(DhGroup group,
                                                            absl::string_view private_key);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CRYPTO_DH_H_
