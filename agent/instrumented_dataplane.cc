#include "agent/instrumented_dataplane.h"

#include <utility>

#include "absl/status/statusor.h"
#include "common/logging.h"

namespace strait::agent {

InstrumentedDataplane::InstrumentedDataplane(dataplane::Dataplane& inner,
                                             prometheus::Registry& registry,
                                             dataplane::PeerRouteTable* routes)
    : routes_(routes),
      inner_(inner),
      operations_(prometheus::BuildCounter()
                      .Name("strait_agent_dataplane_operations_total")
                      .Help("Dataplane operations (add_sa, update_sa, delete_sa, add_policy, "
                            "add_policies, delete_policy, get_counters, list) by result: ok or "
                            "the error code.")
                      .Register(registry)) {
  for (const char* op : {"add_sa", "delete_sa", "add_policies", "delete_policy"}) {
    operations_.Add({{"op", op}, {"result", "ok"}});
  }
}

absl::Status InstrumentedDataplane::Count(const char* op, absl::Status status) {
  const std::string result = status.ok() ? "ok" : absl::StatusCodeToString(status.code());
  operations_.Add({{"op", op}, {"result", result}}).Increment();
  return status;
}

absl::Status InstrumentedDataplane::AddSa(const dataplane::SaConfig& sa) {
  return Count("add_sa", inner_.AddSa(sa));
}
absl::Status InstrumentedDataplane::UpdateSa(const dataplane::SaConfig& sa) {
  return Count("update_sa", inner_.UpdateSa(sa));
}
absl::Status InstrumentedDataplane::DeleteSa(const dataplane::SaId& id) {
  return Count("delete_sa", inner_.DeleteSa(id));
}
void InstrumentedDataplane::Route(const dataplane::PolicyConfig& policy) {
  if (routes_ == nullptr || policy.direction != dataplane::Direction::kOut) return;
  if (absl::Status s = routes_->AddRoute(policy.selector, policy.tunnel_destination); !s.ok()) {
    LOG_WARNING("cannot route a remote selector").With("error", s.ToString());
  }
}

absl::Status InstrumentedDataplane::AddPolicy(const dataplane::PolicyConfig& policy) {
  absl::Status s = Count("add_policy", inner_.AddPolicy(policy));
  if (s.ok()) Route(policy);
  return s;
}
absl::Status InstrumentedDataplane::AddPolicies(
    const std::vector<dataplane::PolicyConfig>& policies) {
  absl::Status s = Count("add_policies", inner_.AddPolicies(policies));
  if (s.ok()) {
    for (const dataplane::PolicyConfig& p : policies) Route(p);
  }
  return s;
}
absl::Status InstrumentedDataplane::DeletePolicy(const dataplane::Selector& selector,
                                                 dataplane::Direction direction, uint32_t mark,
                                                 uint32_t mark_mask, uint32_t if_id) {
  absl::Status s =
      Count("delete_policy", inner_.DeletePolicy(selector, direction, mark, mark_mask, if_id));
  if (s.ok() && routes_ != nullptr && direction == dataplane::Direction::kOut) {
    (void)routes_->DeleteRoute(selector);
  }
  return s;
}
absl::StatusOr<dataplane::SaCounters> InstrumentedDataplane::GetCounters(
    const dataplane::SaId& id) {
  absl::StatusOr<dataplane::SaCounters> counters = inner_.GetCounters(id);
  (void)Count("get_counters", counters.status());
  return counters;
}
absl::StatusOr<dataplane::InstalledState> InstrumentedDataplane::List() {
  absl::StatusOr<dataplane::InstalledState> state = inner_.List();
  (void)Count("list", state.status());
  return state;
}
void InstrumentedDataplane::Subscribe(
    std::function<void(const dataplane::DataplaneEvent&)> callback) {
  inner_.Subscribe(std::move(callback));
}

}  // namespace strait::agent
