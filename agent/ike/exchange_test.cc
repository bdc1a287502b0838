#include "agent/ike/exchange.h"

#include <algorithm>
#include <vector>

#include "agent/ike/crypto_prf.h"
#include "agent/ike/sa.h"
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

// --- CREATE_CHILD_SA for a new CHILD SA ---

class CountingRandom : public RandomSource {
 public:
  explicit CountingRandom(uint8_t start) : next_(start) {}
  void Fill(absl::Span<uint8_t> out) override {
    for (uint8_t& b : out) b = next_++;
  }

 private:
  uint8_t next_;
};

TrafficSelectorRange Net(uint8_t second) {
  TrafficSelectorRange r;
  r.start_address = {10, second, 0, 0};
  r.end_address = {10, second, 0, 255};
  return r;
}

// Two ends of one IKE SA (the same SK_d) with one CHILD SA on the
// initiator's side and none on the responder's: a peer that deleted its
// CHILD SA and now creates a new one. The request is the rekey request
// without its REKEY_SA notify, which is what charon sends on `swanctl
// --initiate --child` or after a CHILD SA's hard expiry.
class NewChildTest : public ::testing::Test {
 protected:
  NewChildTest() : random_i_(1), random_r_(101) {
    for (IkeSa* sa : {&sa_i_, &sa_r_}) {
      sa->prf = *Prf::Create(PrfId::kHmacSha2_256);
      sa->keys.sk_d = Secret(std::string(32, 'd'));
    }
    sa_i_.initiator = true;
    const AlgorithmProposal esp{20, 128, 0, 0, 0};  // AES-GCM-16-128, no PFS.
    config_i_.esp_proposals = config_r_.esp_proposals = {esp};
    config_i_.local_ts = config_r_.remote_ts = {Net(1)};
    config_i_.remote_ts = config_r_.local_ts = {Net(2)};
    old_i_.inbound_spi = 0xc0000001;
    old_i_.outbound_spi = 0xc0000002;
    old_i_.local_ts = {Net(1)};
    old_i_.remote_ts = {Net(2)};
    // What the engine gives a new CHILD SA: the IKE SA's encapsulation.
    fresh_r_.udp_encapsulation = true;
    fresh_r_.local_port = 4500;
    fresh_r_.remote_port = 4501;
  }

  // The initiator's request, REKEY_SA taken out.
  Message NewChildRequest(RekeyChildTask& initiator) {
    Message request;
    EXPECT_TRUE(initiator.Build(request).ok());
    auto& p = request.payloads;
    const size_t before = p.size();
    p.erase(std::remove_if(p.begin(), p.end(),
                           [](const Payload& payload) {
                             const auto* n = std::get_if<NotifyPayload>(&payload.body);
                             return n != nullptr && n->type == kNotifyRekeySa;
                           }),
            p.end());
    EXPECT_EQ(p.size(), before - 1);
    return request;
  }

  IkeSa sa_i_;
  IkeSa sa_r_;
  EngineConfig config_i_;
  EngineConfig config_r_;
  CountingRandom random_i_;
  CountingRandom random_r_;
  ChildSa old_i_;
  ChildSa fresh_r_;
};

TEST_F(NewChildTest, AllowedItMakesAMirroredChildSa) {
  RekeyChildTask initiator(sa_i_, config_i_, random_i_, old_i_, /*initiator=*/true);
  RekeyChildTask responder(sa_r_, config_r_, random_r_, fresh_r_, /*initiator=*/false);
  responder.AllowNewChild();
  const Message request = NewChildRequest(initiator);
  const TaskResult answered = responder.Process(request);
  ASSERT_EQ(answered.kind, TaskResult::Kind::kDone) << answered.detail;
  Message response;
  ASSERT_TRUE(responder.Build(response).ok());
  const TaskResult done = initiator.Process(response);
  ASSERT_EQ(done.kind, TaskResult::Kind::kDone) << done.detail;

  const ChildSa& i = initiator.child();
  const ChildSa& r = responder.child();
  EXPECT_EQ(r.inbound_spi, i.outbound_spi);
  EXPECT_EQ(r.outbound_spi, i.inbound_spi);
  EXPECT_FALSE(r.inbound_encr_key.empty());
  EXPECT_EQ(r.inbound_encr_key.view(), i.outbound_encr_key.view());
  EXPECT_EQ(r.outbound_encr_key.view(), i.inbound_encr_key.view());
  EXPECT_EQ(r.local_ts, std::vector<TrafficSelectorRange>{Net(2)});
  EXPECT_EQ(r.remote_ts, std::vector<TrafficSelectorRange>{Net(1)});
  EXPECT_TRUE(r.udp_encapsulation);
  EXPECT_EQ(r.local_port, 4500);
  EXPECT_EQ(r.remote_port, 4501);
}

TEST_F(NewChildTest, NotAllowedItIsRefusedWithNoAdditionalSas) {
  RekeyChildTask initiator(sa_i_, config_i_, random_i_, old_i_, /*initiator=*/true);
  RekeyChildTask responder(sa_r_, config_r_, random_r_, fresh_r_, /*initiator=*/false);
  const TaskResult refused = responder.Process(NewChildRequest(initiator));
  EXPECT_EQ(refused.kind, TaskResult::Kind::kFailed);
  Message response;
  ASSERT_TRUE(responder.Build(response).ok());
  ASSERT_EQ(response.payloads.size(), 1u);
  const auto* n = std::get_if<NotifyPayload>(&response.payloads[0].body);
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->type, kNotifyNoAdditionalSas);
}

}  // namespace
}  // namespace strait::ike
