#ifndef STRAIT_TESTS_BENCH_APPLY_RUNNER_H_
#define STRAIT_TESTS_BENCH_APPLY_RUNNER_H_

// Issues many AdminService.ApplyTunnel calls with bounded concurrency,
// through the gRPC callback API.

#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/strait/v1/admin.grpc.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::bench {

struct ApplyOptions {
  // Calls in flight at most.
  int concurrency = 32;
  // Every call must report `changed` (the spec differed from the stored one).
  bool require_changed = false;
  // Deadline of every call, and of the whole run.
  absl::Time deadline = absl::InfiniteFuture();
};

struct ApplyTimes {
  absl::Time first_sent;  // just before the first call started
  absl::Time last_done;   // when the last response arrived
};

// Applies `tunnels` in order. The first failed call (its RPC status, named
// after the tunnel) ends the run once the calls in flight have returned.
absl::StatusOr<ApplyTimes> ApplyTunnels(strait::v1::AdminService::Stub& stub,
                                        const std::vector<strait::v1::Tunnel>& tunnels,
                                        const ApplyOptions& options);

}  // namespace strait::bench

#endif  // STRAIT_TESTS_BENCH_APPLY_RUNNER_H_
