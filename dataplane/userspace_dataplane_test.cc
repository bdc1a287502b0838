#include "dataplane/userspace_dataplane.h"

#include <atomic>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "dataplane/testing/fake_io.h"
#include "dataplane/testing/packets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using testing::Bytes;
using testing::FakeDevice;
using testing::FakeRoutes;
using testing::FakeSocket;
using testing::IcmpHeader;
using testing::Ip;
using testing::IpPacket;
using testing::Sel;
using testing::UdpPacket;
using Kind = DataplaneEvent::Kind;

struct Algorithm {
  std::string name;
  uint16_t encr_id;
  int key_bits;
  uint16_t integ_id;
};

std::string Key(size_t n, uint8_t seed) {
  std::string k(n, 0);
  for (size_t i = 0; i < n; ++i) k[i] = static_cast<char>(seed * 31 + i);
  return k;
}

// Two ends: "left" owns 10.1.0.0/24 (and fd00:1::/64) behind outer
// address L, "right" owns 10.2.0.0/24 (fd00:2::/64) behind R. Each end's
// socket delivers straight into the other's HandleEspDatagram.
struct Family {
  std::string name;
  std::string left_outer, right_outer;
  std::string left_net, right_net;  // CIDR.
  std::string left_host, right_host;
};

const Family kV4inV4{"V4inV4",      "192.0.2.1", "192.0.2.2", "10.1.0.0/24",
                     "10.2.0.0/24", "10.1.0.5",  "10.2.0.9"};
const Family kV6inV4{"V6inV4",      "192.0.2.1", "192.0.2.2", "fd00:1::/64",
                     "fd00:2::/64", "fd00:1::5", "fd00:2::9"};
const Family kV4inV6{"V4inV6",      "2001:db8::1", "2001:db8::2", "10.1.0.0/24",
                     "10.2.0.0/24", "10.1.0.5",    "10.2.0.9"};
const Family kV6inV6{"V6inV6",      "2001:db8::1", "2001:db8::2", "fd00:1::/64",
                     "fd00:2::/64", "fd00:1::5",   "fd00:2::9"};

constexpr uint32_t kLeftToRightSpi = 0xc0000001;
constexpr uint32_t kRightToLeftSpi = 0xc0000002;
constexpr uint32_t kReqid = 7;

SaConfig MakeSa(const Family& f, bool left_to_right, const Algorithm& a, bool esn = false,
                uint32_t spi = 0, uint8_t key_seed = 1) {
  SaConfig sa;
  sa.source = Ip(left_to_right ? f.left_outer : f.right_outer);
  sa.id.destination = Ip(left_to_right ? f.right_outer : f.left_outer);
  sa.id.spi = spi != 0 ? spi : left_to_right ? kLeftToRightSpi : kRightToLeftSpi;
  sa.reqid = kReqid;
  sa.encr_id = a.encr_id;
  sa.key_bits = a.key_bits;
  sa.integ_id = a.integ_id;
  const bool gcm = a.encr_id != kEncrAesCbc;
  sa.encr_key = Secret(Key(a.key_bits / 8 + (gcm ? 4 : 0), key_seed + left_to_right));
  if (!gcm) {
    const size_t n = a.integ_id == kIntegHmacSha256_128   ? 32
                     : a.integ_id == kIntegHmacSha384_192 ? 48
                                                          : 64;
    sa.integ_key = Secret(Key(n, key_seed + 10 + left_to_right));
  }
  sa.esn = esn;
  sa.encapsulation = UdpEncapsulation{4500, 4500};
  return sa;
}

std::vector<PolicyConfig> MakePolicies(const Family& f, bool left) {
  const std::string local = left ? f.left_net : f.right_net;
  const std::string remote = left ? f.right_net : f.left_net;
  const Address local_outer = Ip(left ? f.left_outer : f.right_outer);
  const Address remote_outer = Ip(left ? f.right_outer : f.left_outer);
  PolicyConfig out;
  out.selector = Sel(local, remote);
  out.direction = Direction::kOut;
  out.tunnel_source = local_outer;
  out.tunnel_destination = remote_outer;
  out.reqid = kReqid;
  PolicyConfig in;
  in.selector = Sel(remote, local);
  in.direction = Direction::kIn;
  in.tunnel_source = remote_outer;
  in.tunnel_destination = local_outer;
  in.reqid = kReqid;
  PolicyConfig fwd = in;
  fwd.direction = Direction::kFwd;
  return {out, in, fwd};
}

void MustOk(const absl::Status& status) {
  if (!status.ok()) {
    ADD_FAILURE() << status;
    std::abort();
  }
}

const Algorithm kGcm128{"AesGcm16_128", kEncrAesGcm16, 128, kIntegNone};

