#include "controller/admin_service.h"

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/intent/secrets.h"
#include "common/logging.h"
#include "common/secret.h"

namespace strait::controller {
namespace {

using strait::v1::WatchTunnelsEvent;

constexpr absl::string_view kApply = "ApplyTunnel";
constexpr absl::string_view kGet = "GetTunnel";
constexpr absl::string_view kList = "ListTunnels";
constexpr absl::string_view kDelete = "DeleteTunnel";
constexpr absl::string_view kWatch = "WatchTunnels";
constexpr absl::string_view kListNodes = "ListNodes";

grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller shutting down");
}

// Core never returns a PSK; this makes sure of it at the API's edge too.
void RedactSecrets(strait::v1::Tunnel* tunnel) { intent::WipeSpecSecrets(tunnel->mutable_spec()); }

}  // namespace

// One WatchTunnels stream: a queue of events with one write in flight.
// Core calls the watch function from the committing thread, so it only
// queues. The function holds `sink_`, not the reactor, so that a late call
// after the reactor is gone finds nothing to write to.
class AdminServiceImpl::WatchReactor : public grpc::ServerWriteReactor<WatchTunnelsEvent> {
 public:
  WatchReactor(AdminServiceImpl& service, grpc::CallbackServerContext* context)
      : service_(service), peer_(context->peer()), sink_(std::make_shared<Sink>()) {
    absl::MutexLock lock(&sink_->mu);
    sink_->reactor = this;
  }

  // Registers with Core and queues the current tunnels. Runs before the
  // reactor is handed to gRPC, so OnDone cannot run meanwhile.
  void Start() {
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) {
        return;
      }
    }
    std::vector<WatchTunnelsEvent> initial;
    std::shared_ptr<Sink> sink = sink_;
    int64_t id = service_.core_.AddWatcher(
        [sink](const WatchTunnelsEvent& event) {
          absl::MutexLock lock(&sink->mu);
          if (sink->reactor != nullptr) {
            sink->reactor->Enqueue(event);
          }
        },
        &initial);
    LOG_DEBUG("watch started")
        .With("peer", peer_)
        .With("tunnels", static_cast<int64_t>(initial.size()));
    absl::MutexLock lock(&mu_);
    watcher_id_ = id;
    // Events committed while AddWatcher ran are already queued; the current
    // state goes before them.
    for (auto it = initial.rbegin(); it != initial.rend(); ++it) {
      queue_.push_front(std::move(*it));
      RedactSecrets(queue_.front().mutable_tunnel());
    }
    started_ = true;
    MaybeWriteLocked();
  }

  // Ends the stream with `status` once the write in flight is done.
  void Close(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(std::move(status));
  }

  // grpc::ServerWriteReactor
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "watch: write failed"));
    }
    MaybeWriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&sink_->mu);
      sink_->reactor = nullptr;
    }
    std::optional<int64_t> id;
    grpc::StatusCode code;
    {
      absl::MutexLock lock(&mu_);
      id = watcher_id_;
      code = final_code_;
    }
    if (id.has_value()) {
      service_.core_.RemoveWatcher(*id);
    }
    LOG_DEBUG("watch ended").With("peer", peer_).With("code", GrpcCodeName(code));
    service_.requests_.Count(kWatch, code);
    service_.Unregister(this);
    delete this;
  }

 private:
  struct Sink {
    absl::Mutex mu;
    WatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  };

  void Enqueue(const WatchTunnelsEvent& event) {
    absl::MutexLock lock(&mu_);
    if (finish_requested_) {
      return;
    }
    if (queue_.size() >= kMaxQueuedWatchEvents) {
      LOG_WARNING("watch too slow, ending it").With("peer", peer_);
      FinishLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                "watch: the client reads events too slowly; list and watch again"));
      return;
    }
    queue_.push_back(event);
    RedactSecrets(queue_.back().mutable_tunnel());
    MaybeWriteLocked();
  }

  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) {
      return;
    }
    finish_requested_ = true;
    final_status_ = std::move(status);
    queue_.clear();
    MaybeWriteLocked();
  }

  // Starts the next write, or the deferred Finish once no write is in
  // flight (Finish must not overlap a write).
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_) {
      return;
    }
    if (finish_requested_) {
      if (!finished_) {
        finished_ = true;
        final_code_ = final_status_.error_code();
        Finish(final_status_);
      }
      return;
    }
    if (!started_ || queue_.empty()) {
      return;
    }
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&in_flight_);
  }

  AdminServiceImpl& service_;
  const std::string peer_;
  const std::shared_ptr<Sink> sink_;

  absl::Mutex mu_;
  std::optional<int64_t> watcher_id_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<WatchTunnelsEvent> queue_ ABSL_GUARDED_BY(mu_);
  // The message being written; gRPC reads it until OnWriteDone.
  WatchTunnelsEvent in_flight_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  grpc::StatusCode final_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
};

AdminServiceImpl::AdminServiceImpl(Core& core, prometheus::Registry* registry)
    : core_(core), requests_(registry) {}

