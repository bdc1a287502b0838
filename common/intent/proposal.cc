#include "common/intent/proposal.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace strait::intent {
namespace {

enum class TransformType { kEncryption, kIntegrity, kPrf, kDh };

struct Keyword {
  std::string name;
  TransformType type;
  int id;
  int key_bits;
  bool aead;
};

// IANA "Transform Type 1 - Encryption Algorithm Transform IDs".
constexpr int kEncrDes = 2;
constexpr int kEncr3Des = 3;
constexpr int kEncrNull = 11;
constexpr int kEncrAesCbc = 12;
constexpr int kEncrAesCtr = 13;
constexpr int kEncrAesCcm8 = 14;
constexpr int kEncrAesCcm12 = 15;
constexpr int kEncrAesCcm16 = 16;
constexpr int kEncrAesGcm8 = 18;
constexpr int kEncrAesGcm12 = 19;
constexpr int kEncrAesGcm16 = 20;
constexpr int kEncrCamelliaCbc = 23;
constexpr int kEncrChacha20Poly1305 = 28;
// RC4 has no IKEv2 transform ID; it parses so that validation can refuse it
// by name.
constexpr int kEncrRc4 = 0;

// IANA "Transform Type 3 - Integrity Algorithm Transform IDs".
constexpr int kAuthHmacMd596 = 1;
constexpr int kAuthHmacSha196 = 2;
constexpr int kAuthAesXcbc96 = 5;
constexpr int kAuthAesCmac96 = 8;
constexpr int kAuthHmacSha256128 = 12;
constexpr int kAuthHmacSha384192 = 13;
constexpr int kAuthHmacSha512256 = 14;

// IANA "Transform Type 2 - Pseudorandom Function Transform IDs".
constexpr int kPrfHmacMd5 = 1;
constexpr int kPrfHmacSha1 = 2;
constexpr int kPrfAesXcbc = 4;
constexpr int kPrfHmacSha256 = 5;
constexpr int kPrfHmacSha384 = 6;
constexpr int kPrfHmacSha512 = 7;
constexpr int kPrfAesCmac = 8;

// strongSwan's proposal keywords (proposal_keywords_static.txt) for the
// algorithms Strait knows.
std::vector<Keyword> BuildKeywords() {
  using T = TransformType;
  std::vector<Keyword> k = {
      {"null", T::kEncryption, kEncrNull, 0, false},
      {"des", T::kEncryption, kEncrDes, 0, false},
      {"3des", T::kEncryption, kEncr3Des, 0, false},
      {"rc4", T::kEncryption, kEncrRc4, 0, false},
      {"arcfour", T::kEncryption, kEncrRc4, 0, false},
      {"aes", T::kEncryption, kEncrAesCbc, 128, false},
      {"camellia", T::kEncryption, kEncrCamelliaCbc, 128, false},
      {"chacha20poly1305", T::kEncryption, kEncrChacha20Poly1305, 0, true},

      {"md5", T::kIntegrity, kAuthHmacMd596, 0, false},
      {"sha", T::kIntegrity, kAuthHmacSha196, 0, false},
      {"sha1", T::kIntegrity, kAuthHmacSha196, 0, false},
      {"aesxcbc", T::kIntegrity, kAuthAesXcbc96, 0, false},
      {"aescmac", T::kIntegrity, kAuthAesCmac96, 0, false},
      {"sha256", T::kIntegrity, kAuthHmacSha256128, 0, false},
      {"sha2_256", T::kIntegrity, kAuthHmacSha256128, 0, false},
      {"sha384", T::kIntegrity, kAuthHmacSha384192, 0, false},
      {"sha2_384", T::kIntegrity, kAuthHmacSha384192, 0, false},
      {"sha512", T::kIntegrity, kAuthHmacSha512256, 0, false},
      {"sha2_512", T::kIntegrity, kAuthHmacSha512256, 0, false},

      // The first keyword for an ID is the one a derived PRF is named by.
      {"prfmd5", T::kPrf, kPrfHmacMd5, 0, false},
      {"prfsha1", T::kPrf, kPrfHmacSha1, 0, false},
      {"prfaesxcbc", T::kPrf, kPrfAesXcbc, 0, false},
      {"prfsha256", T::kPrf, kPrfHmacSha256, 0, false},
      {"prfsha384", T::kPrf, kPrfHmacSha384, 0, false},
      {"prfsha512", T::kPrf, kPrfHmacSha512, 0, false},
      {"prfaescmac", T::kPrf, kPrfAesCmac, 0, false},

      {"modp768", T::kDh, 1, 0, false},
      {"modp1024", T::kDh, 2, 0, false},
      {"modp1536", T::kDh, 5, 0, false},
      {"modp2048", T::kDh, 14, 0, false},
      {"modp3072", T::kDh, 15, 0, false},
      {"modp4096", T::kDh, 16, 0, false},
      {"modp6144", T::kDh, 17, 0, false},
      {"modp8192", T::kDh, 18, 0, false},
      {"ecp256", T::kDh, 19, 0, false},
      {"ecp384", T::kDh, 20, 0, false},
      {"ecp521", T::kDh, 21, 0, false},
      {"modp1024s160", T::kDh, 22, 0, false},
      {"modp2048s224", T::kDh, 23, 0, false},
      {"modp2048s256", T::kDh, 24, 0, false},
      {"ecp192", T::kDh, 25, 0, false},
      {"ecp224", T::kDh, 26, 0, false},
      {"ecp224bp", T::kDh, 27, 0, false},
      {"ecp256bp", T::kDh, 28, 0, false},
      {"ecp384bp", T::kDh, 29, 0, false},
      {"ecp512bp", T::kDh, 30, 0, false},
      {"curve25519", T::kDh, 31, 0, false},
      {"x25519", T::kDh, 31, 0, false},
      {"curve448", T::kDh, 32, 0, false},
      {"x448", T::kDh, 32, 0, false},
  };
  for (int bits : {128, 192, 256}) {
    std::string aes = absl::StrCat("aes", bits);
    k.push_back({aes, T::kEncryption, kEncrAesCbc, bits, false});
    k.push_back({aes + "ctr", T::kEncryption, kEncrAesCtr, bits, false});
    k.push_back({absl::StrCat("camellia", bits), T::kEncryption, kEncrCamelliaCbc, bits, false});
    // ICV length in bytes, and the same in bits (strongSwan takes both).
    const struct {
      int icv_bytes;
      int gcm_id;
      int ccm_id;
    } kIcvs[] = {{8, kEncrAesGcm8, kEncrAesCcm8},
                 {12, kEncrAesGcm12, kEncrAesCcm12},
                 {16, kEncrAesGcm16, kEncrAesCcm16}};
    for (const auto& icv : kIcvs) {
      for (int len : {icv.icv_bytes, icv.icv_bytes * 8}) {
        k.push_back({absl::StrCat(aes, "gcm", len), T::kEncryption, icv.gcm_id, bits, true});
        k.push_back({absl::StrCat(aes, "ccm", len), T::kEncryption, icv.ccm_id, bits, true});
      }
    }
  }
  return k;
}

const std::vector<Keyword>& Keywords() {
  static const std::vector<Keyword>* const kKeywords = new std::vector<Keyword>(BuildKeywords());
  return *kKeywords;
}

const Keyword* FindKeyword(absl::string_view name) {
  for (const Keyword& k : Keywords()) {
    if (k.name == name) {
      return &k;
    }
  }
  return nullptr;
}

const Keyword* FindById(TransformType type, int id) {
  for (const Keyword& k : Keywords()) {
    if (k.type == type && k.id == id) {
      return &k;
    }
  }
  return nullptr;
}

// The PRF strongSwan pairs with an integrity algorithm when no PRF is given.
int PrfForIntegrity(int integrity_id) {
  switch (integrity_id) {
    case kAuthHmacMd596:
      return kPrfHmacMd5;
    case kAuthHmacSha196:
      return kPrfHmacSha1;
    case kAuthAesXcbc96:
      return kPrfAesXcbc;
    case kAuthAesCmac96:
      return kPrfAesCmac;
    case kAuthHmacSha256128:
      return kPrfHmacSha256;
    case kAuthHmacSha384192:
      return kPrfHmacSha384;
    case kAuthHmacSha512256:
      return kPrfHmacSha512;
    default:
      return -1;
  }
}

Transform ToTransform(const Keyword& k, absl::string_view as_written) {
  Transform t;
  t.keyword = std::string(as_written);
  t.id = k.id;
  t.key_bits = k.key_bits;
  t.aead = k.aead;
  return t;
}

void AddUnique(std::vector<Transform>* list, Transform t) {
  for (const Transform& existing : *list) {
    if (existing.id == t.id && existing.key_bits == t.key_bits) {
      return;
    }
  }
  list->push_back(std::move(t));
}

}  // namespace

