#ifndef STRAIT_AGENT_IKE_CRYPTO_SK_H_
#define STRAIT_AGENT_IKE_CRYPTO_SK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/secret.h"

namespace strait::ike {

// IANA IKEv2 Transform Type 1 (Encryption Algorithm) IDs that we implement,
// for the SK payload and for ESP.
enum class EncrId : uint16_t {
  kAesCbc = 12,    // RFC 3602
  kAesGcm16 = 20,  // RFC 5282 (IKE) / RFC 4106 (ESP), 16-byte ICV
};

// IANA IKEv2 Transform Type 3 (Integrity Algorithm) IDs that we implement.
enum class IntegId : uint16_t {
  kNone = 0,  // With AEAD ciphers only.
  kHmacSha2_256_128 = 12,
  kHmacSha2_384_192 = 13,
  kHmacSha2_512_256 = 14,
};

// The negotiated encryption and integrity transforms of an SA.
struct CipherSuite {
  EncrId encr = EncrId::kAesGcm16;
  int key_bits = 256;  // The Key Length attribute: 128, 192 or 256.
  IntegId integ = IntegId::kNone;
};

// OK when the combination is implemented and consistent (AEAD without an
// integrity transform, CBC with one).
absl::Status ValidateCipherSuite(const CipherSuite& suite);
// Bytes of encryption key material: the AES key, plus the 4-byte salt for
// AES-GCM (RFC 5282 §7.1, RFC 4106 §8.1).
size_t EncrKeyMaterialSize(const CipherSuite& suite);
// Bytes of integrity key material: 32/48/64 for HMAC-SHA2, 0 for none.
size_t IntegKeySize(IntegId integ);

// Protection of the IKEv2 Encrypted (SK) payload for one direction of an
// IKE SA: SK_ei/SK_ai for messages the original initiator sends, SK_er/SK_ar
// for the other way.
//
// A sealed SK body is IV | ciphertext | ICV, where the ciphertext covers
// inner payloads | padding | pad length. `aad` is everything before the IV:
// the IKE header through the generic header of the SK payload (or of the SKF
// payload and its fragment fields, RFC 7383). Both headers carry lengths that
// include the sealed body, so build them with SealedSize() first.
class SkCipher {
 public:
  virtual ~SkCipher() = default;

  virtual size_t iv_size() const = 0;
  virtual size_t icv_size() const = 0;
  // Length of Seal()'s output for `plaintext_size` bytes of inner payloads.
  virtual size_t SealedSize(size_t plaintext_size) const = 0;

  // Seals with a fresh IV from OpenSSL's DRBG (random IVs are what RFC 7296
  // §3.14 asks for CBC; for GCM a 64-bit random IV does not repeat within the
  // few messages an IKE SA sends, and it stays safe when a cipher object for
  // the same keys is re-created).
  virtual absl::StatusOr<std::string> Seal(absl::string_view aad,
                                           absl::string_view plaintext) const = 0;
  // Seals with the given IV (iv_size() bytes): for known-answer tests.
  virtual absl::StatusOr<std::string> SealWithIv(absl::string_view aad, absl::string_view iv,
                                                 absl::string_view plaintext) const = 0;
  // Verifies and decrypts IV | ciphertext | ICV, returning the inner
  // payloads. InvalidArgument for a truncated body, an ICV mismatch (compared
  // in constant time) or bad padding; nothing is returned unauthenticated.
  virtual absl::StatusOr<std::string> Open(absl::string_view aad,
                                           absl::string_view sealed) const = 0;
};

using SkCipherPtr = std::unique_ptr<SkCipher>;

// `encr_key` has EncrKeyMaterialSize(suite) bytes (key | salt for GCM) and
// `integ_key` IntegKeySize(suite.integ) bytes (empty for GCM). The keys are
// copied into wiping storage.
absl::StatusOr<SkCipherPtr> CreateSkCipher(const CipherSuite& suite, const Secret& encr_key,
                                           const Secret& integ_key);

// Raw primitives under the SK ciphers, exposed for known-answer tests.
// AES-GCM with a 12-byte nonce (salt | IV in IKE) and 16-byte tag; output
// and input are ciphertext | tag.
absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view nonce,
                                       absl::string_view aad, absl::string_view plaintext);
absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view nonce,
                                       absl::string_view aad, absl::string_view sealed);
// AES-CBC without padding: the input must be a multiple of 16 bytes.
absl::StatusOr<std::string> AesCbcEncrypt(absl::string_view key, absl::string_view iv,
                                          absl::string_view plaintext);
absl::StatusOr<std::string> AesCbcDecrypt(absl::string_view key, absl::string_view iv,
                                          absl::string_view ciphertext);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CRYPTO_SK_H_
