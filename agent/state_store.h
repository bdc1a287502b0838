#ifndef STRAIT_AGENT_STATE_STORE_H_
#define STRAIT_AGENT_STATE_STORE_H_

// Keeps the last applied snapshot across restarts, so that an agent that
// starts while the controller is away still runs its intent, and resumes
// its session from that version.

#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/snapshot_secrets.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent {

class StateStore {
 public:
  virtual ~StateStore() = default;

  // The saved snapshot; nullptr when none was saved. DATA_LOSS when what is
  // stored cannot be read back (a corrupt file): the caller logs it and
  // starts empty, and the next Save replaces it.
  virtual absl::StatusOr<SnapshotPtr> Load() = 0;

  // Replaces the saved snapshot, atomically and durably: after a crash,
  // Load returns either the previous snapshot or this one.
  virtual absl::Status Save(const strait::v1::Snapshot& snapshot) = 0;
};

using StateStorePtr = std::unique_ptr<StateStore>;

}  // namespace strait::agent

#endif  // STRAIT_AGENT_STATE_STORE_H_
