#ifndef STRAIT_AGENT_IKE_CERT_AUTH_H_
#define STRAIT_AGENT_IKE_CERT_AUTH_H_

// Certificate authentication for IKE_AUTH: our credentials (certificate
// chain and private key), the trust anchors that a peer's chain must reach,
// and the AUTH payload signatures of RFC 7296 §2.15 (classic methods) and
// RFC 7427 (Digital Signature, method 14). OpenSSL underneath; nothing here
// knows about messages or state.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/message.h"
#include "common/secret.h"

namespace strait::ike {

// Authentication methods (RFC 7296 §3.8, RFC 4754, RFC 7427).
inline constexpr uint8_t kAuthRsaSignature = 1;  // PKCS#1 v1.5 with SHA-1.
inline constexpr uint8_t kAuthSharedKey = 2;
inline constexpr uint8_t kAuthEcdsaSha256P256 = 9;
inline constexpr uint8_t kAuthEcdsaSha384P384 = 10;
inline constexpr uint8_t kAuthEcdsaSha512P521 = 11;
inline constexpr uint8_t kAuthDigitalSignature = 14;

// Hash algorithms of the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §7).
inline constexpr uint16_t kHashSha256 = 2;
inline constexpr uint16_t kHashSha384 = 3;
inline constexpr uint16_t kHashSha512 = 4;

// Certificate encoding "X.509 Certificate - Signature" (RFC 7296 §3.6).
inline constexpr uint8_t kCertEncodingX509Signature = 4;

struct AuthSignature {
  uint8_t method = 0;
  Bytes data;  // The AUTH payload's Authentication Data.
};

// ID types that certificates can vouch for (RFC 7296 §3.5).
inline constexpr uint8_t kIdDerAsn1Dn = 9;

// This end's certificate chain and private key.
class LocalCredentials {
 public:
  virtual ~LocalCredentials() = default;

  // `chain_pem`: the end-entity certificate first, then intermediates.
  // `key_pem`: its private key (RSA or EC P-256/P-384/P-521, PKCS#8 or
  // traditional PEM). InvalidArgument when either does not parse or the key
  // does not belong to the certificate.
  static absl::StatusOr<std::shared_ptr<const LocalCredentials>> FromPem(std::string_view chain_pem,
                                                                         const Secret& key_pem);
  // Reads both files. The key file must not be readable by group or others
  // (FailedPrecondition names the file and its mode). The key's PEM text is
  // wiped from memory after parsing.
  static absl::StatusOr<std::shared_ptr<const LocalCredentials>> FromFiles(
      const std::string& chain_path, const std::string& key_path);

  // DER of the end-entity certificate, then the intermediates: one CERT
  // payload each.
  virtual const std::vector<Bytes>& chain_der() const = 0;
  // The subject DN, DER-encoded, as an ID_DER_ASN1_DN payload carries it.
  virtual Bytes subject_der() const = 0;
  // The subject in RFC 2253-like text ("CN=moon,O=Strait"), for logs.
  virtual std::string subject_text() const = 0;

  // OK when the certificate vouches for the identity: a DN equal to the
  // subject (X509_NAME_cmp), or an FQDN / RFC 822 / IP address among the
  // subjectAltNames (names case-insensitively). `id_type` is an IKE ID type
  // (1 IPv4, 2 FQDN, 3 RFC 822, 5 IPv6, 9 DN); `value` its ID data.
  // PermissionDenied, naming the identity and the subject, when the
  // certificate does not vouch for it; a subject CN never vouches for an
  // FQDN. InvalidArgument for other ID types or malformed values.
  virtual absl::Status CheckIdentity(uint8_t id_type, absl::Span<const uint8_t> value) const = 0;

  // The AUTH payload over `signed_octets`. With RFC 7427 (`peer_hashes`
  // non-empty: what the peer's SIGNATURE_HASH_ALGORITHMS listed), method 14:
  // the AlgorithmIdentifier of ecdsa-with-SHA256/384/512 (by curve) or
  // sha256/384/512WithRSAEncryption, picking a hash both support (the
  // strongest that fits the key), then the signature (DER ECDSA-Sig-Value
  // for ECDSA). Without it, the classic method: 1 (RSA, SHA-1, PKCS#1
  // v1.5) or 9/10/11 (ECDSA by curve, r|s fixed-width). A peer that listed
  // none of SHA-256/384/512 also gets the classic method.
  virtual absl::StatusOr<AuthSignature> Sign(absl::Span<const uint8_t> signed_octets,
                                             absl::Span<const uint16_t> peer_hashes) const = 0;
};

// A peer's end-entity certificate, verified to a trust anchor.
class PeerCertificate {
 public:
  virtual ~PeerCertificate() = default;
  // As LocalCredentials::CheckIdentity.
  virtual absl::Status CheckIdentity(uint8_t id_type, absl::Span<const uint8_t> value) const = 0;
  // Verifies an AUTH payload with this certificate's public key: methods 1,
  // 9/10/11 and 14 (ECDSA and RSA PKCS#1 v1.5 with SHA-256/384/512, and
  // RSASSA-PSS with the parameters its AlgorithmIdentifier carries).
  // Unauthenticated when the signature does not verify, InvalidArgument
  // when the method does not fit the key or the data does not parse, and
  // for method 14 with SHA-1 or any other algorithm than those above.
  virtual absl::Status VerifyAuth(uint8_t method, absl::Span<const uint8_t> data,
                                  absl::Span<const uint8_t> signed_octets) const = 0;
  virtual std::string subject_text() const = 0;
};

// The CA certificates a peer's chain must reach.
class TrustAnchors {
 public:
  virtual ~TrustAnchors() = default;

  // One or more PEM CA certificates. InvalidArgument when none parses.
  static absl::StatusOr<std::shared_ptr<const TrustAnchors>> FromPem(std::string_view ca_pem);

  // CERTREQ Certification Authority data: the SHA-1 hashes of the anchors'
  // SubjectPublicKeyInfo, concatenated (RFC 7296 §3.7).
  virtual Bytes certreq_data() const = 0;

  // Verifies `chain_der` (end entity first, then any intermediates, as the
  // CERT payloads came) to one of the anchors with validity checked at
  // `now`. Unauthenticated with OpenSSL's reason ("certificate has
  // expired", "unable to get local issuer certificate") otherwise;
  // InvalidArgument when a certificate does not parse or more than 8 came.
  // Standard RFC 5280 path validation (X509_verify_cert) and nothing more:
  // no extendedKeyUsage is required, a leaf with CA:TRUE is not refused, an
  // anchor need not be self-signed, and there is no revocation checking.
  virtual absl::StatusOr<std::unique_ptr<PeerCertificate>> Verify(
      const std::vector<Bytes>& chain_der, absl::Time now) const = 0;
};

// "CN=moon, O=Strait, C=CH" (strongSwan's DN syntax: comma- or
// slash-separated attribute=value pairs, short names C, ST, L, O, OU, CN,
// E/emailAddress, DC, serialNumber) to DER. InvalidArgument otherwise.
absl::StatusOr<Bytes> ParseDistinguishedName(std::string_view text);
// Whether two DER DNs name the same entity (X509_NAME_cmp).
bool SameDistinguishedName(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b);
// The DER DN as text, for logs; "<invalid DN>" when it does not parse.
std::string DistinguishedNameText(absl::Span<const uint8_t> der);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CERT_AUTH_H_
