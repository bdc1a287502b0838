#include "agent/ike/cert_auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <optional>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace strait::ike {
namespace {

// ID types (RFC 7296 §3.5) besides kIdDerAsn1Dn.
constexpr uint8_t kIdIpv4Addr = 1;
constexpr uint8_t kIdFqdn = 2;
constexpr uint8_t kIdRfc822Addr = 3;
constexpr uint8_t kIdIpv6Addr = 5;

// A peer sends its chain in CERT payloads; more than this is refused before
// any of it is parsed.
constexpr size_t kMaxPeerChainLength = 8;
// Key files are a few kilobytes; the bound lets the reader allocate once, so
// no reallocation leaves a copy of the key behind.
constexpr size_t kMaxKeyFileSize = size_t{64} * 1024;

// The header speaks std::string_view; this Abseil build has its own.
absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

template <auto kFree>
struct OpenSslFree {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};
using BioPtr = std::unique_ptr<BIO, OpenSslFree<BIO_free>>;
using X509Ptr = std::unique_ptr<X509, OpenSslFree<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY_free>>;
using NamePtr = std::unique_ptr<X509_NAME, OpenSslFree<X509_NAME_free>>;
using AlgorPtr = std::unique_ptr<X509_ALGOR, OpenSslFree<X509_ALGOR_free>>;
using PssParamsPtr = std::unique_ptr<RSA_PSS_PARAMS, OpenSslFree<RSA_PSS_PARAMS_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpenSslFree<ECDSA_SIG_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslFree<BN_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX_free>>;
using StorePtr = std::unique_ptr<X509_STORE, OpenSslFree<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree<X509_STORE_CTX_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpenSslFree<GENERAL_NAMES_free>>;

struct X509StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackFree>;

// The reason of OpenSSL's latest error; the queue is cleared. Reason strings
// are fixed texts, never input bytes, so they may go into errors and logs.
std::string OpenSslReason() {
  const unsigned long err = ERR_peek_last_error();
  ERR_clear_error();
  if (err == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(err);
  if (reason == nullptr) return absl::StrCat("OpenSSL error ", err);
  return reason;
}

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslReason()));
}

absl::StatusOr<BioPtr> MemoryBio(absl::string_view data) {
  if (data.size() > INT_MAX) return absl::InvalidArgumentError("PEM input too large");
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (bio == nullptr) return OpenSslError("BIO_new_mem_buf");
  return bio;
}

// i2d_TYPE into Bytes.
template <typename T, typename Encoder>
absl::StatusOr<Bytes> ToDer(const T* object, Encoder encode, absl::string_view what) {
  unsigned char* der = nullptr;
  const int len = encode(object, &der);
  if (len <= 0) return OpenSslError(absl::StrCat("encoding ", what));
  Bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

// d2i_TYPE from `der`, which must hold exactly one object; null otherwise.
template <typename Ptr, typename Decoder>
Ptr DecodeExactly(absl::Span<const uint8_t> der, Decoder decode) {
  if (der.empty() || der.size() > LONG_MAX) return nullptr;
  const unsigned char* p = der.data();
  Ptr object(decode(nullptr, &p, static_cast<long>(der.size())));
  ERR_clear_error();
  if (object != nullptr && p != der.data() + der.size()) return nullptr;
  return object;
}

std::string NameText(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // RFC 2253 but with UTF-8 left as is; control characters stay escaped, so
  // a peer's name cannot forge log lines.
  if (bio == nullptr ||
      X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ERR_clear_error();
    return "<invalid DN>";
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, len > 0 ? static_cast<size_t>(len) : 0);
}

// Every CERTIFICATE block of `pem` in order (other PEM blocks are skipped).
absl::StatusOr<std::vector<X509Ptr>> ReadPemCertificates(absl::string_view pem,
                                                         absl::string_view what) {
  ASSIGN_OR_RETURN(BioPtr bio, MemoryBio(pem));
  ERR_clear_error();
  std::vector<X509Ptr> certs;
  while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    certs.push_back(std::move(cert));
  }
  const unsigned long err = ERR_peek_last_error();
  const bool at_end = ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
  if (err != 0 && !at_end) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": certificate ", certs.size() + 1,
                                                   " does not parse: ", OpenSslReason()));
  }
  ERR_clear_error();
  if (certs.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no certificate"));
  return certs;
}

// --- Keys and hashes ---

enum class KeyType { kRsa, kEcP256, kEcP384, kEcP521 };

absl::StatusOr<KeyType> ClassifyKey(const EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
      return KeyType::kRsa;
    case EVP_PKEY_EC: {
      char group[80] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("EC key without a named curve: ", OpenSslReason()));
      }
      int nid = OBJ_txt2nid(group);
      if (nid == NID_undef) nid = EC_curve_nist2nid(group);
      ERR_clear_error();
      switch (nid) {
        case NID_X9_62_prime256v1:
          return KeyType::kEcP256;
        case NID_secp384r1:
          return KeyType::kEcP384;
        case NID_secp521r1:
          return KeyType::kEcP521;
      }
      return absl::InvalidArgumentError(absl::StrCat("unsupported EC curve ", group));
    }
  }
  const char* name = EVP_PKEY_get0_type_name(key);
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported key type ", name != nullptr ? name : "(unknown)"));
}

