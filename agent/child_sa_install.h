#ifndef STRAIT_AGENT_CHILD_SA_INSTALL_H_
#define STRAIT_AGENT_CHILD_SA_INSTALL_H_

// From a CHILD SA the IKE engine negotiated to dataplane state: two
// tunnel-mode ESP SAs (inbound: to our outer address with the SPI we chose;
// outbound: to the peer with the SPI it chose) and, for every pair of a
// local and a remote traffic selector of one address family, an "out"
// policy (local -> remote) and "in" and "fwd" policies (remote -> local),
// all tied to the SAs by the tunnel's reqid.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/ike/engine.h"
#include "dataplane/dataplane.h"

namespace strait::agent {

// What the tunnel adds to what the engine negotiated.
struct ChildSaParams {
  dataplane::Address local_address;  // Outer addresses, 4 or 16 bytes.
  dataplane::Address remote_address;
  uint32_t reqid = 0;
  uint32_t replay_window = 64;
  dataplane::Lifetime soft;
  dataplane::Lifetime hard;
};

// Everything to install for one CHILD SA; holds its keys.
struct ChildSaState {
  dataplane::SaConfig inbound;
  dataplane::SaConfig outbound;
  std::vector<dataplane::PolicyConfig> policies;
};

// What was installed, without keys: enough to remove it again.
struct InstalledChildSa {
  dataplane::SaId inbound;
  dataplane::SaId outbound;
  std::vector<dataplane::PolicyConfig> policies;
  // False while the outbound SA waits (ike::ChildSa::outbound_deferred).
  bool outbound_installed = true;
};

// The most policies one CHILD SA may need (3 per selector pair).
inline constexpr size_t kMaxChildSaPolicies = 3 * 512;

// Maps `sa`. A selector range that is no prefix becomes the prefixes that
// cover it exactly. InvalidArgument when the outer addresses are not of one
// family, a selector has a port range other than one port or all of them
// (the dataplane's selectors cannot express it), no pair of selectors shares
// a family and protocol, or more than kMaxChildSaPolicies would be needed.
absl::StatusOr<ChildSaState> MapChildSa(const ike::ChildSa& sa, const ChildSaParams& params);

// Adds the inbound SA, the outbound SA (unless `with_outbound` is false)
// and the policies (policies with the same selector and direction, e.g.
// those of the SA this one replaces, are replaced: their template names
// the tunnel's reqid, so traffic keeps leaving on the newest outbound SA of
// it, the old one until InstallChildSaOutbound()). On an error, removes
// what it added and returns the error.
absl::StatusOr<InstalledChildSa> InstallChildSa(dataplane::Dataplane& dataplane,
                                                const ChildSaState& state,
                                                bool with_outbound = true);

// Adds the outbound SA of one installed without it.
absl::Status InstallChildSaOutbound(dataplane::Dataplane& dataplane, const ChildSaState& state,
                                    InstalledChildSa& installed);

// Deletes both SAs and the policies that `keep` (the policies of an SA that
// replaced this one, which may share selectors) does not hold. Keeps going
// after an error; NotFound counts as done. Returns the first other error.
absl::Status RemoveChildSa(dataplane::Dataplane& dataplane, const InstalledChildSa& installed,
                           const std::vector<dataplane::PolicyConfig>& keep = {});

// The prefixes that cover [start, end] exactly, fewest first-to-last; empty
// when the addresses are not of one family or start > end.
std::vector<std::pair<dataplane::Address, uint8_t>> RangeToPrefixes(const dataplane::Address& start,
                                                                    const dataplane::Address& end);

}  // namespace strait::agent

#endif  // STRAIT_AGENT_CHILD_SA_INSTALL_H_
