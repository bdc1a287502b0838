#include "common/intent/proposal.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::intent {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

TEST(ParseProposalTest, IkeAeadWithPrf) {
  auto p = ParseProposal("aes256gcm16-prfsha384-ecp384", ProposalKind::kIke);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->encryption.size(), 1);
  EXPECT_EQ(p->encryption[0].keyword, "aes256gcm16");
  EXPECT_EQ(p->encryption[0].id, 20);
  EXPECT_EQ(p->encryption[0].key_bits, 256);
  EXPECT_TRUE(p->encryption[0].aead);
  EXPECT_THAT(p->integrity, IsEmpty());
  ASSERT_EQ(p->prf.size(), 1);
  EXPECT_EQ(p->prf[0].id, 6);
  ASSERT_EQ(p->dh_groups.size(), 1);
  EXPECT_EQ(p->dh_groups[0].id, 20);
}

TEST(ParseProposalTest, IkeDerivesPrfFromIntegrity) {
  auto p = ParseProposal("aes256-sha256-modp2048", ProposalKind::kIke);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->encryption.size(), 1);
  EXPECT_EQ(p->encryption[0].id, 12);
  EXPECT_EQ(p->encryption[0].key_bits, 256);
  EXPECT_FALSE(p->encryption[0].aead);
  ASSERT_EQ(p->integrity.size(), 1);
  EXPECT_EQ(p->integrity[0].id, 12);
  ASSERT_EQ(p->prf.size(), 1);
  EXPECT_EQ(p->prf[0].keyword, "prfsha256");
  EXPECT_EQ(p->prf[0].id, 5);
  ASSERT_EQ(p->dh_groups.size(), 1);
  EXPECT_EQ(p->dh_groups[0].id, 14);
}

TEST(ParseProposalTest, IkeDerivesOnePrfPerIntegrityAlgorithm) {
  auto p = ParseProposal("aes128-aes256-sha384-sha2_512-sha384-x25519-ecp256", ProposalKind::kIke);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->encryption.size(), 2);
  ASSERT_EQ(p->integrity.size(), 2);
  ASSERT_EQ(p->prf.size(), 2);
  EXPECT_EQ(p->prf[0].id, 6);
  EXPECT_EQ(p->prf[1].id, 7);
  ASSERT_EQ(p->dh_groups.size(), 2);
  EXPECT_EQ(p->dh_groups[0].id, 31);
  EXPECT_EQ(p->dh_groups[1].id, 19);
}

TEST(ParseProposalTest, ExplicitPrfIsKept) {
  auto p = ParseProposal("aes256-sha256-prfsha512-ecp521", ProposalKind::kIke);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->prf.size(), 1);
  EXPECT_EQ(p->prf[0].id, 7);
}

TEST(ParseProposalTest, IkeAeadWithoutPrfIsRejected) {
  auto p = ParseProposal("aes256gcm16-ecp384", ProposalKind::kIke);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("PRF must be given"));
  EXPECT_THAT(p.status().message(), HasSubstr("aes256gcm16-prfsha384-ecp384"));
}

TEST(ParseProposalTest, IkeNeedsDhGroup) {
  auto p = ParseProposal("aes256gcm16-prfsha384", ProposalKind::kIke);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("DH group"));
}

TEST(ParseProposalTest, NonAeadNeedsIntegrity) {
  for (ProposalKind kind : {ProposalKind::kIke, ProposalKind::kEsp}) {
    auto p = ParseProposal("aes256-modp3072", kind);
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(p.status().message(), HasSubstr("needs an integrity algorithm"));
  }
}

TEST(ParseProposalTest, AeadRefusesIntegrity) {
  auto esp = ParseProposal("aes256gcm16-sha256", ProposalKind::kEsp);
  ASSERT_FALSE(esp.ok());
  EXPECT_THAT(esp.status().message(), HasSubstr("AEAD"));
  EXPECT_THAT(esp.status().message(), HasSubstr("sha256"));

  auto ike = ParseProposal("aes256gcm16-sha384-ecp384", ProposalKind::kIke);
  ASSERT_FALSE(ike.ok());
  EXPECT_THAT(ike.status().message(), HasSubstr("prfsha384"));
}

TEST(ParseProposalTest, AeadAndClassicCiphersDoNotMix) {
  auto p = ParseProposal("aes256gcm16-aes256-sha256", ProposalKind::kEsp);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("cannot share a proposal"));
}

TEST(ParseProposalTest, NeedsEncryption) {
  auto p = ParseProposal("sha256-modp2048", ProposalKind::kIke);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("no encryption algorithm"));
}