const char* KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kRsa:
      return "RSA";
    case KeyType::kEcP256:
      return "ECDSA P-256";
    case KeyType::kEcP384:
      return "ECDSA P-384";
    case KeyType::kEcP521:
      return "ECDSA P-521";
  }
  return "?";
}

// The classic AUTH method of the key (RFC 7296 §3.8, RFC 4754).
uint8_t ClassicMethod(KeyType type) {
  switch (type) {
    case KeyType::kRsa:
      return kAuthRsaSignature;
    case KeyType::kEcP256:
      return kAuthEcdsaSha256P256;
    case KeyType::kEcP384:
      return kAuthEcdsaSha384P384;
    case KeyType::kEcP521:
      return kAuthEcdsaSha512P521;
  }
  return 0;
}

// The byte length of r and s in the classic ECDSA encoding (RFC 4754 §7).
size_t CoordinateSize(KeyType type) {
  switch (type) {
    case KeyType::kEcP256:
      return 32;
    case KeyType::kEcP384:
      return 48;
    case KeyType::kEcP521:
      return 66;
    case KeyType::kRsa:
      break;
  }
  return 0;
}

// The hash of the classic methods, and the one RFC 7427 prefers for a curve.
uint16_t NaturalHash(KeyType type) {
  switch (type) {
    case KeyType::kEcP384:
      return kHashSha384;
    case KeyType::kEcP521:
      return kHashSha512;
    case KeyType::kEcP256:
    case KeyType::kRsa:
      break;
  }
  return kHashSha256;
}

struct SignatureHash {
  uint16_t id;
  int digest_nid;
  int ecdsa_nid;
  int rsa_nid;
};

// Strongest first: the order Sign() tries them in.
constexpr SignatureHash kSignatureHashes[] = {
    {kHashSha512, NID_sha512, NID_ecdsa_with_SHA512, NID_sha512WithRSAEncryption},
    {kHashSha384, NID_sha384, NID_ecdsa_with_SHA384, NID_sha384WithRSAEncryption},
    {kHashSha256, NID_sha256, NID_ecdsa_with_SHA256, NID_sha256WithRSAEncryption},
};

const SignatureHash& HashById(uint16_t id) {
  for (const SignatureHash& h : kSignatureHashes) {
    if (h.id == id) return h;
  }
  return kSignatureHashes[2];
}

const EVP_MD* DigestByNid(int nid) {
  switch (nid) {
    case NID_sha1:
      return EVP_sha1();
    case NID_sha256:
      return EVP_sha256();
    case NID_sha384:
      return EVP_sha384();
    case NID_sha512:
      return EVP_sha512();
  }
  return nullptr;
}

// The hash for an RFC 7427 signature: the curve's own when the peer has it;
// for RSA SHA-256 (what strongSwan picks for RSA up to 3072 bits, so that
// peers with `rsa-2048-sha256`-style constraints accept it); else the
// strongest the peer listed; nullopt when it listed none we have.
std::optional<uint16_t> ChooseHash(KeyType type, absl::Span<const uint16_t> peer_hashes) {
  const uint16_t preferred = type == KeyType::kRsa ? kHashSha256 : NaturalHash(type);
  if (absl::c_linear_search(peer_hashes, preferred)) return preferred;
  for (const SignatureHash& h : kSignatureHashes) {
    if (absl::c_linear_search(peer_hashes, h.id)) return h.id;
  }
  return std::nullopt;
}

std::string AlgorithmName(const ASN1_OBJECT* oid) {
  char name[128] = {0};
  OBJ_obj2txt(name, sizeof(name), oid, 0);
  return name;
}

// An AlgorithmIdentifier (RFC 5280 §4.1.1.2): parameters NULL for the RSA
// schemes (RFC 4055 §5), absent for ECDSA (RFC 5758 §3.2).
absl::StatusOr<Bytes> EncodeAlgorithmIdentifier(int nid, bool null_parameters) {
  AlgorPtr alg(X509_ALGOR_new());
  if (alg == nullptr ||
      X509_ALGOR_set0(alg.get(), OBJ_nid2obj(nid), null_parameters ? V_ASN1_NULL : V_ASN1_UNDEF,
                      nullptr) != 1) {
    return OpenSslError("AlgorithmIdentifier");
  }
  return ToDer(alg.get(), i2d_X509_ALGOR, "AlgorithmIdentifier");
}

// --- Signatures ---

absl::StatusOr<Bytes> DigestSign(EVP_PKEY* key, const EVP_MD* md, absl::Span<const uint8_t> data) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
    return OpenSslError("signing AUTH");
  }
  Bytes signature(len);
  if (EVP_DigestSign(ctx.get(), signature.data(), &len, data.data(), data.size()) != 1) {
    return OpenSslError("signing AUTH");
  }
  signature.resize(len);
  return signature;
}

