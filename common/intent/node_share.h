#ifndef STRAIT_COMMON_INTENT_NODE_SHARE_H_
#define STRAIT_COMMON_INTENT_NODE_SHARE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "proto/strait/v1/agent.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::intent {

// The managed nodes a tunnel has an end on: spec.node, and remote.node when
// the remote end is a managed node. Sorted, without duplicates.
std::vector<std::string> TunnelNodes(const strait::v1::TunnelSpec& spec);

// The node's own half of `tunnel` (secrets included), or nullopt when the
// tunnel has no end on `node`. For the remote node of a node-to-node tunnel
// the ends are swapped: its `local` is the spec's remote end (without
// `node`), its `remote` is the spec's local end with `node` naming the
// other node, so the selectors mirror.
std::optional<strait::v1::NodeTunnel> NodeHalf(const strait::v1::Tunnel& tunnel,
                                               absl::string_view node);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_NODE_SHARE_H_