class Tunnel {
 public:
  explicit Tunnel(const Family& f, const Algorithm& a = kGcm128, bool esn = false,
                  UserspaceDataplaneOptions options = {})
      : family_(f) {
    options.clock = &clock_;
    auto left_device = std::make_unique<FakeDevice>();
    auto right_device = std::make_unique<FakeDevice>();
    left_device_ = left_device.get();
    right_device_ = right_device.get();
    auto left = UserspaceDataplane::Create(std::move(left_device), left_socket_, options);
    auto right = UserspaceDataplane::Create(std::move(right_device), right_socket_, options);
    MustOk(left.status());
    MustOk(right.status());
    left_ = std::move(*left);
    right_ = std::move(*right);
    left_socket_.set_forward([this](const FakeSocket::Sent& s) {
      if (deliver_) right_->HandleEspDatagram(s.payload, s.local, s.remote.address);
    });
    right_socket_.set_forward([this](const FakeSocket::Sent& s) {
      if (deliver_) left_->HandleEspDatagram(s.payload, s.local, s.remote.address);
    });
    left_->Subscribe([this](const DataplaneEvent& e) { left_events_.push_back(e); });
    right_->Subscribe([this](const DataplaneEvent& e) { right_events_.push_back(e); });
    for (bool left_to_right : {true, false}) {
      MustOk(left_->AddSa(MakeSa(f, left_to_right, a, esn)));
      MustOk(right_->AddSa(MakeSa(f, left_to_right, a, esn)));
    }
    MustOk(left_->AddPolicies(MakePolicies(f, true)));
    MustOk(right_->AddPolicies(MakePolicies(f, false)));
  }

  Bytes LeftToRightPacket(size_t data = 32, uint16_t port = 5000) {
    return UdpPacket(family_.left_host, family_.right_host, 40000, port, data);
  }
  SaId LeftToRight() const { return SaId{Ip(family_.right_outer), kLeftToRightSpi}; }
  SaId RightToLeft() const { return SaId{Ip(family_.left_outer), kRightToLeftSpi}; }

  const Family& family_;
  FakeClock clock_;
  FakeSocket left_socket_;
  FakeSocket right_socket_;
  FakeDevice* left_device_;
  FakeDevice* right_device_;
  std::unique_ptr<UserspaceDataplane> left_;
  std::unique_ptr<UserspaceDataplane> right_;
  std::vector<DataplaneEvent> left_events_;
  std::vector<DataplaneEvent> right_events_;
  bool deliver_ = true;
};

// --- Both directions, every family and algorithm.

class UserspaceDataplaneFamilyTest : public ::testing::TestWithParam<Family> {};

TEST_P(UserspaceDataplaneFamilyTest, PacketsCrossBothWays) {
  Tunnel t(GetParam());
  const Bytes there = t.LeftToRightPacket(100);
  t.left_->HandleInnerPacket(there);
  ASSERT_EQ(t.right_device_->written_count(), 1u);
  EXPECT_EQ(t.right_device_->written()[0], there);

  const Bytes back = UdpPacket(GetParam().right_host, GetParam().left_host, 5000, 40000, 7);
  t.right_->HandleInnerPacket(back);
  ASSERT_EQ(t.left_device_->written_count(), 1u);
  EXPECT_EQ(t.left_device_->written()[0], back);

  // The outer addresses and ports come from the SA.
  const auto sent = t.left_socket_.sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].local, (UdpEndpoint{Ip(GetParam().left_outer), 4500}));
  EXPECT_EQ(sent[0].remote, (UdpEndpoint{Ip(GetParam().right_outer), 4500}));

  for (auto* dp : {t.left_.get(), t.right_.get()}) {
    auto out = dp->GetCounters(dp == t.left_.get() ? t.LeftToRight() : t.RightToLeft());
    auto in = dp->GetCounters(dp == t.left_.get() ? t.RightToLeft() : t.LeftToRight());
    ASSERT_TRUE(out.ok() && in.ok());
    EXPECT_EQ(out->packets, 1u);
    EXPECT_EQ(in->packets, 1u);
  }
  EXPECT_EQ(t.left_->GetCounters(t.LeftToRight())->bytes, there.size());
  EXPECT_EQ(t.right_->GetCounters(t.LeftToRight())->bytes, there.size());
}

INSTANTIATE_TEST_SUITE_P(Families, UserspaceDataplaneFamilyTest,
                         ::testing::Values(kV4inV4, kV6inV4, kV4inV6, kV6inV6),
                         [](const auto& info) { return info.param.name; });

class UserspaceDataplaneAlgorithmTest
    : public ::testing::TestWithParam<std::tuple<Algorithm, bool>> {};

TEST_P(UserspaceDataplaneAlgorithmTest, ManyPacketsOfEverySize) {
  const auto& [algorithm, esn] = GetParam();
  Tunnel t(kV4inV4, algorithm, esn);
  std::vector<Bytes> sent;
  for (size_t size = 0; size < 1400; size += 53) {
    sent.push_back(t.LeftToRightPacket(size));
    t.left_->HandleInnerPacket(sent.back());
  }
  EXPECT_EQ(t.right_device_->written(), sent);
  auto in = t.right_->GetSaStats(t.LeftToRight());
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->counters.packets, sent.size());
  EXPECT_EQ(in->counters.integrity_failures, 0u);
  EXPECT_EQ(in->malformed, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    All, UserspaceDataplaneAlgorithmTest,
    ::testing::Combine(
        ::testing::Values(Algorithm{"AesGcm16_128", kEncrAesGcm16, 128, kIntegNone},
                          Algorithm{"AesGcm16_256", kEncrAesGcm16, 256, kIntegNone},
                          Algorithm{"AesCbc128_Sha256", kEncrAesCbc, 128, kIntegHmacSha256_128},
                          Algorithm{"AesCbc256_Sha384", kEncrAesCbc, 256, kIntegHmacSha384_192},
                          Algorithm{"AesCbc256_Sha512", kEncrAesCbc, 256, kIntegHmacSha512_256}),
        ::testing::Bool()),
    [](const auto& info) {
      return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_Esn" : "");
    });

