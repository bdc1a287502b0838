// TUN device tests in a network namespace of their own (needs root and
// /dev/net/tun; skipped otherwise).

#include "dataplane/tun_device.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "dataplane/ip_packet.h"
#include "dataplane/testing/netns.h"
#include "dataplane/testing/packets.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using testing::Bytes;
using testing::Ip;
using testing::IpPacket;
using testing::Netns;
using testing::Sel;

// An ICMP echo request with a valid checksum.
Bytes EchoRequest(uint16_t id, uint16_t seq) {
  Bytes icmp = {8,
                0,
                0,
                0,
                static_cast<uint8_t>(id >> 8),
                static_cast<uint8_t>(id),
                static_cast<uint8_t>(seq >> 8),
                static_cast<uint8_t>(seq)};
  for (int i = 0; i < 24; ++i) icmp.push_back(static_cast<uint8_t>(i));
  uint32_t sum = 0;
  for (size_t i = 0; i < icmp.size(); i += 2) sum += (icmp[i] << 8) | icmp[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  icmp[2] = static_cast<uint8_t>(~sum >> 8);
  icmp[3] = static_cast<uint8_t>(~sum);
  return icmp;
}

class TunDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/net/tun";
    }
    if (!ns_.valid()) GTEST_SKIP() << "cannot create a network namespace here";
    if (ns_.Shell("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs iproute2";
    ASSERT_EQ(ns_.Shell("ip link set lo up && ip addr add 10.1.0.1/32 dev lo"), 0);
  }

  Netns ns_;
};

TEST_F(TunDeviceTest, ComesUpWithItsMtu) {
  TunDevicePtr tun;
  ns_.Run([&] {
    TunOptions options;
    options.name = "strait-t%d";
    options.mtu = 1390;
    auto created = TunDevice::Create(options);
    ASSERT_TRUE(created.ok()) << created.status();
    tun = std::move(*created);
  });
  ASSERT_NE(tun, nullptr);
  EXPECT_EQ(tun->name(), "strait-t0");
  EXPECT_EQ(ns_.Shell("ip link show strait-t0 | grep -q 'mtu 1390'"), 0);
  EXPECT_EQ(ns_.Shell("ip link show strait-t0 | grep -q ',UP'"), 0);
  // The device is gone with the object.
  tun.reset();
  EXPECT_NE(ns_.Shell("ip link show strait-t0 >/dev/null 2>&1"), 0);
}

TEST_F(TunDeviceTest, RoutesWithALocalSourceAndPacketsBothWays) {
  TunDevicePtr tun;
  ns_.Run([&] {
    auto created = TunDevice::Create();
    ASSERT_TRUE(created.ok()) << created.status();
    tun = std::move(*created);
  });
  ASSERT_NE(tun, nullptr);
  EXPECT_EQ(tun->mtu(), 1390);
  // The route is made from whichever thread: it goes to the device's
  // namespace all the same.
  ASSERT_TRUE(tun->AddRoute(Sel("10.1.0.0/24", "10.2.0.7/24")).ok());  // Host bits dropped.
  ASSERT_TRUE(tun->AddRoute(Sel("10.1.0.0/24", "10.2.0.0/24")).ok());  // Replace: no error.
  EXPECT_EQ(ns_.Shell("ip route show proto 211 | grep -q '10.2.0.0/24 dev " + tun->name() +
                      " scope link src 10.1.0.1'"),
            0);
  auto local = tun->FindLocalAddress(Ip("10.1.0.0"), 24);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(*local, Ip("10.1.0.1"));
  EXPECT_FALSE(tun->FindLocalAddress(Ip("10.9.0.0"), 16).ok());

  // An echo request from the far side, written into the device, is
  // answered by the host through the route, back into the device.
  ASSERT_TRUE(tun->Write(IpPacket(Ip("10.2.0.9"), Ip("10.1.0.1"), 1, EchoRequest(77, 1))).ok());
  Bytes buffer(2000);
  absl::StatusOr<PacketFlow> reply;
  for (int i = 0; i < 20; ++i) {  // Skip IPv6 router solicitations and the like.
    auto n = tun->Read(absl::MakeSpan(buffer), absl::Seconds(2));
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_GT(*n, 0u) << "no reply within 2 s";
    reply = ParseIpPacket(absl::MakeConstSpan(buffer.data(), *n));
    if (reply.ok() && reply->version == 4) break;
  }
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->protocol, 1);
  EXPECT_EQ(reply->source_port, 0);  // ICMP echo reply.
  EXPECT_EQ(Address(reply->source.begin(), reply->source.begin() + 4), Ip("10.1.0.1"));
  EXPECT_EQ(Address(reply->destination.begin(), reply->destination.begin() + 4), Ip("10.2.0.9"));

  ASSERT_TRUE(tun->DeleteRoute(Sel("10.1.0.0/24", "10.2.0.0/24")).ok());
  EXPECT_NE(ns_.Shell("ip route show proto 211 | grep -q 10.2.0.0"), 0);
  EXPECT_EQ(tun->DeleteRoute(Sel("10.1.0.0/24", "10.2.0.0/24")).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TunDeviceTest, Ipv6Routes) {
  ASSERT_EQ(ns_.Shell("ip -6 addr add fd00:1::1/128 dev lo"), 0);
  TunDevicePtr tun;
  ns_.Run([&] {
    auto created = TunDevice::Create();
    ASSERT_TRUE(created.ok()) << created.status();
    tun = std::move(*created);
  });
  ASSERT_NE(tun, nullptr);
  ASSERT_TRUE(tun->AddRoute(Sel("fd00:1::/64", "fd00:2::/64")).ok());
  EXPECT_EQ(ns_.Shell("ip -6 route show proto 211 | grep -q 'fd00:2::/64 dev " + tun->name() +
                      ".*src fd00:1::1'"),
            0);
}

