#ifndef STRAIT_AGENT_APPLIER_H_
#define STRAIT_AGENT_APPLIER_H_

// Holds the node's applied snapshot: the intent the agent runs. Until the
// IKEv2 engine lands, applying only validates and records a snapshot, and
// every tunnel end is reported as PENDING.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent {

class Applier {
 public:
  virtual ~Applier() = default;

  // Validates `snapshot` as a whole and, when it is valid, makes it the
  // applied one. Otherwise returns INVALID_ARGUMENT with every problem found
  // ("tunnel \"x\": spec.esp.lifetime: ...; ..."), the text the agent sends
  // in its NACK, and keeps the previous snapshot.
  virtual absl::Status Apply(const strait::v1::Snapshot& snapshot) = 0;

  // Version of the applied snapshot; empty when none is.
  virtual std::string AppliedVersion() = 0;

  // The state of every applied tunnel end.
  virtual strait::v1::StatusReport BuildStatusReport() = 0;

  // `listener` is called, without locks held, whenever the report that
  // BuildStatusReport would return changes. Set it once, before the first
  // Apply; it must not block.
  virtual void SetStatusListener(std::function<void()> listener) = 0;
};

using ApplierPtr = std::unique_ptr<Applier>;

}  // namespace strait::agent

#endif  // STRAIT_AGENT_APPLIER_H_
