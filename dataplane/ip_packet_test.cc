#include "dataplane/ip_packet.h"

#include <random>

#include "dataplane/testing/packets.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using testing::Bytes;
using testing::IcmpHeader;
using testing::Ip;
using testing::IpPacket;
using testing::Sel;
using testing::TcpHeader;
using testing::UdpPacket;

TEST(IpPacketTest, ParsesIpv4Udp) {
  const Bytes p = UdpPacket("10.1.0.5", "10.2.0.9", 1234, 53, 10);
  auto flow = ParseIpPacket(p);
  ASSERT_TRUE(flow.ok()) << flow.status();
  EXPECT_EQ(flow->version, 4);
  EXPECT_EQ(flow->protocol, 17);
  EXPECT_EQ(flow->source_port, 1234);
  EXPECT_EQ(flow->destination_port, 53);
  EXPECT_EQ(flow->length, p.size());
  EXPECT_FALSE(flow->fragment);
  EXPECT_EQ(FlowSelector(*flow), Sel("10.1.0.5/32", "10.2.0.9/32", 17, 1234, 53));
}

TEST(IpPacketTest, ParsesIpv6TcpPastExtensionHeaders) {
  // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
  Bytes payload = {60, 0, 1, 4, 0, 0, 0, 0};
  Bytes dest_opts = {6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  payload.insert(payload.end(), dest_opts.begin(), dest_opts.end());
  Bytes tcp = TcpHeader(40000, 443);
  payload.insert(payload.end(), tcp.begin(), tcp.end());
  const Bytes p = IpPacket(Ip("2001:db8:1::1"), Ip("2001:db8:2::1"), 0, payload);
  auto flow = ParseIpPacket(p);
  ASSERT_TRUE(flow.ok()) << flow.status();
  EXPECT_EQ(flow->version, 6);
  EXPECT_EQ(flow->protocol, 6);
  EXPECT_EQ(flow->source_port, 40000);
  EXPECT_EQ(flow->destination_port, 443);
  EXPECT_TRUE(SelectorMatches(Sel("2001:db8:1::/48", "2001:db8:2::/48", 6, 0, 443), *flow));
  EXPECT_FALSE(SelectorMatches(Sel("2001:db8:1::/48", "2001:db8:2::/48", 17), *flow));
}

TEST(IpPacketTest, IcmpTypeAndCodeStandInForPorts) {
  const Bytes p = IpPacket(Ip("10.1.0.1"), Ip("10.2.0.1"), 1, IcmpHeader(8, 0));
  auto flow = ParseIpPacket(p);
  ASSERT_TRUE(flow.ok());
  EXPECT_EQ(flow->source_port, 8);
  EXPECT_EQ(flow->destination_port, 0);
  EXPECT_TRUE(SelectorMatches(Sel("10.1.0.0/24", "10.2.0.0/24", 1, 8), *flow));
  EXPECT_FALSE(SelectorMatches(Sel("10.1.0.0/24", "10.2.0.0/24", 1, 0, 3), *flow));
}

TEST(IpPacketTest, FragmentsHaveNoPorts) {
  Bytes udp = testing::UdpHeader(1000, 2000, 8);
  udp.resize(16);
  for (uint16_t frag : {0x2000 /* MF */, 0x0010 /* offset */}) {
    auto flow = ParseIpPacket(IpPacket(Ip("10.1.0.1"), Ip("10.2.0.1"), 17, udp, frag));
    ASSERT_TRUE(flow.ok());
    EXPECT_TRUE(flow->fragment);
    EXPECT_EQ(flow->source_port, 0);
    EXPECT_TRUE(SelectorMatches(Sel("10.1.0.0/24", "10.2.0.0/24", 17), *flow));
    EXPECT_FALSE(SelectorMatches(Sel("10.1.0.0/24", "10.2.0.0/24", 17, 1000), *flow));
  }
  // Don't-fragment alone is not a fragment.
  auto flow = ParseIpPacket(IpPacket(Ip("10.1.0.1"), Ip("10.2.0.1"), 17, udp, 0x4000));
  ASSERT_TRUE(flow.ok());
  EXPECT_FALSE(flow->fragment);
  EXPECT_EQ(flow->source_port, 1000);
}

TEST(IpPacketTest, TrailingBytesAreAllowedAndLengthComesFromTheHeader) {
  Bytes p = UdpPacket("10.1.0.1", "10.2.0.1", 1, 2, 4);
  const size_t real = p.size();
  p.resize(real + 13, 0);  // TFC padding.
  auto flow = ParseIpPacket(p);
  ASSERT_TRUE(flow.ok());
  EXPECT_EQ(flow->length, real);
}

TEST(IpPacketTest, PrefixMatching) {
  auto flow = ParseIpPacket(UdpPacket("10.1.2.3", "192.168.77.129", 1, 2));
  ASSERT_TRUE(flow.ok());
  EXPECT_TRUE(SelectorMatches(Sel("0.0.0.0/0", "0.0.0.0/0"), *flow));
  EXPECT_TRUE(SelectorMatches(Sel("10.0.0.0/8", "192.168.77.128/25"), *flow));
  EXPECT_FALSE(SelectorMatches(Sel("10.0.0.0/8", "192.168.77.0/25"), *flow));
  EXPECT_TRUE(SelectorMatches(Sel("10.1.2.0/23", "192.168.77.129/32"), *flow));
  EXPECT_FALSE(SelectorMatches(Sel("10.1.4.0/23", "192.168.77.129/32"), *flow));
  EXPECT_FALSE(SelectorMatches(Sel("::/0", "::/0"), *flow));  // Family.
}

TEST(IpPacketTest, RejectsMalformedPackets) {
  EXPECT_FALSE(ParseIpPacket(Bytes{}).ok());
  EXPECT_FALSE(ParseIpPacket(Bytes(19, 0x45)).ok());
  Bytes v4 = UdpPacket("10.1.0.1", "10.2.0.1", 1, 2);
  Bytes bad = v4;
  bad[0] = 0x44;  // IHL 4.
  EXPECT_FALSE(ParseIpPacket(bad).ok());
  bad = v4;
  bad.resize(v4.size() - 1);  // Shorter than total length.
  EXPECT_FALSE(ParseIpPacket(bad).ok());
  bad = v4;
  bad[0] = 0x55;  // Version 5.
  EXPECT_FALSE(ParseIpPacket(bad).ok());
  Bytes v6 = UdpPacket("2001:db8::1", "2001:db8::2", 1, 2);
  bad = v6;
  bad.resize(v6.size() - 1);
  EXPECT_FALSE(ParseIpPacket(bad).ok());
  bad = v6;
  bad[4] = bad[5] = 0;  // Jumbogram.
  EXPECT_FALSE(ParseIpPacket(bad).ok());
  // An extension header running past the payload.
  bad = IpPacket(Ip("2001:db8::1"), Ip("2001:db8::2"), 0, Bytes{17, 200, 0, 0, 0, 0, 0, 0});
  EXPECT_FALSE(ParseIpPacket(bad).ok());
}

TEST(IpPacketTest, RandomBytesNeverCrash) {
  std::mt19937 rng(99);
  for (int i = 0; i < 20000; ++i) {
    Bytes p(rng() % 120);
    for (auto& b : p) b = rng();
    if (!p.empty()) p[0] = (rng() % 2 ? 0x40 : 0x60) | (p[0] & 0x0f);
    auto flow = ParseIpPacket(p);
    if (flow.ok()) {
      EXPECT_LE(flow->length, p.size());
    }
  }
}

TEST(IpPacketTest, ValidateSelector) {
  EXPECT_TRUE(ValidateSelector(Sel("10.0.0.0/8", "10.1.0.0/16")).ok());
  EXPECT_TRUE(ValidateSelector(Sel("::/0", "2001:db8::/32")).ok());
  Selector s = Sel("10.0.0.0/8", "10.1.0.0/16");
  s.destination_prefix = 33;
  EXPECT_FALSE(ValidateSelector(s).ok());
  s = Sel("10.0.0.0/8", "2001:db8::/32");
  EXPECT_FALSE(ValidateSelector(s).ok());
  EXPECT_FALSE(ValidateSelector(Selector{}).ok());
}

}  // namespace
}  // namespace strait::dataplane
