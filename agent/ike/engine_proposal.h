#ifndef STRAIT_AGENT_IKE_ENGINE_PROPOSAL_H_
#define STRAIT_AGENT_IKE_ENGINE_PROPOSAL_H_

// Maps parsed intent proposals ("aes256gcm16-prfsha384-ecp384") onto the
// engine's flat AlgorithmProposal lists.

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/ike/engine.h"
#include "common/intent/proposal.h"

namespace strait::ike {

// Every combination of the proposal's transforms, in their written order
// (encryption outermost, then integrity, PRF, DH group). ESP proposals keep
// their DH group (PFS) for later CREATE_CHILD_SA use; IKE_AUTH ignores it.
std::vector<AlgorithmProposal> ToAlgorithmProposals(const intent::Proposal& proposal,
                                                    intent::ProposalKind kind);

// ParseProposal() then ToAlgorithmProposals().
absl::StatusOr<std::vector<AlgorithmProposal>> ParseAlgorithmProposals(absl::string_view text,
                                                                       intent::ProposalKind kind);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_ENGINE_PROPOSAL_H_
