#include "agent/ike/engine_proposal.h"

#include "common/status_macros.h"

namespace strait::ike {

std::vector<AlgorithmProposal> ToAlgorithmProposals(const intent::Proposal& proposal,
                                                    intent::ProposalKind kind) {
  // An absent list contributes one "none" element so the product is not empty.
  const intent::Transform none;
  auto or_none = [&none](const std::vector<intent::Transform>& list) {
    return list.empty() ? std::vector<intent::Transform>{none} : list;
  };
  const auto integrity = or_none(proposal.integrity);
  const auto prfs = kind == intent::ProposalKind::kIke ? or_none(proposal.prf)
                                                       : std::vector<intent::Transform>{none};
  const auto groups = or_none(proposal.dh_groups);
  std::vector<AlgorithmProposal> out;
  for (const auto& encr : proposal.encryption) {
    for (const auto& integ : integrity) {
      for (const auto& prf : prfs) {
        for (const auto& group : groups) {
          AlgorithmProposal p;
          p.encr_id = static_cast<uint16_t>(encr.id);
          p.key_bits = encr.key_bits;
          p.integ_id = static_cast<uint16_t>(integ.id);
          p.prf_id = static_cast<uint16_t>(prf.id);
          p.dh_group = static_cast<uint16_t>(group.id);
          out.push_back(p);
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<AlgorithmProposal>> ParseAlgorithmProposals(absl::string_view text,
                                                                       intent::ProposalKind kind) {
  ASSIGN_OR_RETURN(intent::Proposal parsed, intent::ParseProposal(text, kind));
  return ToAlgorithmProposals(parsed, kind);
}

}  // namespace strait::ike
