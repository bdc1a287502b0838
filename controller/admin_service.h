#ifndef STRAIT_CONTROLLER_ADMIN_SERVICE_H_
#define STRAIT_CONTROLLER_ADMIN_SERVICE_H_

// strait.v1.AdminService on the gRPC callback API: translates requests to
// Core calls and Core's absl::Status to grpc::Status (same code, same
// message). Mutations (Apply, Delete) touch the disk, so they run on the
// service's own worker thread, never inside a reaction.

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controller/core.h"
#include "controller/grpc_util.h"
#include "controller/work_queue.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/admin.grpc.pb.h"

namespace strait::controller {

class AdminServiceImpl final : public strait::v1::AdminService::CallbackService {
 public:
  // `core` must outlive the service. Requests are counted in `registry`
  // (strait_controller_api_requests_total) when it is set.
  AdminServiceImpl(Core& core, prometheus::Registry* registry);
  // Waits for the watches still open to end, then Stop().
  ~AdminServiceImpl() override;

  // Ends every open watch with UNAVAILABLE and answers later requests with
  // UNAVAILABLE; call before grpc::Server::Shutdown so that the server need
  // not wait for its deadline.
  void BeginShutdown();
  // Runs the queued mutations and joins the worker; call after
  // grpc::Server::Shutdown has returned. Idempotent.
  void Stop();

  // strait::v1::AdminService::CallbackService
  grpc::ServerUnaryReactor* ApplyTunnel(grpc::CallbackServerContext* context,
                                        const strait::v1::ApplyTunnelRequest* request,
                                        strait::v1::ApplyTunnelResponse* response) override;
  grpc::ServerUnaryReactor* GetTunnel(grpc::CallbackServerContext* context,
                                      const strait::v1::GetTunnelRequest* request,
                                      strait::v1::Tunnel* response) override;
  grpc::ServerUnaryReactor* ListTunnels(grpc::CallbackServerContext* context,
                                        const strait::v1::ListTunnelsRequest* request,
                                        strait::v1::ListTunnelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteTunnel(grpc::CallbackServerContext* context,
                                         const strait::v1::DeleteTunnelRequest* request,
                                         strait::v1::DeleteTunnelResponse* response) override;
  grpc::ServerWriteReactor<strait::v1::WatchTunnelsEvent>* WatchTunnels(
      grpc::CallbackServerContext* context,
      const strait::v1::WatchTunnelsRequest* request) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* context,
                                      const strait::v1::ListNodesRequest* request,
                                      strait::v1::ListNodesResponse* response) override;

  // A watch whose client reads too slowly is ended with RESOURCE_EXHAUSTED
  // once this many events wait for it; the client re-lists and watches again.
  static constexpr size_t kMaxQueuedWatchEvents = 10000;

 private:
  class WatchReactor;

  // Counts the request and finishes `reactor` with `status`.
  void Reply(grpc::ServerUnaryReactor* reactor, absl::string_view method,
             const grpc::Status& status);
  void Unregister(WatchReactor* watch);
  bool NoWatches() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return watches_.empty(); }

  Core& core_;
  ApiRequestCounter requests_;
  // One thread: Core serialises commits anyway, and one client's mutations
  // are then applied in the order they arrived.
  WorkQueue mutations_{1};

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<WatchReactor*> watches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_ADMIN_SERVICE_H_
