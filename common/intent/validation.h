#ifndef STRAIT_COMMON_INTENT_VALIDATION_H_
#define STRAIT_COMMON_INTENT_VALIDATION_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::intent {

// Limits an operator can tune on the controller.
struct ValidationPolicy {
  absl::Duration max_ike_lifetime = absl::Hours(8);
  absl::Duration max_child_lifetime = absl::Hours(1);
};

struct FieldViolation {
  std::string field;   // YAML path, e.g. "spec.ike.proposals[1]"
  std::string reason;  // e.g. "3des is broken (64-bit block, Sweet32)"
};

// Fills unset optional fields with Strait's defaults: IKE lifetime 8h,
// ESP lifetime 1h, rekey margin 9m, replay window 64, DPD 30s/150s/restart,
// start action start, kind "Tunnel", and local/remote id = address when
// empty. Proposals have no default: they must be given.
void ApplyDefaults(strait::v1::Tunnel* tunnel);

// Checks one tunnel on its own (after ApplyDefaults): kind, names (DNS
// labels), addresses (parse, same family, not equal), CIDRs, identities,
// proposals (syntax and weak algorithms), all-addresses selectors on both
// sides, lifetimes against the policy, rekey margin below the child
// lifetime, DPD enabled and sane, the PSK present and at least 16
// characters, node-to-node ends consistent (no local.node, remote.node !=
// node, remote address given). Fields are YAML paths; reasons never quote
// the PSK. Absent durations are reported as required (ApplyDefaults first).
std::vector<FieldViolation> ValidateTunnel(const strait::v1::Tunnel& tunnel,
                                           const ValidationPolicy& policy);

// Checks `candidate` against the other tunnels (which are assumed valid):
// on every node where both have an end, their traffic-selector pairs must
// not overlap (local overlaps local AND remote overlaps remote), because
// the kernel could not tell the policies apart. Tunnels with the same name
// as the candidate are skipped (they are being replaced).
std::vector<FieldViolation> CheckOverlaps(const strait::v1::Tunnel& candidate,
                                          const std::vector<const strait::v1::Tunnel*>& others);

// OK when empty; otherwise INVALID_ARGUMENT with "field: reason" entries
// joined by "; ".
absl::Status ViolationsToStatus(const std::vector<FieldViolation>& violations);

// Whether `name` is a DNS label (RFC 1123): 1-63 of [a-z0-9-], starting and
// ending with a letter or digit.
bool IsDnsLabel(const std::string& name);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_VALIDATION_H_