// --- Drops a peer or the network can cause.

TEST(UserspaceDataplaneTest, ReplayedPacketsAreDroppedAndCounted) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  for (int i = 0; i < 3; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket(10 + i));
  const auto sent = t.left_socket_.sent();
  ASSERT_EQ(sent.size(), 3u);
  const Address local = Ip(kV4inV4.right_outer);
  // Out of order is fine; a repeat is not.
  t.right_->HandleEspDatagram(sent[2].payload, sent[2].local, local);
  t.right_->HandleEspDatagram(sent[0].payload, sent[0].local, local);
  t.right_->HandleEspDatagram(sent[0].payload, sent[0].local, local);
  t.right_->HandleEspDatagram(sent[2].payload, sent[2].local, local);
  t.right_->HandleEspDatagram(sent[1].payload, sent[1].local, local);
  EXPECT_EQ(t.right_device_->written_count(), 3u);
  auto c = t.right_->GetCounters(t.LeftToRight());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->packets, 3u);
  EXPECT_EQ(c->replay_failures, 2u);
}

TEST(UserspaceDataplaneTest, TooOldForTheWindowIsDropped) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  for (int i = 0; i < 70; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket());
  const auto sent = t.left_socket_.sent();
  const Address local = Ip(kV4inV4.right_outer);
  t.right_->HandleEspDatagram(sent[69].payload, sent[69].local, local);  // seq 70
  t.right_->HandleEspDatagram(sent[6].payload, sent[6].local, local);    // seq 7: 63 behind
  t.right_->HandleEspDatagram(sent[5].payload, sent[5].local, local);    // seq 6: 64 behind
  EXPECT_EQ(t.right_device_->written_count(), 2u);
  EXPECT_EQ(t.right_->GetCounters(t.LeftToRight())->replay_failures, 1u);
}

TEST(UserspaceDataplaneTest, ForgedPacketsDoNotBurnSequenceNumbers) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  auto packet = t.left_socket_.sent()[0];
  Bytes forged = packet.payload;
  forged.back() ^= 1;
  const Address local = Ip(kV4inV4.right_outer);
  t.right_->HandleEspDatagram(forged, packet.local, local);
  t.right_->HandleEspDatagram(packet.payload, packet.local, local);
  EXPECT_EQ(t.right_device_->written_count(), 1u);
  auto c = t.right_->GetCounters(t.LeftToRight());
  EXPECT_EQ(c->integrity_failures, 1u);
  EXPECT_EQ(c->replay_failures, 0u);
  EXPECT_EQ(c->packets, 1u);
}

TEST(UserspaceDataplaneTest, TamperedTruncatedAndRandomPacketsAreCountedNeverDelivered) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  const Address local = Ip(kV4inV4.right_outer);
  std::mt19937 rng(42);
  uint64_t attempts = 0;
  for (int i = 0; i < 2000; ++i) {
    t.left_->HandleInnerPacket(t.LeftToRightPacket(rng() % 300));
    Bytes p = t.left_socket_.last().payload;
    switch (i % 4) {
      case 0:
        p[8 + rng() % (p.size() - 8)] ^= 1 << (rng() % 8);  // Keep the SPI.
        break;
      case 1:
        p.resize(8 + rng() % (p.size() - 8));
        break;
      case 2:
        p.push_back(rng());
        break;
      default:
        for (size_t j = 8; j < p.size(); ++j) p[j] = rng();
        break;
    }
    t.right_->HandleEspDatagram(p, UdpEndpoint{Ip(kV4inV4.left_outer), 4500}, local);
    ++attempts;
  }
  EXPECT_EQ(t.right_device_->written_count(), 0u);
  auto s = t.right_->GetSaStats(t.LeftToRight());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->counters.packets, 0u);
  EXPECT_EQ(s->counters.integrity_failures + s->malformed + s->counters.replay_failures, attempts);
  EXPECT_GT(s->counters.integrity_failures, 0u);
  EXPECT_GT(s->malformed, 0u);  // Truncated below the fixed overhead.
}

TEST(UserspaceDataplaneTest, NonEspAndUnknownSpisAreCounted) {
  Tunnel t(kV4inV4);
  const UdpEndpoint from{Ip(kV4inV4.left_outer), 4500};
  const Address local = Ip(kV4inV4.right_outer);
  t.right_->HandleEspDatagram(Bytes{0xff}, from, local);     // NAT keepalive.
  t.right_->HandleEspDatagram(Bytes(40, 0), from, local);    // Non-ESP marker: IKE.
  t.right_->HandleEspDatagram(Bytes{1, 2, 3}, from, local);  // Runt.
  Bytes unknown = {0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
                   9,    9,    9,    9,    9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  t.right_->HandleEspDatagram(unknown, from, local);
  // The SPI of an SA to another destination does not match either.
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  t.right_->HandleEspDatagram(t.left_socket_.sent()[0].payload, from, Ip("192.0.2.99"));
  const auto s = t.right_->stats();
  EXPECT_EQ(s.not_esp, 3u);
  EXPECT_EQ(s.unknown_spi, 2u);
}

TEST(UserspaceDataplaneTest, WithoutTheLocalAddressTheSpiAndPeerAddressFindTheSa) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  const Bytes p = t.left_socket_.sent()[0].payload;
  t.right_->HandleEspDatagram(p, UdpEndpoint{Ip(kV4inV4.left_outer), 4500});
  EXPECT_EQ(t.right_device_->written_count(), 1u);
  t.right_->HandleEspDatagram(p, UdpEndpoint{Ip("198.51.100.7"), 4500});
  EXPECT_EQ(t.right_->stats().unknown_spi, 1u);
}

