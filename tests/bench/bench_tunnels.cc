#include "tests/bench/bench_tunnels.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strait::bench {
namespace {

// 10.0.0.0/8 holds this many /24 networks, one per tunnel.
constexpr int kMaxTunnels = 1 << 16;
constexpr char kPsk[] = "bench-psk-0123456789abcdef";

}  // namespace

absl::Status CheckLayout(int nodes, int tunnels) {
  if (nodes <= 0) {
    return absl::InvalidArgumentError("--nodes must be positive");
  }
  if (tunnels < nodes) {
    return absl::InvalidArgumentError(absl::StrCat("--tunnels (", tunnels,
                                                   ") must be at least --nodes (", nodes,
                                                   "): every node needs a tunnel to change"));
  }
  if (tunnels > kMaxTunnels) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tunnels must be at most ", kMaxTunnels, " (one 10.x.y.0/24 each)"));
  }
  return absl::OkStatus();
}

std::string BenchNodeName(int node) { return absl::StrFormat("bench-node-%04d", node); }

std::string BenchTunnelName(int index) { return absl::StrFormat("bench-t-%05d", index); }

int TunnelsOnNode(int node, int nodes, int tunnels) {
  return tunnels / nodes + (node < tunnels % nodes ? 1 : 0);
}

int64_t EspLifetimeAfter(int changes) {
  // 3000 distinct values, all above the 540 s rekey margin.
  return kInitialEspLifetimeSeconds - changes % 3000;
}

strait::v1::Tunnel MakeBenchTunnel(int index, int nodes, int64_t esp_lifetime_seconds) {
  const int hi = (index >> 8) & 0xff;
  const int lo = index & 0xff;
  const int node = NodeOfTunnel(index, nodes);

  strait::v1::Tunnel tunnel;
  tunnel.set_kind("Tunnel");
  tunnel.mutable_metadata()->set_name(BenchTunnelName(index));
  (*tunnel.mutable_metadata()->mutable_labels())["app"] = "fanout-bench";

  strait::v1::TunnelSpec* spec = tunnel.mutable_spec();
  spec->set_node(BenchNodeName(node));
  // The node's outer address: 100.64.0.0/10 has room for 4M nodes.
  spec->mutable_local()->set_address(
      absl::StrFormat("100.%d.%d.%d", 64 + (node >> 16), (node >> 8) & 0xff, node & 0xff));
  spec->mutable_local()->add_traffic_selectors(absl::StrFormat("10.%d.%d.0/24", hi, lo));
  spec->mutable_remote()->set_address(absl::StrFormat("198.51.100.%d", index % 254 + 1));
  spec->mutable_remote()->add_traffic_selectors(
      absl::StrFormat("172.%d.%d.0/24", 16 + hi % 16, lo));
  spec->mutable_auth()->mutable_psk()->set_value(kPsk);
  spec->mutable_ike()->add_proposals("aes256gcm16-prfsha384-ecp384");
  spec->mutable_esp()->add_proposals("aes256gcm16-ecp384");
  spec->mutable_esp()->mutable_lifetime()->set_seconds(esp_lifetime_seconds);
  return tunnel;
}

}  // namespace strait::bench
