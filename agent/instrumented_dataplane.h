#ifndef STRAIT_AGENT_INSTRUMENTED_DATAPLANE_H_
#define STRAIT_AGENT_INSTRUMENTED_DATAPLANE_H_

// A Dataplane that forwards to another and counts every operation in
// strait_agent_dataplane_operations_total{op,result} (result "ok" or the
// status code, e.g. "NOT_FOUND"). With a PeerRouteTable (the XFRM
// backend) it also routes each out policy's destination the way its
// tunnel's peer is routed, since the kernel routes before XFRM.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/dataplane.h"
#include "dataplane/tun_device.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace strait::agent {

class InstrumentedDataplane : public dataplane::Dataplane {
 public:
  // `inner` and `registry` must outlive this object.
  InstrumentedDataplane(dataplane::Dataplane& inner, prometheus::Registry& registry,
                        dataplane::PeerRouteTable* routes = nullptr);

  std::string name() const override { return inner_.name(); }
  absl::Status AddSa(const dataplane::SaConfig& sa) override;
  absl::Status UpdateSa(const dataplane::SaConfig& sa) override;
  absl::Status DeleteSa(const dataplane::SaId& id) override;
  absl::Status AddPolicy(const dataplane::PolicyConfig& policy) override;
  absl::Status AddPolicies(const std::vector<dataplane::PolicyConfig>& policies) override;
  absl::Status DeletePolicy(const dataplane::Selector& selector, dataplane::Direction direction,
                            uint32_t mark = 0, uint32_t mark_mask = 0, uint32_t if_id = 0) override;
  absl::StatusOr<dataplane::SaCounters> GetCounters(const dataplane::SaId& id) override;
  absl::StatusOr<dataplane::InstalledState> List() override;
  void Subscribe(std::function<void(const dataplane::DataplaneEvent&)> callback) override;

 private:
  absl::Status Count(const char* op, absl::Status status);
  void Route(const dataplane::PolicyConfig& policy);

  dataplane::PeerRouteTable* routes_;

  dataplane::Dataplane& inner_;
  prometheus::Family<prometheus::Counter>& operations_;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_INSTRUMENTED_DATAPLANE_H_
