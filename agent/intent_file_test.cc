#include "agent/intent_file.h"

#include <string>

#include "agent/applier_impl.h"
#include "agent/metrics.h"
#include "agent/test_util.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace strait::agent {
namespace {

using ::strait::agent::testing::MetricValue;
using ::strait::agent::testing::NewTempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kIntent[] = R"(kind: Tunnel
metadata: {name: a-to-b}
spec:
  node: node-a
  local: {address: 192.0.2.1, id: node-a.example.com, trafficSelectors: [10.1.0.0/24]}
  remote: {node: node-b, address: 192.0.2.2, trafficSelectors: [10.2.0.0/24, 10.22.0.0/24]}
  auth: {psk: "node to node key 0123456789"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16-ecp384]}
---
kind: Tunnel
metadata: {name: a-to-gw}
spec:
  node: node-a
  local: {address: 192.0.2.1, trafficSelectors: [10.1.0.0/24]}
  remote: {address: 192.0.2.100, trafficSelectors: [10.100.0.0/16]}
  auth: {psk: "gateway key 0123456789abcdef"}
  ike: {proposals: [aes256-sha256-modp2048]}
  esp: {proposals: [aes256gcm16]}
)";

std::vector<std::string> Names(const strait::v1::Snapshot& snapshot) {
  std::vector<std::string> names;
  for (const auto& t : snapshot.tunnels()) names.push_back(t.name());
  return names;
}

TEST(IntentFileTest, OwningNodeGetsItsHalves) {
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(kIntent, "node-a");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_THAT((*snapshot)->version(), StartsWith("file:"));
  EXPECT_EQ((*snapshot)->version().size(), 5u + 12u);
  EXPECT_THAT(Names(**snapshot), ElementsAre("a-to-b", "a-to-gw"));

  const strait::v1::TunnelSpec& spec = (*snapshot)->tunnels(0).spec();
  EXPECT_EQ(spec.node(), "node-a");
  EXPECT_EQ(spec.local().address(), "192.0.2.1");
  EXPECT_THAT(spec.local().traffic_selectors(), ElementsAre("10.1.0.0/24"));
  EXPECT_EQ(spec.remote().node(), "node-b");
  EXPECT_THAT(spec.remote().traffic_selectors(), ElementsAre("10.2.0.0/24", "10.22.0.0/24"));
  EXPECT_EQ(spec.auth().psk().value(), "node to node key 0123456789");
  // Defaults are filled in, as the controller would.
  EXPECT_EQ(spec.esp().lifetime().seconds(), 3600);
  EXPECT_EQ(spec.local().id(), "node-a.example.com");
  EXPECT_EQ((*snapshot)->tunnels(0).generation(), 1);
}

TEST(IntentFileTest, RemoteNodeGetsMirroredHalf) {
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(kIntent, "node-b");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_THAT(Names(**snapshot), ElementsAre("a-to-b"));
  const strait::v1::TunnelSpec& spec = (*snapshot)->tunnels(0).spec();
  EXPECT_EQ(spec.node(), "node-b");
  EXPECT_EQ(spec.local().node(), "");
  EXPECT_EQ(spec.local().address(), "192.0.2.2");
  EXPECT_THAT(spec.local().traffic_selectors(), ElementsAre("10.2.0.0/24", "10.22.0.0/24"));
  EXPECT_EQ(spec.remote().node(), "node-a");
  EXPECT_EQ(spec.remote().address(), "192.0.2.1");
  EXPECT_EQ(spec.remote().id(), "node-a.example.com");
  EXPECT_THAT(spec.remote().traffic_selectors(), ElementsAre("10.1.0.0/24"));

  // And node-b's agent accepts it.
  FakeClock clock;
  ApplierImpl applier("node-b", clock, nullptr);
  EXPECT_TRUE(applier.Apply(**snapshot).ok());
}

TEST(IntentFileTest, OtherNodeGetsNothing) {
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(kIntent, "node-c");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ((*snapshot)->tunnels_size(), 0);
}

TEST(IntentFileTest, VersionFollowsContent) {
  EXPECT_EQ(IntentFileVersion(kIntent), IntentFileVersion(std::string(kIntent)));
  EXPECT_NE(IntentFileVersion(kIntent), IntentFileVersion(std::string(kIntent) + "\n"));
  // SHA-256("") = e3b0c44298fc1c149afbf4c8996fb924...
  EXPECT_EQ(IntentFileVersion(""), "file:e3b0c44298fc");
}

TEST(IntentFileTest, InvalidIntentIsRefusedWithTheReason) {
  std::string weak = kIntent;
  weak.replace(weak.find("aes256-sha256-modp2048"), 22, "3des-sha1-modp1024");
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(weak, "node-a");
  EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(snapshot.status().message(), HasSubstr("tunnel \"a-to-gw\": spec.ike.proposals[0]"));

  // Syntax errors name the document.
  snapshot = SnapshotFromIntent(std::string(kIntent) + "---\nkind: Tunnel\nbogus: 1\n", "node-a");
  EXPECT_THAT(snapshot.status().message(), HasSubstr("document 3"));
}

TEST(IntentFileTest, OverlapsAndDuplicatesAreRefused) {
  std::string overlapping = kIntent;
  overlapping.replace(overlapping.find("10.100.0.0/16"), 13, "10.0.0.0/8");
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(overlapping, "node-a");
  EXPECT_THAT(snapshot.status().message(), HasSubstr("overlaps"));

  std::string twice = kIntent;
  twice.replace(twice.find("name: a-to-gw"), 13, "name: a-to-b");
  snapshot = SnapshotFromIntent(twice, "node-a");
  EXPECT_THAT(snapshot.status().message(), HasSubstr("tunnel \"a-to-b\": defined more than once"));
}

TEST(IntentFileTest, ApplyKeepsRunningIntentOnBadReload) {
  const std::string path = NewTempDir() + "/tunnels.yaml";
  ASSERT_TRUE(WriteFileAtomically(path, kIntent, 0600).ok());
  prometheus::Registry registry;
  AgentMetrics metrics(registry);
  FakeClock clock;
  ApplierImpl applier("node-a", clock, &metrics);

  ASSERT_TRUE(ApplyIntentFile(path, "node-a", applier, &metrics).ok());
  const std::string version = applier.AppliedVersion();
  EXPECT_EQ(version, IntentFileVersion(kIntent));
  EXPECT_EQ(MetricValue(registry, "strait_agent_tunnels"), 2);

  ASSERT_TRUE(WriteFileAtomically(path, "kind: Tunnel\nspec: [\n", 0600).ok());
  absl::Status status = ApplyIntentFile(path, "node-a", applier, &metrics);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_EQ(applier.AppliedVersion(), version);
  EXPECT_EQ(MetricValue(registry, "strait_agent_snapshots_applied_total"), 1);
  EXPECT_EQ(MetricValue(registry, "strait_agent_snapshots_rejected_total"), 1);

  EXPECT_EQ(ApplyIntentFile(path + ".missing", "node-a", applier, nullptr).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strait::agent
