#include "agent/metrics.h"

#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace strait::agent {
namespace {

double Value(prometheus::Registry& registry, const std::string& name, const std::string& key = "",
             const std::string& value = "") {
  double total = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      bool match = key.empty();
      for (const auto& label : metric.label) match |= label.name == key && label.value == value;
      if (match) total += metric.gauge.value + metric.counter.value;
    }
  }
  return total;
}

TEST(MetricsTest, SessionStateIsOneHot) {
  prometheus::Registry registry;
  AgentMetrics metrics(registry);
  metrics.SetSessionState(SessionState::kConnected);
  EXPECT_EQ(Value(registry, "strait_agent_session_state", "state", "connected"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_session_state"), 1);
  metrics.SetSessionState(SessionState::kStandalone);
  EXPECT_EQ(Value(registry, "strait_agent_session_state", "state", "connected"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_session_state", "state", "standalone"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_session_state"), 1);
}

TEST(MetricsTest, AppliedVersion) {
  prometheus::Registry registry;
  AgentMetrics metrics(registry);
  metrics.SetAppliedVersion("42.9f8e");
  EXPECT_EQ(Value(registry, "strait_agent_applied_revision"), 42);
  EXPECT_EQ(Value(registry, "strait_agent_applied_version_info", "version", "42.9f8e"), 1);
  metrics.SetAppliedVersion("file:0123456789ab");
  EXPECT_EQ(Value(registry, "strait_agent_applied_revision"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_applied_version_info"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_applied_version_info", "version", "file:0123456789ab"),
            1);
  metrics.SetAppliedVersion("");
  EXPECT_EQ(Value(registry, "strait_agent_applied_version_info"), 0);
}

TEST(MetricsTest, VersionRevision) {
  EXPECT_EQ(VersionRevision("17.abc"), 17);
  EXPECT_EQ(VersionRevision("17"), 17);
  EXPECT_EQ(VersionRevision(""), 0);
  EXPECT_EQ(VersionRevision("file:abc"), 0);
  EXPECT_EQ(VersionRevision("-3.x"), 0);
}

}  // namespace
}  // namespace strait::agent