struct PssParams {
  const EVP_MD* mgf1_md;
  int salt_length;
};

// OK when `signature` over `data` verifies, Unauthenticated otherwise.
absl::Status DigestVerify(EVP_PKEY* key, const EVP_MD* md, const std::optional<PssParams>& pss,
                          absl::Span<const uint8_t> signature, absl::Span<const uint8_t> data) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // Owned by ctx.
  if (ctx == nullptr || EVP_DigestVerifyInit(ctx.get(), &pctx, md, nullptr, key) != 1) {
    return OpenSslError("verifying AUTH");
  }
  if (pss.has_value() && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                          EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, pss->mgf1_md) != 1 ||
                          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss->salt_length) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RSASSA-PSS parameters not usable: ", OpenSslReason()));
  }
  const int rc =
      EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), data.data(), data.size());
  ERR_clear_error();
  if (rc != 1) return absl::UnauthenticatedError("AUTH signature does not verify");
  return absl::OkStatus();
}

// DER ECDSA-Sig-Value to r | s, each `width` bytes (RFC 4754 §7).
absl::StatusOr<Bytes> EcdsaDerToFixed(absl::Span<const uint8_t> der, size_t width) {
  EcdsaSigPtr sig = DecodeExactly<EcdsaSigPtr>(der, d2i_ECDSA_SIG);
  if (sig == nullptr) return absl::InternalError("OpenSSL made an unparsable ECDSA signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  Bytes out(2 * width);
  if (BN_bn2binpad(r, out.data(), static_cast<int>(width)) != static_cast<int>(width) ||
      BN_bn2binpad(s, out.data() + width, static_cast<int>(width)) != static_cast<int>(width)) {
    return OpenSslError("ECDSA r|s");
  }
  return out;
}

// r | s (two halves of equal length) to DER ECDSA-Sig-Value.
absl::StatusOr<Bytes> EcdsaFixedToDer(absl::Span<const uint8_t> fixed) {
  const int width = static_cast<int>(fixed.size() / 2);
  BignumPtr r(BN_bin2bn(fixed.data(), width, nullptr));
  BignumPtr s(BN_bin2bn(fixed.data() + width, width, nullptr));
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (r == nullptr || s == nullptr || sig == nullptr ||
      ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return OpenSslError("ECDSA r|s");
  }
  static_cast<void>(r.release());  // Owned by sig now.
  static_cast<void>(s.release());
  return ToDer(sig.get(), i2d_ECDSA_SIG, "ECDSA-Sig-Value");
}

// A hash AlgorithmIdentifier inside RSASSA-PSS parameters; SHA-2 only.
// Null means the ASN.1 DEFAULT, SHA-1.
absl::StatusOr<const EVP_MD*> PssHash(const X509_ALGOR* alg) {
  if (alg == nullptr) return absl::InvalidArgumentError("RSASSA-PSS with SHA-1 is not accepted");
  const ASN1_OBJECT* oid = nullptr;
  int ptype = 0;
  X509_ALGOR_get0(&oid, &ptype, nullptr, alg);
  const int nid = OBJ_obj2nid(oid);
  if ((nid != NID_sha256 && nid != NID_sha384 && nid != NID_sha512) ||
      (ptype != V_ASN1_UNDEF && ptype != V_ASN1_NULL)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RSASSA-PSS with hash ", AlgorithmName(oid), " is not accepted"));
  }
  return DigestByNid(nid);
}

// An ASN1_TYPE SEQUENCE parameter as the span of its DER.
std::optional<absl::Span<const uint8_t>> SequenceParameter(const X509_ALGOR* alg) {
  int ptype = 0;
  const void* pval = nullptr;
  X509_ALGOR_get0(nullptr, &ptype, &pval, alg);
  if (ptype != V_ASN1_SEQUENCE || pval == nullptr) return std::nullopt;
  const auto* seq = static_cast<const ASN1_STRING*>(pval);
  return absl::Span<const uint8_t>(ASN1_STRING_get0_data(seq),
                                   static_cast<size_t>(ASN1_STRING_length(seq)));
}

struct PssScheme {
  const EVP_MD* md;
  PssParams params;
};

// RSASSA-PSS-params (RFC 4055 §3.1): hash SHA-256/384/512, MGF1 with the
// same hash, a salt length, the trailer field 1 (RFC 7427's own example
// encodes it explicitly, strongSwan omits it by default).
absl::StatusOr<PssScheme> ParsePssParameters(const X509_ALGOR& alg) {
  const std::optional<absl::Span<const uint8_t>> der = SequenceParameter(&alg);
  if (!der.has_value()) return absl::InvalidArgumentError("RSASSA-PSS without parameters");
  // The span is the whole SEQUENCE; an empty one (all defaults, SHA-1)
  // leaves every field null.
  PssParamsPtr params = DecodeExactly<PssParamsPtr>(*der, d2i_RSA_PSS_PARAMS);
  if (params == nullptr) return absl::InvalidArgumentError("RSASSA-PSS parameters do not parse");
  ASSIGN_OR_RETURN(const EVP_MD* md, PssHash(params->hashAlgorithm));
  if (params->maskGenAlgorithm == nullptr) {
    return absl::InvalidArgumentError("RSASSA-PSS with MGF1-SHA-1 is not accepted");
  }
  const ASN1_OBJECT* mgf = nullptr;
  X509_ALGOR_get0(&mgf, nullptr, nullptr, params->maskGenAlgorithm);
  if (OBJ_obj2nid(mgf) != NID_mgf1) {
    return absl::InvalidArgumentError(
        absl::StrCat("RSASSA-PSS with mask generation ", AlgorithmName(mgf), " is not accepted"));
  }
  const std::optional<absl::Span<const uint8_t>> mgf_der =
      SequenceParameter(params->maskGenAlgorithm);
  AlgorPtr mgf_hash_alg;
  if (mgf_der.has_value()) mgf_hash_alg = DecodeExactly<AlgorPtr>(*mgf_der, d2i_X509_ALGOR);
  if (mgf_hash_alg == nullptr) return absl::InvalidArgumentError("MGF1 parameters do not parse");
  ASSIGN_OR_RETURN(const EVP_MD* mgf_md, PssHash(mgf_hash_alg.get()));
  if (EVP_MD_get_type(mgf_md) != EVP_MD_get_type(md)) {
    return absl::InvalidArgumentError("RSASSA-PSS with an MGF1 hash other than the message hash");
  }
  int64_t salt = 20;  // The DEFAULT.
  if (params->saltLength != nullptr && ASN1_INTEGER_get_int64(&salt, params->saltLength) != 1) {
    salt = -1;
  }
  // Negative values mean "digest length", "auto" etc. to OpenSSL: never let
  // the peer pick those.
  if (salt < 0 || salt > 1024) {
    ERR_clear_error();
    return absl::InvalidArgumentError("RSASSA-PSS salt length out of range");
  }
  int64_t trailer = 1;
  if (params->trailerField != nullptr &&
      (ASN1_INTEGER_get_int64(&trailer, params->trailerField) != 1 || trailer != 1)) {
    ERR_clear_error();
    return absl::InvalidArgumentError("RSASSA-PSS trailer field is not 1");
  }
  return PssScheme{md, PssParams{mgf_md, static_cast<int>(salt)}};
}

// --- Identities ---

std::string IdentityText(uint8_t id_type, absl::Span<const uint8_t> value) {
  const absl::string_view raw(reinterpret_cast<const char*>(value.data()), value.size());
  char address[INET6_ADDRSTRLEN] = {0};
  switch (id_type) {
    case kIdIpv4Addr:
      if (value.size() == 4 && inet_ntop(AF_INET, value.data(), address, sizeof(address))) {
        return address;
      }
      break;
    case kIdIpv6Addr:
      if (value.size() == 16 && inet_ntop(AF_INET6, value.data(), address, sizeof(address))) {
        return address;
      }
      break;
    case kIdFqdn:
    case kIdRfc822Addr:
      return absl::StrCat("\"", absl::CHexEscape(raw), "\"");
    case kIdDerAsn1Dn:
      return absl::StrCat("\"", DistinguishedNameText(value), "\"");
  }
  return absl::StrCat("ID type ", id_type, " (", absl::BytesToHexString(raw), ")");
}

// Whether one of the certificate's subjectAltNames of `gen_type` matches.
bool HasAltName(const X509* cert, int gen_type, absl::Span<const uint8_t> value, bool ignore_case) {
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  ERR_clear_error();
  if (names == nullptr) return false;
  const absl::string_view wanted(reinterpret_cast<const char*>(value.data()), value.size());
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    int type = 0;
    const auto* data = static_cast<const ASN1_STRING*>(
        GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names.get(), i), &type));
    if (type != gen_type || data == nullptr) continue;
    const absl::string_view have(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                                 static_cast<size_t>(ASN1_STRING_length(data)));
    if (ignore_case ? absl::EqualsIgnoreCase(have, wanted) : have == wanted) return true;
  }
  return false;
}