TEST(UserspaceDataplaneTest, InnerPacketsOutsideTheInPolicyAreDropped) {
  Tunnel t(kV4inV4);
  // The left end sends anything to 10.2.0.0/24, from any source...
  PolicyConfig wide = MakePolicies(kV4inV4, true)[0];
  wide.selector = Sel("0.0.0.0/0", "10.2.0.0/24");
  ASSERT_TRUE(t.left_->AddPolicy(wide).ok());
  // ...but the right end only accepts 10.1.0.0/24 through the SA.
  t.left_->HandleInnerPacket(UdpPacket("10.9.9.9", "10.2.0.9", 1, 2));
  t.left_->HandleInnerPacket(UdpPacket("10.1.0.1", "10.2.0.9", 1, 2));
  EXPECT_EQ(t.right_device_->written_count(), 1u);
  auto s = t.right_->GetSaStats(t.LeftToRight());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->selector_mismatches, 1u);
  EXPECT_EQ(s->counters.packets, 2u);  // Both decrypted; one refused.
}

TEST(UserspaceDataplaneTest, InPolicyOfAnotherReqidRefusesTheSa) {
  Tunnel t(kV4inV4);
  for (Direction d : {Direction::kIn, Direction::kFwd}) {
    PolicyConfig p = MakePolicies(kV4inV4, false)[d == Direction::kIn ? 1 : 2];
    p.reqid = kReqid + 1;
    ASSERT_TRUE(t.right_->AddPolicy(p).ok());  // Replaces.
  }
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.right_device_->written_count(), 0u);
  EXPECT_EQ(t.right_->GetSaStats(t.LeftToRight())->selector_mismatches, 1u);
}

TEST(UserspaceDataplaneTest, EitherInOrFwdPolicyAdmits) {
  Tunnel t(kV4inV4);
  ASSERT_TRUE(
      t.right_->DeletePolicy(Sel(kV4inV4.left_net, kV4inV4.right_net), Direction::kIn).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.right_device_->written_count(), 1u);
  ASSERT_TRUE(
      t.right_->DeletePolicy(Sel(kV4inV4.left_net, kV4inV4.right_net), Direction::kFwd).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.right_device_->written_count(), 1u);
  EXPECT_EQ(t.right_->GetSaStats(t.LeftToRight())->selector_mismatches, 1u);
}

TEST(UserspaceDataplaneTest, DummyPacketsAndWrongNextHeadersAreDropped) {
  Tunnel t(kV4inV4);
  t.deliver_ = false;
  // Build ESP with the right SA's key through a codec of our own.
  const SaConfig sa = MakeSa(kV4inV4, true, kGcm128);
  EspTransform tr{sa.encr_id, sa.key_bits, sa.integ_id, sa.encr_key, sa.integ_key};
  auto codec = EspCodec::Create(sa.id.spi, tr, false);
  ASSERT_TRUE(codec.ok());
  const Bytes inner = t.LeftToRightPacket();
  const UdpEndpoint from{Ip(kV4inV4.left_outer), 4500};
  const Address local = Ip(kV4inV4.right_outer);
  Bytes esp;
  ASSERT_TRUE((*codec)->Encapsulate(1, {}, kNextHeaderNoNext, &esp).ok());
  t.right_->HandleEspDatagram(esp, from, local);
  ASSERT_TRUE((*codec)->Encapsulate(2, inner, kNextHeaderIpv6, &esp).ok());  // v4 inside.
  t.right_->HandleEspDatagram(esp, from, local);
  ASSERT_TRUE((*codec)->Encapsulate(3, inner, 17, &esp).ok());  // Transport mode.
  t.right_->HandleEspDatagram(esp, from, local);
  ASSERT_TRUE((*codec)->Encapsulate(4, Bytes(30, 0x45), kNextHeaderIpv4, &esp).ok());
  t.right_->HandleEspDatagram(esp, from, local);
  // TFC padding after the inner packet is trimmed (RFC 4303 §2.4).
  Bytes padded = inner;
  padded.resize(inner.size() + 24, 0);
  ASSERT_TRUE((*codec)->Encapsulate(5, padded, kNextHeaderIpv4, &esp).ok());
  t.right_->HandleEspDatagram(esp, from, local);

  auto s = t.right_->GetSaStats(t.LeftToRight());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->dummy_packets, 1u);
  EXPECT_EQ(s->malformed, 3u);
  ASSERT_EQ(t.right_device_->written_count(), 1u);
  EXPECT_EQ(t.right_device_->written()[0], inner);
}

