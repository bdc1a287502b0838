#include "agent/applier_impl.h"

#include <memory>

#include "agent/metrics.h"
#include "agent/test_util.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace strait::agent {
namespace {

using ::strait::agent::testing::GatewayTunnel;
using ::strait::agent::testing::MakeSnapshot;
using ::strait::agent::testing::MetricValue;
using ::testing::AllOf;
using ::testing::HasSubstr;

class ApplierImplTest : public ::testing::Test {
 protected:
  ApplierImplTest() : metrics_(registry_), applier_("node-a", clock_, &metrics_) {}

  // Applies a valid first snapshot, so that tests can check it is kept.
  void ApplyFirst() {
    ASSERT_TRUE(applier_
                    .Apply(MakeSnapshot(
                        "3.s", {GatewayTunnel("first", "node-a", "10.1.0.0/24", "10.100.0.0/16")}))
                    .ok());
  }

  void ExpectFirstKept() {
    EXPECT_EQ(applier_.AppliedVersion(), "3.s");
    strait::v1::StatusReport report = applier_.BuildStatusReport();
    ASSERT_EQ(report.tunnels_size(), 1);
    EXPECT_EQ(report.tunnels(0).name(), "first");
    EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_revision"), 3);
    EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels"), 1);
  }

  FakeClock clock_;
  prometheus::Registry registry_;
  AgentMetrics metrics_;
  ApplierImpl applier_;
};

TEST_F(ApplierImplTest, StartsEmpty) {
  EXPECT_EQ(applier_.AppliedVersion(), "");
  EXPECT_EQ(applier_.BuildStatusReport().tunnels_size(), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels"), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_revision"), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_version_info"), 0);
}

TEST_F(ApplierImplTest, AppliesValidSnapshotAndReportsPending) {
  int notified = 0;
  applier_.SetStatusListener([&notified] { ++notified; });
  strait::v1::Snapshot snapshot =
      MakeSnapshot("7.abc",
                   {GatewayTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16", 4),
                    GatewayTunnel("a-to-gw2", "node-a", "10.1.0.0/24", "10.101.0.0/16", 1)},
                   "nonce-1");
  ASSERT_TRUE(applier_.Apply(snapshot).ok());
  EXPECT_EQ(notified, 1);
  EXPECT_EQ(applier_.AppliedVersion(), "7.abc");

  strait::v1::StatusReport report = applier_.BuildStatusReport();
  ASSERT_EQ(report.tunnels_size(), 2);
  const strait::v1::TunnelEndReport& end = report.tunnels(0);
  EXPECT_EQ(end.name(), "a-to-gw");
  EXPECT_EQ(end.status().node(), "node-a");
  EXPECT_EQ(end.status().phase(), strait::v1::TUNNEL_PHASE_PENDING);
  EXPECT_EQ(end.status().reason(), "AWAITING_IKE");
  EXPECT_EQ(end.status().message(), "IKEv2 engine not yet enabled");
  EXPECT_EQ(end.status().observed_generation(), 4);
  EXPECT_EQ(end.status().report_time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(report.tunnels(1).status().observed_generation(), 1);

  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels", {{"phase", "pending"}}), 2);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels", {{"phase", "established"}}), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_revision"), 7);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_version_info", {{"version", "7.abc"}}), 1);
}

TEST_F(ApplierImplTest, ReplacesSnapshotAndVersionInfo) {
  ApplyFirst();
  ASSERT_TRUE(applier_.Apply(MakeSnapshot("9.s", {})).ok());
  EXPECT_EQ(applier_.AppliedVersion(), "9.s");
  EXPECT_EQ(applier_.BuildStatusReport().tunnels_size(), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels"), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_version_info", {{"version", "3.s"}}), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_version_info", {{"version", "9.s"}}), 1);
}

