#ifndef STRAIT_AGENT_SNAPSHOT_SECRETS_H_
#define STRAIT_AGENT_SNAPSHOT_SECRETS_H_

// Snapshots carry pre-shared keys in clear (the agent needs them for IKE):
// copies are wiped before they are dropped.

#include <memory>

#include "common/intent/secrets.h"
#include "proto/strait/v1/agent.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::agent {

using intent::WipeSnapshotSecrets;
using intent::WipeSpecSecrets;

// Deletes a snapshot after wiping its keys.
struct WipingSnapshotDeleter {
  void operator()(strait::v1::Snapshot* snapshot) const {
    if (snapshot == nullptr) return;
    WipeSnapshotSecrets(snapshot);
    delete snapshot;
  }
};

using SnapshotPtr = std::unique_ptr<strait::v1::Snapshot, WipingSnapshotDeleter>;

// A wiped-on-destruction copy of `snapshot`.
inline SnapshotPtr CopySnapshot(const strait::v1::Snapshot& snapshot) {
  return SnapshotPtr(new strait::v1::Snapshot(snapshot));
}

}  // namespace strait::agent

#endif  // STRAIT_AGENT_SNAPSHOT_SECRETS_H_