// --- The outbound side.

TEST(UserspaceDataplaneTest, NoPolicyNoSaAndAcquires) {
  Tunnel t(kV4inV4);
  t.left_->HandleInnerPacket(UdpPacket("10.1.0.5", "10.77.0.1", 1, 2));  // No policy.
  t.left_->HandleInnerPacket(Bytes{1, 2, 3});                            // Not IP.
  EXPECT_EQ(t.left_->stats().no_policy, 1u);
  EXPECT_EQ(t.left_->stats().invalid_inner, 1u);

  ASSERT_TRUE(t.left_->DeleteSa(t.LeftToRight()).ok());
  for (int i = 0; i < 3; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket(8, 53));
  t.clock_.Advance(absl::Seconds(31));
  t.left_->HandleInnerPacket(t.LeftToRightPacket(8, 53));
  t.left_->CheckLifetimes();  // Delivers events.
  EXPECT_EQ(t.left_->stats().no_sa, 4u);
  EXPECT_EQ(t.left_->stats().acquires, 2u);
  ASSERT_EQ(t.left_events_.size(), 2u);
  EXPECT_EQ(t.left_events_[0].kind, Kind::kAcquire);
  EXPECT_EQ(t.left_events_[0].reqid, kReqid);
  ASSERT_TRUE(t.left_events_[0].selector.has_value());
  EXPECT_EQ(*t.left_events_[0].selector, Sel("10.1.0.5/32", "10.2.0.9/32", 17, 40000, 53));
  EXPECT_EQ(t.left_socket_.sent_count(), 0u);
}

TEST(UserspaceDataplaneTest, TheNewestSaCarriesTrafficAfterARekey) {
  Tunnel t(kV4inV4);
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  SaConfig rekeyed = MakeSa(kV4inV4, true, kGcm128, false, 0xc0000011, 5);
  ASSERT_TRUE(t.left_->AddSa(rekeyed).ok());
  ASSERT_TRUE(t.right_->AddSa(rekeyed).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  const SaId new_id{Ip(kV4inV4.right_outer), 0xc0000011};
  EXPECT_EQ(t.left_->GetCounters(t.LeftToRight())->packets, 1u);
  EXPECT_EQ(t.left_->GetCounters(new_id)->packets, 1u);
  EXPECT_EQ(t.right_device_->written_count(), 2u);
  // The old inbound SA still works until deleted (make-before-break).
  ASSERT_TRUE(t.left_->DeleteSa(new_id).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_->GetCounters(t.LeftToRight())->packets, 2u);
}

TEST(UserspaceDataplaneTest, OutboundPrefersAnSaThatIsNotSoftExpired) {
  Tunnel t(kV4inV4);
  SaConfig newer = MakeSa(kV4inV4, true, kGcm128, false, 0xc0000011, 5);
  newer.soft.packets = 1;
  ASSERT_TRUE(t.left_->AddSa(newer).ok());
  ASSERT_TRUE(t.right_->AddSa(newer).ok());
  const SaId newer_id{Ip(kV4inV4.right_outer), 0xc0000011};
  t.left_->HandleInnerPacket(t.LeftToRightPacket());  // Newer, now soft-expired.
  t.left_->HandleInnerPacket(t.LeftToRightPacket());  // The older, fresh one.
  EXPECT_EQ(t.left_->GetCounters(newer_id)->packets, 1u);
  EXPECT_EQ(t.left_->GetCounters(t.LeftToRight())->packets, 1u);
}

TEST(UserspaceDataplaneTest, PolicyOrderPriorityThenSpecificity) {
  Tunnel t(kV4inV4);
  // A broader policy to a tunnel that has no SA: traffic to 10.2.0.9
  // still takes the more specific /24 policy.
  PolicyConfig broad = MakePolicies(kV4inV4, true)[0];
  broad.selector = Sel("10.0.0.0/8", "10.0.0.0/8");
  broad.reqid = 99;
  ASSERT_TRUE(t.left_->AddPolicy(broad).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_socket_.sent_count(), 1u);
  // An explicit, better priority beats specificity.
  broad.priority = 10;
  ASSERT_TRUE(t.left_->AddPolicy(broad).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_socket_.sent_count(), 1u);
  EXPECT_EQ(t.left_->stats().no_sa, 1u);
  auto listed = t.left_->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->policies.size(), 4u);  // Replaced, not added.
}

TEST(UserspaceDataplaneTest, PoliciesWithMarksOrInterfaceIdsDoNotMatchDeviceTraffic) {
  Tunnel t(kV4inV4);
  PolicyConfig marked = MakePolicies(kV4inV4, true)[0];
  marked.priority = 1;
  marked.reqid = 99;
  marked.mark = 5;
  marked.mark_mask = 0xff;
  ASSERT_TRUE(t.left_->AddPolicy(marked).ok());
  PolicyConfig with_if = MakePolicies(kV4inV4, true)[0];
  with_if.priority = 1;
  with_if.reqid = 99;
  with_if.if_id = 3;
  with_if.selector.source_port = 40000;  // A different key.
  ASSERT_TRUE(t.left_->AddPolicy(with_if).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_socket_.sent_count(), 1u);
}

