#include "dataplane/reconcile.h"

#include <algorithm>
#include <tuple>

#include "common/status_macros.h"

namespace strait::dataplane {
namespace {

bool SamePolicy(const PolicyConfig& a, const PolicyConfig& b) {
  return a.selector == b.selector && std::tie(a.direction, a.mark, a.mark_mask, a.if_id) ==
                                         std::tie(b.direction, b.mark, b.mark_mask, b.if_id);
}

}  // namespace

absl::StatusOr<ReconcileResult> Reconcile(Dataplane& dataplane, const InstalledState& wanted) {
  ASSIGN_OR_RETURN(InstalledState installed, dataplane.List());
  ReconcileResult result;
  absl::Status first_error;
  auto note = [&](const absl::Status& status, size_t& removed) {
    if (status.ok()) {
      ++removed;
    } else if (!absl::IsNotFound(status) && first_error.ok()) {
      first_error = status;
    }
  };

  for (const PolicyConfig& policy : installed.policies) {
    bool keep = std::any_of(wanted.policies.begin(), wanted.policies.end(),
                            [&](const PolicyConfig& w) { return SamePolicy(policy, w); });
    if (keep) continue;
    note(dataplane.DeletePolicy(policy.selector, policy.direction, policy.mark, policy.mark_mask,
                                policy.if_id),
         result.policies_removed);
  }
  for (const SaConfig& sa : installed.sas) {
    bool keep = std::any_of(wanted.sas.begin(), wanted.sas.end(),
                            [&](const SaConfig& w) { return w.id == sa.id; });
    if (keep) continue;
    note(dataplane.DeleteSa(sa.id), result.sas_removed);
  }
  if (!first_error.ok()) return first_error;
  return result;
}

}  // namespace strait::dataplane
