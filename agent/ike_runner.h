#ifndef STRAIT_AGENT_IKE_RUNNER_H_
#define STRAIT_AGENT_IKE_RUNNER_H_

// Runs the IKEv2 engine for the applied snapshot (strait-agent
// --enable-ike): one engine, one UDP socket on the local address, port 500,
// and one thread per tunnel. Until SA dispatch lands, a local address
// serves one tunnel; further tunnels on it report ERROR. Each tunnel's
// state goes to the applier as its reported end status: CONNECTING while
// negotiating, ESTABLISHED with the CHILD SA, FAILED with the engine's
// failure reason (ERROR: the tunnel's local configuration is unusable); failed negotiations start
// again after a backoff. The CHILD SA is only recorded: no dataplane yet.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/applier_impl.h"
#include "common/clock.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent {

// The reason of a tunnel that shares its local address with an earlier one.
inline constexpr char kLocalAddressInUseReason[] = "LOCAL_ADDRESS_IN_USE";

struct IkeRunnerOptions {
  // How long an initiator waits after a failure before it initiates again.
  absl::Duration initiator_backoff = absl::Seconds(5);
  // How long a responder waits after a failure before it listens again.
  absl::Duration responder_backoff = absl::Seconds(1);
  // UDP port of IKE, local and remote (500; tests may pick another).
  uint16_t port = 500;
};

class IkeRunner {
 public:
  // `node` is this agent's node name (for node-to-node tunnels the end whose
  // node name sorts first initiates). `applier` and `clock` must outlive
  // the runner.
  IkeRunner(std::string node, ApplierImpl& applier, Clock& clock, IkeRunnerOptions options = {});
  ~IkeRunner();  // Stop()
  IkeRunner(const IkeRunner&) = delete;
  IkeRunner& operator=(const IkeRunner&) = delete;

  // Makes the running tunnels those of `snapshot`: starts new ones, stops
  // removed ones, restarts changed ones. Blocks while stopping (at most a
  // fraction of a second per tunnel).
  void Reconcile(const strait::v1::Snapshot& snapshot);
  // Stops every tunnel; Reconcile does nothing afterwards.
  void Stop();

 private:
  struct Worker;
  void RunWorker(Worker* worker);
  void Report(const Worker& worker, strait::v1::TunnelPhase phase, const std::string& reason,
              const std::string& message);

  const std::string node_;
  ApplierImpl& applier_;
  Clock& clock_;
  const IkeRunnerOptions options_;

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_IKE_RUNNER_H_