absl::StatusOr<Proposal> ParseProposal(absl::string_view text, ProposalKind kind) {
  const bool ike = kind == ProposalKind::kIke;
  std::string lower = absl::AsciiStrToLower(text);
  if (lower.empty()) {
    return absl::InvalidArgumentError("empty proposal");
  }
  Proposal proposal;
  for (absl::string_view token : absl::StrSplit(lower, '-')) {
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("empty keyword in \"", absl::CEscape(lower), "\" (stray '-')"));
    }
    const Keyword* k = FindKeyword(token);
    if (k == nullptr) {
      if (token == "esn" || token == "noesn") {
        return absl::InvalidArgumentError(absl::StrCat(
            "\"", token, "\": extended sequence numbers are not configurable in Strait"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown algorithm keyword \"", absl::CEscape(token), "\""));
    }
    Transform t = ToTransform(*k, token);
    switch (k->type) {
      case TransformType::kEncryption:
        AddUnique(&proposal.encryption, std::move(t));
        break;
      case TransformType::kIntegrity:
        AddUnique(&proposal.integrity, std::move(t));
        break;
      case TransformType::kPrf:
        AddUnique(&proposal.prf, std::move(t));
        break;
      case TransformType::kDh:
        AddUnique(&proposal.dh_groups, std::move(t));
        break;
    }
  }

  if (proposal.encryption.empty()) {
    return absl::InvalidArgumentError(
        "no encryption algorithm (for example aes256gcm16 or aes256-sha256)");
  }
  const Transform* aead = nullptr;
  const Transform* classic = nullptr;
  for (const Transform& t : proposal.encryption) {
    if (t.aead) {
      aead = &t;
    } else {
      classic = &t;
    }
  }
  if (aead != nullptr && classic != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("AEAD cipher ", aead->keyword, " and non-AEAD cipher ", classic->keyword,
                     " cannot share a proposal; write them as two proposals"));
  }
  if (aead != nullptr && !proposal.integrity.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(aead->keyword,
                     " is an AEAD cipher and authenticates the data itself; remove the integrity "
                     "algorithm ",
                     proposal.integrity.front().keyword,
                     ike ? " (IKE needs a PRF instead, for example prfsha384)" : ""));
  }
  if (classic != nullptr && proposal.integrity.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        classic->keyword, " needs an integrity algorithm (for example ", classic->keyword,
        "-sha256", ike ? "-modp3072" : "", "), or use an AEAD cipher such as aes256gcm16"));
  }

  if (!ike) {
    if (!proposal.prf.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("a PRF (", proposal.prf.front().keyword,
                                                     ") has no place in an ESP proposal"));
    }
    return proposal;
  }

  if (proposal.dh_groups.empty()) {
    return absl::InvalidArgumentError(
        "an IKE proposal needs a DH group (for example ecp384, x25519 or modp3072)");
  }
  if (proposal.prf.empty()) {
    if (aead != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          aead->keyword, " is an AEAD cipher, so the IKE PRF must be given (for example ",
          aead->keyword, "-prfsha384-", proposal.dh_groups.front().keyword, ")"));
    }
    // strongSwan's rule: without an explicit PRF, each integrity algorithm
    // brings its HMAC (or AES) counterpart.
    for (const Transform& integrity : proposal.integrity) {
      const Keyword* prf = FindById(TransformType::kPrf, PrfForIntegrity(integrity.id));
      if (prf == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("no PRF matches ", integrity.keyword,
                                                       "; give one (for example prfsha384)"));
      }
      AddUnique(&proposal.prf, ToTransform(*prf, prf->name));
    }
  }
  return proposal;
}

