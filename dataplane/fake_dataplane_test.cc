#include "dataplane/fake_dataplane.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const Address kLocal = {192, 0, 2, 1};
const Address kRemote = {192, 0, 2, 2};

SaConfig Sa(uint32_t spi, const std::string& key = "key") {
  SaConfig sa;
  sa.id = SaId{kLocal, spi};
  sa.source = kRemote;
  sa.reqid = 7;
  sa.encr_id = 20;
  sa.key_bits = 128;
  sa.encr_key = Secret(key);
  return sa;
}

PolicyConfig Policy(Direction direction, uint8_t third_octet = 1) {
  PolicyConfig p;
  p.selector.source = {10, third_octet, 0, 0};
  p.selector.source_prefix = 16;
  p.selector.destination = {10, 200, 0, 0};
  p.selector.destination_prefix = 16;
  p.direction = direction;
  p.tunnel_source = kLocal;
  p.tunnel_destination = kRemote;
  p.reqid = 7;
  return p;
}

TEST(FakeDataplaneTest, AddsListsAndDeletesSas) {
  FakeDataplane dp;
  EXPECT_EQ(dp.name(), "fake");
  ASSERT_TRUE(dp.AddSa(Sa(0x1234, "secret")).ok());
  EXPECT_EQ(dp.AddSa(Sa(0x1234)).code(), absl::StatusCode::kAlreadyExists);

  std::optional<SaConfig> got = dp.GetSa(SaId{kLocal, 0x1234});
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->encr_key.view(), "secret");
  absl::StatusOr<InstalledState> listed = dp.List();
  ASSERT_TRUE(listed.ok());
  ASSERT_THAT(listed->sas, SizeIs(1));
  EXPECT_TRUE(listed->sas[0].encr_key.empty()) << "List never returns keys";

  ASSERT_TRUE(dp.DeleteSa(SaId{kLocal, 0x1234}).ok());
  EXPECT_EQ(dp.DeleteSa(SaId{kLocal, 0x1234}).code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dp.Sas(), IsEmpty());
  EXPECT_THAT(dp.Calls(), ElementsAre("AddSa 192.0.2.1/0x00001234",
                                      "AddSa 192.0.2.1/0x00001234 -> ALREADY_EXISTS", "List",
                                      "DeleteSa 192.0.2.1/0x00001234",
                                      "DeleteSa 192.0.2.1/0x00001234 -> NOT_FOUND"));
}

