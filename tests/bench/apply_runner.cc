#include "tests/bench/apply_runner.h"

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"

namespace strait::bench {
namespace {

// Shared with the callbacks, which may outlive an early return.
struct RunState {
  absl::Mutex mu;
  int in_flight ABSL_GUARDED_BY(mu) = 0;
  absl::Status error ABSL_GUARDED_BY(mu);
  absl::Time last_done ABSL_GUARDED_BY(mu);
};

struct Call {
  grpc::ClientContext context;
  strait::v1::ApplyTunnelRequest request;
  strait::v1::ApplyTunnelResponse response;
};

}  // namespace

absl::StatusOr<ApplyTimes> ApplyTunnels(strait::v1::AdminService::Stub& stub,
                                        const std::vector<strait::v1::Tunnel>& tunnels,
                                        const ApplyOptions& options) {
  if (options.concurrency <= 0) {
    return absl::InvalidArgumentError("--concurrency must be positive");
  }
  auto state = std::make_shared<RunState>();
  ApplyTimes times;
  const bool require_changed = options.require_changed;
  for (size_t i = 0; i < tunnels.size(); ++i) {
    {
      absl::MutexLock lock(&state->mu);
      auto slot_free = [&state, &options]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
        return state->in_flight < options.concurrency || !state->error.ok();
      };
      if (!state->mu.AwaitWithDeadline(absl::Condition(&slot_free), options.deadline)) {
        return absl::DeadlineExceededError(
            absl::StrCat("only ", i, " of ", tunnels.size(), " applies were sent in time"));
      }
      if (!state->error.ok()) {
        break;
      }
      ++state->in_flight;
    }
    auto* call = new Call;
    call->context.set_deadline(absl::ToChronoTime(options.deadline));
    *call->request.mutable_tunnel() = tunnels[i];
    if (i == 0) {
      times.first_sent = absl::Now();
    }
    stub.async()->ApplyTunnel(
        &call->context, &call->request, &call->response,
        [call, state, require_changed](const grpc::Status& status) {
          std::unique_ptr<Call> owned(call);
          absl::Status error;
          const std::string& name = owned->request.tunnel().metadata().name();
          if (!status.ok()) {
            error = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                 absl::StrCat("ApplyTunnel ", name, ": ", status.error_message()));
          } else if (require_changed && !owned->response.changed()) {
            error = absl::FailedPreconditionError(
                absl::StrCat("ApplyTunnel ", name, ": changed=false for a changed spec"));
          }
          absl::MutexLock lock(&state->mu);
          --state->in_flight;
          state->last_done = absl::Now();
          if (!error.ok() && state->error.ok()) {
            state->error = std::move(error);
          }
        });
  }
  absl::MutexLock lock(&state->mu);
  auto all_returned = [&state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
    return state->in_flight == 0;
  };
  // Every call carries the deadline, so they all return soon after it.
  if (!state->mu.AwaitWithDeadline(absl::Condition(&all_returned),
                                   options.deadline + absl::Seconds(5))) {
    return absl::DeadlineExceededError(
        absl::StrCat(state->in_flight, " applies had not returned by the deadline"));
  }
  if (!state->error.ok()) {
    return state->error;
  }
  times.last_done = state->last_done;
  return times;
}

}  // namespace strait::bench