// SubjectAltNames only: a CN that looks like a host name vouches for nothing
// (as in RFC 6125 §6.4.4 when SANs exist, and always here, for simplicity).
absl::Status CheckCertIdentity(const X509* cert, uint8_t id_type, absl::Span<const uint8_t> value) {
  bool vouched = false;
  switch (id_type) {
    case kIdIpv4Addr:
    case kIdIpv6Addr:
      if (value.size() != (id_type == kIdIpv4Addr ? 4u : 16u)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ID type ", id_type, " with ", value.size(), " bytes"));
      }
      vouched = HasAltName(cert, GEN_IPADD, value, /*ignore_case=*/false);
      break;
    case kIdFqdn:
      vouched = HasAltName(cert, GEN_DNS, value, /*ignore_case=*/true);
      break;
    case kIdRfc822Addr:
      vouched = HasAltName(cert, GEN_EMAIL, value, /*ignore_case=*/true);
      break;
    case kIdDerAsn1Dn: {
      NamePtr name = DecodeExactly<NamePtr>(value, d2i_X509_NAME);
      if (name == nullptr) return absl::InvalidArgumentError("ID_DER_ASN1_DN does not parse");
      vouched = X509_NAME_cmp(name.get(), X509_get_subject_name(cert)) == 0;
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("ID type ", id_type, " cannot be checked against a certificate"));
  }
  if (vouched) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("certificate \"", NameText(X509_get_subject_name(cert)),
                   "\" does not vouch for ", IdentityText(id_type, value)));
}

