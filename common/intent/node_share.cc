#include "common/intent/node_share.h"

#include <algorithm>
#include <utility>

namespace strait::intent {

std::vector<std::string> TunnelNodes(const strait::v1::TunnelSpec& spec) {
  std::vector<std::string> nodes;
  if (!spec.node().empty()) {
    nodes.push_back(spec.node());
  }
  if (!spec.remote().node().empty()) {
    nodes.push_back(spec.remote().node());
  }
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  return nodes;
}

std::optional<strait::v1::NodeTunnel> NodeHalf(const strait::v1::Tunnel& tunnel,
                                               absl::string_view node) {
  if (node.empty()) {
    return std::nullopt;
  }
  const strait::v1::TunnelSpec& spec = tunnel.spec();
  strait::v1::NodeTunnel half;
  half.set_name(tunnel.metadata().name());
  half.set_generation(tunnel.metadata().generation());
  if (spec.node() == node) {
    *half.mutable_spec() = spec;
    return half;
  }
  if (spec.remote().node() != node) {
    return std::nullopt;
  }

  // The remote node's view: its end is the spec's remote end, and its peer
  // is the owning node's end, so the traffic selectors mirror.
  strait::v1::TunnelSpec* mirrored = half.mutable_spec();
  *mirrored = spec;
  mirrored->set_node(std::string(node));
  *mirrored->mutable_local() = spec.remote();
  mirrored->mutable_local()->clear_node();
  *mirrored->mutable_remote() = spec.local();
  mirrored->mutable_remote()->set_node(spec.node());
  return half;
}

}  // namespace strait::intent
