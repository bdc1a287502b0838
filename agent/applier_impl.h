#ifndef STRAIT_AGENT_APPLIER_IMPL_H_
#define STRAIT_AGENT_APPLIER_IMPL_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/applier.h"
#include "agent/metrics.h"
#include "agent/snapshot_secrets.h"
#include "common/clock.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent {

// Reason and message of every tunnel end until the IKEv2 engine is enabled.
inline constexpr char kAwaitingIkeReason[] = "AWAITING_IKE";
inline constexpr char kAwaitingIkeMessage[] = "IKEv2 engine not yet enabled";

// The structural checks of Applier::Apply for the agent of `node`: a
// version; every tunnel's spec.node is `node`; names unique; each tunnel
// valid on its own after defaults (ValidateTunnel, but with no lifetime
// limit: the controller enforces its lifetime policy, the agent only
// structure); no two tunnels with overlapping traffic selectors. Returns
// OK or INVALID_ARGUMENT listing the problems.
absl::Status ValidateSnapshot(const strait::v1::Snapshot& snapshot, absl::string_view node);

class ApplierImpl : public Applier {
 public:
  // `node` is this agent's node name; `clock` stamps the status reports;
  // `metrics` (strait_agent_tunnels, applied version) may be null. Both
  // must outlive the applier.
  ApplierImpl(std::string node, Clock& clock, AgentMetrics* metrics);

  // Applier
  absl::Status Apply(const strait::v1::Snapshot& snapshot) override;
  std::string AppliedVersion() override;
  strait::v1::StatusReport BuildStatusReport() override;
  void SetStatusListener(std::function<void()> listener) override;

  // For the IKE runner (--enable-ike); unused otherwise, and then every end
  // stays PENDING/AWAITING_IKE. `hook` is called, without locks held, with
  // every snapshot Apply accepts (after it became the applied one). Set it
  // once, before the first Apply.
  void SetApplyHook(std::function<void(const strait::v1::Snapshot&)> hook) {
    apply_hook_ = std::move(hook);
  }
  // Overrides the reported state of the applied tunnel `name` (ignored when
  // no such tunnel is applied) and notifies the status listener when it
  // changed. Forgotten when the tunnel leaves the applied snapshot.
  void SetEndStatus(const std::string& name, strait::v1::TunnelPhase phase,
                    const std::string& reason, const std::string& message);
  // The same with the SAs: phase, reason, message, ike_sa and child_sas
  // come from `status`; the other fields are the applier's own.
  void SetEndStatus(const std::string& name, const strait::v1::TunnelEndStatus& status);

 private:
  void LogChanges(const strait::v1::Snapshot* before, const strait::v1::Snapshot& after);
  void UpdatePhaseMetrics() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string node_;
  Clock& clock_;
  AgentMetrics* const metrics_;
  std::function<void()> listener_;  // Written under mu_.
  std::function<void(const strait::v1::Snapshot&)> apply_hook_;

  absl::Mutex mu_;
  SnapshotPtr applied_ ABSL_GUARDED_BY(mu_);
  // Phase, reason, message and SAs only.
  absl::flat_hash_map<std::string, strait::v1::TunnelEndStatus> end_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_APPLIER_IMPL_H_
