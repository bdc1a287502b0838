#ifndef STRAIT_AGENT_IKE_EXCHANGE_H_
#define STRAIT_AGENT_IKE_EXCHANGE_H_

// The exchange tasks of the engine, one per exchange (strongSwan's
// sa/ikev2/tasks): each works on plaintext messages only. An initiator
// calls Build() for its request and Process() on the response; a responder
// calls Process() on the request and Build() for its response. The engine
// does the wire: encoding, SK protection, message IDs, retransmission.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "agent/ike/engine.h"
#include "agent/ike/message.h"
#include "agent/ike/sa.h"
#include "common/clock.h"

namespace strait::ike {

// What a task's Process() concluded.
struct TaskResult {
  enum class Kind {
    kDone,    // Go on to the next step.
    kRetry,   // Initiator: send the request again (new KE group).
              // Responder: answered statelessly, keep nothing.
    kIgnore,  // The message was garbage or stale: drop it and count it.
    kFailed,  // The negotiation is over: report `reason`.
  };
  Kind kind = Kind::kDone;
  FailureReason reason = FailureReason::kInternalError;
  std::string detail;

  static TaskResult Done() { return {}; }
  static TaskResult Ignore() { return {Kind::kIgnore, FailureReason::kInternalError, ""}; }
  static TaskResult Retry() { return {Kind::kRetry, FailureReason::kInternalError, ""}; }
  static TaskResult Fail(FailureReason reason, std::string detail) {
    return {Kind::kFailed, reason, std::move(detail)};
  }
};

// A fresh IKE SPI (never zero).
uint64_t RandomSpi64(RandomSource& random);
// RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP address | port).
Bytes NatDetectionHash(uint64_t spi_i, uint64_t spi_r, const Endpoint& endpoint);
Payload MakePayload(uint8_t type, PayloadBody body);

// The proposal a responder picks: the first local proposal (local order
// wins) that some offered proposal allows.
struct Selection {
  AlgorithmProposal algorithms;
  const Proposal* offered = nullptr;  // Points into the SaPayload.
};
// `esp_dh`: ESP in CREATE_CHILD_SA, where the DH group (PFS) counts.
std::optional<Selection> SelectProposal(const std::vector<AlgorithmProposal>& local,
                                        const SaPayload& sa, bool ike, bool esp_dh = false);

// RFC 7296 §2.9 narrowing: the parts of the offered selectors that `config`
// also covers (empty: TS_UNACCEPTABLE).
std::vector<TrafficSelectorRange> NarrowTrafficSelectors(
    const std::vector<TrafficSelector>& offered, const std::vector<TrafficSelectorRange>& config);
bool ValidTrafficSelector(const TrafficSelectorRange& r);

// A name for an AUTH payload's method: "psk", "rsa-pkcs1-sha1",
// "ecdsa-sha256-p256", or for RFC 7427 its AlgorithmIdentifier's signature
// algorithm ("ecdsa-with-SHA384", "sha256WithRSAEncryption", "RSASSA-PSS").
std::string AuthMethodName(uint8_t method, const Bytes& data);

// IKE_SA_INIT: proposals, KE, nonces, NAT detection, INVALID_KE_PAYLOAD.
class IkeSaInitTask {
 public:
  IkeSaInitTask(IkeSa& sa, const EngineConfig& config, RandomSource& random)
      : sa_(sa), config_(config), random_(random) {}

  // Initiator: the request; responder: the response (or an error notify).
  absl::Status Build(Message& m);
  // Responder: the request; initiator: the response.
  TaskResult Process(const Message& m, const Endpoint& from);
  // Responder: whether Process() chose to answer with an error notify only.
  bool rejected() const { return reject_notify_.has_value(); }

 private:
  Bytes RandomNonce();
  void CheckNat(const Message& m, const Endpoint& from);
  TaskResult ProcessRequest(const Message& m, const Endpoint& from);
  TaskResult ProcessResponse(const Message& m, const Endpoint& from);

  IkeSa& sa_;
  const EngineConfig& config_;
  RandomSource& random_;
  std::set<uint16_t> tried_groups_;
  // Initiator: the responder's COOKIE (RFC 7296 §2.6), sent first in the
  // retried request; and how many times one was asked for.
  Bytes cookie_;
  int cookies_seen_ = 0;
  uint8_t chosen_number_ = 1;
  std::optional<std::pair<uint16_t, Bytes>> reject_notify_;
};

// IKE_AUTH with a PSK or certificates, and the first CHILD SA.
class IkeAuthTask {
 public:
  IkeAuthTask(IkeSa& sa, const EngineConfig& config, RandomSource& random, Clock& clock)
      : sa_(sa), config_(config), random_(random), clock_(clock) {}

  // Initiator: IDi, [CERT+], [N(INITIAL_CONTACT)], [CERTREQ], AUTH, SA,
  // TSi, TSr. Responder: IDr, [CERT+], AUTH and the child (SA, TSi, TSr) or
  // its error notify; only AUTHENTICATION_FAILED when the initiator did not
  // authenticate.
  absl::Status Build(Message& m);
  // Authentication first; `authenticated` is set once the peer is proven,
  // even when the child SA then fails.
  TaskResult Process(const Message& m);
  bool authenticated() const { return authenticated_; }
  // Initiator: whether the responder failed authentication (we then tell
  // it with an INFORMATIONAL AUTHENTICATION_FAILED, RFC 7296 §2.21.2).
  bool peer_auth_failed() const { return sa_.initiator && auth_failed_; }
  ChildSa& child() { return child_; }
  // Once authenticated: the peer's identity as text, its AUTH method
  // ("psk", "ecdsa-with-SHA256", ...) and whether it sent INITIAL_CONTACT.
  const std::string& remote_identity() const { return remote_identity_; }
  const std::string& auth_method() const { return auth_method_; }
  bool peer_initial_contact() const { return peer_initial_contact_; }

