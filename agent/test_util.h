#ifndef STRAIT_AGENT_TEST_UTIL_H_
#define STRAIT_AGENT_TEST_UTIL_H_

// Snapshots, metrics and directories for the agent's tests.

#include <map>
#include <string>
#include <vector>

#include "prometheus/registry.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent::testing {

// A valid half of a tunnel from `node` to an external gateway.
strait::v1::NodeTunnel GatewayTunnel(const std::string& name, const std::string& node,
                                     const std::string& local_selector,
                                     const std::string& remote_selector, int64_t generation = 1);

strait::v1::Snapshot MakeSnapshot(const std::string& version,
                                  std::vector<strait::v1::NodeTunnel> tunnels,
                                  const std::string& nonce = "");

// The value of the sample of `name` whose labels include `labels`, summed
// over matches (for a histogram: its sample count); 0 when there is none.
double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::map<std::string, std::string>& labels = {});

// A fresh directory under TEST_TMPDIR (or /tmp).
std::string NewTempDir();

}  // namespace strait::agent::testing

#endif  // STRAIT_AGENT_TEST_UTIL_H_
