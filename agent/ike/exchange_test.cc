#include "agent/ike/exchange.h"

#include <vector>

#include "gtest/gtest.h"

namespace strait::ike {
namespace {

AlgorithmProposal Gcm(uint16_t dh) { return {20, 256, 0, 6, dh}; }

Proposal Wire(uint8_t number, std::vector<Transform> transforms) {
  Proposal p;
  p.number = number;
  p.protocol_id = kProtocolIke;
  p.transforms = std::move(transforms);
  return p;
}

Transform T(uint8_t type, uint16_t id, std::optional<uint16_t> key_length = std::nullopt) {
  Transform t;
  t.type = type;
  t.id = id;
  t.key_length = key_length;
  return t;
}

TEST(SelectProposalTest, LocalOrderWins) {
  SaPayload offered;
  offered.proposals.push_back(Wire(1, {T(kTransformEncr, 20, 256), T(kTransformPrf, 6),
                                       T(kTransformDh, 20), T(kTransformDh, 31)}));
  auto s = SelectProposal({Gcm(31), Gcm(20)}, offered, /*ike=*/true);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->algorithms.dh_group, 31);
  EXPECT_EQ(s->offered->number, 1);
}

TEST(SelectProposalTest, KeyLengthAndIntegrityMustMatch) {
  SaPayload offered;
  offered.proposals.push_back(
      Wire(1, {T(kTransformEncr, 20, 128), T(kTransformPrf, 6), T(kTransformDh, 20)}));
  offered.proposals.push_back(Wire(2, {T(kTransformEncr, 20, 256), T(kTransformPrf, 6),
                                       T(kTransformInteg, 12), T(kTransformDh, 20)}));
  EXPECT_FALSE(SelectProposal({Gcm(20)}, offered, true).has_value());
  offered.proposals.push_back(
      Wire(3, {T(kTransformEncr, 20, 256), T(kTransformPrf, 6), T(kTransformDh, 20)}));
  auto s = SelectProposal({Gcm(20)}, offered, true);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->offered->number, 3);
  // An ESP proposal is not an IKE proposal.
  EXPECT_FALSE(SelectProposal({Gcm(20)}, offered, false).has_value());
}

TrafficSelector Ts(Bytes start, Bytes end, uint8_t proto = 0) {
  TrafficSelector ts;
  ts.ts_type = start.size() == 4 ? kTsIpv4AddrRange : kTsIpv6AddrRange;
  ts.ip_protocol = proto;
  ts.start_port = 0;
  ts.end_port = 0xffff;
  ts.start_address = std::move(start);
  ts.end_address = std::move(end);
  return ts;
}

TEST(NarrowTest, IntersectsByFamilyAddressAndProtocol) {
  TrafficSelectorRange config{{10, 0, 0, 0}, {10, 0, 255, 255}, 0, 0, 0xffff};
  auto narrowed = NarrowTrafficSelectors({Ts({10, 0, 1, 0}, {10, 1, 0, 0}, 6)}, {config});
  ASSERT_EQ(narrowed.size(), 1u);
  EXPECT_EQ(narrowed[0].start_address, (Bytes{10, 0, 1, 0}));
  EXPECT_EQ(narrowed[0].end_address, (Bytes{10, 0, 255, 255}));
  EXPECT_EQ(narrowed[0].ip_protocol, 6);
  EXPECT_TRUE(NarrowTrafficSelectors({Ts({10, 1, 0, 0}, {10, 1, 0, 255})}, {config}).empty());
  Bytes v6_start(16, 0), v6_end(16, 0xff);
  EXPECT_TRUE(NarrowTrafficSelectors({Ts(v6_start, v6_end)}, {config}).empty());
  TrafficSelectorRange udp = config;
  udp.ip_protocol = 17;
  EXPECT_TRUE(NarrowTrafficSelectors({Ts({10, 0, 0, 0}, {10, 0, 0, 9}, 6)}, {udp}).empty());
}

TEST(NatDetectionTest, DependsOnEveryInput) {
  const Endpoint a{{192, 0, 2, 1}, 500};
  const Bytes h = NatDetectionHash(1, 2, a);
  // sha1(00..01 | 00..02 | c0000201 | 01f4), computed independently.
  const Bytes expected = {0xe5, 0x51, 0x65, 0x0f, 0xd0, 0xb1, 0xc2, 0x4a, 0x93, 0x7f,
                          0x8f, 0x25, 0x1b, 0x19, 0x5b, 0x30, 0xfe, 0xc9, 0x44, 0xe4};
  EXPECT_EQ(h, expected);
  EXPECT_NE(h, NatDetectionHash(1, 3, a));
  EXPECT_NE(h, NatDetectionHash(1, 2, Endpoint{{192, 0, 2, 1}, 4500}));
  EXPECT_NE(h, NatDetectionHash(1, 2, Endpoint{{192, 0, 2, 2}, 500}));
}

}  // namespace
}  // namespace strait::ike
