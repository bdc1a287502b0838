#include "agent/ike/engine.h"

#include <openssl/rand.h>

#include <cstdlib>

namespace strait::ike {

bool operator==(const Endpoint& a, const Endpoint& b) {
  return a.address == b.address && a.port == b.port;
}
bool operator==(const Identity& a, const Identity& b) {
  return a.type == b.type && a.value == b.value;
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