// --- LocalCredentials ---

// Reads the key file without leaving copies of it in memory: one buffer of
// the maximum size, filled in place. The mode is checked on the open file
// descriptor, so the file checked is the file read.
absl::StatusOr<Secret> ReadKeyFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, absl::StrCat("stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrFormat("private key file %s has mode %04o; want 0600 (no access for group or "
                        "others)",
                        path, st.st_mode & 07777));
  }
  std::string buffer(kMaxKeyFileSize + 1, '\0');
  size_t used = 0;
  while (used < buffer.size()) {
    const ssize_t n = ::read(fd, buffer.data() + used, buffer.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      WipeString(&buffer);
      return ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  if (used > kMaxKeyFileSize) {
    WipeString(&buffer);
    return absl::InvalidArgumentError(absl::StrCat(path, " is too large for a private key"));
  }
  OPENSSL_cleanse(buffer.data() + used, buffer.size() - used);
  buffer.resize(used);  // Shrinking keeps the buffer: no copy.
  return Secret(std::move(buffer));
}

int RefusePassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

absl::StatusOr<PkeyPtr> ReadPrivateKey(const Secret& key_pem) {
  ASSIGN_OR_RETURN(BioPtr bio, MemoryBio(key_pem.view()));
  ERR_clear_error();
  // The callback refuses to ask for a passphrase: the default one would
  // prompt on the terminal.
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, RefusePassphrase, nullptr));
  if (key != nullptr) {
    ERR_clear_error();
    return key;
  }
  const std::string reason = OpenSslReason();
  if (absl::StrContains(key_pem.view(), "ENCRYPTED")) {
    return absl::InvalidArgumentError("private key is encrypted; passphrases are not supported");
  }
  return absl::InvalidArgumentError(absl::StrCat("private key does not parse: ", reason));
}

class LocalCredentialsImpl final : public LocalCredentials {
 public:
  LocalCredentialsImpl(std::vector<X509Ptr> chain, std::vector<Bytes> chain_der, PkeyPtr key,
                       KeyType key_type, Bytes subject_der)
      : chain_(std::move(chain)),
        chain_der_(std::move(chain_der)),
        key_(std::move(key)),
        key_type_(key_type),
        subject_der_(std::move(subject_der)) {}

  // LocalCredentials
  const std::vector<Bytes>& chain_der() const override { return chain_der_; }
  Bytes subject_der() const override { return subject_der_; }
  std::string subject_text() const override {
    return NameText(X509_get_subject_name(chain_.front().get()));
  }
  absl::Status CheckIdentity(uint8_t id_type, absl::Span<const uint8_t> value) const override {
    return CheckCertIdentity(chain_.front().get(), id_type, value);
  }
  absl::StatusOr<AuthSignature> Sign(absl::Span<const uint8_t> signed_octets,
                                     absl::Span<const uint16_t> peer_hashes) const override;

 private:
  std::vector<X509Ptr> chain_;
  std::vector<Bytes> chain_der_;
  PkeyPtr key_;
  KeyType key_type_;
  Bytes subject_der_;
};

absl::StatusOr<AuthSignature> LocalCredentialsImpl::Sign(
    absl::Span<const uint8_t> signed_octets, absl::Span<const uint16_t> peer_hashes) const {
  AuthSignature auth;
  // A peer that sent SIGNATURE_HASH_ALGORITHMS without a hash we have gets
  // the classic method, which RFC 7427 leaves allowed.
  const std::optional<uint16_t> hash_id = ChooseHash(key_type_, peer_hashes);
  if (!hash_id.has_value()) {
    auth.method = ClassicMethod(key_type_);
    if (key_type_ == KeyType::kRsa) {
      // RFC 7296 §3.8 names no hash; SHA-1 is the de facto one for method
      // 1, and the one strongSwan signs and verifies it with.
      ASSIGN_OR_RETURN(auth.data, DigestSign(key_.get(), EVP_sha1(), signed_octets));
      return auth;
    }
    const SignatureHash& hash = HashById(NaturalHash(key_type_));
    ASSIGN_OR_RETURN(Bytes der,
                     DigestSign(key_.get(), DigestByNid(hash.digest_nid), signed_octets));
    ASSIGN_OR_RETURN(auth.data, EcdsaDerToFixed(der, CoordinateSize(key_type_)));
    return auth;
  }
  const SignatureHash& hash = HashById(*hash_id);
  const bool rsa = key_type_ == KeyType::kRsa;
  ASSIGN_OR_RETURN(Bytes algorithm,
                   EncodeAlgorithmIdentifier(rsa ? hash.rsa_nid : hash.ecdsa_nid, rsa));
  ASSIGN_OR_RETURN(Bytes signature,
                   DigestSign(key_.get(), DigestByNid(hash.digest_nid), signed_octets));
  auth.method = kAuthDigitalSignature;
  auth.data.reserve(1 + algorithm.size() + signature.size());
  auth.data.push_back(static_cast<uint8_t>(algorithm.size()));
  auth.data.insert(auth.data.end(), algorithm.begin(), algorithm.end());
  auth.data.insert(auth.data.end(), signature.begin(), signature.end());
  return auth;
}

