#ifndef STRAIT_CONTROLLER_CORE_IMPL_H_
#define STRAIT_CONTROLLER_CORE_IMPL_H_

// Core on top of a Store: the whole intent lives in memory, the store makes
// it durable.
//
// Threading. Three mutexes, always taken in this order:
//   write_mu_  serializes writers (Apply, Delete) for their whole run,
//              including the store commit and the notifications, so that
//              revisions, pushes and watch events come out in order;
//   watch_mu_  guards the watchers; a writer holds it from the memory update
//              to the end of the watch notifications, which makes
//              AddWatcher's initial list and the later events seamless;
//   mu_        guards the in-memory state. Readers take it shared and never
//              wait for the disk: writers take it exclusively only after the
//              store commit returned, to swap in the new state.
// Each agent session has its own small Sink with a mutex around its listener:
// deliveries take it, and Disconnect clears the listener under it, so that no
// OnSnapshot runs after Disconnect returns.
//
// Decisions the Core interface leaves open:
// - PSK round trip. An Apply without a PSK value keeps the stored key when
//   the request carries the stored key's fingerprint (what `get -o yaml`
//   prints), so that get | edit | apply works. Without a value and without a
//   matching fingerprint the key is required (INVALID_ARGUMENT).
// - Status. Every managed end of a tunnel appears in status.ends (sorted by
//   node); an end whose agent has not reported yet has only `node` set and
//   phase UNSPECIFIED. Reports for tunnels the node has no end on are
//   ignored; a deleted tunnel's status, or the status of an end that an
//   Apply moved to another node, is dropped. Status changes make no watch
//   events (they have no store revision).
// - Watch. The initial ADDED events carry the store revision at which the
//   watch started; later events carry the revision of their change.
// - Metrics. strait_controller_snapshot_pushes_total counts the snapshots
//   handed to sessions: Connect's non-null result and every OnSnapshot.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/secret.h"
#include "controller/core.h"
#include "controller/store.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "proto/strait/v1/admin.pb.h"
#include "proto/strait/v1/agent.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::controller {

class CoreImpl : public Core {
 public:
  static absl::StatusOr<std::unique_ptr<CoreImpl>> Create(StorePtr store,
                                                          const CoreOptions& options);
  ~CoreImpl() override = default;

  // Core
  absl::StatusOr<strait::v1::ApplyTunnelResponse> Apply(
      const strait::v1::ApplyTunnelRequest& request) override;
  absl::StatusOr<strait::v1::Tunnel> Get(absl::string_view name) override;
  strait::v1::ListTunnelsResponse List(const strait::v1::ListTunnelsRequest& request) override;
  absl::StatusOr<strait::v1::DeleteTunnelResponse> Delete(absl::string_view name) override;
  strait::v1::ListNodesResponse ListNodes() override;
  int64_t AddWatcher(WatchFn fn, std::vector<strait::v1::WatchTunnelsEvent>* initial) override;
  void RemoveWatcher(int64_t id) override;
  std::shared_ptr<const strait::v1::Snapshot> Connect(absl::string_view node,
                                                      absl::string_view last_applied_version,
                                                      absl::string_view peer,
                                                      SnapshotListener* listener,
                                                      int64_t* session_id) override;
  void Disconnect(int64_t session_id) override;
  void OnAck(int64_t session_id, const strait::v1::Ack& ack) override;
  void OnNack(int64_t session_id, const strait::v1::Nack& nack) override;
  void OnStatus(int64_t session_id, const strait::v1::StatusReport& report) override;

  // "sha256:" and the first 8 hex digits of HMAC-SHA256(key, psk).
  static std::string PskFingerprint(const Secret& key, absl::string_view psk);

 private:
  // A stored tunnel and what is derived from it.
  struct TunnelEntry {
    strait::v1::Tunnel tunnel;       // as stored: PSK value, no fingerprint, no status
    std::string fingerprint;         // of the PSK, empty without one
    std::vector<std::string> nodes;  // TunnelNodes(spec)
    // Agent reports, by node (only nodes in `nodes`).
    std::map<std::string, strait::v1::TunnelEndStatus> ends;
  };

