#ifndef STRAIT_CONTROLLER_AGENT_SERVICE_H_
#define STRAIT_CONTROLLER_AGENT_SERVICE_H_

// strait.v1.AgentService: one bidirectional Session per connected agent, in
// the style of Envoy's xDS state of the world. The first message is a Hello
// naming the node; the session then pushes the node's latest snapshot
// whenever it changes (a newer snapshot replaces one not yet sent, so a
// slow agent gets the latest state, not every step), each with a fresh
// nonce, and hands ACKs, NACKs and status reports to Core.

#include <cstddef>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "controller/core.h"
#include "controller/grpc_util.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/agent.grpc.pb.h"

namespace strait::controller {

class AgentServiceImpl final : public strait::v1::AgentService::CallbackService {
 public:
  // `core` must outlive the service. Sessions are counted in `registry`
  // (strait_controller_api_requests_total{method="Session"}) when it is set.
  AgentServiceImpl(Core& core, prometheus::Registry* registry);
  // Ends the sessions still open and waits until they are done.
  ~AgentServiceImpl() override;

  // Ends every session with UNAVAILABLE "controller shutting down" and
  // refuses new ones the same way; call before grpc::Server::Shutdown so
  // that the server need not wait for its deadline. Agents keep their
  // tunnels and reconnect.
  void BeginShutdown();

  // Sessions not yet done.
  size_t SessionCount();

  // strait::v1::AgentService::CallbackService
  grpc::ServerBidiReactor<strait::v1::AgentMessage, strait::v1::ControllerMessage>* Session(
      grpc::CallbackServerContext* context) override;

 private:
  class SessionReactor;

  void Unregister(SessionReactor* session);
  bool NoSessions() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return sessions_.empty(); }

  Core& core_;
  ApiRequestCounter requests_;

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<SessionReactor*> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_AGENT_SERVICE_H_
