#ifndef STRAIT_AGENT_INTENT_FILE_H_
#define STRAIT_AGENT_INTENT_FILE_H_

// Standalone mode (--intent-file): the agent reads tunnel intent from a YAML
// file, in the shape straitctl applies, instead of a controller, and runs
// its node's share of it.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/applier.h"
#include "agent/metrics.h"
#include "agent/snapshot_secrets.h"

namespace strait::agent {

// "file:" and the first 12 hex digits of the SHA-256 of `contents`.
std::string IntentFileVersion(absl::string_view contents);

// Builds `node`'s snapshot from the YAML `contents` (one or more "---"
// separated Tunnel documents), checked as the controller would check them
// with its default policy: each tunnel after defaults (ValidateTunnel),
// names unique, no overlapping selectors between tunnels of a node. The
// snapshot holds the node's half (NodeHalf) of every tunnel that has an end
// on it: its own (spec.node) and node-to-node tunnels whose remote.node it
// is. Errors are INVALID_ARGUMENT naming the document or tunnel and field.
absl::StatusOr<SnapshotPtr> SnapshotFromIntent(absl::string_view contents, absl::string_view node);

// Reads `path` and calls SnapshotFromIntent; a read error names the file.
absl::StatusOr<SnapshotPtr> LoadIntentFile(const std::string& path, absl::string_view node);

// Loads `path` for `node` and applies it, counting the outcome in `metrics`
// (strait_agent_snapshots_applied_total or _rejected_total) when set. On
// error the applied snapshot stays.
absl::Status ApplyIntentFile(const std::string& path, absl::string_view node, Applier& applier,
                             AgentMetrics* metrics);

}  // namespace strait::agent

#endif  // STRAIT_AGENT_INTENT_FILE_H_