 private:
  IdPayload LocalIdPayload() const;
  TaskResult Authenticate(const Message& m);
  TaskResult AuthenticateSignature(const Message& m, const IdPayload& id, const AuthPayload& auth);
  TaskResult DeriveChild();
  TaskResult ProcessRequest(const Message& m);
  TaskResult ProcessResponse(const Message& m);

  IkeSa& sa_;
  const EngineConfig& config_;
  RandomSource& random_;
  Clock& clock_;
  ChildSa child_;
  uint8_t chosen_number_ = 1;
  bool authenticated_ = false;
  bool auth_failed_ = false;
  uint16_t child_notify_ = 0;
  std::string remote_identity_;
  std::string auth_method_;
  bool peer_initial_contact_ = false;
};

// CREATE_CHILD_SA rekeying a CHILD SA (RFC 7296 §1.3.3): REKEY_SA with the
// old SA's SPI, new SPIs and nonces, and a KE when the ESP proposal has a
// DH group (PFS). The new SA's keys come from SK_d (§2.17).
class RekeyChildTask {
 public:
  // `old` is the CHILD SA being replaced; `initiator` says who started
  // this exchange (not who started the IKE SA). An initiator's `old`
  // without an inbound SPI (only selectors and encapsulation) makes a new
  // CHILD SA: the request carries no REKEY_SA.
  RekeyChildTask(IkeSa& sa, const EngineConfig& config, RandomSource& random, const ChildSa& old,
                 bool initiator)
      : sa_(sa), config_(config), random_(random), old_(old), initiator_(initiator) {
    if (initiator_ && !config_.esp_proposals.empty()) {
      dh_group_ = config_.esp_proposals[0].dh_group;
    }
  }

  // Initiator: the request; responder: the response (or its error notify).
  absl::Status Build(Message& m);
  // Responder: the request; initiator: the response. kRetry: the peer
  // wants another DH group, Build() again.
  TaskResult Process(const Message& m);

  // Responder: a request without REKEY_SA makes a new CHILD SA (from
  // `old`'s encapsulation) instead of being refused with NO_ADDITIONAL_SAS.
  // For an IKE SA whose CHILD SA the peer deleted: it may create the
  // replacement in the same IKE SA, still one CHILD SA per IKE SA.
  void AllowNewChild() { allow_new_child_ = true; }

  ChildSa& child() { return child_; }
  const ChildSa& old() const { return old_; }
  bool initiator() const { return initiator_; }
  const Bytes& ni() const { return ni_; }
  const Bytes& nr() const { return nr_; }
  // Initiator: the peer answered TEMPORARY_FAILURE (try again later).
  bool temporary_failure() const { return temporary_failure_; }

 private:
  TaskResult ProcessRequest(const Message& m);
  TaskResult ProcessResponse(const Message& m);
  TaskResult Refuse(uint16_t notify, FailureReason reason, std::string detail);
  TaskResult DeriveKeys(const Secret& shared);

  IkeSa& sa_;
  const EngineConfig& config_;
  RandomSource& random_;
  const ChildSa old_;
  const bool initiator_;
  ChildSa child_;
  Bytes ni_;
  Bytes nr_;
  uint16_t dh_group_ = 0;
  DiffieHellmanPtr dh_;
  uint8_t chosen_number_ = 1;
  uint16_t error_notify_ = 0;
  Bytes error_data_;
  bool retried_group_ = false;
  bool temporary_failure_ = false;
  bool allow_new_child_ = false;
};

// Whether a CREATE_CHILD_SA request rekeys the IKE SA (RFC 7296 §1.3.2):
// its SA payload proposes protocol IKE.
bool IsIkeRekeyRequest(const Message& m);

// CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 §1.3.2, §2.18): an SA
// payload of IKE proposals carrying the sender's new SPI, a nonce and a KE
// (always). The new SA's keys: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni |
// Nr), then prf+ over the new nonces and SPIs (§2.14). The new SA's
// initiator is whoever started this exchange; its message IDs start at 0.
class RekeyIkeTask {
 public:
  // `old` must outlive the task.
  RekeyIkeTask(const IkeSa& old, const EngineConfig& config, RandomSource& random, bool initiator);

  // Initiator: the request; responder: the response (or its error notify).
  absl::Status Build(Message& m);
  // Responder: the request; initiator: the response. kRetry: the peer
  // wants another DH group (INVALID_KE_PAYLOAD), Build() again.
  TaskResult Process(const Message& m);
  // Responder: answer TEMPORARY_FAILURE (RFC 7296 §2.25) instead.
  void RefuseTemporarily() { error_notify_ = kNotifyTemporaryFailure; }

  // Once Process() is done: the new IKE SA, keys derived.
  IkeSa& new_sa() { return new_; }
  const Bytes& ni() const { return new_.ni; }
  const Bytes& nr() const { return new_.nr; }
  // Initiator: the peer answered TEMPORARY_FAILURE (try again later).
  bool temporary_failure() const { return temporary_failure_; }

 private:
  TaskResult ProcessRequest(const Message& m);
  TaskResult ProcessResponse(const Message& m);
  TaskResult Refuse(uint16_t notify, FailureReason reason, std::string detail);

  const IkeSa& old_;
  const EngineConfig& config_;
  RandomSource& random_;
  IkeSa new_;
  uint16_t dh_group_ = 0;
  uint8_t chosen_number_ = 1;
  uint16_t error_notify_ = 0;
  Bytes error_data_;
  bool retried_group_ = false;
  bool temporary_failure_ = false;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_EXCHANGE_H_
