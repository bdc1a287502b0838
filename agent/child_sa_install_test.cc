#include "agent/child_sa_install.h"

#include <string>
#include <vector>

#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "dataplane/fake_dataplane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::agent {
namespace {

using dataplane::Address;
using dataplane::Direction;
using dataplane::FormatSelector;
using dataplane::PolicyConfig;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

Address Ip(const std::string& text) { return *ike::ParseIpAddress(text); }

std::vector<ike::TrafficSelectorRange> Ts(const std::string& cidrs) {
  return *ike::ParseSelectors(cidrs);
}

ike::ChildSa Child(const std::string& local_ts, const std::string& remote_ts) {
  ike::ChildSa sa;
  sa.inbound_spi = 0xc0000001;
  sa.outbound_spi = 0xd0000002;
  sa.algorithms.encr_id = 20;
  sa.algorithms.key_bits = 256;
  sa.inbound_encr_key = Secret("inbound key");
  sa.outbound_encr_key = Secret("outbound key");
  sa.local_ts = Ts(local_ts);
  sa.remote_ts = Ts(remote_ts);
  return sa;
}

ChildSaParams Params() {
  ChildSaParams p;
  p.local_address = Ip("198.51.100.1");
  p.remote_address = Ip("198.51.100.2");
  p.reqid = 42;
  p.replay_window = 128;
  p.soft.add_seconds = 3060;
  p.hard.add_seconds = 3600;
  return p;
}

std::vector<std::string> Describe(const std::vector<PolicyConfig>& policies) {
  std::vector<std::string> out;
  for (const PolicyConfig& p : policies) {
    out.push_back(absl::StrCat(dataplane::DirectionName(p.direction), " ",
                               FormatSelector(p.selector), " via ",
                               dataplane::FormatAddress(p.tunnel_source), "->",
                               dataplane::FormatAddress(p.tunnel_destination), " reqid ", p.reqid));
  }
  return out;
}

TEST(MapChildSaTest, TwoSasByDirection) {
  absl::StatusOr<ChildSaState> state = MapChildSa(Child("10.1.0.0/24", "10.2.0.0/24"), Params());
  ASSERT_TRUE(state.ok()) << state.status();
  const dataplane::SaConfig& in = state->inbound;
  EXPECT_EQ(in.id.destination, Ip("198.51.100.1"));
  EXPECT_EQ(in.id.spi, 0xc0000001u);
  EXPECT_EQ(in.source, Ip("198.51.100.2"));
  EXPECT_EQ(in.encr_key.view(), "inbound key");
  const dataplane::SaConfig& out = state->outbound;
  EXPECT_EQ(out.id.destination, Ip("198.51.100.2"));
  EXPECT_EQ(out.id.spi, 0xd0000002u);
  EXPECT_EQ(out.source, Ip("198.51.100.1"));
  EXPECT_EQ(out.encr_key.view(), "outbound key");
  for (const dataplane::SaConfig* sa : {&in, &out}) {
    EXPECT_EQ(sa->reqid, 42u);
    EXPECT_EQ(sa->replay_window, 128u);
    EXPECT_EQ(sa->encr_id, 20);
    EXPECT_EQ(sa->key_bits, 256);
    EXPECT_EQ(sa->integ_id, 0);
    EXPECT_EQ(sa->soft.add_seconds, 3060u);
    EXPECT_EQ(sa->hard.add_seconds, 3600u);
  }
}

TEST(MapChildSaTest, PoliciesForEverySelectorPair) {
  absl::StatusOr<ChildSaState> state =
      MapChildSa(Child("10.1.0.0/24,10.3.0.0/16", "10.2.0.0/24"), Params());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_THAT(Describe(state->policies),
              ElementsAre("out 10.1.0.0/24->10.2.0.0/24 via 198.51.100.1->198.51.100.2 reqid 42",
                          "in 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42",
                          "fwd 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42",
                          "out 10.3.0.0/16->10.2.0.0/24 via 198.51.100.1->198.51.100.2 reqid 42",
                          "in 10.2.0.0/24->10.3.0.0/16 via 198.51.100.2->198.51.100.1 reqid 42",
                          "fwd 10.2.0.0/24->10.3.0.0/16 via 198.51.100.2->198.51.100.1 reqid 42"));
}

TEST(MapChildSaTest, PairsOnlySelectorsOfOneFamily) {
  absl::StatusOr<ChildSaState> state =
      MapChildSa(Child("10.1.0.0/24,fd00:1::/64", "fd00:2::/64,10.2.0.0/24"), Params());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_THAT(Describe(state->policies),
              ElementsAre("out 10.1.0.0/24->10.2.0.0/24 via 198.51.100.1->198.51.100.2 reqid 42",
                          "in 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42",
                          "fwd 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42",
                          "out fd00:1::/64->fd00:2::/64 via 198.51.100.1->198.51.100.2 reqid 42",
                          "in fd00:2::/64->fd00:1::/64 via 198.51.100.2->198.51.100.1 reqid 42",
                          "fwd fd00:2::/64->fd00:1::/64 via 198.51.100.2->198.51.100.1 reqid 42"));

  EXPECT_EQ(MapChildSa(Child("10.1.0.0/24", "fd00:2::/64"), Params()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MapChildSaTest, Ipv6OuterAddresses) {
  ChildSaParams params = Params();
  params.local_address = Ip("2001:db8::1");
  params.remote_address = Ip("2001:db8::2");
  absl::StatusOr<ChildSaState> state = MapChildSa(Child("10.1.0.0/24", "10.2.0.0/24"), params);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->inbound.id.destination, Ip("2001:db8::1"));
  EXPECT_EQ(state->policies[0].tunnel_destination, Ip("2001:db8::2"));

  params.remote_address = Ip("192.0.2.2");
  EXPECT_EQ(MapChildSa(Child("10.1.0.0/24", "10.2.0.0/24"), params).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MapChildSaTest, ProtocolsAndSinglePorts) {
  ike::ChildSa sa = Child("10.1.0.5/32", "10.2.0.0/24");
  sa.local_ts[0].ip_protocol = 6;
  sa.local_ts[0].start_port = 443;
  sa.local_ts[0].end_port = 443;
  absl::StatusOr<ChildSaState> state = MapChildSa(sa, Params());
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->policies, SizeIs(3));
  EXPECT_EQ(state->policies[0].selector.ip_protocol, 6);
  EXPECT_EQ(state->policies[0].selector.source_port, 443);
  EXPECT_EQ(state->policies[0].selector.destination_port, 0);
  EXPECT_EQ(state->policies[1].selector.source_port, 0);
  EXPECT_EQ(state->policies[1].selector.destination_port, 443);

  sa.remote_ts[0].ip_protocol = 17;  // No packet is both TCP and UDP.
  EXPECT_EQ(MapChildSa(sa, Params()).status().code(), absl::StatusCode::kInvalidArgument);

  sa = Child("10.1.0.5/32", "10.2.0.0/24");
  sa.remote_ts[0].start_port = 1000;
  sa.remote_ts[0].end_port = 2000;
  EXPECT_EQ(MapChildSa(sa, Params()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MapChildSaTest, RangesBecomeCoveringPrefixes) {
  ike::ChildSa sa = Child("10.1.0.0/32", "10.2.0.0/24");
  sa.local_ts[0].start_address = Ip("10.1.0.1");
  sa.local_ts[0].end_address = Ip("10.1.0.6");
  absl::StatusOr<ChildSaState> state = MapChildSa(sa, Params());
  ASSERT_TRUE(state.ok()) << state.status();
  std::vector<std::string> outs;
  for (const PolicyConfig& p : state->policies) {
    if (p.direction == Direction::kOut) outs.push_back(FormatSelector(p.selector));
  }
  EXPECT_THAT(outs, ElementsAre("10.1.0.1/32->10.2.0.0/24", "10.1.0.2/31->10.2.0.0/24",
                                "10.1.0.4/31->10.2.0.0/24", "10.1.0.6/32->10.2.0.0/24"));
}

TEST(MapChildSaTest, RefusesSelectorsThatNeedTooManyPolicies) {
  ike::ChildSa sa = Child("::/0", "::/0");
  sa.local_ts[0].start_address = Ip("::1");
  sa.local_ts[0].end_address = Ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
  sa.remote_ts = sa.local_ts;  // 254 x 254 prefixes.
  EXPECT_EQ(MapChildSa(sa, Params()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RangeToPrefixesTest, Edges) {
  EXPECT_THAT(RangeToPrefixes(Ip("0.0.0.0"), Ip("255.255.255.255")),
              ElementsAre(Pair(Ip("0.0.0.0"), 0)));
  EXPECT_THAT(RangeToPrefixes(Ip("::"), Ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
              ElementsAre(Pair(Ip("::"), 0)));
  EXPECT_THAT(RangeToPrefixes(Ip("255.255.255.255"), Ip("255.255.255.255")),
              ElementsAre(Pair(Ip("255.255.255.255"), 32)));
  EXPECT_THAT(RangeToPrefixes(Ip("0.0.0.1"), Ip("255.255.255.255")), SizeIs(32));
  EXPECT_THAT(RangeToPrefixes(Ip("10.0.0.2"), Ip("10.0.0.1")), IsEmpty());
  EXPECT_THAT(RangeToPrefixes(Ip("10.0.0.1"), Ip("::1")), IsEmpty());
}

TEST(InstallChildSaTest, InstallsAndRemoves) {
  dataplane::FakeDataplane dp;
  absl::StatusOr<ChildSaState> state = MapChildSa(Child("10.1.0.0/24", "10.2.0.0/24"), Params());
  ASSERT_TRUE(state.ok());
  absl::StatusOr<InstalledChildSa> installed = InstallChildSa(dp, *state);
  ASSERT_TRUE(installed.ok()) << installed.status();
  EXPECT_THAT(dp.Sas(), SizeIs(2));
  EXPECT_THAT(dp.Policies(), SizeIs(3));
  EXPECT_EQ(installed->inbound, state->inbound.id);
  EXPECT_EQ(installed->outbound, state->outbound.id);

  ASSERT_TRUE(RemoveChildSa(dp, *installed).ok());
  EXPECT_THAT(dp.Sas(), IsEmpty());
  EXPECT_THAT(dp.Policies(), IsEmpty());
  // Already gone is done.
  EXPECT_TRUE(RemoveChildSa(dp, *installed).ok());
}

TEST(InstallChildSaTest, UndoesWhatItAddedOnError) {
  absl::StatusOr<ChildSaState> state = MapChildSa(Child("10.1.0.0/24", "10.2.0.0/24"), Params());
  ASSERT_TRUE(state.ok());
  for (const char* failing : {"AddSa", "AddPolicy"}) {
    SCOPED_TRACE(failing);
    dataplane::FakeDataplane dp;
    if (std::string(failing) == "AddSa") {
      ASSERT_TRUE(dp.AddSa(state->outbound).ok());  // The outbound SA collides.
    } else {
      dp.FailNext("AddPolicy", absl::UnavailableError("netlink"));
    }
    const size_t before = dp.Sas().size();
    EXPECT_FALSE(InstallChildSa(dp, *state).ok());
    EXPECT_THAT(dp.Sas(), SizeIs(before));
    EXPECT_THAT(dp.Policies(), IsEmpty());
  }
}

TEST(InstallChildSaTest, ReplacementKeepsSharedPolicies) {
  dataplane::FakeDataplane dp;
  absl::StatusOr<ChildSaState> old_state =
      MapChildSa(Child("10.1.0.0/24,10.3.0.0/24", "10.2.0.0/24"), Params());
  ASSERT_TRUE(old_state.ok());
  absl::StatusOr<InstalledChildSa> old_sa = InstallChildSa(dp, *old_state);
  ASSERT_TRUE(old_sa.ok());

  ike::ChildSa next = Child("10.1.0.0/24", "10.2.0.0/24");
  next.inbound_spi = 0xc0000003;
  next.outbound_spi = 0xd0000004;
  absl::StatusOr<ChildSaState> new_state = MapChildSa(next, Params());
  ASSERT_TRUE(new_state.ok());
  absl::StatusOr<InstalledChildSa> new_sa = InstallChildSa(dp, *new_state);
  ASSERT_TRUE(new_sa.ok()) << new_sa.status();
  ASSERT_TRUE(RemoveChildSa(dp, *old_sa, new_sa->policies).ok());

  std::vector<uint32_t> spis;
  for (const dataplane::SaConfig& sa : dp.Sas()) spis.push_back(sa.id.spi);
  EXPECT_THAT(spis, UnorderedElementsAre(0xc0000003u, 0xd0000004u));
  EXPECT_THAT(
      Describe(dp.Policies()),
      UnorderedElementsAre("out 10.1.0.0/24->10.2.0.0/24 via 198.51.100.1->198.51.100.2 reqid 42",
                           "in 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42",
                           "fwd 10.2.0.0/24->10.1.0.0/24 via 198.51.100.2->198.51.100.1 reqid 42"));
}

}  // namespace
}  // namespace strait::agent