// --- PeerCertificate ---

class PeerCertificateImpl final : public PeerCertificate {
 public:
  explicit PeerCertificateImpl(X509Ptr cert) : cert_(std::move(cert)) {}

  // PeerCertificate
  absl::Status CheckIdentity(uint8_t id_type, absl::Span<const uint8_t> value) const override {
    return CheckCertIdentity(cert_.get(), id_type, value);
  }
  absl::Status VerifyAuth(uint8_t method, absl::Span<const uint8_t> data,
                          absl::Span<const uint8_t> signed_octets) const override;
  std::string subject_text() const override { return NameText(X509_get_subject_name(cert_.get())); }

 private:
  absl::Status VerifyDigitalSignature(EVP_PKEY* key, KeyType key_type,
                                      absl::Span<const uint8_t> data,
                                      absl::Span<const uint8_t> signed_octets) const;

  X509Ptr cert_;
};

absl::Status PeerCertificateImpl::VerifyAuth(uint8_t method, absl::Span<const uint8_t> data,
                                             absl::Span<const uint8_t> signed_octets) const {
  EVP_PKEY* key = X509_get0_pubkey(cert_.get());
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("peer certificate key does not parse: ", OpenSslReason()));
  }
  ASSIGN_OR_RETURN(const KeyType key_type, ClassifyKey(key));
  if (method == kAuthDigitalSignature) {
    return VerifyDigitalSignature(key, key_type, data, signed_octets);
  }
  if (method != kAuthRsaSignature && method != kAuthEcdsaSha256P256 &&
      method != kAuthEcdsaSha384P384 && method != kAuthEcdsaSha512P521) {
    return absl::InvalidArgumentError(
        absl::StrCat("AUTH method ", method, " is not a certificate signature"));
  }
  if (method != ClassicMethod(key_type)) {
    return absl::InvalidArgumentError(absl::StrCat("AUTH method ", method, " does not fit the ",
                                                   KeyTypeName(key_type), " key of \"",
                                                   subject_text(), "\""));
  }
  if (key_type == KeyType::kRsa) {
    return DigestVerify(key, EVP_sha1(), std::nullopt, data, signed_octets);
  }
  if (data.size() != 2 * CoordinateSize(key_type)) {
    return absl::InvalidArgumentError(absl::StrCat("AUTH method ", method, " with ", data.size(),
                                                   " bytes; want ", 2 * CoordinateSize(key_type)));
  }
  ASSIGN_OR_RETURN(Bytes der, EcdsaFixedToDer(data));
  const SignatureHash& hash = HashById(NaturalHash(key_type));
  return DigestVerify(key, DigestByNid(hash.digest_nid), std::nullopt, der, signed_octets);
}

// RFC 7427 §3: length of the AlgorithmIdentifier, its DER, the signature.
absl::Status PeerCertificateImpl::VerifyDigitalSignature(
    EVP_PKEY* key, KeyType key_type, absl::Span<const uint8_t> data,
    absl::Span<const uint8_t> signed_octets) const {
  if (data.empty() || data[0] == 0 || data.size() <= 1u + data[0]) {
    return absl::InvalidArgumentError("AUTH data too short for RFC 7427");
  }
  const absl::Span<const uint8_t> algorithm = data.subspan(1, data[0]);
  const absl::Span<const uint8_t> signature = data.subspan(1 + data[0]);
  AlgorPtr alg = DecodeExactly<AlgorPtr>(algorithm, d2i_X509_ALGOR);
  if (alg == nullptr) {
    return absl::InvalidArgumentError("RFC 7427 AlgorithmIdentifier does not parse");
  }
  const ASN1_OBJECT* oid = nullptr;
  int ptype = 0;
  X509_ALGOR_get0(&oid, &ptype, nullptr, alg.get());
  const int nid = OBJ_obj2nid(oid);
  const bool rsa_key = key_type == KeyType::kRsa;
  auto mismatch = [&] {
    return absl::InvalidArgumentError(absl::StrCat("signature algorithm ", AlgorithmName(oid),
                                                   " does not fit the ", KeyTypeName(key_type),
                                                   " key of \"", subject_text(), "\""));
  };
  if (nid == NID_rsassaPss) {
    if (!rsa_key) return mismatch();
    ASSIGN_OR_RETURN(const PssScheme pss, ParsePssParameters(*alg));
    return DigestVerify(key, pss.md, pss.params, signature, signed_octets);
  }
  for (const SignatureHash& hash : kSignatureHashes) {
    if (nid != hash.ecdsa_nid && nid != hash.rsa_nid) continue;
    if ((nid == hash.rsa_nid) != rsa_key) return mismatch();
    // Absent and NULL parameters both occur (RFC 4055 §5 asks verifiers to
    // accept both for RSA); anything else is not these algorithms.
    if (ptype != V_ASN1_UNDEF && ptype != V_ASN1_NULL) {
      return absl::InvalidArgumentError(
          absl::StrCat("signature algorithm ", AlgorithmName(oid), " with parameters"));
    }
    return DigestVerify(key, DigestByNid(hash.digest_nid), std::nullopt, signature, signed_octets);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("signature algorithm ", AlgorithmName(oid), " is not accepted"));
}