TEST(ParseProposalTest, EspDhGroupIsOptional) {
  auto no_pfs = ParseProposal("aes256gcm16", ProposalKind::kEsp);
  ASSERT_TRUE(no_pfs.ok()) << no_pfs.status();
  EXPECT_THAT(no_pfs->dh_groups, IsEmpty());
  EXPECT_THAT(no_pfs->prf, IsEmpty());

  auto pfs = ParseProposal("aes256gcm16-ecp384", ProposalKind::kEsp);
  ASSERT_TRUE(pfs.ok()) << pfs.status();
  ASSERT_EQ(pfs->dh_groups.size(), 1);
  EXPECT_EQ(pfs->dh_groups[0].id, 20);

  auto classic = ParseProposal("aes128-sha256", ProposalKind::kEsp);
  ASSERT_TRUE(classic.ok()) << classic.status();
  EXPECT_THAT(classic->prf, IsEmpty());
}

TEST(ParseProposalTest, EspRefusesPrf) {
  auto p = ParseProposal("aes256gcm16-prfsha384", ProposalKind::kEsp);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("ESP"));
}

TEST(ParseProposalTest, UnknownAndEmptyKeywords) {
  auto unknown = ParseProposal("aes257-sha256-modp2048", ProposalKind::kIke);
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("\"aes257\""));

  EXPECT_FALSE(ParseProposal("", ProposalKind::kEsp).ok());
  EXPECT_FALSE(ParseProposal("aes256--sha256", ProposalKind::kEsp).ok());
  EXPECT_FALSE(ParseProposal("aes256-sha256-", ProposalKind::kEsp).ok());
  EXPECT_FALSE(ParseProposal("aes256gcm16-esn", ProposalKind::kEsp).ok());
}

TEST(ParseProposalTest, KeywordsAreCaseInsensitiveAndStoredLowercase) {
  auto p = ParseProposal("AES256GCM16-PRFSHA384-X25519", ProposalKind::kIke);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->encryption[0].keyword, "aes256gcm16");
  EXPECT_EQ(p->dh_groups[0].keyword, "x25519");
}

struct KeywordCase {
  const char* proposal;
  int encryption_id;
  int key_bits;
};

class EspKeywordTest : public ::testing::TestWithParam<KeywordCase> {};

TEST_P(EspKeywordTest, MapsToIanaId) {
  auto p = ParseProposal(GetParam().proposal, ProposalKind::kEsp);
  ASSERT_TRUE(p.ok()) << GetParam().proposal << ": " << p.status();
  EXPECT_EQ(p->encryption[0].id, GetParam().encryption_id);
  EXPECT_EQ(p->encryption[0].key_bits, GetParam().key_bits);
}

INSTANTIATE_TEST_SUITE_P(
    StrongSwanKeywords, EspKeywordTest,
    ::testing::Values(KeywordCase{"aes-sha256", 12, 128}, KeywordCase{"aes192-sha256", 12, 192},
                      KeywordCase{"aes128gcm8", 18, 128}, KeywordCase{"aes128gcm64", 18, 128},
                      KeywordCase{"aes192gcm12", 19, 192}, KeywordCase{"aes192gcm96", 19, 192},
                      KeywordCase{"aes256gcm128", 20, 256}, KeywordCase{"aes128ccm16", 16, 128},
                      KeywordCase{"aes256ctr-sha512", 13, 256},
                      KeywordCase{"chacha20poly1305", 28, 0}, KeywordCase{"3des-sha256", 3, 0},
                      KeywordCase{"des-sha256", 2, 0}, KeywordCase{"null-sha256", 11, 0},
                      KeywordCase{"rc4-sha256", 0, 0}, KeywordCase{"arcfour-sha256", 0, 0}));

struct DhCase {
  const char* keyword;
  int group;
};

class DhKeywordTest : public ::testing::TestWithParam<DhCase> {};

TEST_P(DhKeywordTest, MapsToGroupNumber) {
  auto p = ParseProposal(std::string("aes256gcm16-") + GetParam().keyword, ProposalKind::kEsp);
  ASSERT_TRUE(p.ok()) << GetParam().keyword << ": " << p.status();
  EXPECT_EQ(p->dh_groups[0].id, GetParam().group);
}

INSTANTIATE_TEST_SUITE_P(
    StrongSwanKeywords, DhKeywordTest,
    ::testing::Values(DhCase{"modp768", 1}, DhCase{"modp1024", 2}, DhCase{"modp1536", 5},
                      DhCase{"modp2048", 14}, DhCase{"modp3072", 15}, DhCase{"modp4096", 16},
                      DhCase{"modp6144", 17}, DhCase{"modp8192", 18}, DhCase{"ecp256", 19},
                      DhCase{"ecp384", 20}, DhCase{"ecp521", 21}, DhCase{"curve25519", 31},
                      DhCase{"x25519", 31}, DhCase{"curve448", 32}, DhCase{"x448", 32}));