TEST(UserspaceDataplaneTest, SendErrorsAreCounted) {
  Tunnel t(kV4inV4);
  t.left_socket_.set_fail(true);
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_->stats().send_errors, 1u);
  t.right_device_->set_fail_writes(true);
  t.left_socket_.set_fail(false);
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.right_->stats().device_errors, 1u);
}

// --- Sequence numbers.

TEST(UserspaceDataplaneTest, EsnCrossesTheLowHalfRollover) {
  Tunnel t(kV4inV4, kGcm128, /*esn=*/true);
  ASSERT_TRUE(t.left_->SetNextSequenceForTesting(t.LeftToRight(), 0xfffffff0ULL).ok());
  for (int i = 0; i < 40; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.right_device_->written_count(), 40u);
  EXPECT_EQ(t.right_->GetCounters(t.LeftToRight())->integrity_failures, 0u);
  // A packet from before the rollover, replayed, is told apart.
  const auto sent = t.left_socket_.sent();
  t.right_->HandleEspDatagram(sent[3].payload, sent[3].local, Ip(kV4inV4.right_outer));
  EXPECT_EQ(t.right_->GetCounters(t.LeftToRight())->replay_failures, 1u);
}

TEST(UserspaceDataplaneTest, ExhaustedSequenceNumbersExpireTheSa) {
  Tunnel t(kV4inV4);
  ASSERT_TRUE(t.left_->SetNextSequenceForTesting(t.LeftToRight(), 0xffffffffULL).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());  // The last number.
  auto s = t.left_->GetSaStats(t.LeftToRight());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->counters.packets, 1u);
  t.left_->HandleInnerPacket(t.LeftToRightPacket());  // None left.
  EXPECT_EQ(t.left_->GetCounters(t.LeftToRight()).status().code(), absl::StatusCode::kNotFound);
  t.left_->CheckLifetimes();
  ASSERT_EQ(t.left_events_.size(), 1u);
  EXPECT_EQ(t.left_events_[0].kind, Kind::kHardExpire);
  EXPECT_EQ(t.left_events_[0].sa, t.LeftToRight());
  EXPECT_EQ(t.left_socket_.sent_count(), 1u);
}

// --- Lifetimes.

TEST(UserspaceDataplaneTest, PacketLifetimesFireSoftThenHard) {
  Tunnel t(kV4inV4);
  SaConfig update = MakeSa(kV4inV4, true, kGcm128);
  update.soft.packets = 3;
  update.hard.packets = 5;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  ASSERT_TRUE(t.right_->UpdateSa(update).ok());
  for (int i = 0; i < 2; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket());
  t.left_->CheckLifetimes();
  EXPECT_TRUE(t.left_events_.empty());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  t.left_->CheckLifetimes();
  ASSERT_EQ(t.left_events_.size(), 1u);
  EXPECT_EQ(t.left_events_[0].kind, Kind::kSoftExpire);
  EXPECT_EQ(t.left_events_[0].sa, t.LeftToRight());
  EXPECT_EQ(t.left_events_[0].reqid, kReqid);
  for (int i = 0; i < 3; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket());
  t.left_->CheckLifetimes();
  t.right_->CheckLifetimes();
  // Five packets went; the sixth found no SA and asked for one.
  ASSERT_EQ(t.left_events_.size(), 3u);
  EXPECT_EQ(t.left_events_[1].kind, Kind::kHardExpire);
  EXPECT_EQ(t.left_events_[2].kind, Kind::kAcquire);
  EXPECT_EQ(t.right_device_->written_count(), 5u);
  EXPECT_EQ(t.left_->stats().no_sa, 1u);
  // The receiving end expired on its own count too.
  ASSERT_EQ(t.right_events_.size(), 2u);
  EXPECT_EQ(t.right_events_[0].kind, Kind::kSoftExpire);
  EXPECT_EQ(t.right_events_[1].kind, Kind::kHardExpire);
  EXPECT_FALSE(t.right_->GetCounters(t.LeftToRight()).ok());
}

TEST(UserspaceDataplaneTest, ByteLifetimes) {
  Tunnel t(kV4inV4);
  SaConfig update = MakeSa(kV4inV4, true, kGcm128);
  const size_t size = t.LeftToRightPacket(100).size();
  update.soft.bytes = size * 2;
  update.hard.bytes = size * 4 - 1;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  for (int i = 0; i < 5; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket(100));
  t.left_->CheckLifetimes();
  ASSERT_EQ(t.left_events_.size(), 3u);
  EXPECT_EQ(t.left_events_[0].kind, Kind::kSoftExpire);
  EXPECT_EQ(t.left_events_[1].kind, Kind::kHardExpire);
  EXPECT_EQ(t.left_events_[2].kind, Kind::kAcquire);
  EXPECT_EQ(t.left_socket_.sent_count(), 4u);
}

