#ifndef STRAIT_AGENT_METRICS_H_
#define STRAIT_AGENT_METRICS_H_

// The agent's Prometheus metrics (strait_agent_*). One instance per process,
// registered on the registry that the --metrics-listen exposer serves.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::agent {

enum class SessionState { kConnecting, kConnected, kDisconnected, kStandalone };

// The `state` label of strait_agent_session_state: "connected", ...
absl::string_view SessionStateName(SessionState state);

// The `phase` label of strait_agent_tunnels: "pending", "connecting", "established", "failed",
// "error"
absl::string_view TunnelPhaseName(strait::v1::TunnelPhase phase);

// The revision in a "<revision>.<store id>" version; 0 when it does not start
// with a number (standalone "file:..." versions, none yet).
int64_t VersionRevision(absl::string_view version);

class AgentMetrics {
 public:
  // Registers every family on `registry`, which must outlive this object.
  explicit AgentMetrics(prometheus::Registry& registry);
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  // strait_agent_session_state{state}: 1 for `state`, 0 for the others.
  void SetSessionState(SessionState state);
  // strait_agent_applied_revision and strait_agent_applied_version_info.
  void SetAppliedVersion(const std::string& version);
  // strait_agent_tunnels{phase}: every phase is set, absent ones to 0.
  void SetTunnelPhases(const absl::flat_hash_map<strait::v1::TunnelPhase, int64_t>& counts);

  // strait_agent_dataplane_info{backend}: 1 for the dataplane in use
  // ("xfrm", "userspace", "memory").
  void SetDataplane(const std::string& backend);

  void SnapshotApplied() { snapshots_applied_.Increment(); }
  void SnapshotRejected() { snapshots_rejected_.Increment(); }
  void Reconnect() { reconnects_.Increment(); }
  void StateWriteFailed() { state_write_errors_.Increment(); }

 private:
  static constexpr int kStates = 4;
  static constexpr std::array<strait::v1::TunnelPhase, 5> kPhases = {
      strait::v1::TUNNEL_PHASE_PENDING, strait::v1::TUNNEL_PHASE_CONNECTING,
      strait::v1::TUNNEL_PHASE_ESTABLISHED, strait::v1::TUNNEL_PHASE_FAILED,
      strait::v1::TUNNEL_PHASE_ERROR};

  std::array<prometheus::Gauge*, kStates> session_state_{};
  prometheus::Gauge& applied_revision_;
  prometheus::Family<prometheus::Gauge>& version_info_;
  prometheus::Family<prometheus::Gauge>& dataplane_info_;
  prometheus::Counter& snapshots_applied_;
  prometheus::Counter& snapshots_rejected_;
  prometheus::Counter& reconnects_;
  prometheus::Counter& state_write_errors_;
  std::array<prometheus::Gauge*, kPhases.size()> tunnels_{};

  absl::Mutex mu_;
  prometheus::Gauge* version_info_sample_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string version_ ABSL_GUARDED_BY(mu_);
};

// The `exchange` label of the IKE message metrics for an IKE header's
// exchange type: "IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA",
// "INFORMATIONAL", else "other".
absl::string_view IkeExchangeName(int exchange_type);

// The IKE runner's metrics (strait_agent_ike_*, strait_agent_child_sas),
// registered on the agent's registry. Thread-safe.
class IkeMetrics {
 public:
  // `drop` reasons of strait_agent_ike_dropped_total.
  static constexpr char kMalformed[] = "malformed";
  static constexpr char kUndecryptable[] = "undecryptable";
  static constexpr char kUnexpected[] = "unexpected";
  static constexpr char kStale[] = "stale";
  static constexpr char kNoTunnel[] = "no_tunnel";
  // Authenticated IKE fragments the reassembly dropped (duplicates, fewer
  // fragments than before, over the limits, timed out).
  static constexpr char kReassembly[] = "reassembly";
  // IKE_SA_INIT requests refused before any state (ike_admission.h): the
  // sender already has its share of half-open IKE SAs, or all half-open
  // slots are taken.
  static constexpr char kSourceLimit[] = "source_limit";
  static constexpr char kHalfOpenLimit[] = "half_open_limit";

  // Registers every family on `registry`, which must outlive this object.
  explicit IkeMetrics(prometheus::Registry& registry);
  IkeMetrics(const IkeMetrics&) = delete;
  IkeMetrics& operator=(const IkeMetrics&) = delete;

