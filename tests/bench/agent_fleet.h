#ifndef STRAIT_TESTS_BENCH_AGENT_FLEET_H_
#define STRAIT_TESTS_BENCH_AGENT_FLEET_H_

// Many simulated agents: one AgentService.Session per node, spread over a
// few HTTP/2 connections, driven by the gRPC callback API (no thread per
// session). Each agent ACKs every snapshot at once and records when it did,
// so that the benchmark can wait for the snapshots it expects.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strait::bench {

// What a node's snapshot must contain for the benchmark to go on.
struct Expectation {
  // At least this many tunnels.
  int min_tunnels = 0;
  // When set: this tunnel, with this ESP lifetime.
  std::string tunnel;
  int64_t esp_lifetime_seconds = 0;
};

class AgentFleet {
 public:
  virtual ~AgentFleet() = default;

  // Opens every session (Hello with no last applied version).
  virtual void Start() = 0;

  // Replaces the expectation of each listed node (index into the node
  // names). A node whose last snapshot already satisfies it is met at once.
  virtual void Expect(const std::vector<std::pair<int, Expectation>>& expectations) = 0;

  // Waits until every expectation is met. DeadlineExceeded names the nodes
  // still waiting; a session that ended early is an error too.
  virtual absl::Status AwaitExpectations(absl::Time deadline) = 0;

  // When `node` ACKed the snapshot that met its last expectation.
  virtual absl::Time MetAt(int node) const = 0;

  // Snapshots received by `node`, and by all nodes.
  virtual int64_t Pushes(int node) const = 0;
  virtual int64_t TotalPushes() const = 0;

  // Cancels every session and waits (until `deadline`) for them to end.
  virtual absl::Status Shutdown(absl::Time deadline) = 0;
};

using AgentFleetPtr = std::unique_ptr<AgentFleet>;

// Sessions for `node_names` against the controller at `address`
// (plaintext), over `channels` separate connections.
absl::StatusOr<AgentFleetPtr> CreateAgentFleet(const std::string& address,
                                               std::vector<std::string> node_names, int channels);

}  // namespace strait::bench

#endif  // STRAIT_TESTS_BENCH_AGENT_FLEET_H_
