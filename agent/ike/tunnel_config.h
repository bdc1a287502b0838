#ifndef STRAIT_AGENT_IKE_TUNNEL_CONFIG_H_
#define STRAIT_AGENT_IKE_TUNNEL_CONFIG_H_

// Builds an EngineConfig from text (strait-ike's flags) or from a tunnel
// spec (the agent), and names negotiated algorithms the way strongSwan does.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/ike/engine.h"
#include "common/intent/proposal.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::ike {

// An IP address (ID_IPV4_ADDR/ID_IPV6_ADDR), a distinguished name when it
// holds '=' ("C=CH, O=Strait, CN=gw", ID_DER_ASN1_DN), user@domain
// (ID_RFC822_ADDR) or a name (ID_FQDN). InvalidArgument when empty or a
// DN does not parse.
absl::StatusOr<Identity> ParseIdentity(const std::string& text);
// Comma-separated CIDRs ("10.1.0.0/24,10.3.0.0/16"); at least one.
absl::StatusOr<std::vector<TrafficSelectorRange>> ParseSelectors(const std::string& text);
// Comma-separated strongSwan proposals, most preferred first; at least one.
absl::StatusOr<std::vector<AlgorithmProposal>> ParseProposals(const std::string& text,
                                                              intent::ProposalKind kind);

// "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384", as strongSwan writes it.
std::string SuiteName(const AlgorithmProposal& p, bool ike);
// "10.1.0.0/24", or "start..end" when the range is no prefix.
std::string FormatSelector(const TrafficSelectorRange& r);

// The agent's certificate and key for tunnels whose spec names none.
struct CertificateDefaults {
  std::string certificate_file;
  std::string private_key_file;
};

// The engine configuration of the local end of `spec` (after defaults):
// addresses on port 500, identities (an empty id is the address), the PSK
// (copied into a Secret; the spec keeps its own copy) or the certificates
// (the CA from the spec, our certificate and key read from their files),
// proposals, selectors and DPD timing. InvalidArgument when any part does not parse,
// FailedPrecondition (or the file's error) when the key or certificate
// cannot be used.
absl::StatusOr<EngineConfig> EngineConfigFromSpec(const strait::v1::TunnelSpec& spec,
                                                  const CertificateDefaults& defaults = {});

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_TUNNEL_CONFIG_H_
