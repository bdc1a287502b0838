#include "agent/ike/crypto.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

std::string Hex(absl::string_view hex) { return absl::HexStringToBytes(hex); }
std::string ToHex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

const EVP_MD* Digest(PrfId id) {
  switch (id) {
    case PrfId::kHmacSha2_256:
      return EVP_sha256();
    case PrfId::kHmacSha2_384:
      return EVP_sha384();
    case PrfId::kHmacSha2_512:
      return EVP_sha512();
  }
  return nullptr;
}

// HMAC through the one-shot HMAC() API, independent of Prf.
std::string ReferenceHmac(PrfId id, absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(Digest(id), key.data(), key.size(), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// prf+ written out as RFC 7296 §2.13 states it.
std::string ReferencePrfPlus(PrfId id, absl::string_view key, absl::string_view seed,
                             size_t length) {
  std::string stream;
  std::string t;
  for (int i = 1; stream.size() < length; ++i) {
    t = ReferenceHmac(id, key, absl::StrCat(t, seed, std::string(1, static_cast<char>(i))));
    stream += t;
  }
  return stream.substr(0, length);
}

Prf MakePrf(PrfId id) {
  auto prf = Prf::Create(id);
  EXPECT_TRUE(prf.ok()) << prf.status();
  return std::move(prf).value();
}

// --- PRF ---

struct HmacVector {
  const char* name;
  std::string key;
  std::string data;
  const char* sha256;
  const char* sha384;
  const char* sha512;
};

std::vector<HmacVector> Rfc4231Vectors() {
  return {
      {"case1", std::string(20, '\x0b'), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
       "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2f"
       "a9c"
       "b6",
       "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea"
       "3f4"
       "e4be9d914eeb61f1702e696c203a126854"},
      {"case2", "Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
       "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab"
       "216"
       "49",
       "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f"
       "0e6"
       "fdcaeab1a34d4a6b4b636e070a38bce737"},
      {"case4", Hex("0102030405060708090a0b0c0d0e0f10111213141516171819"), std::string(50, '\xcd'),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
       "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c67"
       "4cf"
       "fb",
       "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc57"
       "880"
       "63a5f19741120c4f2de2adebeb10a298dd"},
      {"case6", std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
       "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f"
       "449"
       "52",
       "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6"
       "a1e"
       "5295e64f73f63f0aec8b915a985d786598"},
  };
}

TEST(PrfTest, Rfc4231Vectors) {
  const Prf sha256 = MakePrf(PrfId::kHmacSha2_256);
  const Prf sha384 = MakePrf(PrfId::kHmacSha2_384);
  const Prf sha512 = MakePrf(PrfId::kHmacSha2_512);
  for (const HmacVector& v : Rfc4231Vectors()) {
    SCOPED_TRACE(v.name);
    auto out = sha256.Compute(v.key, v.data);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(ToHex(out->view()), v.sha256);
    out = sha384.Compute(v.key, v.data);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(ToHex(out->view()), v.sha384);
    out = sha512.Compute(v.key, v.data);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(ToHex(out->view()), v.sha512);
  }
}

TEST(PrfTest, PiecesAreConcatenated) {
  const Prf prf = MakePrf(PrfId::kHmacSha2_256);
  auto whole = prf.Compute("Jefe", "what do ya want for nothing?");
  auto pieces = prf.Compute("Jefe", {"what do ", "", "ya want for nothing?"});
  ASSERT_TRUE(whole.ok() && pieces.ok());
  EXPECT_EQ(whole->view(), pieces->view());
}

TEST(PrfTest, UnknownIdIsRejected) {
  EXPECT_EQ(Prf::Create(static_cast<PrfId>(2)).status().code(), absl::StatusCode::kInvalidArgument);
}

class PrfPlusTest : public testing::TestWithParam<PrfId> {};

TEST_P(PrfPlusTest, MatchesRfc7296Definition) {
  const Prf prf = MakePrf(GetParam());
  const std::string key = Hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  const std::string seed = "Ni | Nr | SPIi | SPIr";
  for (size_t length : {size_t{1}, prf.output_size() - 1, prf.output_size(), prf.output_size() + 1,
                        size_t{3} * prf.output_size() + 7, size_t{1000}}) {
    SCOPED_TRACE(length);
    auto out = prf.PrfPlus(key, seed, length);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(ToHex(out->view()), ToHex(ReferencePrfPlus(GetParam(), key, seed, length)));
  }
}

TEST_P(PrfPlusTest, AtMost255Iterations) {
  const Prf prf = MakePrf(GetParam());
  auto longest = prf.PrfPlus("key", "seed", 255 * prf.output_size());
  ASSERT_TRUE(longest.ok()) << longest.status();
  EXPECT_EQ(longest->size(), 255 * prf.output_size());
  EXPECT_EQ(ToHex(longest->view().substr(254 * prf.output_size())),
            ToHex(ReferencePrfPlus(GetParam(), "key", "seed", 255 * prf.output_size())
                      .substr(254 * prf.output_size())));
  EXPECT_EQ(prf.PrfPlus("key", "seed", 255 * prf.output_size() + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllPrfs, PrfPlusTest,
                         testing::Values(PrfId::kHmacSha2_256, PrfId::kHmacSha2_384,
                                         PrfId::kHmacSha2_512));

// --- Key derivation ---

const std::string kNi = Hex("00112233445566778899aabbccddeeff0123456789abcdef");
const std::string kNr = Hex("ffeeddccbbaa99887766554433221100fedcba98");
const std::string kSpiI = Hex("0102030405060708");
const std::string kSpiR = Hex("1112131415161718");
const std::string kGir = std::string(256, '\x5a');

struct KeyCase {
  PrfId prf;
  CipherSuite suite;
  size_t encr_size;
  size_t integ_size;
};

class KeyDerivationTest : public testing::TestWithParam<KeyCase> {};

TEST_P(KeyDerivationTest, IkeSaKeysMatchRfc7296Definition) {
  const KeyCase& c = GetParam();
  const Prf prf = MakePrf(c.prf);
  auto keys = DeriveIkeSaKeys(prf, c.suite, kGir, kNi, kNr, kSpiI, kSpiR);
  ASSERT_TRUE(keys.ok()) << keys.status();

  const size_t p = prf.output_size();
  const std::string skeyseed = ReferenceHmac(c.prf, kNi + kNr, kGir);
  const std::string stream = ReferencePrfPlus(c.prf, skeyseed, kNi + kNr + kSpiI + kSpiR,
                                              3 * p + 2 * c.integ_size + 2 * c.encr_size);
  size_t at = 0;
  auto next = [&](size_t n) {
    std::string key = stream.substr(at, n);
    at += n;
    return ToHex(key);
  };
  EXPECT_EQ(ToHex(keys->sk_d.view()), next(p));
  EXPECT_EQ(ToHex(keys->sk_ai.view()), next(c.integ_size));
  EXPECT_EQ(ToHex(keys->sk_ar.view()), next(c.integ_size));
  EXPECT_EQ(ToHex(keys->sk_ei.view()), next(c.encr_size));
  EXPECT_EQ(ToHex(keys->sk_er.view()), next(c.encr_size));
  EXPECT_EQ(ToHex(keys->sk_pi.view()), next(p));
  EXPECT_EQ(ToHex(keys->sk_pr.view()), next(p));
  EXPECT_EQ(keys->sk_ei.size(), c.encr_size);
  EXPECT_EQ(keys->sk_ai.size(), c.integ_size);

  // The keys fit the SK cipher of the suite.
  EXPECT_TRUE(CreateSkCipher(c.suite, keys->sk_ei, keys->sk_ai).ok());
}

TEST_P(KeyDerivationTest, RekeyedIkeSaKeysMatchRfc7296Definition) {
  const KeyCase& c = GetParam();
  const Prf old_prf = MakePrf(PrfId::kHmacSha2_512);
  const Prf prf = MakePrf(c.prf);
  const Secret old_sk_d(std::string(64, '\x42'));
  auto keys = DeriveRekeyedIkeSaKeys(old_prf, old_sk_d, prf, c.suite, kGir, kNi, kNr, kSpiI, kSpiR);
  ASSERT_TRUE(keys.ok()) << keys.status();
  const std::string skeyseed =
      ReferenceHmac(PrfId::kHmacSha2_512, old_sk_d.view(), kGir + kNi + kNr);
  const std::string stream =
      ReferencePrfPlus(c.prf, skeyseed, kNi + kNr + kSpiI + kSpiR, prf.output_size());
  EXPECT_EQ(ToHex(keys->sk_d.view()), ToHex(stream));
}

TEST_P(KeyDerivationTest, ChildSaKeysMatchRfc7296Definition) {
  const KeyCase& c = GetParam();
  const Prf prf = MakePrf(c.prf);
  const Secret sk_d(std::string(prf.output_size(), '\x17'));
  for (const std::string& gir : {std::string(), kGir}) {
    SCOPED_TRACE(gir.empty() ? "without PFS" : "with PFS");
    auto keys = DeriveChildSaKeys(prf, sk_d, c.suite, gir, kNi, kNr);
    ASSERT_TRUE(keys.ok()) << keys.status();
    const std::string keymat =
        ReferencePrfPlus(c.prf, sk_d.view(), gir + kNi + kNr, 2 * (c.encr_size + c.integ_size));
    EXPECT_EQ(ToHex(absl::StrCat(keys->encr_i.view(), keys->integ_i.view(), keys->encr_r.view(),
                                 keys->integ_r.view())),
              ToHex(keymat));
    EXPECT_EQ(keys->encr_i.size(), c.encr_size);
    EXPECT_EQ(keys->integ_r.size(), c.integ_size);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Suites, KeyDerivationTest,
    testing::Values(
        KeyCase{PrfId::kHmacSha2_256, {EncrId::kAesGcm16, 128, IntegId::kNone}, 20, 0},
        KeyCase{PrfId::kHmacSha2_384, {EncrId::kAesGcm16, 256, IntegId::kNone}, 36, 0},
        KeyCase{PrfId::kHmacSha2_256, {EncrId::kAesCbc, 128, IntegId::kHmacSha2_256_128}, 16, 32},
        KeyCase{PrfId::kHmacSha2_384, {EncrId::kAesCbc, 256, IntegId::kHmacSha2_384_192}, 32, 48},
        KeyCase{PrfId::kHmacSha2_512, {EncrId::kAesCbc, 256, IntegId::kHmacSha2_512_256}, 32, 64}));

TEST(KeyDerivationTest, RejectsBadInputs) {
  const Prf prf = MakePrf(PrfId::kHmacSha2_256);
  const CipherSuite gcm{EncrId::kAesGcm16, 256, IntegId::kNone};
  EXPECT_FALSE(DeriveIkeSaKeys(prf, gcm, kGir, kNi, kNr, "short", kSpiR).ok());
  EXPECT_FALSE(DeriveIkeSaKeys(prf, gcm, kGir, "tiny nonce", kNr, kSpiI, kSpiR).ok());
  EXPECT_FALSE(DeriveIkeSaKeys(prf, gcm, "", kNi, kNr, kSpiI, kSpiR).ok());
  const CipherSuite gcm_with_integ{EncrId::kAesGcm16, 256, IntegId::kHmacSha2_256_128};
  EXPECT_FALSE(DeriveIkeSaKeys(prf, gcm_with_integ, kGir, kNi, kNr, kSpiI, kSpiR).ok());
  const CipherSuite cbc_without_integ{EncrId::kAesCbc, 256, IntegId::kNone};
  EXPECT_FALSE(DeriveIkeSaKeys(prf, cbc_without_integ, kGir, kNi, kNr, kSpiI, kSpiR).ok());
  const CipherSuite bad_key{EncrId::kAesCbc, 100, IntegId::kHmacSha2_256_128};
  EXPECT_FALSE(DeriveIkeSaKeys(prf, bad_key, kGir, kNi, kNr, kSpiI, kSpiR).ok());
}

// --- AES-GCM (McGrew & Viega, "The Galois/Counter Mode of Operation") ---

const std::string kGcmKey128 = Hex("feffe9928665731c6d6a8f9467308308");
const std::string kGcmKey256 = kGcmKey128 + kGcmKey128;
const std::string kGcmNonce = Hex("cafebabefacedbaddecaf888");
const std::string kGcmPlaintext =
    Hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255");
const std::string kGcmAad = Hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
const std::string kGcmCiphertext128 =
    Hex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985");
const std::string kGcmCiphertext256 =
    Hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad");

struct GcmVector {
  const char* name;
  std::string key;
  std::string aad;
  std::string plaintext;
  std::string ciphertext;
  std::string tag;
};

std::vector<GcmVector> GcmVectors() {
  return {
      {"case3", kGcmKey128, "", kGcmPlaintext, kGcmCiphertext128,
       Hex("4d5c2af327cd64a62cf35abd2ba6fab4")},
      {"case4", kGcmKey128, kGcmAad, kGcmPlaintext.substr(0, 60), kGcmCiphertext128.substr(0, 60),
       Hex("5bc94fbc3221a5db94fae95ae7121a47")},
      {"case15", kGcmKey256, "", kGcmPlaintext, kGcmCiphertext256,
       Hex("b094dac5d93471bdec1a502270e3cc6c")},
      {"case16", kGcmKey256, kGcmAad, kGcmPlaintext.substr(0, 60), kGcmCiphertext256.substr(0, 60),
       Hex("76fc6ece0f4e1768cddf8853bb2d551b")},
  };
}

TEST(AesGcmTest, McGrewViegaVectors) {
  for (const GcmVector& v : GcmVectors()) {
    SCOPED_TRACE(v.name);
    auto sealed = AesGcmSeal(v.key, kGcmNonce, v.aad, v.plaintext);
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    EXPECT_EQ(ToHex(*sealed), ToHex(v.ciphertext + v.tag));
    auto opened = AesGcmOpen(v.key, kGcmNonce, v.aad, *sealed);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, v.plaintext);
  }
}

// The same vectors through the SK payload cipher: salt = the first 4 nonce
// bytes (from the key material), IV = the other 8; the SK plaintext gains a
// zero Pad Length byte, so the ciphertext extends the vector's by one byte.
TEST(AesGcmTest, SkCipherUsesSaltAndExplicitIv) {
  for (const GcmVector& v : GcmVectors()) {
    SCOPED_TRACE(v.name);
    const CipherSuite suite{EncrId::kAesGcm16, static_cast<int>(v.key.size() * 8), IntegId::kNone};
    auto cipher = CreateSkCipher(suite, Secret(v.key + kGcmNonce.substr(0, 4)), Secret());
    ASSERT_TRUE(cipher.ok()) << cipher.status();
    const std::string iv = kGcmNonce.substr(4);
    auto sealed = (*cipher)->SealWithIv(v.aad, iv, v.plaintext);
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    ASSERT_EQ(sealed->size(), (*cipher)->SealedSize(v.plaintext.size()));
    EXPECT_EQ(ToHex(sealed->substr(0, 8 + v.ciphertext.size())), ToHex(iv + v.ciphertext));
    auto reference = AesGcmSeal(v.key, kGcmNonce, v.aad, v.plaintext + std::string(1, '\0'));
    ASSERT_TRUE(reference.ok());
    EXPECT_EQ(ToHex(sealed->substr(8)), ToHex(*reference));
    auto opened = (*cipher)->Open(v.aad, *sealed);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, v.plaintext);
  }
}

// --- AES-CBC (RFC 3602 §4) ---

TEST(AesCbcTest, Rfc3602Vectors) {
  struct {
    const char* name;
    std::string key, iv, plaintext, ciphertext;
  } vectors[] = {
      {"case2", Hex("c286696d887c9aa0611bbb3e2025a45a"), Hex("562e17996d093d28ddb3ba695a2e6f58"),
       Hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
       Hex("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1")},
      {"case3", Hex("6c3ea0477630ce21a2ce334aa746c2cd"), Hex("c782dc4c098c66cbd9cd27d825682c81"),
       "This is a 48-byte message (exactly 3 AES blocks)",
       Hex("d0a02b3836451753d493665d33f0e886"
           "2dea54cdb293abc7506939276772f8d5"
           "021c19216bad525c8579695d83ba2684")},
  };
  for (const auto& v : vectors) {
    SCOPED_TRACE(v.name);
    auto ciphertext = AesCbcEncrypt(v.key, v.iv, v.plaintext);
    ASSERT_TRUE(ciphertext.ok()) << ciphertext.status();
    EXPECT_EQ(ToHex(*ciphertext), ToHex(v.ciphertext));
    auto plaintext = AesCbcDecrypt(v.key, v.iv, v.ciphertext);
    ASSERT_TRUE(plaintext.ok()) << plaintext.status();
    EXPECT_EQ(*plaintext, v.plaintext);
  }
  EXPECT_FALSE(AesCbcEncrypt(vectors[0].key, vectors[0].iv, "not a block").ok());
}

struct CbcCase {
  IntegId integ;
  PrfId hmac;
  size_t icv_size;
};

class CbcHmacSkTest : public testing::TestWithParam<CbcCase> {};

// RFC 3602 case 3 key and IV, encrypt-then-MAC as RFC 7296 §3.14 says:
// ICV = truncated HMAC(SK_a, IKE header .. SK header | IV | ciphertext).
TEST_P(CbcHmacSkTest, SealsAsRfc7296Describes) {
  const CbcCase& c = GetParam();
  const CipherSuite suite{EncrId::kAesCbc, 128, c.integ};
  const std::string key = Hex("6c3ea0477630ce21a2ce334aa746c2cd");
  const std::string iv = Hex("c782dc4c098c66cbd9cd27d825682c81");
  const std::string integ_key(IntegKeySize(c.integ), '\x0b');
  auto cipher = CreateSkCipher(suite, Secret(key), Secret(integ_key));
  ASSERT_TRUE(cipher.ok()) << cipher.status();
  EXPECT_EQ((*cipher)->icv_size(), c.icv_size);

  const std::string aad = "IKE header and SK payload header";
  // 47 bytes + Pad Length 0 = the 48-byte RFC 3602 plaintext with a '\0' end.
  const std::string plaintext = "This is a 48-byte message (exactly 3 AES blocks";
  auto sealed = (*cipher)->SealWithIv(aad, iv, plaintext);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  ASSERT_EQ(sealed->size(), (*cipher)->SealedSize(plaintext.size()));
  ASSERT_EQ(sealed->size(), 16 + 48 + c.icv_size);
  auto expected_ct = AesCbcEncrypt(key, iv, plaintext + std::string(1, '\0'));
  ASSERT_TRUE(expected_ct.ok());
  EXPECT_EQ(ToHex(sealed->substr(16, 32)),
            "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5");
  EXPECT_EQ(ToHex(sealed->substr(16, 48)), ToHex(*expected_ct));
  const std::string icv =
      ReferenceHmac(c.hmac, integ_key, aad + iv + *expected_ct).substr(0, c.icv_size);
  EXPECT_EQ(ToHex(sealed->substr(64)), ToHex(icv));

  auto opened = (*cipher)->Open(aad, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, plaintext);
}

TEST_P(CbcHmacSkTest, PadsToTheBlockSize) {
  const CbcCase& c = GetParam();
  const CipherSuite suite{EncrId::kAesCbc, 256, c.integ};
  auto cipher = CreateSkCipher(suite, Secret(std::string(32, 'k')),
                               Secret(std::string(IntegKeySize(c.integ), 'a')));
  ASSERT_TRUE(cipher.ok()) << cipher.status();
  for (size_t n : {0, 1, 14, 15, 16, 17, 100}) {
    SCOPED_TRACE(n);
    const std::string plaintext(n, 'p');
    auto sealed = (*cipher)->Seal("aad", plaintext);
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    EXPECT_EQ(sealed->size(), (*cipher)->SealedSize(n));
    EXPECT_EQ((sealed->size() - 16 - c.icv_size) % 16, 0u);
    auto opened = (*cipher)->Open("aad", *sealed);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, plaintext);
  }
}

TEST_P(CbcHmacSkTest, RejectsBadPaddingUnderAValidIcv) {
  const CbcCase& c = GetParam();
  const CipherSuite suite{EncrId::kAesCbc, 128, c.integ};
  const std::string key(16, 'k');
  const std::string integ_key(IntegKeySize(c.integ), 'a');
  auto cipher = CreateSkCipher(suite, Secret(key), Secret(integ_key));
  ASSERT_TRUE(cipher.ok());
  const std::string iv(16, 'i');
  std::string block(16, 'x');
  block.back() = 16;  // Pad Length larger than what precedes it.
  auto ct = AesCbcEncrypt(key, iv, block);
  ASSERT_TRUE(ct.ok());
  const std::string icv = ReferenceHmac(c.hmac, integ_key, "aad" + iv + *ct).substr(0, c.icv_size);
  auto opened = (*cipher)->Open("aad", iv + *ct + icv);
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(opened.status().message().find("padding"), std::string::npos) << opened.status();
}

INSTANTIATE_TEST_SUITE_P(
    Integ, CbcHmacSkTest,
    testing::Values(CbcCase{IntegId::kHmacSha2_256_128, PrfId::kHmacSha2_256, 16},
                    CbcCase{IntegId::kHmacSha2_384_192, PrfId::kHmacSha2_384, 24},
                    CbcCase{IntegId::kHmacSha2_512_256, PrfId::kHmacSha2_512, 32}));

// --- Every SK cipher: tampering anywhere fails the ICV ---

class SkCipherTest : public testing::TestWithParam<CipherSuite> {
 protected:
  SkCipherPtr Make() {
    const CipherSuite& suite = GetParam();
    auto cipher = CreateSkCipher(suite, Secret(std::string(EncrKeyMaterialSize(suite), 'e')),
                                 Secret(std::string(IntegKeySize(suite.integ), 'a')));
    EXPECT_TRUE(cipher.ok()) << cipher.status();
    return std::move(cipher).value();
  }
};

TEST_P(SkCipherTest, RoundTripsAndDetectsTampering) {
  SkCipherPtr cipher = Make();
  const std::string aad = "header";
  const std::string plaintext = "inner payloads: IDi, AUTH, SA, TSi, TSr";
  auto sealed = cipher->Seal(aad, plaintext);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->size(), cipher->SealedSize(plaintext.size()));
  auto opened = cipher->Open(aad, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, plaintext);

  // Fresh IVs.
  auto again = cipher->Seal(aad, plaintext);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->substr(0, cipher->iv_size()), sealed->substr(0, cipher->iv_size()));

  EXPECT_EQ(cipher->Open("heade!", *sealed).status().code(), absl::StatusCode::kInvalidArgument);
  for (size_t i = 0; i < sealed->size(); ++i) {
    std::string bad = *sealed;
    bad[i] ^= 0x01;
    ASSERT_EQ(cipher->Open(aad, bad).status().code(), absl::StatusCode::kInvalidArgument) << i;
  }
  for (size_t n = 0; n < sealed->size(); ++n) {
    ASSERT_EQ(cipher->Open(aad, sealed->substr(0, n)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << n;
  }
  EXPECT_FALSE(cipher->SealWithIv(aad, "short", plaintext).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Suites, SkCipherTest,
    testing::Values(CipherSuite{EncrId::kAesGcm16, 128, IntegId::kNone},
                    CipherSuite{EncrId::kAesGcm16, 256, IntegId::kNone},
                    CipherSuite{EncrId::kAesCbc, 128, IntegId::kHmacSha2_256_128},
                    CipherSuite{EncrId::kAesCbc, 256, IntegId::kHmacSha2_512_256}));

TEST(SkCipherTest, RejectsWrongKeyLengths) {
  const CipherSuite gcm{EncrId::kAesGcm16, 128, IntegId::kNone};
  EXPECT_FALSE(CreateSkCipher(gcm, Secret(std::string(16, 'k')), Secret()).ok());
  const CipherSuite cbc{EncrId::kAesCbc, 128, IntegId::kHmacSha2_256_128};
  EXPECT_FALSE(
      CreateSkCipher(cbc, Secret(std::string(16, 'k')), Secret(std::string(16, 'a'))).ok());
}

// --- Diffie-Hellman ---

class DhTest : public testing::TestWithParam<DhGroup> {};

TEST_P(DhTest, TwoKeyPairsAgree) {
  auto alice = CreateDiffieHellman(GetParam());
  auto bob = CreateDiffieHellman(GetParam());
  ASSERT_TRUE(alice.ok()) << alice.status();
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ((*alice)->group(), GetParam());
  EXPECT_EQ((*alice)->public_value().size(), DhPublicValueSize(GetParam()));
  EXPECT_EQ((*bob)->public_value().size(), DhPublicValueSize(GetParam()));
  EXPECT_NE((*alice)->public_value(), (*bob)->public_value());
  auto ab = (*alice)->ComputeSharedSecret((*bob)->public_value());
  auto ba = (*bob)->ComputeSharedSecret((*alice)->public_value());
  ASSERT_TRUE(ab.ok()) << ab.status();
  ASSERT_TRUE(ba.ok()) << ba.status();
  EXPECT_EQ(ab->view(), ba->view());
  EXPECT_FALSE(ab->empty());
}

TEST_P(DhTest, RejectsMalformedPeerValues) {
  auto dh = CreateDiffieHellman(GetParam());
  ASSERT_TRUE(dh.ok()) << dh.status();
  const std::string& good = (*dh)->public_value();
  std::vector<std::string> bad = {
      "",
      good.substr(1),
      good + std::string(1, '\0'),
      std::string(good.size(), '\0'),
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ((*dh)->ComputeSharedSecret(bad[i]).status().code(),
              absl::StatusCode::kInvalidArgument)
        << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Groups, DhTest,
                         testing::Values(DhGroup::kModp2048, DhGroup::kModp3072, DhGroup::kModp4096,
                                         DhGroup::kEcp256, DhGroup::kEcp384, DhGroup::kEcp521,
                                         DhGroup::kCurve25519));

TEST(DhTest, UnknownGroupIsRejected) {
  EXPECT_EQ(CreateDiffieHellman(static_cast<DhGroup>(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DhPublicValueSize(static_cast<DhGroup>(2)), 0u);
}

std::string BnBytes(const BIGNUM* bn, size_t size) {
  std::string out(size, '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), size);
  return out;
}

TEST(DhTest, ModpRejectsValuesOutOfRange) {
  struct {
    DhGroup group;
    BIGNUM* (*prime)(BIGNUM*);
  } groups[] = {{DhGroup::kModp2048, BN_get_rfc3526_prime_2048},
                {DhGroup::kModp3072, BN_get_rfc3526_prime_3072},
                {DhGroup::kModp4096, BN_get_rfc3526_prime_4096}};
  for (const auto& g : groups) {
    SCOPED_TRACE(static_cast<int>(g.group));
    const size_t size = DhPublicValueSize(g.group);
    auto dh = CreateDiffieHellman(g.group);
    ASSERT_TRUE(dh.ok()) << dh.status();
    BIGNUM* p = g.prime(nullptr);
    BIGNUM* v = BN_new();
    std::vector<std::string> bad;
    BN_zero(v);
    bad.push_back(BnBytes(v, size));
    BN_one(v);
    bad.push_back(BnBytes(v, size));
    BN_copy(v, p);
    BN_sub_word(v, 1);
    bad.push_back(BnBytes(v, size));  // p - 1
    BN_sub_word(v, 1);
    // p - 2 = -2 is a non-residue (p = 7 mod 8), so it lies outside the
    // order-q subgroup: OpenSSL's y^q == 1 check rejects it.
    bad.push_back(BnBytes(v, size));
    BN_add_word(v, 1);
    bad.push_back(BnBytes(p, size));  // p
    BN_add_word(v, 2);
    bad.push_back(BnBytes(v, size));  // p + 1
    bad.push_back(std::string(size, '\xff'));
    BN_free(v);
    BN_free(p);
    for (size_t i = 0; i < bad.size(); ++i) {
      EXPECT_EQ((*dh)->ComputeSharedSecret(bad[i]).status().code(),
                absl::StatusCode::kInvalidArgument)
          << i;
    }
    // 2 is the generator itself (of the order-q subgroup), so it is a valid
    // value; the secret keeps the prime's length.
    std::string two(size, '\0');
    two.back() = 2;
    auto secret = (*dh)->ComputeSharedSecret(two);
    ASSERT_TRUE(secret.ok()) << secret.status();
    EXPECT_EQ(secret->size(), size);
  }
}

TEST(DhTest, EcpRejectsPointsNotOnTheCurve) {
  for (DhGroup group : {DhGroup::kEcp256, DhGroup::kEcp384, DhGroup::kEcp521}) {
    SCOPED_TRACE(static_cast<int>(group));
    auto dh = CreateDiffieHellman(group);
    auto peer = CreateDiffieHellman(group);
    ASSERT_TRUE(dh.ok() && peer.ok());
    std::string off_curve = (*peer)->public_value();
    off_curve.back() ^= 0x01;  // y + 1 (or - 1): not on the curve.
    EXPECT_EQ((*dh)->ComputeSharedSecret(off_curve).status().code(),
              absl::StatusCode::kInvalidArgument);
    const std::string all_ones((*dh)->public_value().size(), '\xff');  // x, y >= p.
    EXPECT_EQ((*dh)->ComputeSharedSecret(all_ones).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// RFC 7748 §6.1.
TEST(DhTest, X25519Rfc7748Vector) {
  auto alice = CreateDiffieHellmanForTest(
      DhGroup::kCurve25519,
      Hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  auto bob = CreateDiffieHellmanForTest(
      DhGroup::kCurve25519,
      Hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  ASSERT_TRUE(alice.ok()) << alice.status();
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(ToHex((*alice)->public_value()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(ToHex((*bob)->public_value()),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const char kShared[] = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  auto ab = (*alice)->ComputeSharedSecret((*bob)->public_value());
  auto ba = (*bob)->ComputeSharedSecret((*alice)->public_value());
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_EQ(ToHex(ab->view()), kShared);
  EXPECT_EQ(ToHex(ba->view()), kShared);
}

// RFC 5903 §8.1 (256-bit random ECP group).
TEST(DhTest, Ecp256Rfc5903Vector) {
  auto i = CreateDiffieHellmanForTest(
      DhGroup::kEcp256, Hex("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433"));
  auto r = CreateDiffieHellmanForTest(
      DhGroup::kEcp256, Hex("C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53"));
  ASSERT_TRUE(i.ok()) << i.status();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ToHex((*i)->public_value()),
            "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180"
            "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3");
  EXPECT_EQ(ToHex((*r)->public_value()),
            "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63"
            "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab");
  const char kShared[] = "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de";
  auto ir = (*i)->ComputeSharedSecret((*r)->public_value());
  auto ri = (*r)->ComputeSharedSecret((*i)->public_value());
  ASSERT_TRUE(ir.ok()) << ir.status();
  ASSERT_TRUE(ri.ok()) << ri.status();
  EXPECT_EQ(ToHex(ir->view()), kShared);
  EXPECT_EQ(ToHex(ri->view()), kShared);
}

TEST(DhTest, X25519RejectsSmallOrderPoints) {
  auto dh = CreateDiffieHellman(DhGroup::kCurve25519);
  ASSERT_TRUE(dh.ok());
  // u = 1 and u = 0 give an all-zero result (RFC 8031 §2.3).
  std::string one(32, '\0');
  one[0] = 1;
  EXPECT_EQ((*dh)->ComputeSharedSecret(one).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strait::ike
