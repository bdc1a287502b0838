#ifndef STRAIT_DATAPLANE_RECONCILE_H_
#define STRAIT_DATAPLANE_RECONCILE_H_

// Removing stale dataplane state, e.g. what a crashed agent left behind.

#include <cstddef>

#include "absl/status/statusor.h"
#include "dataplane/dataplane.h"

namespace strait::dataplane {

struct ReconcileResult {
  size_t sas_removed = 0;
  size_t policies_removed = 0;
};

// Removes what `dataplane` lists and `wanted` does not hold: policies by
// (selector, direction, mark and mask, if_id) first, so that no traffic
// meets a policy whose SA is gone, then SAs by (destination, SPI). Only
// listed state is touched, and backends list only their own (the XFRM
// backend: Strait's reqid range), so other daemons' state is safe. Nothing
// is added or changed: installing what is wanted stays with the caller.
// Keeps going past failures and returns the first; something that vanished
// meanwhile (NotFound) is no failure.
absl::StatusOr<ReconcileResult> Reconcile(Dataplane& dataplane, const InstalledState& wanted);

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_RECONCILE_H_
