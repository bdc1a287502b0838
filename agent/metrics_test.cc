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
      if (match) {
        total += metric.gauge.value + metric.counter.value +
                 static_cast<double>(metric.histogram.sample_count);
      }
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

TEST(IkeMetricsTest, RecordsTheRunnersEvents) {
  prometheus::Registry registry;
  IkeMetrics metrics(registry);
  // Families with fixed labels are there from the start.
  EXPECT_EQ(Value(registry, "strait_agent_ike_messages_total", "exchange", "IKE_SA_INIT"), 0);
  size_t families = 0;
  for (const auto& family : registry.Collect()) {
    families += family.name.rfind("strait_agent_", 0) == 0 ? 1 : 0;
  }
  // 20: the per-tunnel next-rekey gauge has no series yet.
  EXPECT_EQ(families, 20u);
  EXPECT_EQ(Value(registry, "strait_agent_ike_fragments_total", "direction", "in"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total", "reason", "reassembly"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dead_peers_total", "action", "restart"), 0);

  metrics.ChildRekeys(/*initiator=*/true, /*success=*/true, 2);
  metrics.ChildRekeys(/*initiator=*/false, /*success=*/true, 1);
  metrics.Deletes(/*sent=*/true, 3);
  metrics.PeerDead("hold");
  metrics.DpdProbes(5);
  metrics.CookieSent();
  metrics.CookieSent();
  metrics.CookieRejected();
  metrics.SetHalfOpenSas(7);
  EXPECT_EQ(Value(registry, "strait_agent_ike_cookies_sent_total"), 2);
  EXPECT_EQ(Value(registry, "strait_agent_ike_cookies_rejected_total"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_half_open_sas"), 7);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total", "reason", "source_limit"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total", "reason", "half_open_limit"), 0);
  EXPECT_EQ(Value(registry, "strait_agent_ike_deletes_total", "direction", "sent"), 3);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dead_peers_total", "action", "hold"), 1);
  metrics.SetNextRekey("t1", absl::FromUnixSeconds(1700000000));
  EXPECT_EQ(Value(registry, "strait_agent_child_sa_next_rekey_timestamp_seconds", "tunnel", "t1"),
            1700000000);
  metrics.SetNextRekey("t1", std::nullopt);

  metrics.SetIkeSas(2, 3);
  EXPECT_EQ(Value(registry, "strait_agent_ike_sas", "state", "connecting"), 2);
  EXPECT_EQ(Value(registry, "strait_agent_ike_sas", "state", "established"), 3);
  metrics.SetChildSas(4);
  EXPECT_EQ(Value(registry, "strait_agent_child_sas"), 4);

  metrics.HandshakeSucceeded(true, absl::Milliseconds(20));
  metrics.HandshakeFailed(false, "NO_PROPOSAL_CHOSEN");
  metrics.HandshakeFailed(false, "NO_PROPOSAL_CHOSEN");
  EXPECT_EQ(Value(registry, "strait_agent_ike_handshakes_total", "result", "success"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_handshakes_total", "result", "NO_PROPOSAL_CHOSEN"),
            2);
  EXPECT_EQ(Value(registry, "strait_agent_ike_handshake_duration_seconds", "role", "initiator"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_handshake_duration_seconds", "role", "responder"), 0);

  metrics.AuthFailed("AUTHENTICATION_FAILED");
  EXPECT_EQ(
      Value(registry, "strait_agent_ike_auth_failures_total", "reason", "AUTHENTICATION_FAILED"),
      1);

  metrics.Message(34, true);
  metrics.Message(37, false);
  metrics.Message(99, true);
  EXPECT_EQ(Value(registry, "strait_agent_ike_messages_total", "exchange", "IKE_SA_INIT"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_messages_total", "exchange", "INFORMATIONAL"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_messages_total", "exchange", "other"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_messages_total", "direction", "in"), 2);

  metrics.Retransmits(35, 3);
  EXPECT_EQ(Value(registry, "strait_agent_ike_retransmits_total", "exchange", "IKE_AUTH"), 3);
  metrics.Dropped(IkeMetrics::kNoTunnel);
  metrics.Dropped(IkeMetrics::kStale, 5);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total", "reason", "no_tunnel"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total"), 6);

  metrics.Fragments(/*inbound=*/false, 4);
  metrics.Fragments(/*inbound=*/true, 3);
  metrics.Reassembled(1);
  metrics.Dropped(IkeMetrics::kReassembly, 2);
  EXPECT_EQ(Value(registry, "strait_agent_ike_fragments_total", "direction", "out"), 4);
  EXPECT_EQ(Value(registry, "strait_agent_ike_fragments_total", "direction", "in"), 3);
  EXPECT_EQ(Value(registry, "strait_agent_ike_reassembled_messages_total"), 1);
  EXPECT_EQ(Value(registry, "strait_agent_ike_dropped_total", "reason", "reassembly"), 2);
}

TEST(IkeMetricsTest, ExchangeNames) {
  EXPECT_EQ(IkeExchangeName(34), "IKE_SA_INIT");
  EXPECT_EQ(IkeExchangeName(35), "IKE_AUTH");
  EXPECT_EQ(IkeExchangeName(36), "CREATE_CHILD_SA");
  EXPECT_EQ(IkeExchangeName(37), "INFORMATIONAL");
  EXPECT_EQ(IkeExchangeName(0), "other");
}

}  // namespace
}  // namespace strait::agent