TEST(UserspaceDataplaneTest, TimeLifetimesOnTheInjectedClock) {
  Tunnel t(kV4inV4);
  SaConfig update = MakeSa(kV4inV4, false, kGcm128);
  update.soft.add_seconds = 100;
  update.hard.add_seconds = 120;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  t.clock_.Advance(absl::Seconds(99));
  t.left_->CheckLifetimes();
  EXPECT_TRUE(t.left_events_.empty());
  t.clock_.Advance(absl::Seconds(1));
  t.left_->CheckLifetimes();
  t.left_->CheckLifetimes();  // Soft fires once.
  ASSERT_EQ(t.left_events_.size(), 1u);
  EXPECT_EQ(t.left_events_[0].kind, Kind::kSoftExpire);
  EXPECT_EQ(t.left_events_[0].sa, t.RightToLeft());
  t.clock_.Advance(absl::Seconds(20));
  t.left_->CheckLifetimes();
  ASSERT_EQ(t.left_events_.size(), 2u);
  EXPECT_EQ(t.left_events_[1].kind, Kind::kHardExpire);
  EXPECT_FALSE(t.left_->GetCounters(t.RightToLeft()).ok());
  // The other SA is untouched.
  EXPECT_TRUE(t.left_->GetCounters(t.LeftToRight()).ok());
}

TEST(UserspaceDataplaneTest, UpdateSaGivesTheSoftLimitANewChance) {
  Tunnel t(kV4inV4);
  SaConfig update = MakeSa(kV4inV4, true, kGcm128);
  update.soft.packets = 1;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  update.soft.packets = 3;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  for (int i = 0; i < 2; ++i) t.left_->HandleInnerPacket(t.LeftToRightPacket());
  t.left_->CheckLifetimes();
  ASSERT_EQ(t.left_events_.size(), 2u);
  EXPECT_EQ(t.left_events_[1].kind, Kind::kSoftExpire);
}

TEST(UserspaceDataplaneTest, UpdateSaMovesTheEncapsulationPorts) {
  Tunnel t(kV4inV4);
  SaConfig update = MakeSa(kV4inV4, true, kGcm128);
  update.encapsulation = UdpEncapsulation{4500, 31337};  // The peer's NAT mapping moved.
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  t.left_->HandleInnerPacket(t.LeftToRightPacket());
  EXPECT_EQ(t.left_socket_.sent()[0].remote.port, 31337);
  auto listed = t.left_->List();
  ASSERT_TRUE(listed.ok());
  bool found = false;
  for (const SaConfig& sa : listed->sas) {
    if (sa.id == t.LeftToRight()) {
      found = true;
      EXPECT_EQ(sa.encapsulation->destination_port, 31337);
    }
  }
  EXPECT_TRUE(found);
}

// --- Control plane.

