#include "agent/metrics.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

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
      dataplane_info_(prometheus::BuildGauge()
                          .Name("strait_agent_dataplane_info")
                          .Help("1, labelled with the dataplane backend in use: xfrm (kernel "
                                "ESP), userspace (Strait's ESP over TUN) or memory (none).")
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

void AgentMetrics::SetDataplane(const std::string& backend) {
  dataplane_info_.Add({{"backend", backend}}).Set(1);
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

absl::string_view IkeExchangeName(int exchange_type) {
  switch (exchange_type) {
    case 34:
      return "IKE_SA_INIT";
    case 35:
      return "IKE_AUTH";
    case 36:
      return "CREATE_CHILD_SA";
    case 37:
      return "INFORMATIONAL";
    default:
      return "other";
  }
}

int IkeMetrics::ExchangeIndex(int exchange_type) {
  return exchange_type >= 34 && exchange_type <= 37 ? exchange_type - 34 : 4;
}

IkeMetrics::IkeMetrics(prometheus::Registry& registry)
    : child_sas_(prometheus::BuildGauge()
                     .Name("strait_agent_child_sas")
                     .Help("CHILD SAs installed in the dataplane (each an inbound and an "
                           "outbound ESP SA with their policies).")
                     .Register(registry)
                     .Add({})),
      handshakes_(prometheus::BuildCounter()
                      .Name("strait_agent_ike_handshakes_total")
                      .Help("IKE SA negotiations (IKE_SA_INIT, IKE_AUTH and the first CHILD SA) "
                            "that ended, by role and result: success or the failure reason.")
                      .Register(registry)),
      auth_failures_(prometheus::BuildCounter()
                         .Name("strait_agent_ike_auth_failures_total")
                         .Help("IKE negotiations that failed authentication, by reason.")
                         .Register(registry)),
      dropped_(prometheus::BuildCounter()
                   .Name("strait_agent_ike_dropped_total")
                   .Help("Received IKE datagrams dropped without effect, by reason: malformed, "
                         "undecryptable, unexpected, stale, no_tunnel, reassembly, source_limit "
                         "(the sender "
                         "has its share of half-open IKE SAs), half_open_limit (all half-open "
                         "slots taken).")
                   .Register(registry)),
      rekeys_(prometheus::BuildCounter()
                  .Name("strait_agent_ike_rekeys_total")
                  .Help("Rekeys (CREATE_CHILD_SA), by kind (child, ike), role (initiator: this end "
                        "started it) and result (success, failure).")
                  .Register(registry)),
      rekey_collisions_(prometheus::BuildCounter()
                            .Name("strait_agent_ike_rekey_collisions_total")
                            .Help("Simultaneous rekeys of one SA by both ends (RFC 7296 2.8.1).")
                            .Register(registry)
                            .Add({})),
      deferred_outbound_(prometheus::BuildCounter()
                             .Name("strait_agent_ike_deferred_outbound_total")
                             .Help("Outbound SAs of CHILD SA rekeys answered by this end that "
                                   "went in without the peer's DELETE of the old SA (timeout) or "
                                   "failed to go in (install_failed).")
                             .Register(registry)),
      dpd_probes_(prometheus::BuildCounter()
                      .Name("strait_agent_ike_dpd_probes_total")
                      .Help("Dead peer detection probes sent (empty INFORMATIONAL requests after "
                            "the DPD interval without traffic from the peer).")
                      .Register(registry)
                      .Add({})),
      dead_peers_(prometheus::BuildCounter()
                      .Name("strait_agent_ike_dead_peers_total")
                      .Help("Peers declared dead (no answer within the DPD timeout), by the "
                            "action taken: restart, clear or hold.")
                      .Register(registry)),
      nat_detected_(prometheus::BuildCounter()
                        .Name("strait_agent_ike_nat_detected_total")
                        .Help("IKE SAs established across a NAT (either end behind it).")
                        .Register(registry)
                        .Add({})),
      nat_mapping_changes_(prometheus::BuildCounter()
                               .Name("strait_agent_ike_nat_mapping_changes_total")
                               .Help("CHILD SAs moved to a peer's new NAT mapping (address or "
                                     "port changed, RFC 7296 2.23).")
                               .Register(registry)
                               .Add({})),
      cookies_sent_(prometheus::BuildCounter()
                        .Name("strait_agent_ike_cookies_sent_total")
                        .Help("IKE_SA_INIT requests answered with a COOKIE instead of state "
                              "(RFC 7296 2.6), under load.")
                        .Register(registry)
                        .Add({})),
      cookies_rejected_(prometheus::BuildCounter()
                            .Name("strait_agent_ike_cookies_rejected_total")
                            .Help("IKE_SA_INIT requests with a COOKIE that was forged, stale or "
                                  "made for another sender.")
                            .Register(registry)
                            .Add({})),
      half_open_sas_(prometheus::BuildGauge()
                         .Name("strait_agent_ike_half_open_sas")
                         .Help("Responder IKE SAs started by an IKE_SA_INIT and not yet "
                               "authenticated.")
                         .Register(registry)
                         .Add({})),
      next_rekey_(prometheus::BuildGauge()
                      .Name("strait_agent_child_sa_next_rekey_timestamp_seconds")
                      .Help("When the tunnel's CHILD SA is rekeyed next (unix time), by tunnel.")
                      .Register(registry)),
      sa_bytes_(prometheus::BuildCounter()
                    .Name("strait_agent_sa_bytes_total")
                    .Help("Bytes through an ESP SA (inner packets), by tunnel, SPI and "
                          "direction.")
                    .Register(registry)),
      sa_packets_(prometheus::BuildCounter()
                      .Name("strait_agent_sa_packets_total")
                      .Help("Packets through an ESP SA, by tunnel, SPI and direction.")
                      .Register(registry)),
      sa_replay_(prometheus::BuildCounter()
                     .Name("strait_agent_sa_replay_failures_total")
                     .Help("Inbound ESP packets dropped as replays or outside the window.")
                     .Register(registry)),
      sa_integrity_(prometheus::BuildCounter()
                        .Name("strait_agent_sa_integrity_failures_total")
                        .Help("Inbound ESP packets that failed authentication.")
                        .Register(registry)),
      tunnel_bytes_(prometheus::BuildCounter()
                        .Name("strait_agent_tunnel_esp_bytes_total")
                        .Help("Bytes through a tunnel's ESP SAs, all rekeys together, by tunnel "
                              "and direction.")
                        .Register(registry)),
      tunnel_packets_(prometheus::BuildCounter()
                          .Name("strait_agent_tunnel_esp_packets_total")
                          .Help("Packets through a tunnel's ESP SAs, all rekeys together, by "
                                "tunnel and direction.")
                          .Register(registry)) {
  for (const char* role : {"initiator", "responder"}) {
    for (const char* result : {"success", "failure"}) {
      for (const char* kind : {"child", "ike"}) {
        rekeys_.Add({{"kind", kind}, {"role", role}, {"result", result}});
      }
    }
  }
  for (const char* action : {"restart", "clear", "hold"}) dead_peers_.Add({{"action", action}});
  auto& deletes = prometheus::BuildCounter()
                      .Name("strait_agent_ike_deletes_total")
                      .Help("INFORMATIONAL DELETEs of IKE or CHILD SAs, sent or received.")
                      .Register(registry);
  deletes_[0] = &deletes.Add({{"direction", "received"}});
  deletes_[1] = &deletes.Add({{"direction", "sent"}});
  auto& ike_sas = prometheus::BuildGauge()
                      .Name("strait_agent_ike_sas")
                      .Help("IKE SAs, by state: connecting (negotiating) or established.")
                      .Register(registry);
  ike_sas_[0] = &ike_sas.Add({{"state", "connecting"}});
  ike_sas_[1] = &ike_sas.Add({{"state", "established"}});
  auto& durations = prometheus::BuildHistogram()
                        .Name("strait_agent_ike_handshake_duration_seconds")
                        .Help(
                            "Time from the first IKE_SA_INIT to the established CHILD SA, of "
                            "successful negotiations, by role.")
                        .Register(registry);
  const prometheus::Histogram::BucketBoundaries buckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  durations_[0] = &durations.Add({{"role", "responder"}}, buckets);
  durations_[1] = &durations.Add({{"role", "initiator"}}, buckets);
  for (const char* role : {"initiator", "responder"}) {
    handshakes_.Add({{"role", role}, {"result", "success"}});
  }
  auto& messages = prometheus::BuildCounter()
                       .Name("strait_agent_ike_messages_total")
                       .Help(
                           "IKE messages received and sent (retransmissions included), by "
                           "exchange and direction.")
                       .Register(registry);
  auto& retransmits = prometheus::BuildCounter()
                          .Name("strait_agent_ike_retransmits_total")
                          .Help("Our IKE requests sent again after a timeout, by exchange.")
                          .Register(registry);
  for (int i = 0; i < kExchanges; ++i) {
    const std::string exchange(IkeExchangeName(i + 34));
    messages_[i][0] = &messages.Add({{"exchange", exchange}, {"direction", "out"}});
    messages_[i][1] = &messages.Add({{"exchange", exchange}, {"direction", "in"}});
    retransmits_[i] = &retransmits.Add({{"exchange", exchange}});
  }
  // The engine's authentication failures, so that alerts see them at 0.
  for (const char* reason : {"AUTHENTICATION_FAILED", "PEER_IDENTITY_MISMATCH"}) {
    auth_failures_.Add({{"reason", reason}});
  }
  auto& fragments = prometheus::BuildCounter()
                        .Name("strait_agent_ike_fragments_total")
                        .Help(
                            "IKE fragments (RFC 7383) sent, retransmissions included, and "
                            "authenticated ones received, by direction.")
                        .Register(registry);
  fragments_[0] = &fragments.Add({{"direction", "out"}});
  fragments_[1] = &fragments.Add({{"direction", "in"}});
  reassembled_ = &prometheus::BuildCounter()
                      .Name("strait_agent_ike_reassembled_messages_total")
                      .Help("IKE messages reassembled from fragments (RFC 7383).")
                      .Register(registry)
                      .Add({});
  for (const char* reason : {kMalformed, kUndecryptable, kUnexpected, kStale, kNoTunnel,
                             kReassembly, kSourceLimit, kHalfOpenLimit}) {
    dropped_.Add({{"reason", reason}});
  }
}

void IkeMetrics::SetIkeSas(int64_t connecting, int64_t established) {
  ike_sas_[0]->Set(static_cast<double>(connecting));
  ike_sas_[1]->Set(static_cast<double>(established));
}

void IkeMetrics::SetChildSas(int64_t installed) { child_sas_.Set(static_cast<double>(installed)); }

void IkeMetrics::HandshakeSucceeded(bool initiator, absl::Duration duration) {
  handshakes_.Add({{"role", initiator ? "initiator" : "responder"}, {"result", "success"}})
      .Increment();
  durations_[initiator ? 1 : 0]->Observe(absl::ToDoubleSeconds(duration));
}

void IkeMetrics::HandshakeFailed(bool initiator, absl::string_view reason) {
  handshakes_
      .Add({{"role", initiator ? "initiator" : "responder"}, {"result", std::string(reason)}})
      .Increment();
}

void IkeMetrics::AuthFailed(absl::string_view reason) {
  auth_failures_.Add({{"reason", std::string(reason)}}).Increment();
}

void IkeMetrics::Message(int exchange_type, bool inbound) {
  messages_[ExchangeIndex(exchange_type)][inbound ? 1 : 0]->Increment();
}

void IkeMetrics::Retransmits(int exchange_type, uint64_t count) {
  if (count != 0) retransmits_[ExchangeIndex(exchange_type)]->Increment(static_cast<double>(count));
}

void IkeMetrics::Dropped(absl::string_view reason, uint64_t count) {
  if (count != 0)
    dropped_.Add({{"reason", std::string(reason)}}).Increment(static_cast<double>(count));
}

void IkeMetrics::ChildRekeys(bool initiator, bool success, uint64_t count) {
  if (count == 0) return;
  rekeys_
      .Add({{"kind", "child"},
            {"role", initiator ? "initiator" : "responder"},
            {"result", success ? "success" : "failure"}})
      .Increment(static_cast<double>(count));
}

void IkeMetrics::IkeRekeys(bool initiator, bool success, uint64_t count) {
  if (count == 0) return;
  rekeys_
      .Add({{"kind", "ike"},
            {"role", initiator ? "initiator" : "responder"},
            {"result", success ? "success" : "failure"}})
      .Increment(static_cast<double>(count));
}

void IkeMetrics::RekeyCollisions(uint64_t count) {
  if (count != 0) rekey_collisions_.Increment(static_cast<double>(count));
}

void IkeMetrics::DeferredOutbound(bool failed, uint64_t count) {
  if (count == 0) return;
  deferred_outbound_.Add({{"reason", failed ? "install_failed" : "timeout"}})
      .Increment(static_cast<double>(count));
}

void IkeMetrics::DpdProbes(uint64_t count) {
  if (count != 0) dpd_probes_.Increment(static_cast<double>(count));
}

void IkeMetrics::PeerDead(absl::string_view action) {
  dead_peers_.Add({{"action", std::string(action)}}).Increment();
}

void IkeMetrics::Deletes(bool sent, uint64_t count) {
  if (count != 0) deletes_[sent ? 1 : 0]->Increment(static_cast<double>(count));
}

void IkeMetrics::NatDetected() { nat_detected_.Increment(); }

void IkeMetrics::PeerMoved() { nat_mapping_changes_.Increment(); }
void IkeMetrics::Fragments(bool inbound, uint64_t count) {
  if (count != 0) fragments_[inbound ? 1 : 0]->Increment(static_cast<double>(count));
}

void IkeMetrics::Reassembled(uint64_t count) {
  if (count != 0) reassembled_->Increment(static_cast<double>(count));
}
void IkeMetrics::CookieSent() { cookies_sent_.Increment(); }

void IkeMetrics::CookieRejected() { cookies_rejected_.Increment(); }

void IkeMetrics::SetHalfOpenSas(int64_t count) { half_open_sas_.Set(static_cast<double>(count)); }

void IkeMetrics::SetNextRekey(const std::string& tunnel, std::optional<absl::Time> when) {
  absl::MutexLock lock(&mu_);
  auto it = next_rekey_by_tunnel_.find(tunnel);
  if (!when.has_value()) {
    if (it != next_rekey_by_tunnel_.end()) {
      next_rekey_.Remove(it->second);
      next_rekey_by_tunnel_.erase(it);
    }
    return;
  }
  if (it == next_rekey_by_tunnel_.end()) {
    it = next_rekey_by_tunnel_.emplace(tunnel, &next_rekey_.Add({{"tunnel", tunnel}})).first;
  }
  it->second->Set(absl::ToDoubleSeconds(*when - absl::UnixEpoch()));
}

void IkeMetrics::ReportSa(const SaSample& sample) {
  const std::string direction = sample.inbound ? "in" : "out";
  const std::string key = absl::StrCat(sample.tunnel, "/", sample.spi, "/", direction);
  absl::MutexLock lock(&mu_);
  auto [it, added] = sa_series_.try_emplace(key);
  SaSeries& series = it->second;
  if (added) {
    const std::map<std::string, std::string> labels = {
        {"tunnel", sample.tunnel}, {"spi", sample.spi}, {"direction", direction}};
    series.counters = {&sa_bytes_.Add(labels), &sa_packets_.Add(labels), &sa_replay_.Add(labels),
                       &sa_integrity_.Add(labels)};
  }
  const std::array<uint64_t, 4> now = {sample.bytes, sample.packets, sample.replay_failures,
                                       sample.integrity_failures};
  for (size_t i = 0; i < now.size(); ++i) {
    // A counter that went down belongs to a new SA under the same SPI.
    const uint64_t delta = now[i] >= series.last[i] ? now[i] - series.last[i] : now[i];
    if (delta != 0) {
      series.counters[i]->Increment(static_cast<double>(delta));
      if (i < 2) {
        (i == 0 ? tunnel_bytes_ : tunnel_packets_)
            .Add({{"tunnel", sample.tunnel}, {"direction", direction}})
            .Increment(static_cast<double>(delta));
      }
    }
    series.last[i] = now[i];
  }
  series.seen = true;
}

void IkeMetrics::EndSaRound() {
  absl::MutexLock lock(&mu_);
  for (auto it = sa_series_.begin(); it != sa_series_.end();) {
    if (it->second.seen) {
      it->second.seen = false;
      ++it;
      continue;
    }
    sa_bytes_.Remove(it->second.counters[0]);
    sa_packets_.Remove(it->second.counters[1]);
    sa_replay_.Remove(it->second.counters[2]);
    sa_integrity_.Remove(it->second.counters[3]);
    it = sa_series_.erase(it);
  }
}

}  // namespace strait::agent
