#ifndef STRAIT_TESTS_BENCH_BENCH_TUNNELS_H_
#define STRAIT_TESTS_BENCH_BENCH_TUNNELS_H_

// The synthetic intent of the fan-out benchmark: `nodes` managed nodes and
// `tunnels` tunnels to external gateways, tunnel i on node i % nodes, each
// with its own inner networks so that no two tunnels of a node overlap.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::bench {

// Child SA lifetime of a tunnel that was never changed. A change lowers it
// by one second per change, which keeps every spec distinct and valid
// (between the 9m default rekey margin and the 1h policy maximum).
inline constexpr int64_t kInitialEspLifetimeSeconds = 3600;

// Checks that `nodes` and `tunnels` describe a layout this file can build:
// at least one tunnel per node, and few enough tunnels for distinct /24s.
absl::Status CheckLayout(int nodes, int tunnels);

// "bench-node-0042".
std::string BenchNodeName(int node);
// "bench-t-00042".
std::string BenchTunnelName(int index);

inline int NodeOfTunnel(int index, int nodes) { return index % nodes; }
// Index of the k-th tunnel of `node`.
inline int TunnelOfNode(int node, int k, int nodes) { return node + k * nodes; }
// How many of the `tunnels` tunnels `node` owns.
int TunnelsOnNode(int node, int nodes, int tunnels);

// The ESP lifetime a tunnel has after its `changes`-th change.
int64_t EspLifetimeAfter(int changes);

// Tunnel `index`: local 10.<hi>.<lo>.0/24 on its node, remote
// 172.<16..31>.<lo>.0/24 behind gateway 198.51.100.<1..254>, PSK auth,
// aes256gcm16 suites, the given ESP lifetime.
strait::v1::Tunnel MakeBenchTunnel(int index, int nodes, int64_t esp_lifetime_seconds);

}  // namespace strait::bench

#endif  // STRAIT_TESTS_BENCH_BENCH_TUNNELS_H_