TEST_F(ApplierImplTest, RejectsTunnelOfAnotherNodeAndKeepsPrevious) {
  ApplyFirst();
  int notified = 0;
  applier_.SetStatusListener([&notified] { ++notified; });
  absl::Status status = applier_.Apply(
      MakeSnapshot("4.s", {GatewayTunnel("b-to-gw", "node-b", "10.2.0.0/24", "10.100.0.0/16")}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("tunnel \"b-to-gw\": spec.node: is \"node-b\", not this agent's node "
                        "\"node-a\""));
  EXPECT_EQ(notified, 0);
  ExpectFirstKept();
}

TEST_F(ApplierImplTest, RejectsDuplicateNames) {
  ApplyFirst();
  absl::Status status = applier_.Apply(
      MakeSnapshot("4.s", {GatewayTunnel("dup", "node-a", "10.1.0.0/24", "10.100.0.0/16"),
                           GatewayTunnel("dup", "node-a", "10.3.0.0/24", "10.103.0.0/16")}));
  EXPECT_THAT(status.message(), HasSubstr("tunnel \"dup\": appears more than once"));
  ExpectFirstKept();
}

TEST_F(ApplierImplTest, RejectsOverlappingSelectors) {
  ApplyFirst();
  absl::Status status = applier_.Apply(
      MakeSnapshot("4.s", {GatewayTunnel("one", "node-a", "10.1.0.0/24", "10.100.0.0/16"),
                           GatewayTunnel("two", "node-a", "10.1.0.128/25", "10.100.7.0/24")}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("tunnel \"two\""), HasSubstr("overlaps"),
                                      HasSubstr("tunnel \"one\"")));
  ExpectFirstKept();
}

TEST_F(ApplierImplTest, RejectsInvalidTunnelNamingEveryProblem) {
  ApplyFirst();
  strait::v1::NodeTunnel weak = GatewayTunnel("weak", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  weak.mutable_spec()->mutable_ike()->set_proposals(0, "3des-sha1-modp1024");
  weak.mutable_spec()->mutable_auth()->mutable_psk()->set_value("short");
  absl::Status status = applier_.Apply(MakeSnapshot("4.s", {weak}));
  EXPECT_THAT(status.message(), AllOf(HasSubstr("tunnel \"weak\": spec.ike.proposals[0]"),
                                      HasSubstr("tunnel \"weak\": spec.auth.psk")));
  // The key itself never appears in an error.
  EXPECT_THAT(std::string(status.message()), ::testing::Not(HasSubstr("short\"")));
  ExpectFirstKept();
}

TEST_F(ApplierImplTest, RejectsMissingVersion) {
  ApplyFirst();
  absl::Status status = applier_.Apply(MakeSnapshot("", {}));
  EXPECT_THAT(status.message(), HasSubstr("snapshot.version: is required"));
  ExpectFirstKept();
}

TEST_F(ApplierImplTest, LeavesLifetimePolicyToTheController) {
  strait::v1::NodeTunnel tunnel = GatewayTunnel("long", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  tunnel.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(int64_t{48} * 3600);
  tunnel.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(int64_t{24} * 3600);
  EXPECT_TRUE(applier_.Apply(MakeSnapshot("5.s", {tunnel})).ok());
}

TEST_F(ApplierImplTest, AcceptsRemoteHalfOfNodeToNodeTunnel) {
  // node-a's view of a tunnel that node-b owns: mirrored selectors, and the
  // peer named as a node.
  strait::v1::NodeTunnel half = GatewayTunnel("b-to-a", "node-a", "10.1.0.0/24", "10.2.0.0/24");
  half.mutable_spec()->mutable_remote()->set_node("node-b");
  strait::v1::NodeTunnel own = GatewayTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  EXPECT_TRUE(applier_.Apply(MakeSnapshot("6.s", {half, own})).ok());
  EXPECT_EQ(applier_.BuildStatusReport().tunnels_size(), 2);
}

TEST_F(ApplierImplTest, ReportsEndStatusWithSas) {
  ApplyFirst();
  int notified = 0;
  applier_.SetStatusListener([&notified] { ++notified; });
  strait::v1::TunnelEndStatus status;
  status.set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
  status.set_reason("ESTABLISHED");
  status.set_node("ignored");  // The applier's own.
  status.mutable_ike_sa()->set_initiator_spi("0123456789abcdef");
  status.add_child_sas()->set_inbound_spi("c0000001");
  applier_.SetEndStatus("first", status);
  applier_.SetEndStatus("first", status);  // Unchanged: no second notification.
  applier_.SetEndStatus("unknown", status);
  EXPECT_EQ(notified, 1);

  strait::v1::StatusReport report = applier_.BuildStatusReport();
  ASSERT_EQ(report.tunnels_size(), 1);
  const strait::v1::TunnelEndStatus& got = report.tunnels(0).status();
  EXPECT_EQ(got.node(), "node-a");
  EXPECT_EQ(got.phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  EXPECT_EQ(got.ike_sa().initiator_spi(), "0123456789abcdef");
  ASSERT_EQ(got.child_sas_size(), 1);
  EXPECT_EQ(got.child_sas(0).inbound_spi(), "c0000001");
  EXPECT_EQ(got.observed_generation(), 1);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels", {{"phase", "established"}}), 1);

  // Failing drops the SAs.
  applier_.SetEndStatus("first", strait::v1::TUNNEL_PHASE_FAILED, "AUTHENTICATION_FAILED", "x");
  EXPECT_EQ(notified, 2);
  report = applier_.BuildStatusReport();
  EXPECT_FALSE(report.tunnels(0).status().has_ike_sa());
  EXPECT_EQ(report.tunnels(0).status().child_sas_size(), 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_tunnels", {{"phase", "failed"}}), 1);
}

TEST(ValidateSnapshotTest, NamesUnnamedTunnelsByIndex) {
  strait::v1::NodeTunnel tunnel = GatewayTunnel("", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  absl::Status status = ValidateSnapshot(MakeSnapshot("1.s", {tunnel}), "node-a");
  EXPECT_THAT(status.message(), HasSubstr("tunnels[0]: metadata.name"));
}

}  // namespace
}  // namespace strait::agent