TEST(ParseProposalTest, IntegrityAndPrfIds) {
  auto md5 = ParseProposal("aes128-md5-modp2048", ProposalKind::kIke);
  ASSERT_TRUE(md5.ok()) << md5.status();
  EXPECT_EQ(md5->integrity[0].id, 1);
  EXPECT_EQ(md5->prf[0].id, 1);
  auto sha1 = ParseProposal("aes128-sha1-modp2048", ProposalKind::kIke);
  ASSERT_TRUE(sha1.ok()) << sha1.status();
  EXPECT_EQ(sha1->integrity[0].id, 2);
  EXPECT_EQ(sha1->prf[0].id, 2);
  auto sha512 = ParseProposal("aes128-sha512-modp2048", ProposalKind::kIke);
  ASSERT_TRUE(sha512.ok()) << sha512.status();
  EXPECT_EQ(sha512->integrity[0].id, 14);
  EXPECT_EQ(sha512->prf[0].id, 7);
}

Transform Parsed(const char* proposal, ProposalKind kind, absl::string_view type) {
  auto p = ParseProposal(proposal, kind);
  EXPECT_TRUE(p.ok()) << proposal << ": " << p.status();
  if (!p.ok()) {
    return Transform();
  }
  if (type == kTransformEncryption) {
    return p->encryption.at(0);
  }
  if (type == kTransformIntegrity) {
    return p->integrity.at(0);
  }
  if (type == kTransformPrf) {
    return p->prf.at(0);
  }
  return p->dh_groups.at(0);
}

TEST(WeakTransformReasonTest, RefusesWeakEncryption) {
  for (const char* p :
       {"des-sha256", "3des-sha256", "rc4-sha256", "arcfour-sha256", "null-sha256"}) {
    Transform t = Parsed(p, ProposalKind::kEsp, kTransformEncryption);
    std::string reason = WeakTransformReason(t, kTransformEncryption);
    EXPECT_THAT(reason, Not(IsEmpty())) << p;
    EXPECT_THAT(reason, HasSubstr(t.keyword)) << p;
  }
  EXPECT_THAT(WeakTransformReason(Parsed("3des-sha256", ProposalKind::kEsp, kTransformEncryption),
                                  kTransformEncryption),
              HasSubstr("Sweet32"));
}

TEST(WeakTransformReasonTest, RefusesMd5AndSha1) {
  for (const char* p : {"aes256-md5-modp2048", "aes256-sha1-modp2048", "aes256-sha-modp2048"}) {
    EXPECT_THAT(WeakTransformReason(Parsed(p, ProposalKind::kIke, kTransformIntegrity),
                                    kTransformIntegrity),
                Not(IsEmpty()))
        << p;
    EXPECT_THAT(WeakTransformReason(Parsed(p, ProposalKind::kIke, kTransformPrf), kTransformPrf),
                Not(IsEmpty()))
        << p;
  }
}

TEST(WeakTransformReasonTest, RefusesDhGroups1To5) {
  for (const char* p : {"aes256gcm16-modp768", "aes256gcm16-modp1024", "aes256gcm16-modp1536"}) {
    Transform t = Parsed(p, ProposalKind::kEsp, kTransformDh);
    std::string reason = WeakTransformReason(t, kTransformDh);
    EXPECT_THAT(reason, HasSubstr(absl::StrCat("DH group ", t.id))) << p;
  }
}

TEST(WeakTransformReasonTest, AcceptsModernAlgorithms) {
  for (const char* p : {"aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048",
                        "chacha20poly1305-prfsha256-x25519", "aes256-sha512-modp3072"}) {
    auto proposal = ParseProposal(p, ProposalKind::kIke);
    ASSERT_TRUE(proposal.ok()) << p << ": " << proposal.status();
    for (const Transform& t : proposal->encryption) {
      EXPECT_EQ(WeakTransformReason(t, kTransformEncryption), "") << p;
    }
    for (const Transform& t : proposal->integrity) {
      EXPECT_EQ(WeakTransformReason(t, kTransformIntegrity), "") << p;
    }
    for (const Transform& t : proposal->prf) {
      EXPECT_EQ(WeakTransformReason(t, kTransformPrf), "");
    }
    for (const Transform& t : proposal->dh_groups) {
      EXPECT_EQ(WeakTransformReason(t, kTransformDh), "") << p;
    }
  }
}

TEST(WeakTransformReasonTest, TypeDisambiguatesIds) {
  // Encryption ID 2 is DES, integrity ID 2 is HMAC-SHA1, DH group 2 is
  // modp1024, and PRF 5 is fine while DH group 5 is not.
  Transform t;
  t.keyword = "x";
  t.id = 5;
  EXPECT_EQ(WeakTransformReason(t, kTransformPrf), "");
  EXPECT_THAT(WeakTransformReason(t, kTransformDh), Not(IsEmpty()));
  EXPECT_EQ(WeakTransformReason(t, "bogus"), "");
}

}  // namespace
}  // namespace strait::intent