AdminServiceImpl::~AdminServiceImpl() {
  BeginShutdown();
  {
    // grpc::Server::Shutdown returns only once every reactor is done, so
    // this does not wait in practice; it guards against a wrong order.
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(this, &AdminServiceImpl::NoWatches),
                              absl::Seconds(10))) {
      LOG_ERROR("watches still open at service destruction")
          .With("count", static_cast<int64_t>(watches_.size()));
    }
  }
  Stop();
}

void AdminServiceImpl::BeginShutdown() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    return;
  }
  shutting_down_ = true;
  for (WatchReactor* watch : watches_) {
    watch->Close(ShuttingDown());
  }
}

void AdminServiceImpl::Stop() { mutations_.Stop(); }

void AdminServiceImpl::Reply(grpc::ServerUnaryReactor* reactor, absl::string_view method,
                             const grpc::Status& status) {
  requests_.Count(method, status.error_code());
  reactor->Finish(status);
}

void AdminServiceImpl::Unregister(WatchReactor* watch) {
  absl::MutexLock lock(&mu_);
  watches_.erase(watch);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ApplyTunnel(
    grpc::CallbackServerContext* context, const strait::v1::ApplyTunnelRequest* request,
    strait::v1::ApplyTunnelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool queued = mutations_.Post([this, context, request, response, reactor] {
    const std::string& name = request->tunnel().metadata().name();
    if (context->IsCancelled()) {
      // The client gave up while the request waited: do not apply it.
      Reply(reactor, kApply, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled before apply"));
      return;
    }
    absl::StatusOr<strait::v1::ApplyTunnelResponse> result = core_.Apply(*request);
    if (!result.ok()) {
      LOG_INFO("tunnel rejected")
          .With("tunnel", name)
          .With("code", absl::StatusCodeToString(result.status().code()))
          .With("error", result.status().message())
          .With("peer", context->peer());
      Reply(reactor, kApply, ToGrpcStatus(result.status()));
      return;
    }
    *response = *std::move(result);
    RedactSecrets(response->mutable_tunnel());
    // Core logs the change itself (revision, nodes) at info.
    LOG_DEBUG(request->dry_run() ? "tunnel validated (dry run)" : "tunnel applied")
        .With("tunnel", name)
        .With("revision", response->revision())
        .With("generation", response->tunnel().metadata().generation())
        .With("changed", response->changed())
        .With("peer", context->peer());
    Reply(reactor, kApply, grpc::Status::OK);
  });
  if (!queued) {
    Reply(reactor, kApply, ShuttingDown());
  }
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetTunnel(grpc::CallbackServerContext* context,
                                                      const strait::v1::GetTunnelRequest* request,
                                                      strait::v1::Tunnel* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<strait::v1::Tunnel> tunnel = core_.Get(request->name());
  if (!tunnel.ok()) {
    Reply(reactor, kGet, ToGrpcStatus(tunnel.status()));
    return reactor;
  }
  *response = *std::move(tunnel);
  RedactSecrets(response);
  Reply(reactor, kGet, grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTunnels(
    grpc::CallbackServerContext* context, const strait::v1::ListTunnelsRequest* request,
    strait::v1::ListTunnelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = core_.List(*request);
  for (strait::v1::Tunnel& tunnel : *response->mutable_tunnels()) {
    RedactSecrets(&tunnel);
  }
  Reply(reactor, kList, grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::DeleteTunnel(
    grpc::CallbackServerContext* context, const strait::v1::DeleteTunnelRequest* request,
    strait::v1::DeleteTunnelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool queued = mutations_.Post([this, context, request, response, reactor] {
    if (context->IsCancelled()) {
      Reply(reactor, kDelete, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled before delete"));
      return;
    }
    absl::StatusOr<strait::v1::DeleteTunnelResponse> result = core_.Delete(request->name());
    if (!result.ok()) {
      LOG_INFO("tunnel delete refused")
          .With("tunnel", request->name())
          .With("code", absl::StatusCodeToString(result.status().code()))
          .With("error", result.status().message())
          .With("peer", context->peer());
      Reply(reactor, kDelete, ToGrpcStatus(result.status()));
      return;
    }
    *response = *std::move(result);
    LOG_DEBUG("tunnel delete served")
        .With("tunnel", request->name())
        .With("revision", response->revision())
        .With("peer", context->peer());
    Reply(reactor, kDelete, grpc::Status::OK);
  });
  if (!queued) {
    Reply(reactor, kDelete, ShuttingDown());
  }
  return reactor;
}

grpc::ServerWriteReactor<WatchTunnelsEvent>* AdminServiceImpl::WatchTunnels(
    grpc::CallbackServerContext* context, const strait::v1::WatchTunnelsRequest* /*request*/) {
  auto* watch = new WatchReactor(*this, context);
  bool refused = false;
  {
    absl::MutexLock lock(&mu_);
    watches_.insert(watch);
    refused = shutting_down_;
  }
  if (refused) {
    watch->Close(ShuttingDown());
  } else {
    watch->Start();
  }
  return watch;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListNodes(
    grpc::CallbackServerContext* context, const strait::v1::ListNodesRequest* /*request*/,
    strait::v1::ListNodesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = core_.ListNodes();
  Reply(reactor, kListNodes, grpc::Status::OK);
  return reactor;
}

}  // namespace strait::controller
