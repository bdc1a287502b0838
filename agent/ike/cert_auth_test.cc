#include "agent/ike/cert_auth.h"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/secret.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// --- OpenSSL plumbing for building a test PKI ---

template <auto kFree>
struct Free {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Free<BIO_free>>;
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Free<X509_NAME_free>>;
using AlgorPtr = std::unique_ptr<X509_ALGOR, Free<X509_ALGOR_free>>;
using PssParamsPtr = std::unique_ptr<RSA_PSS_PARAMS, Free<RSA_PSS_PARAMS_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Free<EVP_MD_CTX_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Free<EVP_PKEY_CTX_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Free<ECDSA_SIG_free>>;

// The verification time of every test; certificates are valid from a day
// before it for 30 days.
absl::Time Now() {
  return absl::FromCivil(absl::CivilSecond(2030, 3, 1, 12, 0, 0), absl::UTCTimeZone());
}

Bytes HexBytes(absl::string_view hex) {
  const std::string s = absl::HexStringToBytes(hex);
  return Bytes(s.begin(), s.end());
}
std::string ToHex(absl::Span<const uint8_t> b) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}
Bytes Concat(std::initializer_list<absl::Span<const uint8_t>> parts) {
  Bytes out;
  for (absl::Span<const uint8_t> p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes ToBytes(absl::string_view s) { return Bytes(s.begin(), s.end()); }

std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

template <typename T, typename Encoder>
Bytes Der(const T* object, Encoder encode) {
  unsigned char* der = nullptr;
  const int len = encode(object, &der);
  EXPECT_GT(len, 0);
  Bytes out(der, der + std::max(len, 0));
  OPENSSL_free(der);
  return out;
}

// `type` "P-256", "P-384", "P-521", "secp256k1", "RSA", "ED25519".
PkeyPtr GenerateKey(const std::string& type) {
  EVP_PKEY* key = nullptr;
  if (type == "RSA") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  } else if (type == "ED25519") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", type.c_str());
  }
  EXPECT_NE(key, nullptr) << type;
  return PkeyPtr(key);
}

// Keys are generated once per test binary (RSA takes a while).
EVP_PKEY* Key(const std::string& name, const std::string& type) {
  static auto* keys = new std::map<std::string, PkeyPtr>();
  PkeyPtr& key = (*keys)[name];
  if (key == nullptr) key = GenerateKey(type);
  return key.get();
}
EVP_PKEY* RootKey() { return Key("root", "P-256"); }
EVP_PKEY* IntermediateKey() { return Key("intermediate", "P-384"); }
EVP_PKEY* RogueKey() { return Key("rogue", "P-256"); }
EVP_PKEY* LeafKey(const std::string& type) { return Key("leaf-" + type, type); }

// A name from (attribute, value) pairs in order; `type` is MBSTRING_UTF8 or
// a raw string type such as V_ASN1_PRINTABLESTRING.
NamePtr Name(std::initializer_list<std::pair<const char*, const char*>> entries,
             int cn_type = MBSTRING_UTF8) {
  NamePtr name(X509_NAME_new());
  for (const auto& [field, value] : entries) {
    const int type = std::string(field) == "CN" ? cn_type : MBSTRING_UTF8;
    EXPECT_EQ(X509_NAME_add_entry_by_txt(name.get(), field, type,
                                         reinterpret_cast<const unsigned char*>(value), -1, -1, 0),
              1)
        << field;
  }
  return name;
}

NamePtr MoonName(int cn_type = MBSTRING_UTF8) {
  return Name({{"C", "CH"}, {"O", "Strait Test"}, {"CN", "moon.strait.test"}}, cn_type);
}

struct CertSpec {
  NamePtr subject;
  bool ca = false;
  // subjectAltName in openssl.cnf syntax ("DNS:x,IP:1.2.3.4"); empty: none.
  std::string alt_names;
  std::string extended_key_usage;  // Empty: none.
  absl::Time not_before = Now() - absl::Hours(24);
  absl::Time not_after = Now() + absl::Hours(24 * 30);
};

void AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  ASSERT_NE(ext, nullptr) << value;
  EXPECT_EQ(X509_add_ext(cert, ext, -1), 1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key` from `issuer` (self-signed when null).
X509Ptr MakeCert(const CertSpec& spec, EVP_PKEY* key, const X509* issuer, EVP_PKEY* issuer_key) {
  static long serial = 1;
  X509Ptr cert(X509_new());
  EXPECT_EQ(X509_set_version(cert.get(), X509_VERSION_3), 1);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_set_subject_name(cert.get(), spec.subject.get());
  X509_set_issuer_name(cert.get(),
                       issuer != nullptr ? X509_get_subject_name(issuer) : spec.subject.get());
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(spec.not_before));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(spec.not_after));
  X509_set_pubkey(cert.get(), key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? const_cast<X509*>(issuer) : cert.get(), cert.get(),
                 nullptr, nullptr, 0);
  if (spec.ca) {
    AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  }
  if (!spec.alt_names.empty()) {
    AddExtension(cert.get(), &ctx, NID_subject_alt_name, spec.alt_names);
  }
  if (!spec.extended_key_usage.empty()) {
    AddExtension(cert.get(), &ctx, NID_ext_key_usage, spec.extended_key_usage);
  }
  EXPECT_GT(X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()), 0);
  return cert;
}

const X509* Root() {
  static X509* root =
      MakeCert({Name({{"C", "CH"}, {"O", "Strait Test"}, {"CN", "Strait Test Root CA"}}), true},
               RootKey(), nullptr, nullptr)
          .release();
  return root;
}
const X509* Intermediate() {
  static X509* intermediate =
      MakeCert(
          {Name({{"C", "CH"}, {"O", "Strait Test"}, {"CN", "Strait Test Intermediate CA"}}), true},
          IntermediateKey(), Root(), RootKey())
          .release();
  return intermediate;
}
const X509* Rogue() {
  static X509* rogue =
      MakeCert({Name({{"CN", "Rogue CA"}}), true}, RogueKey(), nullptr, nullptr).release();
  return rogue;
}

constexpr char kMoonAltNames[] =
    "DNS:moon.strait.test,IP:10.99.0.1,IP:2001:db8::1,email:moon@strait.test";

// A leaf for "moon" with `key_type`'s key, issued by the root.
X509Ptr MoonCert(const std::string& key_type, int cn_type = MBSTRING_UTF8) {
  return MakeCert({MoonName(cn_type), false, kMoonAltNames}, LeafKey(key_type), Root(), RootKey());
}

std::string CertPem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_X509(bio.get(), cert), 1);
  return BioText(bio.get());
}
Secret KeyPem(const EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return Secret(BioText(bio.get()));
}
Secret TraditionalKeyPem(const EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(
      PEM_write_bio_PrivateKey_traditional(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr),
      1);
  return Secret(BioText(bio.get()));
}

std::shared_ptr<const LocalCredentials> Credentials(const std::vector<const X509*>& chain,
                                                    const EVP_PKEY* key) {
  std::string pem;
  for (const X509* cert : chain) pem += CertPem(cert);
  auto credentials = LocalCredentials::FromPem(pem, KeyPem(key));
  EXPECT_TRUE(credentials.ok()) << credentials.status();
  return credentials.ok() ? *credentials : nullptr;
}

std::shared_ptr<const TrustAnchors> Anchors(const std::vector<const X509*>& cas) {
  std::string pem;
  for (const X509* cert : cas) pem += CertPem(cert);
  auto anchors = TrustAnchors::FromPem(pem);
  EXPECT_TRUE(anchors.ok()) << anchors.status();
  return anchors.ok() ? *anchors : nullptr;
}

// The peer's view of `credentials`: their chain verified to the root.
std::unique_ptr<PeerCertificate> PeerOf(const LocalCredentials& credentials) {
  auto peer = Anchors({Root()})->Verify(credentials.chain_der(), Now());
  EXPECT_TRUE(peer.ok()) << peer.status();
  return peer.ok() ? std::move(peer).value() : nullptr;
}

const Bytes& SignedOctets() {
  static const Bytes* octets = new Bytes(ToBytes("RealMessage1 | Nr | prf(SK_pi, IDi')"));
  return *octets;
}

// --- RFC 7427 Appendix A: the AlgorithmIdentifier encodings ---

// A.1: PKCS#1 v1.5 (parameters NULL).
constexpr char kSha1WithRsa[] = "300d06092a864886f70d0101050500";
constexpr char kSha256WithRsa[] = "300d06092a864886f70d01010b0500";
constexpr char kSha384WithRsa[] = "300d06092a864886f70d01010c0500";
constexpr char kSha512WithRsa[] = "300d06092a864886f70d01010d0500";
// A.3: ECDSA (parameters absent).
constexpr char kEcdsaWithSha1[] = "300906072a8648ce3d0401";
constexpr char kEcdsaWithSha256[] = "300a06082a8648ce3d040302";
constexpr char kEcdsaWithSha384[] = "300a06082a8648ce3d040303";
constexpr char kEcdsaWithSha512[] = "300a06082a8648ce3d040304";
// A.4: RSASSA-PSS with empty parameters (all defaults: SHA-1), with the
// default parameters written out, and with SHA-256 (MGF1-SHA-256, salt 32,
// trailerField 1 written out).
constexpr char kPssEmpty[] = "300d06092a864886f70d01010a3000";
constexpr char kPssDefault[] =
    "303e06092a864886f70d01010a3031a00b300906052b0e03021a0500a118301606092a864886f70d010108300906"
    "052b0e03021a0500a203020114a303020101";
constexpr char kPssSha256[] =
    "304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a864886f70d0101"
    "08300d06096086480165030402010500a203020120a303020101";

// RFC 7427 AUTH data: length, AlgorithmIdentifier, signature.
Bytes DigitalSignatureData(absl::string_view algorithm_hex, absl::Span<const uint8_t> signature) {
  const Bytes algorithm = HexBytes(algorithm_hex);
  return Concat({Bytes{static_cast<uint8_t>(algorithm.size())}, algorithm, signature});
}

// The AlgorithmIdentifier in RFC 7427 AUTH data, as hex.
std::string AlgorithmHex(const Bytes& data) {
  if (data.empty() || data.size() < 1u + data[0]) return "<short>";
  return ToHex(absl::MakeConstSpan(data).subspan(1, data[0]));
}

// A signature made with OpenSSL directly, independent of Sign().
// With `pss_salt`, RSASSA-PSS with MGF1 over `md`.
Bytes ReferenceSign(EVP_PKEY* key, const EVP_MD* md, absl::Span<const uint8_t> data,
                    std::optional<int> pss_salt = std::nullopt) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  EXPECT_EQ(EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, key), 1);
  if (pss_salt.has_value()) {
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, *pss_salt), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md), 1);
  }
  size_t len = 0;
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, data.data(), data.size()), 1);
  Bytes sig(len);
  EXPECT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, data.data(), data.size()), 1);
  sig.resize(len);
  return sig;
}

// An RSASSA-PSS AlgorithmIdentifier built with OpenSSL's ASN.1 types.
Bytes PssAlgorithm(const EVP_MD* md, const EVP_MD* mgf1_md, int salt) {
  PssParamsPtr params(RSA_PSS_PARAMS_new());
  params->hashAlgorithm = X509_ALGOR_new();
  X509_ALGOR_set_md(params->hashAlgorithm, md);
  AlgorPtr mgf1_hash(X509_ALGOR_new());
  X509_ALGOR_set_md(mgf1_hash.get(), mgf1_md);
  params->maskGenAlgorithm = X509_ALGOR_new();
  X509_ALGOR_set0(params->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE,
                  ASN1_item_pack(mgf1_hash.get(), ASN1_ITEM_rptr(X509_ALGOR), nullptr));
  params->saltLength = ASN1_INTEGER_new();
  ASN1_INTEGER_set(params->saltLength, salt);
  AlgorPtr alg(X509_ALGOR_new());
  X509_ALGOR_set0(alg.get(), OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE,
                  ASN1_item_pack(params.get(), ASN1_ITEM_rptr(RSA_PSS_PARAMS), nullptr));
  return Der(alg.get(), i2d_X509_ALGOR);
}

TEST(Rfc7427AppendixATest, EcdsaAlgorithmIdentifierPerCurve) {
  const std::vector<uint16_t> all = {kHashSha256, kHashSha384, kHashSha512};
  const struct {
    const char* curve;
    const char* algorithm;
  } cases[] = {
      {"P-256", kEcdsaWithSha256},
      {"P-384", kEcdsaWithSha384},
      {"P-521", kEcdsaWithSha512},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.curve);
    auto credentials = Credentials({MoonCert(c.curve).get()}, LeafKey(c.curve));
    auto auth = credentials->Sign(SignedOctets(), all);
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(auth->method, kAuthDigitalSignature);
    EXPECT_EQ(AlgorithmHex(auth->data), c.algorithm);
    EXPECT_EQ(auth->data[0], 12);
    EXPECT_TRUE(PeerOf(*credentials)->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
  }
}

TEST(Rfc7427AppendixATest, RsaAlgorithmIdentifierPerHash) {
  auto credentials = Credentials({MoonCert("RSA").get()}, LeafKey("RSA"));
  auto peer = PeerOf(*credentials);
  const struct {
    uint16_t hash;
    const char* algorithm;
  } cases[] = {
      {kHashSha256, kSha256WithRsa},
      {kHashSha384, kSha384WithRsa},
      {kHashSha512, kSha512WithRsa},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.algorithm);
    auto auth = credentials->Sign(SignedOctets(), {c.hash});
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(auth->method, kAuthDigitalSignature);
    EXPECT_EQ(AlgorithmHex(auth->data), c.algorithm);
    EXPECT_EQ(auth->data.size(), 1 + 15 + 256u);
    EXPECT_TRUE(peer->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
  }
}

TEST(Rfc7427AppendixATest, AcceptsPssWithSha256AsWritten) {
  auto credentials = Credentials({MoonCert("RSA").get()}, LeafKey("RSA"));
  auto peer = PeerOf(*credentials);
  const Bytes signature = ReferenceSign(LeafKey("RSA"), EVP_sha256(), SignedOctets(), 32);
  EXPECT_TRUE(peer->VerifyAuth(kAuthDigitalSignature, DigitalSignatureData(kPssSha256, signature),
                               SignedOctets())
                  .ok());
  // The same signature under a PKCS#1 v1.5 identifier does not verify.
  EXPECT_EQ(peer->VerifyAuth(kAuthDigitalSignature, DigitalSignatureData(kSha256WithRsa, signature),
                             SignedOctets())
                .code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(Rfc7427AppendixATest, RefusesSha1Schemes) {
  auto rsa = PeerOf(*Credentials({MoonCert("RSA").get()}, LeafKey("RSA")));
  auto ecdsa = PeerOf(*Credentials({MoonCert("P-256").get()}, LeafKey("P-256")));
  const Bytes rsa_sha1 = ReferenceSign(LeafKey("RSA"), EVP_sha1(), SignedOctets());
  const Bytes pss_sha1 = ReferenceSign(LeafKey("RSA"), EVP_sha1(), SignedOctets(), 20);
  const Bytes ecdsa_sha1 = ReferenceSign(LeafKey("P-256"), EVP_sha1(), SignedOctets());
  for (const char* algorithm : {kSha1WithRsa, kPssEmpty, kPssDefault}) {
    SCOPED_TRACE(algorithm);
    const Bytes& sig = algorithm == kSha1WithRsa ? rsa_sha1 : pss_sha1;
    const absl::Status status = rsa->VerifyAuth(
        kAuthDigitalSignature, DigitalSignatureData(algorithm, sig), SignedOctets());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
  const absl::Status status = ecdsa->VerifyAuth(
      kAuthDigitalSignature, DigitalSignatureData(kEcdsaWithSha1, ecdsa_sha1), SignedOctets());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(Message(status), HasSubstr("ecdsa-with-SHA1"));
}

// --- Sign / VerifyAuth ---

struct KeyCase {
  const char* key_type;
  uint8_t classic_method;
  size_t classic_size;  // r|s for ECDSA, the modulus for RSA.
  const EVP_MD* (*classic_md)();
};

void PrintTo(const KeyCase& c, std::ostream* os) { *os << c.key_type; }

class SignatureTest : public ::testing::TestWithParam<KeyCase> {
 protected:
  void SetUp() override {
    cert_ = MoonCert(GetParam().key_type);
    credentials_ = Credentials({cert_.get()}, key());
    peer_ = PeerOf(*credentials_);
    ASSERT_NE(peer_, nullptr);
  }
  EVP_PKEY* key() const { return LeafKey(GetParam().key_type); }

  X509Ptr cert_;
  std::shared_ptr<const LocalCredentials> credentials_;
  std::unique_ptr<PeerCertificate> peer_;
};

// Tampering with the signed octets or the signature fails verification.
void ExpectTamperingFails(const PeerCertificate& peer, const AuthSignature& auth) {
  Bytes octets = SignedOctets();
  octets[5] ^= 0x01;
  EXPECT_EQ(peer.VerifyAuth(auth.method, auth.data, octets).code(),
            absl::StatusCode::kUnauthenticated);
  Bytes data = auth.data;
  data.back() ^= 0x01;
  EXPECT_EQ(peer.VerifyAuth(auth.method, data, SignedOctets()).code(),
            absl::StatusCode::kUnauthenticated);
  data = auth.data;
  data[data.size() / 2 + 8] ^= 0x80;
  EXPECT_EQ(peer.VerifyAuth(auth.method, data, SignedOctets()).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_P(SignatureTest, ClassicMethodWithoutPeerHashes) {
  auto auth = credentials_->Sign(SignedOctets(), {});
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->method, GetParam().classic_method);
  EXPECT_EQ(auth->data.size(), GetParam().classic_size);
  EXPECT_TRUE(peer_->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
  ExpectTamperingFails(*peer_, *auth);
}

TEST_P(SignatureTest, ClassicMethodMatchesReferenceEncoding) {
  auto auth = credentials_->Sign(SignedOctets(), {});
  ASSERT_TRUE(auth.ok()) << auth.status();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  ASSERT_EQ(EVP_Digest(SignedOctets().data(), SignedOctets().size(), digest, &digest_len,
                       GetParam().classic_md(), nullptr),
            1);
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(key(), nullptr));
  ASSERT_EQ(EVP_PKEY_verify_init(ctx.get()), 1);
  if (GetParam().classic_method == kAuthRsaSignature) {
    // PKCS#1 v1.5 over SHA-1: the recovered block is the SHA-1 DigestInfo
    // (RFC 8017 §9.2 note 1) of the octets.
    ASSERT_EQ(EVP_PKEY_verify_recover_init(ctx.get()), 1);
    unsigned char recovered[512];
    size_t recovered_len = sizeof(recovered);
    ASSERT_EQ(EVP_PKEY_verify_recover(ctx.get(), recovered, &recovered_len, auth->data.data(),
                                      auth->data.size()),
              1);
    EXPECT_EQ(ToHex({recovered, recovered_len}),
              absl::StrCat("3021300906052b0e03021a05000414", ToHex({digest, digest_len})));
    return;
  }
  // RFC 4754: r and s, each as wide as the curve's field.
  const int width = static_cast<int>(auth->data.size() / 2);
  EcdsaSigPtr sig(ECDSA_SIG_new());
  ASSERT_EQ(ECDSA_SIG_set0(sig.get(), BN_bin2bn(auth->data.data(), width, nullptr),
                           BN_bin2bn(auth->data.data() + width, width, nullptr)),
            1);
  const Bytes der = Der(sig.get(), i2d_ECDSA_SIG);
  EXPECT_EQ(EVP_PKEY_verify(ctx.get(), der.data(), der.size(), digest, digest_len), 1);
}

TEST_P(SignatureTest, DigitalSignatureRoundTrip) {
  for (uint16_t hash : {kHashSha256, kHashSha384, kHashSha512}) {
    SCOPED_TRACE(hash);
    auto auth = credentials_->Sign(SignedOctets(), {hash});
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(auth->method, kAuthDigitalSignature);
    EXPECT_TRUE(peer_->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
    ExpectTamperingFails(*peer_, *auth);
  }
}

TEST_P(SignatureTest, OtherKeysSignatureDoesNotVerify) {
  // A fresh key of the same type: the method fits but the key does not.
  PkeyPtr stranger = GenerateKey(GetParam().key_type);
  auto stranger_credentials = Credentials(
      {MakeCert({MoonName(), false, kMoonAltNames}, stranger.get(), Root(), RootKey()).get()},
      stranger.get());
  for (const auto& hashes : {std::vector<uint16_t>{}, std::vector<uint16_t>{kHashSha256}}) {
    auto auth = stranger_credentials->Sign(SignedOctets(), hashes);
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(peer_->VerifyAuth(auth->method, auth->data, SignedOctets()).code(),
              absl::StatusCode::kUnauthenticated);
  }
}

INSTANTIATE_TEST_SUITE_P(Keys, SignatureTest,
                         ::testing::Values(KeyCase{"P-256", kAuthEcdsaSha256P256, 64, EVP_sha256},
                                           KeyCase{"P-384", kAuthEcdsaSha384P384, 96, EVP_sha384},
                                           KeyCase{"P-521", kAuthEcdsaSha512P521, 132, EVP_sha512},
                                           KeyCase{"RSA", kAuthRsaSignature, 256, EVP_sha1}),
                         [](const auto& info) {
                           std::string name = info.param.key_type;
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

TEST(HashChoiceTest, FollowsCurveOrSha256ForRsaThenStrongestCommon) {
  const struct {
    const char* key_type;
    std::vector<uint16_t> peer;
    uint8_t method;
    const char* algorithm;  // For method 14.
  } cases[] = {
      {"P-256", {kHashSha256, kHashSha384, kHashSha512}, kAuthDigitalSignature, kEcdsaWithSha256},
      {"P-256", {kHashSha384, kHashSha512}, kAuthDigitalSignature, kEcdsaWithSha512},
      {"P-384", {kHashSha512, kHashSha384, kHashSha256}, kAuthDigitalSignature, kEcdsaWithSha384},
      {"P-384", {kHashSha256}, kAuthDigitalSignature, kEcdsaWithSha256},
      {"P-521", {kHashSha256, kHashSha384}, kAuthDigitalSignature, kEcdsaWithSha384},
      // RSA: SHA-256 when the peer has it (as strongSwan picks), else the
      // strongest common one.
      {"RSA", {kHashSha256, kHashSha384, kHashSha512}, kAuthDigitalSignature, kSha256WithRsa},
      {"RSA", {kHashSha384, kHashSha256}, kAuthDigitalSignature, kSha256WithRsa},
      {"RSA", {kHashSha384, kHashSha512}, kAuthDigitalSignature, kSha512WithRsa},
      // SHA-1 (1) and Identity (5) are listed by peers but not ours to use.
      {"RSA", {1, 5, kHashSha256}, kAuthDigitalSignature, kSha256WithRsa},
      {"RSA", {1, 5}, kAuthRsaSignature, ""},
      {"P-256", {5}, kAuthEcdsaSha256P256, ""},
      {"P-521", {1}, kAuthEcdsaSha512P521, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.key_type, " ", c.peer.size(), " hashes ", c.algorithm));
    auto credentials = Credentials({MoonCert(c.key_type).get()}, LeafKey(c.key_type));
    auto auth = credentials->Sign(SignedOctets(), c.peer);
    ASSERT_TRUE(auth.ok()) << auth.status();
    EXPECT_EQ(auth->method, c.method);
    if (c.method == kAuthDigitalSignature) {
      EXPECT_EQ(AlgorithmHex(auth->data), c.algorithm);
    }
    EXPECT_TRUE(PeerOf(*credentials)->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
  }
}

TEST(PssTest, VerifiesEachHashAndSaltLength) {
  auto peer = PeerOf(*Credentials({MoonCert("RSA").get()}, LeafKey("RSA")));
  for (const EVP_MD* md : {EVP_sha256(), EVP_sha384(), EVP_sha512()}) {
    for (int salt : {0, 20, EVP_MD_get_size(md)}) {
      SCOPED_TRACE(absl::StrCat(EVP_MD_get0_name(md), " salt ", salt));
      const Bytes algorithm = PssAlgorithm(md, md, salt);
      const Bytes signature = ReferenceSign(LeafKey("RSA"), md, SignedOctets(), salt);
      const Bytes data =
          Concat({Bytes{static_cast<uint8_t>(algorithm.size())}, algorithm, signature});
      EXPECT_TRUE(peer->VerifyAuth(kAuthDigitalSignature, data, SignedOctets()).ok());
      Bytes tampered = data;
      tampered.back() ^= 0x01;
      EXPECT_EQ(peer->VerifyAuth(kAuthDigitalSignature, tampered, SignedOctets()).code(),
                absl::StatusCode::kUnauthenticated);
    }
  }
}

TEST(PssTest, ParametersMustMatchTheSignature) {
  auto peer = PeerOf(*Credentials({MoonCert("RSA").get()}, LeafKey("RSA")));
  const Bytes signature = ReferenceSign(LeafKey("RSA"), EVP_sha256(), SignedOctets(), 32);
  auto verify = [&](const Bytes& algorithm) {
    return peer->VerifyAuth(
        kAuthDigitalSignature,
        Concat({Bytes{static_cast<uint8_t>(algorithm.size())}, algorithm, signature}),
        SignedOctets());
  };
  EXPECT_TRUE(verify(PssAlgorithm(EVP_sha256(), EVP_sha256(), 32)).ok());
  // Another salt length or hash than signed with: a wrong signature.
  EXPECT_EQ(verify(PssAlgorithm(EVP_sha256(), EVP_sha256(), 20)).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(verify(PssAlgorithm(EVP_sha384(), EVP_sha384(), 32)).code(),
            absl::StatusCode::kUnauthenticated);
  // MGF1 with another hash than the message's is not accepted at all.
  EXPECT_EQ(verify(PssAlgorithm(EVP_sha256(), EVP_sha512(), 32)).code(),
            absl::StatusCode::kInvalidArgument);
  // Negative salt lengths would mean "auto" to OpenSSL.
  EXPECT_EQ(verify(PssAlgorithm(EVP_sha256(), EVP_sha256(), -2)).code(),
            absl::StatusCode::kInvalidArgument);
  // PSS with an ECDSA key.
  auto ecdsa = PeerOf(*Credentials({MoonCert("P-256").get()}, LeafKey("P-256")));
  EXPECT_EQ(ecdsa
                ->VerifyAuth(kAuthDigitalSignature, DigitalSignatureData(kPssSha256, signature),
                             SignedOctets())
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VerifyAuthTest, MethodMustFitTheKey) {
  auto rsa_credentials = Credentials({MoonCert("RSA").get()}, LeafKey("RSA"));
  auto p256_credentials = Credentials({MoonCert("P-256").get()}, LeafKey("P-256"));
  auto rsa = PeerOf(*rsa_credentials);
  auto p256 = PeerOf(*p256_credentials);
  auto rsa_auth = rsa_credentials->Sign(SignedOctets(), {});
  auto p256_auth = p256_credentials->Sign(SignedOctets(), {});
  ASSERT_TRUE(rsa_auth.ok() && p256_auth.ok());
  const struct {
    const char* name;
    const PeerCertificate* peer;
    uint8_t method;
    Bytes data;
  } cases[] = {
      {"method 9 with RSA", rsa.get(), kAuthEcdsaSha256P256, p256_auth->data},
      {"method 1 with P-256", p256.get(), kAuthRsaSignature, rsa_auth->data},
      {"method 10 with P-256", p256.get(), kAuthEcdsaSha384P384, p256_auth->data},
      {"method 11 with P-256", p256.get(), kAuthEcdsaSha512P521, p256_auth->data},
      {"shared key", p256.get(), kAuthSharedKey, p256_auth->data},
      {"unknown method", p256.get(), 201, p256_auth->data},
      {"RSA algorithm with P-256", p256.get(), kAuthDigitalSignature,
       DigitalSignatureData(kSha256WithRsa, rsa_auth->data)},
      {"ECDSA algorithm with RSA", rsa.get(), kAuthDigitalSignature,
       DigitalSignatureData(kEcdsaWithSha256, p256_auth->data)},
  };
  for (const auto& c : cases) {
    const absl::Status status = c.peer->VerifyAuth(c.method, c.data, SignedOctets());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
  }
}

TEST(VerifyAuthTest, UnparsableDataIsInvalidArgument) {
  auto credentials = Credentials({MoonCert("P-256").get()}, LeafKey("P-256"));
  auto peer = PeerOf(*credentials);
  auto auth = credentials->Sign(SignedOctets(), {kHashSha256});
  ASSERT_TRUE(auth.ok());
  const Bytes& good = auth->data;
  Bytes long_length = good;
  long_length[0] = 13;  // Takes the signature's first byte into the DER.
  Bytes short_length = good;
  short_length[0] = 11;
  Bytes oversized = good;
  oversized[0] = 0xff;
  Bytes bad_oid = good;
  bad_oid[12] = 0x7f;  // ecdsa-with-SHA2 arc .127: no such algorithm.
  Bytes with_parameters =
      DigitalSignatureData("300d06082a8648ce3d04030202010a", absl::MakeConstSpan(good).subspan(13));
  const struct {
    const char* name;
    uint8_t method;
    Bytes data;
  } cases[] = {
      {"empty", kAuthDigitalSignature, {}},
      {"length only", kAuthDigitalSignature, {12}},
      {"zero length", kAuthDigitalSignature, Concat({Bytes{0}, good})},
      {"no signature", kAuthDigitalSignature, Bytes(good.begin(), good.begin() + 13)},
      {"length too long", kAuthDigitalSignature, long_length},
      {"length too short", kAuthDigitalSignature, short_length},
      {"length past the end", kAuthDigitalSignature, oversized},
      {"unknown algorithm", kAuthDigitalSignature, bad_oid},
      {"ECDSA with parameters", kAuthDigitalSignature, with_parameters},
      {"classic, short", kAuthEcdsaSha256P256, Bytes(63, 1)},
      {"classic, long", kAuthEcdsaSha256P256, Bytes(65, 1)},
  };
  for (const auto& c : cases) {
    const absl::Status status = peer->VerifyAuth(c.method, c.data, SignedOctets());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
  }
  // Well-formed but wrong: another hash than signed with.
  Bytes other_hash = good;
  other_hash[12] = 0x03;
  EXPECT_EQ(peer->VerifyAuth(kAuthDigitalSignature, other_hash, SignedOctets()).code(),
            absl::StatusCode::kUnauthenticated);
  // Garbage in place of the DER signature.
  EXPECT_EQ(
      peer->VerifyAuth(kAuthDigitalSignature,
                       DigitalSignatureData(kEcdsaWithSha256, Bytes(70, 0x30)), SignedOctets())
          .code(),
      absl::StatusCode::kUnauthenticated);
}

TEST(VerifyAuthTest, RsaAcceptsAbsentParameters) {
  // RFC 4055 §5: verifiers accept sha*WithRSAEncryption without the NULL.
  auto peer = PeerOf(*Credentials({MoonCert("RSA").get()}, LeafKey("RSA")));
  const Bytes signature = ReferenceSign(LeafKey("RSA"), EVP_sha384(), SignedOctets());
  EXPECT_TRUE(peer->VerifyAuth(kAuthDigitalSignature,
                               DigitalSignatureData("300b06092a864886f70d01010c", signature),
                               SignedOctets())
                  .ok());
}

// --- TrustAnchors ---

TEST(TrustAnchorsTest, VerifiesChainThroughIntermediate) {
  X509Ptr leaf = MakeCert({MoonName(), false, kMoonAltNames}, LeafKey("P-256"), Intermediate(),
                          IntermediateKey());
  auto credentials = Credentials({leaf.get(), Intermediate()}, LeafKey("P-256"));
  ASSERT_EQ(credentials->chain_der().size(), 2u);
  auto anchors = Anchors({Root()});
  auto peer = anchors->Verify(credentials->chain_der(), Now());
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ((*peer)->subject_text(), "CN=moon.strait.test,O=Strait Test,C=CH");
  auto auth = credentials->Sign(SignedOctets(), {kHashSha256});
  ASSERT_TRUE(auth.ok());
  EXPECT_TRUE((*peer)->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());

  // Without the intermediate there is no path.
  const absl::Status status = anchors->Verify({credentials->chain_der()[0]}, Now()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(status), HasSubstr("unable to get local issuer certificate"));
  EXPECT_THAT(Message(status), HasSubstr("CN=moon.strait.test"));
}

TEST(TrustAnchorsTest, IntermediateAsAnchor) {
  X509Ptr leaf = MakeCert({MoonName(), false, kMoonAltNames}, LeafKey("P-384"), Intermediate(),
                          IntermediateKey());
  auto credentials = Credentials({leaf.get()}, LeafKey("P-384"));
  EXPECT_TRUE(Anchors({Intermediate()})->Verify(credentials->chain_der(), Now()).ok());
}

TEST(TrustAnchorsTest, RefusesOtherCa) {
  X509Ptr rogue_leaf =
      MakeCert({MoonName(), false, kMoonAltNames}, LeafKey("P-256"), Rogue(), RogueKey());
  auto credentials = Credentials({rogue_leaf.get(), Rogue()}, LeafKey("P-256"));
  const absl::Status status = Anchors({Root()})->Verify(credentials->chain_der(), Now()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  // The rogue CA is self-signed and sent along, but not an anchor.
  EXPECT_THAT(Message(status), HasSubstr("self-signed certificate in certificate chain"));
  const absl::Status alone =
      Anchors({Root()})->Verify({credentials->chain_der()[0]}, Now()).status();
  EXPECT_EQ(alone.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(alone), HasSubstr("unable to get local issuer certificate"));
}

TEST(TrustAnchorsTest, ValidityFollowsTheInjectedTime) {
  auto credentials = Credentials({MoonCert("P-256").get()}, LeafKey("P-256"));
  auto anchors = Anchors({Root()});
  EXPECT_TRUE(anchors->Verify(credentials->chain_der(), Now()).ok());
  EXPECT_TRUE(anchors->Verify(credentials->chain_der(), Now() + absl::Hours(24 * 28)).ok());

  absl::Status status =
      anchors->Verify(credentials->chain_der(), Now() + absl::Hours(24 * 60)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(status), HasSubstr("certificate has expired"));

  status = anchors->Verify(credentials->chain_der(), Now() - absl::Hours(48)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(status), HasSubstr("certificate is not yet valid"));

  CertSpec expired{MoonName(), false, kMoonAltNames};
  expired.not_before = Now() - absl::Hours(24 * 40);
  expired.not_after = Now() - absl::Hours(24 * 10);
  X509Ptr old = MakeCert(expired, LeafKey("P-256"), Root(), RootKey());
  status = anchors->Verify(Credentials({old.get()}, LeafKey("P-256"))->chain_der(), Now()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(status), HasSubstr("certificate has expired"));
}

TEST(TrustAnchorsTest, NoExtendedKeyUsageRequired) {
  auto anchors = Anchors({Root()});
  for (const char* eku : {"", "serverAuth", "clientAuth", "emailProtection"}) {
    SCOPED_TRACE(eku);
    CertSpec spec{MoonName(), false, kMoonAltNames};
    spec.extended_key_usage = eku;
    X509Ptr leaf = MakeCert(spec, LeafKey("P-256"), Root(), RootKey());
    EXPECT_TRUE(
        anchors->Verify(Credentials({leaf.get()}, LeafKey("P-256"))->chain_der(), Now()).ok());
  }
}

TEST(TrustAnchorsTest, RefusesMalformedChains) {
  auto anchors = Anchors({Root()});
  const Bytes leaf = Credentials({MoonCert("P-256").get()}, LeafKey("P-256"))->chain_der()[0];
  Bytes trailing = leaf;
  trailing.push_back(0);
  Bytes truncated(leaf.begin(), leaf.end() - 1);
  const struct {
    const char* name;
    std::vector<Bytes> chain;
  } cases[] = {
      {"empty", {}},
      {"garbage", {Bytes{0x30, 0x03, 0x02, 0x01, 0x01}}},
      {"trailing byte", {trailing}},
      {"truncated", {truncated}},
      {"garbage intermediate", {leaf, Bytes{1, 2, 3}}},
      {"too long", std::vector<Bytes>(9, leaf)},
  };
  for (const auto& c : cases) {
    const absl::Status status = anchors->Verify(c.chain, Now()).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
  }
}

TEST(TrustAnchorsTest, CertreqDataIsSha1OfEachSubjectPublicKeyInfo) {
  auto anchors = Anchors({Root(), Rogue()});
  Bytes expected;
  for (const X509* ca : {Root(), Rogue()}) {
    const Bytes spki = Der(X509_get0_pubkey(ca), i2d_PUBKEY);
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1(spki.data(), spki.size(), digest);
    expected.insert(expected.end(), digest, digest + sizeof(digest));

    // Not the subjectKeyIdentifier-style hash of the key bits alone.
    uint8_t key_bits_digest[SHA_DIGEST_LENGTH];
    unsigned int len = 0;
    ASSERT_EQ(X509_pubkey_digest(ca, EVP_sha1(), key_bits_digest, &len), 1);
    EXPECT_NE(ToHex({digest, sizeof(digest)}), ToHex({key_bits_digest, len}));
  }
  EXPECT_EQ(anchors->certreq_data().size(), 40u);
  EXPECT_EQ(ToHex(anchors->certreq_data()), ToHex(expected));
}

TEST(TrustAnchorsTest, FromPemRefusesNonCertificates) {
  EXPECT_EQ(TrustAnchors::FromPem("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrustAnchors::FromPem("not PEM at all").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrustAnchors::FromPem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // A key alone is skipped, leaving no certificate.
  const absl::Status key_only =
      TrustAnchors::FromPem(std::string(KeyPem(RootKey()).view())).status();
  EXPECT_EQ(key_only.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(key_only), HasSubstr("no certificate"));
  // A broken second certificate is reported, not ignored.
  const std::string pem = CertPem(Root()) + CertPem(Rogue());
  std::string broken = pem;
  broken[pem.size() - 100] = '*';
  const absl::Status status = TrustAnchors::FromPem(broken).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("certificate 2"));
}

// --- Identities ---

Bytes Ipv4(const char* text) {
  Bytes out(4);
  EXPECT_EQ(inet_pton(AF_INET, text, out.data()), 1);
  return out;
}
Bytes Ipv6(const char* text) {
  Bytes out(16);
  EXPECT_EQ(inet_pton(AF_INET6, text, out.data()), 1);
  return out;
}

constexpr uint8_t kIdIpv4 = 1;
constexpr uint8_t kIdFqdn = 2;
constexpr uint8_t kIdRfc822 = 3;
constexpr uint8_t kIdIpv6 = 5;
constexpr uint8_t kIdKeyId = 11;

class IdentityTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    // The CN as PrintableString, unlike the UTF8String that the DN parser
    // writes: X509_NAME_cmp compares them as equal.
    cert_ = MoonCert("P-256", V_ASN1_PRINTABLESTRING);
    credentials_ = Credentials({cert_.get()}, LeafKey("P-256"));
    peer_ = PeerOf(*credentials_);
  }
  // Both classes share the rules; the parameter picks which one is tested.
  absl::Status Check(uint8_t type, absl::Span<const uint8_t> value) const {
    return GetParam() ? credentials_->CheckIdentity(type, value)
                      : peer_->CheckIdentity(type, value);
  }
  absl::Status CheckDn(absl::string_view text) const {
    auto der = ParseDistinguishedName(std::string(text));
    EXPECT_TRUE(der.ok()) << der.status();
    return Check(kIdDerAsn1Dn, der.ok() ? *der : Bytes{});
  }

  X509Ptr cert_;
  std::shared_ptr<const LocalCredentials> credentials_;
  std::unique_ptr<PeerCertificate> peer_;
};

TEST_P(IdentityTest, DistinguishedNameBySubject) {
  EXPECT_TRUE(CheckDn("C=CH, O=Strait Test, CN=moon.strait.test").ok());
  EXPECT_TRUE(CheckDn("/C=CH/O=Strait Test/CN=moon.strait.test").ok());
  EXPECT_TRUE(CheckDn("C=CH,O=Strait Test,CN=moon.strait.test").ok());
  EXPECT_TRUE(CheckDn("  c = CH ,  o=Strait   Test , cn = MOON.Strait.Test ").ok());
  EXPECT_TRUE(Check(kIdDerAsn1Dn, credentials_->subject_der()).ok());

  // X.500 names are ordered.
  const absl::Status reversed = CheckDn("CN=moon.strait.test, O=Strait Test, C=CH");
  EXPECT_EQ(reversed.code(), absl::StatusCode::kPermissionDenied);
  const absl::Status other = CheckDn("C=CH, O=Strait Test, CN=sun.strait.test");
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(other), HasSubstr("CN=sun.strait.test"));
  EXPECT_THAT(Message(other), HasSubstr("\"CN=moon.strait.test,O=Strait Test,C=CH\""));
  EXPECT_EQ(CheckDn("C=CH, O=Strait Test").code(), absl::StatusCode::kPermissionDenied);

  EXPECT_EQ(Check(kIdDerAsn1Dn, Bytes{0x30, 0x05, 0x01}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(IdentityTest, FqdnAndEmailFromSubjectAltNames) {
  EXPECT_TRUE(Check(kIdFqdn, ToBytes("moon.strait.test")).ok());
  EXPECT_TRUE(Check(kIdFqdn, ToBytes("MOON.Strait.TEST")).ok());
  EXPECT_TRUE(Check(kIdRfc822, ToBytes("Moon@Strait.Test")).ok());
  const absl::Status other = Check(kIdFqdn, ToBytes("sun.strait.test"));
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(other), HasSubstr("\"sun.strait.test\""));
  EXPECT_THAT(Message(other), HasSubstr("CN=moon.strait.test"));
  EXPECT_EQ(Check(kIdFqdn, ToBytes("moon.strait.test.evil")).code(),
            absl::StatusCode::kPermissionDenied);
  // The e-mail address is no FQDN, and the reverse.
  EXPECT_EQ(Check(kIdFqdn, ToBytes("moon@strait.test")).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check(kIdRfc822, ToBytes("moon.strait.test")).code(),
            absl::StatusCode::kPermissionDenied);
  // Peer-chosen bytes are escaped in the message.
  const absl::Status odd = Check(kIdFqdn, ToBytes("a\nb"));
  EXPECT_EQ(odd.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(odd), Not(HasSubstr("\n")));
}

TEST_P(IdentityTest, AddressesFromSubjectAltNames) {
  EXPECT_TRUE(Check(kIdIpv4, Ipv4("10.99.0.1")).ok());
  EXPECT_TRUE(Check(kIdIpv6, Ipv6("2001:db8::1")).ok());
  const absl::Status other = Check(kIdIpv4, Ipv4("10.99.0.2"));
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(other), HasSubstr("10.99.0.2"));
  EXPECT_THAT(Message(Check(kIdIpv6, Ipv6("2001:db8::2"))), HasSubstr("2001:db8::2"));
  // The IPv4 SAN as an IPv6 ID (and the reverse) has the wrong length.
  EXPECT_EQ(Check(kIdIpv6, Ipv4("10.99.0.1")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Check(kIdIpv4, Ipv6("2001:db8::1")).code(), absl::StatusCode::kInvalidArgument);
  // Addresses are not names.
  EXPECT_EQ(Check(kIdFqdn, ToBytes("10.99.0.1")).code(), absl::StatusCode::kPermissionDenied);
}

TEST_P(IdentityTest, UnsupportedIdType) {
  EXPECT_EQ(Check(kIdKeyId, ToBytes("key")).code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(LocalAndPeer, IdentityTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Local" : "Peer"; });

TEST(IdentityNoSanTest, CommonNameDoesNotVouchForFqdn) {
  X509Ptr cert = MakeCert({MoonName()}, LeafKey("P-256"), Root(), RootKey());
  auto credentials = Credentials({cert.get()}, LeafKey("P-256"));
  EXPECT_EQ(credentials->CheckIdentity(kIdFqdn, ToBytes("moon.strait.test")).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(credentials->CheckIdentity(kIdDerAsn1Dn, credentials->subject_der()).ok());
}

// --- Distinguished names ---

TEST(DistinguishedNameTest, KnownEncoding) {
  // SEQUENCE { SET { C PrintableString "CH" } SET { O UTF8String "Strait" }
  //            SET { CN UTF8String "moon" } }
  constexpr char kExpected[] =
      "302d310b3009060355040613024348310f300d060355040a0c06537472616974310d300b06035504030c046d6f"
      "6f6e";
  for (const char* text : {"C=CH, O=Strait, CN=moon", "/C=CH/O=Strait/CN=moon",
                           "C=CH,O=Strait,CN=moon", " C = CH , O = Strait , CN = moon "}) {
    SCOPED_TRACE(text);
    auto der = ParseDistinguishedName(text);
    ASSERT_TRUE(der.ok()) << der.status();
    EXPECT_EQ(ToHex(*der), kExpected);
  }
  // The same as OpenSSL's own encoding of the name.
  EXPECT_EQ(ToHex(Der(Name({{"C", "CH"}, {"O", "Strait"}, {"CN", "moon"}}).get(), i2d_X509_NAME)),
            kExpected);
}

TEST(DistinguishedNameTest, AllAttributesInOrder) {
  auto der = ParseDistinguishedName(
      "C=CH, ST=Zurich, L=Zurich, O=Strait, OU=VPN, CN=moon, E=moon@strait.test, DC=test, "
      "serialNumber=42, emailAddress=ops@strait.test");
  ASSERT_TRUE(der.ok()) << der.status();
  EXPECT_EQ(DistinguishedNameText(*der),
            "emailAddress=ops@strait.test,serialNumber=42,DC=test,emailAddress=moon@strait.test,"
            "CN=moon,OU=VPN,O=Strait,L=Zurich,ST=Zurich,C=CH");
}

TEST(DistinguishedNameTest, EscapedSeparatorAndUtf8) {
  auto der = ParseDistinguishedName("O=Strait\\, Inc., CN=Zürich Gateway");
  ASSERT_TRUE(der.ok()) << der.status();
  EXPECT_EQ(DistinguishedNameText(*der), "CN=Zürich Gateway,O=Strait\\, Inc.");
  auto slashed = ParseDistinguishedName("/O=A\\/B/CN=moon");
  ASSERT_TRUE(slashed.ok()) << slashed.status();
  EXPECT_EQ(DistinguishedNameText(*slashed), "CN=moon,O=A/B");
}

TEST(DistinguishedNameTest, RefusesMalformedText) {
  for (const char* text :
       {"", "   ", "/", "CN", "CN=moon,", "XX=moon", "CN=", "C=CHE", "CN=moon, O"}) {
    EXPECT_EQ(ParseDistinguishedName(text).status().code(), absl::StatusCode::kInvalidArgument)
        << '"' << text << '"';
  }
}

TEST(DistinguishedNameTest, SameDistinguishedName) {
  const Bytes a = *ParseDistinguishedName("C=CH, O=Strait Test, CN=moon");
  EXPECT_TRUE(SameDistinguishedName(a, *ParseDistinguishedName("/c=ch/o=strait  test/cn=MOON")));
  EXPECT_TRUE(SameDistinguishedName(
      a,
      Der(Name({{"C", "CH"}, {"O", "Strait Test"}, {"CN", "moon"}}, V_ASN1_PRINTABLESTRING).get(),
          i2d_X509_NAME)));
  EXPECT_FALSE(SameDistinguishedName(a, *ParseDistinguishedName("C=CH, O=Strait Test, CN=sun")));
  EXPECT_FALSE(SameDistinguishedName(a, *ParseDistinguishedName("CN=moon, O=Strait Test, C=CH")));
  EXPECT_FALSE(SameDistinguishedName(a, Bytes{0x30}));
  EXPECT_FALSE(SameDistinguishedName(Bytes{}, Bytes{}));
  EXPECT_EQ(DistinguishedNameText(Bytes{0x30, 0x01}), "<invalid DN>");
}

// --- LocalCredentials ---

TEST(LocalCredentialsTest, AcceptsPkcs8AndTraditionalKeys) {
  for (const char* type : {"P-256", "P-384", "P-521", "RSA"}) {
    SCOPED_TRACE(type);
    X509Ptr cert = MoonCert(type);
    const std::string pem = CertPem(cert.get());
    for (const Secret& key : {KeyPem(LeafKey(type)), TraditionalKeyPem(LeafKey(type))}) {
      auto credentials = LocalCredentials::FromPem(pem, key);
      ASSERT_TRUE(credentials.ok()) << credentials.status();
      EXPECT_EQ((*credentials)->chain_der(),
                std::vector<Bytes>{Der(static_cast<const X509*>(cert.get()), i2d_X509)});
      EXPECT_EQ((*credentials)->subject_der(),
                Der(X509_get_subject_name(cert.get()), i2d_X509_NAME));
      EXPECT_EQ((*credentials)->subject_text(), "CN=moon.strait.test,O=Strait Test,C=CH");
    }
  }
}

TEST(LocalCredentialsTest, KeepsChainOrder) {
  X509Ptr leaf = MakeCert({MoonName(), false, kMoonAltNames}, LeafKey("P-256"), Intermediate(),
                          IntermediateKey());
  auto credentials = Credentials({leaf.get(), Intermediate(), Root()}, LeafKey("P-256"));
  ASSERT_EQ(credentials->chain_der().size(), 3u);
  EXPECT_EQ(credentials->chain_der()[0], Der(static_cast<const X509*>(leaf.get()), i2d_X509));
  EXPECT_EQ(credentials->chain_der()[1], Der(Intermediate(), i2d_X509));
  EXPECT_EQ(credentials->chain_der()[2], Der(Root(), i2d_X509));
}

TEST(LocalCredentialsTest, RefusesKeyOfAnotherCertificate) {
  const std::string pem = CertPem(MoonCert("P-256").get());
  for (const char* type : {"P-384", "RSA"}) {
    const Secret key = KeyPem(LeafKey(type));
    const absl::Status status = LocalCredentials::FromPem(pem, key).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(status), HasSubstr("does not belong"));
    // No piece of the key text in the message.
    const absl::string_view text = key.view();
    for (size_t i = 40; i + 16 < text.size(); i += 8) {
      EXPECT_THAT(Message(status), Not(HasSubstr(std::string(text.substr(i, 16)))));
    }
  }
  // Same type, other key.
  PkeyPtr stranger = GenerateKey("P-256");
  EXPECT_EQ(LocalCredentials::FromPem(pem, KeyPem(stranger.get())).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LocalCredentialsTest, RefusesUnusableInput) {
  const std::string pem = CertPem(MoonCert("P-256").get());
  const Secret key = KeyPem(LeafKey("P-256"));
  EXPECT_EQ(LocalCredentials::FromPem("", key).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LocalCredentials::FromPem(pem, Secret("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string corrupt(key.view());
  corrupt[40] = '*';
  const absl::Status status = LocalCredentials::FromPem(pem, Secret(corrupt)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("private key does not parse"));
  EXPECT_THAT(Message(status), Not(HasSubstr(corrupt.substr(30, 20))));

  // Encrypted keys fail without asking for a passphrase.
  BioPtr bio(BIO_new(BIO_s_mem()));
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(bio.get(), LeafKey("P-256"), EVP_aes_256_cbc(),
                                          const_cast<char*>("secret"), 6, nullptr, nullptr),
            1);
  const absl::Status encrypted =
      LocalCredentials::FromPem(pem, Secret(BioText(bio.get()))).status();
  EXPECT_EQ(encrypted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(encrypted), HasSubstr("encrypted"));
}

TEST(LocalCredentialsTest, RefusesUnsupportedKeyTypes) {
  for (const char* type : {"secp256k1", "ED25519"}) {
    SCOPED_TRACE(type);
    PkeyPtr key = GenerateKey(type);
    X509Ptr cert = MakeCert({MoonName()}, key.get(), Root(), RootKey());
    EXPECT_EQ(LocalCredentials::FromPem(CertPem(cert.get()), KeyPem(key.get())).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/cert_auth_test");
    ASSERT_TRUE(MakeDirs(dir_, 0700).ok());
    chain_path_ = dir_ + "/moon.crt";
    key_path_ = dir_ + "/moon.key";
    ASSERT_TRUE(WriteFileAtomically(chain_path_, CertPem(MoonCert("RSA").get()), 0644).ok());
  }
  void WriteKey(int mode) {
    ASSERT_TRUE(WriteFileAtomically(key_path_, KeyPem(LeafKey("RSA")).view(), mode).ok());
  }

  std::string dir_;
  std::string chain_path_;
  std::string key_path_;
};

TEST_F(KeyFileTest, AcceptsPrivateKeyFile) {
  WriteKey(0600);
  auto credentials = LocalCredentials::FromFiles(chain_path_, key_path_);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  auto auth = (*credentials)->Sign(SignedOctets(), {kHashSha256});
  ASSERT_TRUE(auth.ok());
  EXPECT_TRUE(PeerOf(**credentials)->VerifyAuth(auth->method, auth->data, SignedOctets()).ok());
  WriteKey(0400);
  EXPECT_TRUE(LocalCredentials::FromFiles(chain_path_, key_path_).ok());
}

TEST_F(KeyFileTest, RefusesKeyReadableByOthers) {
  WriteKey(0644);
  absl::Status status = LocalCredentials::FromFiles(chain_path_, key_path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status), HasSubstr(key_path_));
  EXPECT_THAT(Message(status), HasSubstr("0644; want 0600"));
  WriteKey(0640);
  status = LocalCredentials::FromFiles(chain_path_, key_path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(status), HasSubstr("0640"));
  WriteKey(0602);
  EXPECT_EQ(LocalCredentials::FromFiles(chain_path_, key_path_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(KeyFileTest, MissingFiles) {
  WriteKey(0600);
  EXPECT_EQ(LocalCredentials::FromFiles(dir_ + "/none.crt", key_path_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LocalCredentials::FromFiles(chain_path_, dir_ + "/none.key").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(KeyFileTest, ErrorsNameTheFiles) {
  ASSERT_TRUE(WriteFileAtomically(key_path_, KeyPem(LeafKey("P-256")).view(), 0600).ok());
  const absl::Status status = LocalCredentials::FromFiles(chain_path_, key_path_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr(key_path_));
  EXPECT_THAT(Message(status), HasSubstr("does not belong"));
}

}  // namespace
}  // namespace strait::ike
