#include "agent/ike/engine.h"

#include <openssl/rand.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strait::ike {

bool operator==(const Endpoint& a, const Endpoint& b) {
  return a.address == b.address && a.port == b.port;
}
bool operator==(const Identity& a, const Identity& b) {
  if (a.type != b.type) return false;
  if (a.type == IdentityType::kDerAsn1Dn) return SameDistinguishedName(a.value, b.value);
  return a.value == b.value;
}

std::string IdentityText(const Identity& id) {
  switch (id.type) {
    case IdentityType::kIpv4:
      if (id.value.size() == 4) return absl::StrJoin(id.value, ".");
      break;
    case IdentityType::kIpv6:
      if (id.value.size() == 16) {
        std::string out;
        for (size_t i = 0; i < 16; i += 2) {
          absl::StrAppend(&out, i == 0 ? "" : ":",
                          absl::Hex(static_cast<unsigned>(id.value[i] << 8 | id.value[i + 1])));
        }
        return out;
      }
      break;
    case IdentityType::kFqdn:
    case IdentityType::kRfc822:
      return std::string(id.value.begin(), id.value.end());
    case IdentityType::kDerAsn1Dn:
      return DistinguishedNameText(id.value);
  }
  return absl::StrCat("<ID type ", static_cast<int>(id.type), ">");
}
bool operator==(const AlgorithmProposal& a, const AlgorithmProposal& b) {
  return a.encr_id == b.encr_id && a.key_bits == b.key_bits && a.integ_id == b.integ_id &&
         a.prf_id == b.prf_id && a.dh_group == b.dh_group;
}
bool operator==(const TrafficSelectorRange& a, const TrafficSelectorRange& b) {
  return a.start_address == b.start_address && a.end_address == b.end_address &&
         a.ip_protocol == b.ip_protocol && a.start_port == b.start_port && a.end_port == b.end_port;
}

const char* FailureReasonName(FailureReason reason) {
  switch (reason) {
    case FailureReason::kNoProposalChosen:
      return "NO_PROPOSAL_CHOSEN";
    case FailureReason::kAuthenticationFailed:
      return "AUTHENTICATION_FAILED";
    case FailureReason::kPeerIdentityMismatch:
      return "PEER_IDENTITY_MISMATCH";
    case FailureReason::kTsUnacceptable:
      return "TS_UNACCEPTABLE";
    case FailureReason::kPeerNotResponding:
      return "PEER_NOT_RESPONDING";
    case FailureReason::kPeerDead:
      return "PEER_DEAD";
    case FailureReason::kDeletedByPeer:
      return "DELETED_BY_PEER";
    case FailureReason::kInternalError:
      return "INTERNAL_ERROR";
  }
  return "UNKNOWN";
}

namespace {

class OpenSslRandomSource : public RandomSource {
 public:
  // RandomSource
  void Fill(absl::Span<uint8_t> out) override {
    // RAND_bytes only fails when the DRBG cannot be seeded: nothing sane is
    // left to do then.
    if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) abort();
  }
};

}  // namespace

RandomSourcePtr CreateOpenSslRandomSource() { return std::make_unique<OpenSslRandomSource>(); }

}  // namespace strait::ike
