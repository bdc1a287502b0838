#include "common/intent/cidr.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::intent {
namespace {

using ::testing::HasSubstr;

TEST(ParseIpAddressTest, ParsesIpv4) {
  auto ip = ParseIpAddress("192.0.2.1");
  ASSERT_TRUE(ip.ok()) << ip.status();
  EXPECT_EQ(ip->family, 4);
  EXPECT_EQ(ip->bits(), 32);
  EXPECT_EQ(ip->bytes[0], 192);
  EXPECT_EQ(ip->bytes[3], 1);
  EXPECT_EQ(ip->bytes[4], 0);
  EXPECT_EQ(ip->ToString(), "192.0.2.1");
}

TEST(ParseIpAddressTest, ParsesIpv6AndPrintsCanonicalForm) {
  auto ip = ParseIpAddress("2001:DB8:0:0::1");
  ASSERT_TRUE(ip.ok()) << ip.status();
  EXPECT_EQ(ip->family, 6);
  EXPECT_EQ(ip->bits(), 128);
  EXPECT_EQ(ip->ToString(), "2001:db8::1");
}

TEST(ParseIpAddressTest, RejectsNonLiterals) {
  for (const char* text :
       {"", "192.0.2", "192.0.2.256", "192.0.2.1 ", " 192.0.2.1", "010.0.0.1", "0x7f.0.0.1",
        "gw.example.com", "fe80::1%eth0", "2001:db8:::1", "192.0.2.1/32"}) {
    EXPECT_FALSE(ParseIpAddress(text).ok()) << text;
  }
  EXPECT_FALSE(ParseIpAddress(absl::string_view("1.2.3.4\0", 8)).ok());
}

TEST(ParseCidrTest, ParsesNetworks) {
  auto v4 = ParseCidr("10.1.0.0/24");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->prefix_length, 24);
  EXPECT_EQ(v4->ToString(), "10.1.0.0/24");

  auto v6 = ParseCidr("2001:db8::/48");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->address.family, 6);
  EXPECT_EQ(v6->prefix_length, 48);
  EXPECT_EQ(v6->ToString(), "2001:db8::/48");
}

TEST(ParseCidrTest, BareAddressIsAHostRoute) {
  auto v4 = ParseCidr("192.0.2.7");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->prefix_length, 32);
  auto v6 = ParseCidr("2001:db8::7");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->prefix_length, 128);
}

TEST(ParseCidrTest, AllAddresses) {
  auto v4 = ParseCidr("0.0.0.0/0");
  ASSERT_TRUE(v4.ok());
  EXPECT_TRUE(v4->IsAllAddresses());
  auto v6 = ParseCidr("::/0");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->IsAllAddresses());
  EXPECT_FALSE(ParseCidr("10.0.0.0/8")->IsAllAddresses());
}

TEST(ParseCidrTest, HostBitsSetNamesTheNetwork) {
  auto cidr = ParseCidr("10.1.0.1/24");
  ASSERT_FALSE(cidr.ok());
  EXPECT_EQ(cidr.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cidr.status().message(), HasSubstr("did you mean 10.1.0.0/24"));

  auto odd = ParseCidr("10.1.2.128/23");
  ASSERT_FALSE(odd.ok());
  EXPECT_THAT(odd.status().message(), HasSubstr("did you mean 10.1.2.0/23"));

  auto v6 = ParseCidr("2001:db8::1/64");
  ASSERT_FALSE(v6.ok());
  EXPECT_THAT(v6.status().message(), HasSubstr("did you mean 2001:db8::/64"));
}

TEST(ParseCidrTest, RejectsBadPrefixes) {
  for (const char* text : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8",
                           "10.0.0.0/8/8", "10.0.0.0/0x8", "::/129", "/24", "10.0.0.0/08"}) {
    EXPECT_FALSE(ParseCidr(text).ok()) << text;
  }
}

TEST(CidrTest, Contains) {
  Cidr net = *ParseCidr("10.1.0.0/16");
  EXPECT_TRUE(net.Contains(*ParseIpAddress("10.1.255.3")));
  EXPECT_FALSE(net.Contains(*ParseIpAddress("10.2.0.1")));
  EXPECT_FALSE(net.Contains(*ParseIpAddress("::ffff:10.1.0.1")));
  EXPECT_TRUE(ParseCidr("0.0.0.0/0")->Contains(*ParseIpAddress("203.0.113.9")));
  EXPECT_FALSE(ParseCidr("0.0.0.0/0")->Contains(*ParseIpAddress("2001:db8::1")));
}

struct OverlapCase {
  const char* a;
  const char* b;
  bool overlaps;
};

class OverlapTest : public ::testing::TestWithParam<OverlapCase> {};

TEST_P(OverlapTest, IsSymmetric) {
  const OverlapCase& c = GetParam();
  Cidr a = *ParseCidr(c.a);
  Cidr b = *ParseCidr(c.b);
  EXPECT_EQ(a.Overlaps(b), c.overlaps) << c.a << " vs " << c.b;
  EXPECT_EQ(b.Overlaps(a), c.overlaps) << c.b << " vs " << c.a;
}

INSTANTIATE_TEST_SUITE_P(Ipv4AndIpv6, OverlapTest,
                         ::testing::Values(OverlapCase{"10.1.0.0/24", "10.1.0.0/24", true},
                                           OverlapCase{"10.1.0.0/24", "10.1.0.0/16", true},
                                           OverlapCase{"10.1.0.0/24", "10.1.1.0/24", false},
                                           OverlapCase{"10.1.0.128/25", "10.1.0.0/25", false},
                                           OverlapCase{"10.1.0.7", "10.1.0.0/29", true},
                                           OverlapCase{"0.0.0.0/0", "192.0.2.0/24", true},
                                           OverlapCase{"2001:db8::/32", "2001:db8:1::/48", true},
                                           OverlapCase{"2001:db8::/48", "2001:db8:1::/48", false},
                                           OverlapCase{"::/0", "2001:db8::/32", true},
                                           // Families never overlap.
                                           OverlapCase{"0.0.0.0/0", "::/0", false},
                                           OverlapCase{"10.0.0.0/8", "::ffff:10.0.0.0/104",
                                                       false}));

}  // namespace
}  // namespace strait::intent