TEST_F(TunDeviceTest, ReadTimesOut) {
  TunDevicePtr tun;
  ns_.Run([&] {
    TunOptions options;
    options.name = "strait-quiet";
    auto created = TunDevice::Create(options);
    ASSERT_TRUE(created.ok()) << created.status();
    tun = std::move(*created);
  });
  ASSERT_NE(tun, nullptr);
  // Disable IPv6 on it first, or router solicitations arrive.
  ns_.Sysctl("net/ipv6/conf/strait-quiet/disable_ipv6", "1");
  Bytes buffer(2000);
  absl::SleepFor(absl::Milliseconds(50));
  while (true) {  // Drain what came before IPv6 went off.
    auto n = tun->Read(absl::MakeSpan(buffer), absl::Milliseconds(10));
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
  }
  const absl::Time start = absl::Now();
  auto n = tun->Read(absl::MakeSpan(buffer), absl::Milliseconds(100));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
}

TEST(TunDeviceOptionsTest, RejectsBadOptions) {
  TunOptions options;
  options.name = "a-name-that-is-far-too-long";
  EXPECT_EQ(TunDevice::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TunOptions();
  options.mtu = 100;
  EXPECT_EQ(TunDevice::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

// Routes for the kernel XFRM dataplane: remote selectors go the way the
// peer is reached (on-link, or through a gateway), from a local address in
// the local selector. A regression test too: the route lookup used to wait
// for an answer's end that the kernel never sends, hanging the agent's IKE
// loop.
TEST(PeerRouteTableTest, RoutesRemoteSelectorsAlongThePathToThePeer) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  Netns ns;
  if (!ns.valid()) GTEST_SKIP() << "cannot create a network namespace here";
  if (ns.Shell("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs iproute2";
  ASSERT_EQ(ns.Shell("ip link set lo up && ip link add u0 type veth peer name u1 && "
                     "ip link add l0 type veth peer name l1 && "
                     "ip addr add 198.51.100.1/24 dev u0 && ip addr add 10.1.0.1/24 dev l0 && "
                     "ip link set u0 up && ip link set u1 up && ip link set l0 up && "
                     "ip link set l1 up && ip route add 203.0.113.0/24 via 198.51.100.254"),
            0);
  std::unique_ptr<PeerRouteTable> routes;
  ns.Run([&] {
    auto created = PeerRouteTable::Create();
    ASSERT_TRUE(created.ok()) << created.status();
    routes = std::move(*created);
  });
  ASSERT_NE(routes, nullptr);

  // The peer is on the underlay's link: the remote selector is too.
  const absl::Time start = absl::Now();
  ASSERT_TRUE(routes->AddRoute(Sel("10.1.0.0/24", "10.2.0.0/24"), Ip("198.51.100.2")).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(ns.Shell("ip route show proto 211 | grep -q '^10.2.0.0/24 dev u0 scope link src "
                     "10.1.0.1'"),
            0);
  // Again: replaced, no error.
  ASSERT_TRUE(routes->AddRoute(Sel("10.1.0.0/24", "10.2.0.0/24"), Ip("198.51.100.2")).ok());
  // The peer is behind a gateway: so is the remote selector.
  ASSERT_TRUE(routes->AddRoute(Sel("10.1.0.0/24", "10.3.0.0/16"), Ip("203.0.113.9")).ok());
  EXPECT_EQ(ns.Shell("ip route show proto 211 | grep -q '^10.3.0.0/16 via 198.51.100.254 dev u0 "
                     "src 10.1.0.1'"),
            0);
  // No local address in the local selector: no preferred source.
  ASSERT_TRUE(routes->AddRoute(Sel("10.9.0.0/24", "10.4.0.0/24"), Ip("198.51.100.2")).ok());
  EXPECT_EQ(ns.Shell("ip route show proto 211 | grep '^10.4.0.0/24' | grep -vq src"), 0);
  // No route to the peer at all.
  EXPECT_EQ(routes->AddRoute(Sel("10.1.0.0/24", "10.5.0.0/24"), Ip("192.0.2.1")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(routes->AddRoute(Sel("10.1.0.0/24", "10.5.0.0/24"), Ip("::1")).ok());

  ASSERT_TRUE(routes->DeleteRoute(Sel("10.1.0.0/24", "10.2.0.0/24")).ok());
  EXPECT_NE(ns.Shell("ip route show proto 211 | grep -q 10.2.0.0"), 0);
  EXPECT_EQ(ns.Shell("ip route show proto 211 | grep -q 10.3.0.0"), 0);
  EXPECT_EQ(routes->DeleteRoute(Sel("10.1.0.0/24", "10.2.0.0/24")).code(),
            absl::StatusCode::kNotFound);

  // What a killed agent left goes, IPv6 too; other routes stay.
  ASSERT_EQ(ns.Shell("ip -6 addr add fd00:9::1/64 dev u0 nodad && "
                     "ip -6 route add fd00:2::/64 dev u0 proto 211 && "
                     "ip route add 10.7.0.0/24 dev u0 proto static"),
            0);
  absl::StatusOr<int> removed = routes->RemoveAll();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 3);  // 10.3.0.0/16, 10.4.0.0/24, fd00:2::/64.
  EXPECT_EQ(ns.Shell("test -z \"$(ip route show proto 211; ip -6 route show proto 211)\""), 0);
  EXPECT_EQ(ns.Shell("ip route show | grep -q '^10.7.0.0/24'"), 0);
  EXPECT_EQ(ns.Shell("ip route show | grep -q '^198.51.100.0/24'"), 0);
  removed = routes->RemoveAll();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
}

}  // namespace
}  // namespace strait::dataplane