TEST(FakeDataplaneTest, UpdateNeedsAnInstalledSa) {
  FakeDataplane dp;
  SaConfig sa = Sa(5);
  EXPECT_EQ(dp.UpdateSa(sa).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(dp.AddSa(sa).ok());
  sa.hard.add_seconds = 3600;
  ASSERT_TRUE(dp.UpdateSa(sa).ok());
  EXPECT_EQ(dp.GetSa(sa.id)->hard.add_seconds, 3600u);
}

TEST(FakeDataplaneTest, PoliciesAreReplacedBySelectorAndDirection) {
  FakeDataplane dp;
  ASSERT_TRUE(dp.AddPolicy(Policy(Direction::kOut)).ok());
  PolicyConfig replaced = Policy(Direction::kOut);
  replaced.reqid = 9;
  ASSERT_TRUE(dp.AddPolicy(replaced).ok());
  ASSERT_TRUE(dp.AddPolicy(Policy(Direction::kIn)).ok());
  std::vector<PolicyConfig> policies = dp.Policies();
  ASSERT_THAT(policies, SizeIs(2));
  EXPECT_EQ(policies[0].reqid, 9u);
  EXPECT_EQ(dp.DeletePolicy(Policy(Direction::kFwd).selector, Direction::kFwd).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(dp.DeletePolicy(Policy(Direction::kIn).selector, Direction::kIn).ok());
  EXPECT_THAT(dp.Policies(), SizeIs(1));
}

TEST(FakeDataplaneTest, AddPoliciesIsAllOrNothing) {
  FakeDataplane dp;
  PolicyConfig bad = Policy(Direction::kIn);
  bad.selector.destination_prefix = 40;
  EXPECT_EQ(dp.AddPolicies({Policy(Direction::kOut), bad}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dp.Policies(), IsEmpty());
  dp.FailNext("AddPolicy", absl::ResourceExhaustedError("full"));
  EXPECT_EQ(dp.AddPolicies({Policy(Direction::kOut), Policy(Direction::kIn)}).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(dp.Policies(), IsEmpty());
  ASSERT_TRUE(dp.AddPolicies({Policy(Direction::kOut), Policy(Direction::kIn)}).ok());
  EXPECT_THAT(dp.Policies(), SizeIs(2));
}

TEST(FakeDataplaneTest, InjectedFailuresChangeNothing) {
  FakeDataplane dp;
  dp.FailNext("AddSa", absl::UnavailableError("netlink"));
  EXPECT_EQ(dp.AddSa(Sa(1)).code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(dp.Sas(), IsEmpty());
  EXPECT_TRUE(dp.AddSa(Sa(1)).ok());
}

TEST(FakeDataplaneTest, RejectsMalformedAddresses) {
  FakeDataplane dp;
  SaConfig sa = Sa(1);
  sa.source = {1, 2, 3};
  EXPECT_EQ(dp.AddSa(sa).code(), absl::StatusCode::kInvalidArgument);
  PolicyConfig p = Policy(Direction::kOut);
  p.selector.source_prefix = 33;
  EXPECT_EQ(dp.AddPolicy(p).code(), absl::StatusCode::kInvalidArgument);
}

TEST(FakeDataplaneTest, CountersAndEvents) {
  FakeDataplane dp;
  const SaId id{kLocal, 1};
  EXPECT_EQ(dp.GetCounters(id).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(dp.AddSa(Sa(1)).ok());
  EXPECT_EQ(dp.GetCounters(id)->packets, 0u);
  dp.SetCounters(id, SaCounters{100, 2, 0, 0});
  EXPECT_EQ(dp.GetCounters(id)->bytes, 100u);

  std::vector<DataplaneEvent> seen;
  dp.Emit(DataplaneEvent{});  // No subscriber: nothing happens.
  dp.Subscribe([&seen](const DataplaneEvent& e) { seen.push_back(e); });
  DataplaneEvent expire;
  expire.kind = DataplaneEvent::Kind::kHardExpire;
  expire.sa = id;
  dp.Emit(expire);
  ASSERT_THAT(seen, SizeIs(1));
  EXPECT_EQ(seen[0].sa, id);
}

TEST(FakeDataplaneTest, ConcurrentCallersSeeConsistentState) {
  FakeDataplane dp;
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < 4; ++t) {
    threads.emplace_back([&dp, t] {
      for (uint32_t i = 0; i < 100; ++i) {
        const uint32_t spi = t * 1000 + i + 1;
        EXPECT_TRUE(dp.AddSa(Sa(spi)).ok());
        if (i % 2 == 0) {
          EXPECT_TRUE(dp.DeleteSa(SaId{kLocal, spi}).ok());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(dp.Sas(), SizeIs(200));
  EXPECT_THAT(dp.Calls(), SizeIs(600));
}

TEST(FakeDataplaneTest, KeepsTheLastCalls) {
  FakeDataplane dp(/*max_calls=*/2);
  for (uint32_t spi = 1; spi <= 3; ++spi) ASSERT_TRUE(dp.AddSa(Sa(spi)).ok());
  EXPECT_THAT(dp.Calls(), ElementsAre("AddSa 192.0.2.1/0x00000002", "AddSa 192.0.2.1/0x00000003"));
}

TEST(FakeDataplaneTest, FormatsSelectors) {
  Selector s = Policy(Direction::kOut).selector;
  EXPECT_EQ(FormatSelector(s), "10.1.0.0/16->10.200.0.0/16");
  s.ip_protocol = 6;
  s.destination_port = 443;
  EXPECT_EQ(FormatSelector(s), "10.1.0.0/16->10.200.0.0/16 proto 6 port 0->443");
  EXPECT_EQ(FormatAddress(Address(16, 0)), "::");
  EXPECT_EQ(FormatAddress(Address(3, 0)), "?");
}

}  // namespace
}  // namespace strait::dataplane