// --- TrustAnchors ---

class TrustAnchorsImpl final : public TrustAnchors {
 public:
  TrustAnchorsImpl(StorePtr store, Bytes certreq_data)
      : store_(std::move(store)), certreq_data_(std::move(certreq_data)) {}

  // TrustAnchors
  Bytes certreq_data() const override { return certreq_data_; }
  absl::StatusOr<std::unique_ptr<PeerCertificate>> Verify(const std::vector<Bytes>& chain_der,
                                                          absl::Time now) const override;

 private:
  StorePtr store_;  // Read only after construction; OpenSSL locks its lookups.
  Bytes certreq_data_;
};

absl::StatusOr<std::unique_ptr<PeerCertificate>> TrustAnchorsImpl::Verify(
    const std::vector<Bytes>& chain_der, absl::Time now) const {
  if (chain_der.empty()) return absl::InvalidArgumentError("peer sent no certificate");
  if (chain_der.size() > kMaxPeerChainLength) {
    return absl::InvalidArgumentError(absl::StrCat("peer sent ", chain_der.size(),
                                                   " certificates; at most ", kMaxPeerChainLength,
                                                   " are accepted"));
  }
  std::vector<X509Ptr> certs;
  for (size_t i = 0; i < chain_der.size(); ++i) {
    X509Ptr cert = DecodeExactly<X509Ptr>(chain_der[i], d2i_X509);
    if (cert == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("CERT payload ", i + 1, " does not parse"));
    }
    certs.push_back(std::move(cert));
  }
  X509StackPtr untrusted(sk_X509_new_null());
  if (untrusted == nullptr) return OpenSslError("sk_X509_new_null");
  for (size_t i = 1; i < certs.size(); ++i) {
    if (sk_X509_push(untrusted.get(), certs[i].get()) <= 0) return OpenSslError("sk_X509_push");
    static_cast<void>(certs[i].release());  // Owned by the stack now.
  }
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (ctx == nullptr ||
      X509_STORE_CTX_init(ctx.get(), store_.get(), certs[0].get(), untrusted.get()) != 1) {
    return OpenSslError("X509_STORE_CTX_init");
  }
  // Standard RFC 5280 path validation at the injected time. No purpose is
  // set, so no extendedKeyUsage is required (IKE peers' certificates often
  // carry none, or only serverAuth). PARTIAL_CHAIN lets an intermediate CA
  // configured as an anchor be one, as strongSwan's cacerts do.
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, absl::ToTimeT(now));
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
  const int ok = X509_verify_cert(ctx.get());
  ERR_clear_error();
  if (ok != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    const X509* failing = X509_STORE_CTX_get_current_cert(ctx.get());
    return absl::UnauthenticatedError(absl::StrCat(
        "certificate \"", NameText(X509_get_subject_name(certs[0].get())), "\" does not verify: ",
        X509_verify_cert_error_string(error), " (depth ", X509_STORE_CTX_get_error_depth(ctx.get()),
        ", \"", failing != nullptr ? NameText(X509_get_subject_name(failing)) : "?", "\")"));
  }
  return std::unique_ptr<PeerCertificate>(new PeerCertificateImpl(std::move(certs[0])));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const LocalCredentials>> LocalCredentials::FromPem(
    std::string_view chain_pem, const Secret& key_pem) {
  ASSIGN_OR_RETURN(std::vector<X509Ptr> chain,
                   ReadPemCertificates(ToAbsl(chain_pem), "certificate chain"));
  std::vector<Bytes> chain_der;
  for (const X509Ptr& cert : chain) {
    ASSIGN_OR_RETURN(Bytes der, ToDer(cert.get(), i2d_X509, "certificate"));
    chain_der.push_back(std::move(der));
  }
  ASSIGN_OR_RETURN(PkeyPtr key, ReadPrivateKey(key_pem));
  ASSIGN_OR_RETURN(const KeyType key_type, ClassifyKey(key.get()));
  const X509* leaf = chain.front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("private key does not belong to certificate \"",
                                                   NameText(X509_get_subject_name(leaf)), "\""));
  }
  ASSIGN_OR_RETURN(Bytes subject, ToDer(X509_get_subject_name(leaf), i2d_X509_NAME, "subject"));
  return std::shared_ptr<const LocalCredentials>(new LocalCredentialsImpl(
      std::move(chain), std::move(chain_der), std::move(key), key_type, std::move(subject)));
}