TEST(UserspaceDataplaneTest, ControlPlaneErrors) {
  Tunnel t(kV4inV4);
  SaConfig sa = MakeSa(kV4inV4, true, kGcm128);
  EXPECT_EQ(t.left_->AddSa(sa).code(), absl::StatusCode::kAlreadyExists);
  sa.id.spi = 0x1234;
  SaConfig bad = sa;
  bad.encapsulation.reset();
  EXPECT_EQ(t.left_->AddSa(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = sa;
  bad.replay_window = 100000;
  EXPECT_EQ(t.left_->AddSa(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = sa;
  bad.encr_key = Secret("short");
  EXPECT_EQ(t.left_->AddSa(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = sa;
  bad.source = Ip("2001:db8::1");
  EXPECT_EQ(t.left_->AddSa(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = sa;
  bad.id.spi = 0;
  EXPECT_EQ(t.left_->AddSa(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.left_->UpdateSa(sa).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.left_->DeleteSa(sa.id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.left_->GetCounters(sa.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.left_->DeletePolicy(Sel("10.0.0.0/8", "10.0.0.0/8"), Direction::kOut).code(),
            absl::StatusCode::kNotFound);
  PolicyConfig p = MakePolicies(kV4inV4, true)[0];
  p.selector.destination_prefix = 40;
  EXPECT_EQ(t.left_->AddPolicy(p).code(), absl::StatusCode::kInvalidArgument);
  p = MakePolicies(kV4inV4, true)[0];
  p.tunnel_destination.clear();
  EXPECT_EQ(t.left_->AddPolicies({MakePolicies(kV4inV4, true)[1], p}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.left_->name(), "userspace");
}

TEST(UserspaceDataplaneTest, ListShowsStateWithoutKeys) {
  Tunnel t(kV4inV4);
  auto listed = t.left_->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->sas.size(), 2u);
  for (const SaConfig& sa : listed->sas) {
    EXPECT_TRUE(sa.encr_key.empty());
    EXPECT_TRUE(sa.integ_key.empty());
    EXPECT_EQ(sa.reqid, kReqid);
    EXPECT_EQ(sa.encr_id, kEncrAesGcm16);
  }
  EXPECT_EQ(listed->policies.size(), 3u);
  ASSERT_TRUE(t.left_->DeleteSa(t.LeftToRight()).ok());
  EXPECT_EQ(t.left_->List()->sas.size(), 1u);
}

TEST(UserspaceDataplaneTest, OutPoliciesRouteTheirDestinations) {
  FakeRoutes routes;
  UserspaceDataplaneOptions options;
  options.routes = &routes;
  FakeSocket socket;
  auto dp = UserspaceDataplane::Create(std::make_unique<FakeDevice>(), socket, options);
  ASSERT_TRUE(dp.ok());
  std::vector<PolicyConfig> policies = MakePolicies(kV4inV4, true);
  ASSERT_TRUE((*dp)->AddPolicies(policies).ok());
  ASSERT_EQ(routes.added.size(), 1u);
  EXPECT_EQ(routes.added[0], Sel(kV4inV4.left_net, kV4inV4.right_net));
  // A second out policy to the same prefix shares the route; replacing a
  // policy adds none.
  PolicyConfig tcp = policies[0];
  tcp.selector.ip_protocol = 6;
  ASSERT_TRUE((*dp)->AddPolicy(tcp).ok());
  ASSERT_TRUE((*dp)->AddPolicy(policies[0]).ok());
  EXPECT_EQ(routes.added.size(), 1u);
  ASSERT_TRUE((*dp)->DeletePolicy(policies[0].selector, Direction::kOut).ok());
  EXPECT_TRUE(routes.deleted.empty());
  ASSERT_TRUE((*dp)->DeletePolicy(tcp.selector, Direction::kOut).ok());
  EXPECT_EQ(routes.deleted.size(), 1u);
  ASSERT_TRUE((*dp)->DeletePolicy(policies[1].selector, Direction::kIn).ok());
  EXPECT_EQ(routes.deleted.size(), 1u);

  // A route that cannot be added fails the whole batch.
  routes.fail = true;
  EXPECT_EQ((*dp)->AddPolicies(policies).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*dp)->List()->policies.size(), 1u);  // Only the fwd policy from before.
}

TEST(UserspaceDataplaneTest, ASendFunctionServesAsTheSocket) {
  // How the IKE runner shares its UDP 4500 socket: a function for the way
  // out, HandleEspDatagram for the way in.
  std::vector<Bytes> sent;
  CallbackDatagramSocket socket(
      [&sent](absl::Span<const uint8_t> payload, const UdpEndpoint&, const UdpEndpoint& remote) {
        EXPECT_EQ(remote.port, 4500);
        sent.emplace_back(payload.begin(), payload.end());
        return absl::OkStatus();
      });
  auto dp = UserspaceDataplane::Create(std::make_unique<FakeDevice>(), socket);
  ASSERT_TRUE(dp.ok());
  ASSERT_TRUE((*dp)->AddSa(MakeSa(kV4inV4, true, kGcm128)).ok());
  ASSERT_TRUE((*dp)->AddPolicies(MakePolicies(kV4inV4, true)).ok());
  (*dp)->HandleInnerPacket(UdpPacket("10.1.0.5", "10.2.0.9", 1, 2));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(EspCodec::ParseHeader(sent[0])->spi, kLeftToRightSpi);
}

TEST(UserspaceDataplaneTest, CreateValidatesOptions) {
  FakeSocket socket;
  EXPECT_FALSE(UserspaceDataplane::Create(nullptr, socket).ok());
  UserspaceDataplaneOptions options;
  options.timer_interval = absl::ZeroDuration();
  EXPECT_FALSE(UserspaceDataplane::Create(std::make_unique<FakeDevice>(), socket, options).ok());
}

// --- Threads.

TEST(UserspaceDataplaneTest, DeviceAndTimerThreads) {
  UserspaceDataplaneOptions options;
  options.timer_interval = absl::Milliseconds(20);
  options.device_poll = absl::Milliseconds(20);
  Tunnel t(kV4inV4, kGcm128, false, options);
  SaConfig update = MakeSa(kV4inV4, true, kGcm128);
  update.soft.packets = 10;
  ASSERT_TRUE(t.left_->UpdateSa(update).ok());
  absl::Notification soft;
  t.left_->Subscribe([&soft](const DataplaneEvent& e) {
    if (e.kind == Kind::kSoftExpire && !soft.HasBeenNotified()) soft.Notify();
  });
  t.left_->Start();
  t.right_->Start();
  for (int i = 0; i < 50; ++i) t.left_device_->Inject(t.LeftToRightPacket(i));
  EXPECT_TRUE(soft.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (t.right_device_->written_count() < 50 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(t.right_device_->written_count(), 50u);
  t.left_->Stop();
  t.right_->Stop();
  t.left_->Stop();  // Idempotent.
}

TEST(UserspaceDataplaneTest, ConcurrentTrafficAndControlPlane) {
  Tunnel t(kV4inV4);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        t.left_->HandleInnerPacket(t.LeftToRightPacket(64));
        t.right_->HandleInnerPacket(UdpPacket(kV4inV4.right_host, kV4inV4.left_host, 1, 2));
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 200; ++i) {
      SaConfig extra = MakeSa(kV4inV4, true, kGcm128, false, 0xd0000000 + i, 9);
      ASSERT_TRUE(t.left_->AddSa(extra).ok());
      ASSERT_TRUE(t.right_->AddSa(extra).ok());
      t.left_->CheckLifetimes();
      (void)t.left_->List();
      ASSERT_TRUE(t.left_->DeleteSa(extra.id).ok());
      ASSERT_TRUE(t.right_->DeleteSa(extra.id).ok());
    }
    stop.store(true);
  });
  for (auto& th : threads) th.join();
  // Packets either arrived or were dropped for want of their SA (the
  // receiver deleted it a moment before the sender); none failed its ICV.
  EXPECT_GT(t.right_device_->written_count(), 0u);
  EXPECT_EQ(t.right_->GetCounters(t.LeftToRight())->integrity_failures, 0u);
}

}  // namespace
}  // namespace strait::dataplane
