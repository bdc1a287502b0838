#ifndef STRAIT_CONTROLLER_CORE_H_
#define STRAIT_CONTROLLER_CORE_H_

// The controller's state machine: validated, durable intent; per-node
// snapshots; agent sessions (ACK/NACK/status); watches. It knows nothing of
// gRPC: the services in admin_service.h and agent_service.h translate.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/intent/validation.h"
#include "controller/store.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/admin.pb.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::controller {

// Receives a node's snapshots. Called without Core's lock held, from the
// thread that committed the change; must not block (queue and return).
class SnapshotListener {
 public:
  virtual ~SnapshotListener() = default;
  // `snapshot` has version and tunnels set; the nonce is the session's job.
  virtual void OnSnapshot(std::shared_ptr<const strait::v1::Snapshot> snapshot) = 0;
};

class Core {
 public:
  virtual ~Core() = default;

  // Admin API. Every error is a canonical status: INVALID_ARGUMENT with
  // "field: reason" for bad input, NOT_FOUND for unknown names. Returned
  // tunnels never carry a PSK value, only its fingerprint, and carry the
  // status the agents reported.
  virtual absl::StatusOr<strait::v1::ApplyTunnelResponse> Apply(
      const strait::v1::ApplyTunnelRequest& request) = 0;
  virtual absl::StatusOr<strait::v1::Tunnel> Get(absl::string_view name) = 0;
  virtual strait::v1::ListTunnelsResponse List(const strait::v1::ListTunnelsRequest& request) = 0;
  virtual absl::StatusOr<strait::v1::DeleteTunnelResponse> Delete(absl::string_view name) = 0;
  virtual strait::v1::ListNodesResponse ListNodes() = 0;

  // Watches. `initial` receives ADDED events for the current tunnels, and
  // `fn` every later change, in revision order; `fn` must not block.
  using WatchFn = std::function<void(const strait::v1::WatchTunnelsEvent&)>;
  virtual int64_t AddWatcher(WatchFn fn, std::vector<strait::v1::WatchTunnelsEvent>* initial) = 0;
  virtual void RemoveWatcher(int64_t id) = 0;

  // Agent sessions. Connect registers `listener` for `node` and returns the
  // snapshot to push now, or nullptr when `last_applied_version` is already
  // the node's current version (resume without a re-push). The listener is
  // used until Disconnect(session_id) returns.
  virtual std::shared_ptr<const strait::v1::Snapshot> Connect(
      absl::string_view node, absl::string_view last_applied_version, absl::string_view peer,
      SnapshotListener* listener, int64_t* session_id) = 0;
  virtual void Disconnect(int64_t session_id) = 0;
  virtual void OnAck(int64_t session_id, const strait::v1::Ack& ack) = 0;
  virtual void OnNack(int64_t session_id, const strait::v1::Nack& nack) = 0;
  virtual void OnStatus(int64_t session_id, const strait::v1::StatusReport& report) = 0;
};

using CorePtr = std::unique_ptr<Core>;

struct CoreOptions {
  intent::ValidationPolicy policy;
  Clock* clock = &RealClock::Get();
  // Metrics go here when set (strait_controller_*).
  prometheus::Registry* registry = nullptr;
};

// Loads the store's state and builds every node's snapshot once.
absl::StatusOr<CorePtr> CreateCore(StorePtr store, const CoreOptions& options);

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_CORE_H_