absl::StatusOr<std::shared_ptr<const LocalCredentials>> LocalCredentials::FromFiles(
    const std::string& chain_path, const std::string& key_path) {
  ASSIGN_OR_RETURN(const std::string chain_pem, ReadFile(chain_path));
  ASSIGN_OR_RETURN(const Secret key_pem, ReadKeyFile(key_path));
  absl::StatusOr<std::shared_ptr<const LocalCredentials>> credentials = FromPem(chain_pem, key_pem);
  if (!credentials.ok()) {
    return absl::Status(credentials.status().code(), absl::StrCat(chain_path, ", ", key_path, ": ",
                                                                  credentials.status().message()));
  }
  return credentials;
}

absl::StatusOr<std::shared_ptr<const TrustAnchors>> TrustAnchors::FromPem(std::string_view ca_pem) {
  ASSIGN_OR_RETURN(std::vector<X509Ptr> anchors,
                   ReadPemCertificates(ToAbsl(ca_pem), "CA certificates"));
  StorePtr store(X509_STORE_new());
  if (store == nullptr) return OpenSslError("X509_STORE_new");
  Bytes certreq_data;
  for (const X509Ptr& anchor : anchors) {
    // X509_STORE_add_cert takes its own reference.
    if (X509_STORE_add_cert(store.get(), anchor.get()) != 1) {
      return OpenSslError("X509_STORE_add_cert");
    }
    ASSIGN_OR_RETURN(Bytes spki,
                     ToDer(X509_get_X509_PUBKEY(anchor.get()), i2d_X509_PUBKEY, "public key"));
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1(spki.data(), spki.size(), digest);
    certreq_data.insert(certreq_data.end(), digest, digest + sizeof(digest));
  }
  return std::shared_ptr<const TrustAnchors>(
      new TrustAnchorsImpl(std::move(store), std::move(certreq_data)));
}

absl::StatusOr<Bytes> ParseDistinguishedName(std::string_view text) {
  struct Attribute {
    absl::string_view name;
    int nid;
  };
  static constexpr Attribute kAttributes[] = {
      {"C", NID_countryName},
      {"ST", NID_stateOrProvinceName},
      {"L", NID_localityName},
      {"O", NID_organizationName},
      {"OU", NID_organizationalUnitName},
      {"CN", NID_commonName},
      {"E", NID_pkcs9_emailAddress},
      {"emailAddress", NID_pkcs9_emailAddress},
      {"DC", NID_domainComponent},
      {"serialNumber", NID_serialNumber},
  };
  absl::string_view rest = absl::StripAsciiWhitespace(ToAbsl(text));
  char separator = ',';
  if (absl::ConsumePrefix(&rest, "/")) separator = '/';
  if (rest.empty()) return absl::InvalidArgumentError("empty distinguished name");
  NamePtr name(X509_NAME_new());
  if (name == nullptr) return OpenSslError("X509_NAME_new");
  // Attributes split at unescaped separators; "\," (or "\/") keeps one in
  // a value, "\\" a backslash.
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '\\' && i + 1 < rest.size()) {
      parts.back().push_back(rest[++i]);
    } else if (rest[i] == separator) {
      parts.emplace_back();
    } else {
      parts.back().push_back(rest[i]);
    }
  }
  for (const std::string& part : parts) {
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", absl::CHexEscape(part), "\" in a DN is not attribute=value"));
    }
    const absl::string_view type =
        absl::StripAsciiWhitespace(absl::string_view(part).substr(0, eq));
    const absl::string_view value =
        absl::StripAsciiWhitespace(absl::string_view(part).substr(eq + 1));
    const Attribute* attribute = nullptr;
    for (const Attribute& a : kAttributes) {
      if (absl::EqualsIgnoreCase(a.name, type)) attribute = &a;
    }
    if (attribute == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown DN attribute \"", absl::CHexEscape(type), "\""));
    }
    if (value.empty() || value.size() > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("empty value for DN attribute ", type));
    }
    if (X509_NAME_add_entry_by_NID(name.get(), attribute->nid, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for DN attribute ", type, ": ", OpenSslReason()));
    }
  }
  return ToDer(name.get(), i2d_X509_NAME, "distinguished name");
}

bool SameDistinguishedName(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b) {
  NamePtr name_a = DecodeExactly<NamePtr>(a, d2i_X509_NAME);
  NamePtr name_b = DecodeExactly<NamePtr>(b, d2i_X509_NAME);
  if (name_a == nullptr || name_b == nullptr) return false;
  return X509_NAME_cmp(name_a.get(), name_b.get()) == 0;
}

std::string DistinguishedNameText(absl::Span<const uint8_t> der) {
  NamePtr name = DecodeExactly<NamePtr>(der, d2i_X509_NAME);
  if (name == nullptr) return "<invalid DN>";
  return NameText(name.get());
}

}  // namespace strait::ike
