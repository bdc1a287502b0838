#include "agent/metrics.h"

#include "absl/strings/numbers.h"

namespace strait::agent {
namespace {

constexpr std::array<SessionState, 4> kAllStates = {
    SessionState::kConnected, SessionState::kConnecting, SessionState::kDisconnected,
    SessionState::kStandalone};

}  // namespace

absl::string_view SessionStateName(SessionState state) {
  switch (state) {
    case SessionState::kConnecting:
      return "connecting";
    case SessionState::kConnected:
      return "connected";
    case SessionState::kDisconnected:
      return "disconnected";
    case SessionState::kStandalone:
      return "standalone";
  }
  return "unknown";
}

absl::string_view TunnelPhaseName(strait::v1::TunnelPhase phase) {
  switch (phase) {
    case strait::v1::TUNNEL_PHASE_PENDING:
      return "pending";
    case strait::v1::TUNNEL_PHASE_CONNECTING:
      return "connecting";
    case strait::v1::TUNNEL_PHASE_ESTABLISHED:
      return "established";
    case strait::v1::TUNNEL_PHASE_FAILED:
      return "failed";
    case strait::v1::TUNNEL_PHASE_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

int64_t VersionRevision(absl::string_view version) {
  int64_t revision = 0;
  if (!absl::SimpleAtoi(version.substr(0, version.find('.')), &revision) || revision < 0) return 0;
  return revision;
}

AgentMetrics::AgentMetrics(prometheus::Registry& registry)
    : applied_revision_(prometheus::BuildGauge()
                            .Name("strait_agent_applied_revision")
                            .Help("Store revision of the applied snapshot (the numeric prefix of "
                                  "its version); 0 when none is applied or in standalone mode.")
                            .Register(registry)
                            .Add({})),
      version_info_(prometheus::BuildGauge()
                        .Name("strait_agent_applied_version_info")
                        .Help("1, labelled with the version of the applied snapshot.")
                        .Register(registry)),
      snapshots_applied_(prometheus::BuildCounter()
                             .Name("strait_agent_snapshots_applied_total")
                             .Help("Snapshots validated, applied and ACKed (or loaded from "
                                   "--intent-file).")
                             .Register(registry)
                             .Add({})),
      snapshots_rejected_(prometheus::BuildCounter()
                              .Name("strait_agent_snapshots_rejected_total")
                              .Help("Snapshots refused (NACKed, or an --intent-file that did not "
                                    "validate); the previous one stays applied.")
                              .Register(registry)
                              .Add({})),
      reconnects_(prometheus::BuildCounter()
                      .Name("strait_agent_reconnects_total")
                      .Help("Connection attempts to the controller after the first one.")
                      .Register(registry)
                      .Add({})),
      state_write_errors_(prometheus::BuildCounter()
                              .Name("strait_agent_state_write_errors_total")
                              .Help("Failures to persist the applied snapshot in --state-dir.")
                              .Register(registry)
                              .Add({})) {
  auto& states = prometheus::BuildGauge()
                     .Name("strait_agent_session_state")
                     .Help("1 for the state of the session with the controller, 0 for the others.")
                     .Register(registry);
  for (SessionState state : kAllStates) {
    session_state_[static_cast<int>(state)] =
        &states.Add({{"state", std::string(SessionStateName(state))}});
  }
  auto& tunnels = prometheus::BuildGauge()
                      .Name("strait_agent_tunnels")
                      .Help("Tunnel ends in the applied snapshot, by phase.")
                      .Register(registry);
  for (size_t i = 0; i < kPhases.size(); ++i) {
    tunnels_[i] = &tunnels.Add({{"phase", std::string(TunnelPhaseName(kPhases[i]))}});
  }
}

void AgentMetrics::SetSessionState(SessionState state) {
  for (SessionState s : kAllStates) {
    session_state_[static_cast<int>(s)]->Set(s == state ? 1 : 0);
  }
}

void AgentMetrics::SetAppliedVersion(const std::string& version) {
  absl::MutexLock lock(&mu_);
  applied_revision_.Set(static_cast<double>(VersionRevision(version)));
  if (version_info_sample_ != nullptr && version == version_) return;
  if (version_info_sample_ != nullptr) version_info_.Remove(version_info_sample_);
  version_info_sample_ = nullptr;
  version_ = version;
  if (!version.empty()) {
    version_info_sample_ = &version_info_.Add({{"version", version}});
    version_info_sample_->Set(1);
  }
}

void AgentMetrics::SetTunnelPhases(
    const absl::flat_hash_map<strait::v1::TunnelPhase, int64_t>& counts) {
  for (size_t i = 0; i < kPhases.size(); ++i) {
    auto it = counts.find(kPhases[i]);
    tunnels_[i]->Set(it == counts.end() ? 0 : static_cast<double>(it->second));
  }
}

}  // namespace strait::agent