std::string WeakTransformReason(const Transform& t, absl::string_view type) {
  const std::string& kw = t.keyword;
  if (type == kTransformEncryption) {
    switch (t.id) {
      case kEncrDes:
        return absl::StrCat(kw,
                            " is broken: its 56-bit key can be brute-forced within a day; use "
                            "aes256gcm16 or aes256");
      case kEncr3Des:
        return absl::StrCat(kw,
                            " is broken: its 64-bit block allows Sweet32 birthday attacks "
                            "(CVE-2016-2183); use aes256gcm16 or aes256");
      case kEncrNull:
        return absl::StrCat(kw,
                            " encryption sends the traffic unencrypted; use aes256gcm16 or "
                            "aes256");
      case kEncrRc4:
        return absl::StrCat(kw,
                            " (RC4) is broken: its keystream is biased (RFC 7465), and it has no "
                            "IKEv2 transform ID; use aes256gcm16 or aes256");
      default:
        return "";
    }
  }
  if (type == kTransformIntegrity) {
    switch (t.id) {
      case kAuthHmacMd596:
        return absl::StrCat(kw,
                            " is broken: MD5 has practical collision attacks and RFC 8221 forbids "
                            "it for IPsec; use sha256 or stronger");
      case kAuthHmacSha196:
        return absl::StrCat(kw,
                            " is refused: SHA-1 is collision-broken (SHAttered) and RFC 8221/8247 "
                            "phase it out; use sha256 or stronger");
      default:
        return "";
    }
  }
  if (type == kTransformPrf) {
    switch (t.id) {
      case kPrfHmacMd5:
        return absl::StrCat(kw,
                            " is broken: MD5 has practical collision attacks and RFC 8247 forbids "
                            "it; use prfsha256 or stronger");
      case kPrfHmacSha1:
        return absl::StrCat(kw,
                            " is refused: SHA-1 is collision-broken (SHAttered) and RFC 8247 "
                            "phases it out; use prfsha256 or stronger");
      default:
        return "";
    }
  }
  if (type == kTransformDh) {
    std::string name = absl::StrCat(kw, " (DH group ", t.id, ")");
    switch (t.id) {
      case 1:
        return absl::StrCat(name,
                            " is broken: 768-bit discrete logarithms have been computed "
                            "(Logjam); use ecp384, x25519 or modp3072");
      case 2:
      case 22:
        return absl::StrCat(name,
                            " is too weak: 1024-bit MODP groups are within reach of precomputation "
                            "attacks (Logjam) and RFC 8247 deprecates them; use ecp384, x25519 or "
                            "modp3072");
      case 5:
        return absl::StrCat(
            name,
            " is too weak: 1536-bit MODP is below the 2048-bit minimum of RFC 8247; "
            "use ecp384, x25519 or modp3072");
      case 25:
        return absl::StrCat(name,
                            " is too weak: a 192-bit curve gives only 96-bit security; use ecp384 "
                            "or x25519");
      default:
        return "";
    }
  }
  return "";
}

}  // namespace strait::intent