  // strait_agent_ike_sas{state="connecting"|"established"}.
  void SetIkeSas(int64_t connecting, int64_t established);
  // strait_agent_child_sas: CHILD SAs installed in the dataplane.
  void SetChildSas(int64_t installed);
  // strait_agent_ike_handshakes_total{role,result}: `result` is "success"
  // or a failure reason; a success also observes `duration` in
  // strait_agent_ike_handshake_duration_seconds{role}.
  void HandshakeSucceeded(bool initiator, absl::Duration duration);
  void HandshakeFailed(bool initiator, absl::string_view reason);
  // strait_agent_ike_auth_failures_total{reason}.
  void AuthFailed(absl::string_view reason);
  // strait_agent_ike_messages_total{exchange,direction}.
  void Message(int exchange_type, bool inbound);
  // strait_agent_ike_retransmits_total{exchange}.
  void Retransmits(int exchange_type, uint64_t count);
  // strait_agent_ike_dropped_total{reason}.
  void Dropped(absl::string_view reason, uint64_t count = 1);
  // strait_agent_ike_fragments_total{direction="in"|"out"}: RFC 7383
  // fragments sent (retransmissions included) and authenticated ones
  // received.
  void Fragments(bool inbound, uint64_t count);
  // strait_agent_ike_reassembled_messages_total: IKE messages put together
  // from fragments.
  void Reassembled(uint64_t count);
  // strait_agent_ike_rekeys_total{kind="child",role,result="success"|
  // "failure"}: CREATE_CHILD_SA rekeys that this end started (initiator)
  // or answered (responder).
  void ChildRekeys(bool initiator, bool success, uint64_t count);
  // strait_agent_ike_rekeys_total{kind="ike",role,result}: IKE SA rekeys
  // (RFC 7296 §1.3.2), as for ChildRekeys.
  void IkeRekeys(bool initiator, bool success, uint64_t count);
  // strait_agent_ike_rekey_collisions_total.
  void RekeyCollisions(uint64_t count);
  // strait_agent_ike_deferred_outbound_total{reason}: outbound SAs of CHILD
  // SA rekeys we answered that were installed without the peer's DELETE of
  // the old SA ("timeout"), or could not be installed ("install_failed").
  void DeferredOutbound(bool failed, uint64_t count);
  // strait_agent_ike_dpd_probes_total: liveness checks sent.
  void DpdProbes(uint64_t count);
  // strait_agent_ike_dead_peers_total{action}: peers declared dead (no
  // answer within the DPD timeout) and the action taken.
  void PeerDead(absl::string_view action);
  // strait_agent_ike_deletes_total{direction="sent"|"received"}.
  void Deletes(bool sent, uint64_t count);
  // strait_agent_ike_nat_detected_total: IKE SAs that found a NAT.
  void NatDetected();
  // strait_agent_ike_nat_mapping_changes_total: CHILD SAs moved to a
  // peer's new NAT mapping (address or port, RFC 7296 §2.23).
  void PeerMoved();
  // strait_agent_ike_cookies_sent_total: IKE_SA_INIT requests answered
  // with N(COOKIE) instead of state (RFC 7296 2.6).
  void CookieSent();
  // strait_agent_ike_cookies_rejected_total: requests whose COOKIE was not
  // ours, stale or for other values (answered with a fresh cookie).
  void CookieRejected();
  // strait_agent_ike_half_open_sas: responder IKE SAs started by an
  // IKE_SA_INIT and not yet authenticated.
  void SetHalfOpenSas(int64_t count);
  // strait_agent_child_sa_next_rekey_timestamp_seconds{tunnel}: when the
  // tunnel's CHILD SA rekeys next (unix time); removed with `when` unset.
  void SetNextRekey(const std::string& tunnel, std::optional<absl::Time> when);

  // Per ESP SA (labels tunnel, spi as 8 hex digits, direction in|out):
  // strait_agent_sa_bytes_total, strait_agent_sa_packets_total,
  // strait_agent_sa_replay_failures_total and
  // strait_agent_sa_integrity_failures_total, from the dataplane's
  // counters (which this turns into monotonic counters). Series of SAs not
  // reported in a round are removed by EndSaRound().
  struct SaSample {
    std::string tunnel;
    std::string spi;
    bool inbound = false;
    uint64_t bytes = 0;
    uint64_t packets = 0;
    uint64_t replay_failures = 0;
    uint64_t integrity_failures = 0;
  };
  // Also feeds strait_agent_tunnel_esp_bytes_total and
  // strait_agent_tunnel_esp_packets_total{tunnel,direction}, which keep
  // counting across rekeys.
  void ReportSa(const SaSample& sample);
  void EndSaRound();

 private:
  static constexpr int kExchanges = 5;  // The four and "other".
  static int ExchangeIndex(int exchange_type);

  std::array<prometheus::Gauge*, 2> ike_sas_{};  // connecting, established
  prometheus::Gauge& child_sas_;
  prometheus::Family<prometheus::Counter>& handshakes_;
  std::array<prometheus::Histogram*, 2> durations_{};  // responder, initiator
  prometheus::Family<prometheus::Counter>& auth_failures_;
  std::array<std::array<prometheus::Counter*, 2>, kExchanges> messages_{};  // [exchange][in]
  std::array<prometheus::Counter*, kExchanges> retransmits_{};
  prometheus::Family<prometheus::Counter>& dropped_;
  prometheus::Family<prometheus::Counter>& rekeys_;
  prometheus::Counter& rekey_collisions_;
  prometheus::Family<prometheus::Counter>& deferred_outbound_;
  prometheus::Counter& dpd_probes_;
  prometheus::Family<prometheus::Counter>& dead_peers_;
  std::array<prometheus::Counter*, 2> deletes_{};  // received, sent
  prometheus::Counter& nat_detected_;
  prometheus::Counter& nat_mapping_changes_;
  std::array<prometheus::Counter*, 2> fragments_{};  // out, in
  prometheus::Counter* reassembled_ = nullptr;
  prometheus::Counter& cookies_sent_;
  prometheus::Counter& cookies_rejected_;
  prometheus::Gauge& half_open_sas_;
  prometheus::Family<prometheus::Gauge>& next_rekey_;
  absl::Mutex mu_;
  std::map<std::string, prometheus::Gauge*> next_rekey_by_tunnel_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Counter>& sa_bytes_;
  prometheus::Family<prometheus::Counter>& sa_packets_;
  prometheus::Family<prometheus::Counter>& sa_replay_;
  prometheus::Family<prometheus::Counter>& sa_integrity_;
  prometheus::Family<prometheus::Counter>& tunnel_bytes_;
  prometheus::Family<prometheus::Counter>& tunnel_packets_;
  struct SaSeries {
    std::array<prometheus::Counter*, 4> counters{};  // bytes, packets, replay, integrity
    std::array<uint64_t, 4> last{};
    bool seen = false;
  };
  std::map<std::string, SaSeries> sa_series_ ABSL_GUARDED_BY(mu_);  // tunnel/spi/direction
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_METRICS_H_
