#ifndef STRAIT_COMMON_INTENT_PROPOSAL_H_
#define STRAIT_COMMON_INTENT_PROPOSAL_H_

// IKE and ESP proposals in the strongSwan/Libreswan keyword syntax:
// "aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048",
// "aes128gcm16-x25519", "aes256gcm16" (ESP without PFS).
//
// Keywords follow strongSwan's proposal keyword table (ike= / esp= in
// swanctl.conf): aes{128,192,256} (aes = aes128), aes{128,192,256}ctr,
// aes{128,192,256}gcm{8,12,16} and aes{128,192,256}ccm{8,12,16} (and the
// gcm64/gcm96/gcm128, ccm64/... spellings), camellia{128,192,256},
// chacha20poly1305; sha256/sha384/sha512 (sha2_256 ...), sha1 (sha), md5,
// aesxcbc, aescmac; prfsha256/prfsha384/prfsha512, prfaesxcbc, prfaescmac,
// prfsha1, prfmd5; modp768/1024/1536/2048/3072/4096/6144/8192,
// modp1024s160/modp2048s224/modp2048s256, ecp192/224/256/384/521,
// ecp224bp/256bp/384bp/512bp, curve25519/x25519, curve448/x448. Keywords are
// case-insensitive. Weak ones (des, 3des, rc4/arcfour, null, md5, sha1,
// modp768/1024/1536 = DH 1/2/5) parse, so that validation can name them and
// say why they are refused (see WeakTransformReason).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strait::intent {

enum class ProposalKind { kIke, kEsp };

// One transform, with its IANA number (RFC 7296 section 3.3.2 registries).
struct Transform {
  std::string keyword;  // as written, lowercased
  int id = 0;           // IANA transform ID
  int key_bits = 0;     // encryption key length, 0 when fixed
  bool aead = false;    // combined-mode cipher (no integrity transform)
};

struct Proposal {
  std::vector<Transform> encryption;
  std::vector<Transform> integrity;
  std::vector<Transform> prf;
  std::vector<Transform> dh_groups;  // id = DH group number
};

// Parses a proposal string. An unknown keyword is InvalidArgument naming it.
// Structural rules: at least one encryption algorithm; AEAD and non-AEAD
// ciphers do not mix; a non-AEAD cipher needs an integrity algorithm and an
// AEAD cipher refuses one (IKE and ESP); IKE needs a DH group (ESP's is
// optional: PFS); when the IKE PRF is not given it follows each integrity
// algorithm (strongSwan's rule: sha256 -> prfsha256), and with AEAD a PRF
// is required; ESP refuses a PRF. Repeated keywords count once.
absl::StatusOr<Proposal> ParseProposal(absl::string_view text, ProposalKind kind);

// The `type` argument of WeakTransformReason: which list of a Proposal the
// transform comes from (IDs overlap between the registries).
inline constexpr absl::string_view kTransformEncryption = "encryption";
inline constexpr absl::string_view kTransformIntegrity = "integrity";
inline constexpr absl::string_view kTransformPrf = "prf";
inline constexpr absl::string_view kTransformDh = "dh";

// Why a transform is refused by policy ("3des is broken: ..."), or empty
// when it is acceptable. `type` is one of the kTransform* constants above;
// any other value yields "". Refused: des, 3des, rc4, null; md5 and sha1 as
// integrity or PRF; DH groups 1, 2, 5, 22 (1024-bit) and 25 (ecp192).
std::string WeakTransformReason(const Transform& t, absl::string_view type);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_PROPOSAL_H_