  // Per-session delivery point; see the threading note above.
  struct Sink {
    absl::Mutex mu;
    SnapshotListener* listener ABSL_GUARDED_BY(mu) = nullptr;
  };

  struct Session {
    std::string node;
    std::string peer;
    std::shared_ptr<Sink> sink;
  };

  struct NodeState {
    bool has_share_row = false;  // the store has a node_shares row
    int64_t share_revision = 0;
    std::set<std::string> tunnels;  // names of tunnels with an end here
    std::shared_ptr<const strait::v1::Snapshot> snapshot;
    std::set<int64_t> sessions;
    std::string acked_version;
    std::string last_error;
    std::string peer;
    absl::Time last_seen = absl::InfinitePast();
    prometheus::Gauge* current_revision = nullptr;
    prometheus::Gauge* acked_revision = nullptr;
    prometheus::Counter* nacks = nullptr;
  };

  struct Metrics {
    prometheus::Gauge* agents_connected = nullptr;
    prometheus::Family<prometheus::Gauge>* node_current_revision = nullptr;
    prometheus::Family<prometheus::Gauge>* node_acked_revision = nullptr;
    prometheus::Family<prometheus::Counter>* nacks = nullptr;
    prometheus::Counter* snapshot_pushes = nullptr;
    prometheus::Gauge* store_revision = nullptr;
    prometheus::Gauge* tunnels = nullptr;
    prometheus::Counter* store_commit_errors = nullptr;
  };

  // A committed change, ready to be swapped into memory.
  struct Mutation {
    int64_t revision = 0;
    std::string name;
    std::unique_ptr<TunnelEntry> entry;  // null for a deletion
    std::vector<std::string> changed_nodes;
  };

  // What a writer delivers after releasing mu_.
  struct Deliveries {
    std::vector<std::pair<std::shared_ptr<Sink>, std::shared_ptr<const strait::v1::Snapshot>>>
        pushes;
    std::vector<strait::v1::WatchTunnelsEvent> events;
  };

  CoreImpl(StorePtr store, const CoreOptions& options, const Store::State& state);
  void InitMetrics(prometheus::Registry* registry);

  // Request tunnel -> candidate to store, without metadata beyond name and
  // labels; fills the kept PSK per the round-trip rule.
  absl::StatusOr<strait::v1::Tunnel> Prepare(const strait::v1::Tunnel& in) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::unique_ptr<TunnelEntry> MakeEntry(strait::v1::Tunnel tunnel) const;
  strait::v1::Tunnel Redacted(const TunnelEntry& entry) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  absl::Status CommitChange(const Store::Change& change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Swaps a committed mutation into memory and collects what to deliver.
  void ApplyMutation(Mutation&& mutation, strait::v1::WatchTunnelsEvent::Type type, Deliveries* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_, watch_mu_, mu_);
  void Deliver(const Deliveries& deliveries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  NodeState& GetNode(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RebuildSnapshot(const std::string& name, NodeState& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Version(int64_t share_revision) const;
  // The numeric part of `version` when it names this store, else 0.
  int64_t VersionRevision(absl::string_view version) const;
  void UpdateConnectedGauge() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateAckedGauge(NodeState& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The session's node, or null for an unknown session.
  NodeState* SessionNode(int64_t session_id, std::string* name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const StorePtr store_;
  const intent::ValidationPolicy policy_;
  Clock* const clock_;
  const std::string store_id_;
  const Secret fingerprint_key_;
  Metrics metrics_;  // all null without a registry

  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(watch_mu_);
  absl::Mutex watch_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;

  std::map<int64_t, WatchFn> watchers_ ABSL_GUARDED_BY(watch_mu_);
  int64_t next_watcher_id_ ABSL_GUARDED_BY(watch_mu_) = 1;

  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::unique_ptr<TunnelEntry>> tunnels_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, NodeState> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, Session> sessions_ ABSL_GUARDED_BY(mu_);
  int64_t next_session_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_CORE_IMPL_H_
