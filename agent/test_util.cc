#include "agent/test_util.h"

#include <stdlib.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "prometheus/metric_family.h"

namespace strait::agent::testing {

strait::v1::NodeTunnel GatewayTunnel(const std::string& name, const std::string& node,
                                     const std::string& local_selector,
                                     const std::string& remote_selector, int64_t generation) {
  strait::v1::NodeTunnel tunnel;
  tunnel.set_name(name);
  tunnel.set_generation(generation);
  strait::v1::TunnelSpec* spec = tunnel.mutable_spec();
  spec->set_node(node);
  spec->mutable_local()->set_address("192.0.2.1");
  spec->mutable_local()->add_traffic_selectors(local_selector);
  spec->mutable_remote()->set_address("192.0.2.100");
  spec->mutable_remote()->add_traffic_selectors(remote_selector);
  spec->mutable_auth()->mutable_psk()->set_value("test key 0123456789abcdef");
  spec->mutable_ike()->add_proposals("aes256gcm16-prfsha384-ecp384");
  spec->mutable_esp()->add_proposals("aes256gcm16-ecp384");
  return tunnel;
}

strait::v1::Snapshot MakeSnapshot(const std::string& version,
                                  std::vector<strait::v1::NodeTunnel> tunnels,
                                  const std::string& nonce) {
  strait::v1::Snapshot snapshot;
  snapshot.set_version(version);
  snapshot.set_nonce(nonce);
  for (auto& t : tunnels) *snapshot.add_tunnels() = std::move(t);
  return snapshot;
}

double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  double total = 0;
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      bool match = true;
      for (const auto& [key, value] : labels) {
        bool found = false;
        for (const prometheus::ClientMetric::Label& label : metric.label) {
          found |= label.name == key && label.value == value;
        }
        match &= found;
      }
      if (!match) continue;
      total += metric.gauge.value + metric.counter.value +
               static_cast<double>(metric.histogram.sample_count);
    }
  }
  return total;
}

std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/agent.XXXXXX");
  char* dir = ::mkdtemp(pattern.data());
  return dir != nullptr ? std::string(dir) : std::string();
}

}  // namespace strait::agent::testing
