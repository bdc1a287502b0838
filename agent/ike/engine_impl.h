#ifndef STRAIT_AGENT_IKE_ENGINE_IMPL_H_
#define STRAIT_AGENT_IKE_ENGINE_IMPL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/engine.h"
#include "agent/ike/exchange.h"
#include "agent/ike/fragmentation.h"
#include "agent/ike/message.h"
#include "agent/ike/sa.h"
#include "common/clock.h"

namespace strait::ike {

// InvalidArgument when the config is unusable (no proposals, an
// unimplemented algorithm, empty PSK, no selectors, bad addresses). The
// clock, random source and sink must outlive the engine.
absl::StatusOr<EnginePtr> CreateEngine(EngineConfig config, Clock& clock, RandomSource& random,
                                       ChildSaSink& sink);

// One IKE SA with one peer, window size 1. The engine owns the wire: it
// encodes and SK-protects what the tasks build, decrypts what they process,
// keeps our outstanding request for retransmission and the last response
// for answering retransmitted requests.
class EngineImpl : public Engine {
 public:
  EngineImpl(EngineConfig config, Clock& clock, RandomSource& random, ChildSaSink& sink)
      : config_(std::move(config)),
        clock_(clock),
        random_(random),
        sink_(sink),
        remote_(config_.remote) {}

  // Engine
  absl::Status Initiate() override;
  void Delete() override;
  absl::Status RekeyChild() override;
  absl::Status DeleteChild() override;
  absl::Status RekeyIke() override;
  void HandleDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from) override;
  void Tick(absl::Time now) override;
  std::optional<absl::Time> NextDeadline() const override;
  std::vector<OutboundDatagram> TakeDatagrams() override { return std::exchange(datagrams_, {}); }
  std::vector<EngineEvent> TakeEvents() override { return std::exchange(events_, {}); }
  State state() const override { return state_; }
  const EngineCounters& counters() const override { return counters_; }
  std::optional<absl::Time> next_child_rekey() const override { return rekey_at_; }
  std::optional<absl::Time> next_ike_rekey() const override { return ike_rekey_at_; }
  std::pair<uint64_t, uint64_t> ike_spis() const override { return {sa_.spi_i, sa_.spi_r}; }
  std::vector<uint64_t> local_spis() const override;
  size_t old_ike_sa_count() const override { return old_sas_.size(); }

 private:
  IkeHeader Header(uint8_t exchange, uint32_t message_id, bool response) const {
    IkeHeader h;
    h.spi_i = sa_.spi_i;
    h.spi_r = sa_.spi_r;
    h.exchange_type = exchange;
    h.initiator = sa_.initiator;
    h.response = response;
    h.message_id = message_id;
    return h;
  }
  // Encodes (and for anything after IKE_SA_INIT encrypts) a plaintext
  // message, with the current IKE SA or `sa`.
  absl::StatusOr<Bytes> Encode(const Message& plain) { return Encode(sa_, plain); }
  absl::StatusOr<Bytes> Encode(const IkeSa& sa, const Message& plain);
  // Replaces an SK payload by its verified, decrypted contents.
  absl::StatusOr<Message> Decrypt(Message m, absl::Span<const uint8_t> datagram) {
    return Decrypt(sa_, std::move(m), datagram);
  }
  absl::StatusOr<Message> Decrypt(const IkeSa& sa, Message m, absl::Span<const uint8_t> datagram);
  void Send(Bytes bytes) { Send(std::move(bytes), remote_); }
  void Send(Bytes bytes, const Endpoint& to);
  // An encoded message as the datagrams it goes out in: itself, or its
  // RFC 7383 fragments when negotiated and too large for fragment_size.
  std::vector<Bytes> Datagrams(Bytes message);
  void SendAll(const std::vector<Bytes>& datagrams, const Endpoint& to);
  // An SKF datagram: authenticated, collected, and once complete handled
  // as the message it reassembles to.
  void HandleFragment(const Message& m, absl::Span<const uint8_t> datagram, const Endpoint& from);
  // What every authenticated message from the peer does (DPD, NAT mapping).
  void Authenticated(const IkeSa& sa);
  void SendRequest(Bytes bytes, uint8_t exchange, uint32_t message_id);
  void SendResponse(Bytes bytes, absl::Span<const uint8_t> request, uint32_t message_id);
  absl::Status SendInitRequest();
  absl::Status SendAuthRequest();
  void SendAuthenticationFailed();

  void HandleResponse(const Message& m, absl::Span<const uint8_t> datagram, const Endpoint& from);
  void HandleRequest(const Message& m, absl::Span<const uint8_t> datagram, const Endpoint& from);
  void HandleInitRequest(const Message& m, absl::Span<const uint8_t> datagram,
                         const Endpoint& from);
  void HandleAuthRequest(const Message& m, absl::Span<const uint8_t> datagram);
  // Requests of an established SA (INFORMATIONAL, CREATE_CHILD_SA).
  void HandleEstablishedRequest(const Message& m, absl::Span<const uint8_t> datagram);
  // Sends an INFORMATIONAL request of an established SA.
  void SendInformational(std::vector<Payload> payloads);
  void Deleted(bool by_peer, absl::string_view detail);
  // CHILD SA rekeying.
  void HandleRekeyRequest(const Message& plain, Message& response);
  void HandleRekeyResponse(const Message& plain);
  // Installs a rekeyed CHILD SA next to the one it replaces; with
  // `defer_outbound`, its inbound half only (ActivateOutbound() later).
  bool InstallRekeyed(RekeyChildTask& task, bool defer_outbound);
  // Installs the outbound half of a deferred CHILD SA.
  void ActivateOutbound(uint32_t inbound_spi, absl::string_view why);
  // A redundant SA of a rekey collision: its outbound half is never
  // activated, unless it is the last SA left.
  void ForgetDeferred(uint32_t inbound_spi);
  // RFC 7296 §2.8.1: whether the lowest of the four nonces of two crossing
  // rekeys is in our exchange.
  static bool LowestNonceIsOurs(const Bytes& our_ni, const Bytes& our_nr, const Bytes& their_ni,
                                const Bytes& their_nr);
  // Asks the peer to delete the CHILD SA with this inbound SPI of ours.
  void QueueChildDelete(uint32_t inbound_spi);
  void RemoveChild(uint32_t inbound_spi, bool by_peer);
  // Sends what waited for the request in flight.
  void SendQueued();
  void ScheduleRekey();

  // IKE SA rekeying (RFC 7296 §1.3.2, §2.8.2). A replaced IKE SA is kept
  // until deleted: by our DELETE over it (we made the surviving new SA),
  // or by the peer's (then at most `dpd_timeout` long); meanwhile it
  // answers retransmitted requests from its cache and refuses new
  // CREATE_CHILD_SAs with TEMPORARY_FAILURE (§2.25.2).
  struct OldIkeSa {
    IkeSa sa;
    absl::Time give_up;
    uint32_t peer_next_id = 0;
    bool have_cached = false;
    uint32_t cached_message_id = 0;
    Bytes cached_request;
    std::vector<Bytes> cached_response;  // Fragments, when it was fragmented.
    // Our DELETE over it, when we delete it.
    bool deleting = false;
    uint32_t delete_id = 0;
    Bytes delete_bytes;
    size_t transmissions = 0;
    absl::Time retransmit_at;
  };
  // Returns whether the peer's CREATE_CHILD_SA rekeying the IKE SA was
  // answered with a new SA that replaces ours once the response is out.
  void HandleIkeRekeyRequest(const Message& plain, Message& response);
  void HandleIkeRekeyResponse(const Message& plain);
  // `next` replaces the current IKE SA, which is kept as an OldIkeSa
  // (deleted by us when `delete_old`, else waiting for the peer's DELETE).
  void AdoptIkeSa(IkeSa next, bool delete_old);
  // Keeps `sa` as an old IKE SA; with `delete_it`, our DELETE goes out
  // over it (message ID `message_id`).
  void RetireIkeSa(IkeSa sa, bool delete_it, uint32_t message_id);
  void HandleOldSaMessage(OldIkeSa& old, const Message& m, absl::Span<const uint8_t> datagram,
                          const Endpoint& from);
  // The peer's DELETE of the new SA that it made in a rekey collision we
  // answered (it lost, RFC 7296 §2.8.2) may come before the response to
  // our own rekey: the SA is retired then, to be answered as an old one.
  bool PeerDeletesItsNewSa(const Message& m, absl::Span<const uint8_t> datagram);
  // An old SA the peer deleted: its DELETE was answered, and that answer
  // goes again to retransmissions of the DELETE (whose answer was lost)
  // for the retransmission window, instead of the peer retransmitting
  // into silence until its DPD timeout.
  void KeepDeletedSaAnswer(OldIkeSa& old);
  void TickOldSas(absl::Time now);
  void ScheduleIkeRekey();
  // Whether our own IKE SA rekey (or the peer's, which we answered while
  // ours was out) is under way: CHILD SA rekeys wait (TEMPORARY_FAILURE).
  bool IkeRekeyInProgress() const { return ike_rekey_task_ != nullptr || peer_ike_sa_.has_value(); }
  // Established behind a NAT (or forced to act so), with keepalives on.
  bool NatKeepaliveDue() const {
    return state_ == State::kEstablished && sa_.local_behind_nat &&
           config_.nat_keepalive_interval > absl::ZeroDuration();
  }

  void Fail(FailureReason reason, absl::string_view detail);
  // An event of `kind` with this IKE SA's SPIs and role filled in.
  EngineEvent NewEvent(EngineEvent::Kind kind) const;
  void ReportIkeSa();
  void InstallChild(ChildSa& child);
  // ESP in UDP when a NAT is in the way: from our NAT-T port to the peer's
  // port as it is now.
  void SetEncapsulation(ChildSa& child) const;

  EngineConfig config_;
  Clock& clock_;
  RandomSource& random_;
  ChildSaSink& sink_;

  // Where our requests go: the configured peer, on the NAT-T port after a
  // NAT was detected, and wherever its authenticated messages come from
  // once behind a NAT (its mapping may change).
  Endpoint remote_;
  // The source of the datagram being handled.
  Endpoint current_from_;

  State state_ = State::kIdle;
  IkeSa sa_;
  std::unique_ptr<IkeSaInitTask> init_task_;
  std::unique_ptr<IkeAuthTask> auth_task_;

  // Our outstanding request (initiator).
  bool pending_ = false;
  std::vector<Bytes> pending_datagrams_;  // One, or its fragments.
  uint8_t pending_exchange_ = 0;
  uint32_t pending_message_id_ = 0;
  size_t transmissions_ = 0;
  absl::Time retransmit_at_;

  // Requests of an established SA give up at this time (DPD timeout).
  std::optional<absl::Time> request_deadline_;
  // Message IDs once established: our next request, the peer's next.
  uint32_t next_request_id_ = 0;
  uint32_t peer_next_id_ = 0;
  // When the peer last sent us something that decrypted (DPD), and when
  // we last sent anything (NAT keepalives).
  absl::Time last_received_;
  absl::Time last_sent_;
  // Delete() while another request was out: send it after that one.
  bool delete_requested_ = false;

  // Installed CHILD SAs: one, two while a rekey replaces one.
  std::vector<ChildSa> children_;
  // Our CREATE_CHILD_SA in flight, and a rekey of the peer's of the same
  // SA that we answered meanwhile (a collision, RFC 7296 §2.8.1).
  std::unique_ptr<RekeyChildTask> rekey_task_;
  struct PeerRekey {
    Bytes ni, nr;
    uint32_t old_inbound_spi = 0;
    uint32_t new_inbound_spi = 0;
  };
  std::optional<PeerRekey> peer_rekey_;
  // Our last completed rekey: when the peer's rekey of the same old SA
  // arrives after it (the old SA not yet deleted), that is a collision too.
  std::optional<PeerRekey> last_rekey_;
  // CHILD SAs of the peer's rekeys whose outbound half waits (RFC 7296
  // §2.8: until the peer deleted the SA it replaces, or until `at`).
  struct DeferredOutbound {
    uint32_t inbound_spi = 0;
    uint32_t replaces = 0;  // The old SA's inbound SPI.
    absl::Time at;
  };
  std::vector<DeferredOutbound> deferred_outbound_;
  std::optional<absl::Time> rekey_at_;
  bool rekey_requested_ = false;
  // CHILD SA deletes waiting for the window, and the one in flight.
  std::vector<uint32_t> queued_child_deletes_;
  uint32_t child_delete_in_flight_ = 0;

  // Our IKE SA rekey in flight; the new SA of the peer's that we answered
  // meanwhile (a collision, RFC 7296 §2.8.2), settled when ours ends; the
  // new SA of the peer's that we answered otherwise, adopted once the
  // response is out.
  std::unique_ptr<RekeyIkeTask> ike_rekey_task_;
  std::optional<IkeSa> peer_ike_sa_;
  std::optional<IkeSa> adopt_after_response_;
  std::optional<absl::Time> ike_rekey_at_;
  bool ike_rekey_requested_ = false;
  std::vector<OldIkeSa> old_sas_;
  // Old IKE SAs the peer deleted, kept only to answer its retransmitted
  // DELETE from the cache until `until` (no keys kept).
  struct DeletedIkeSa {
    uint64_t spi_i = 0;
    uint64_t spi_r = 0;
    bool initiator = false;  // Our role in it.
    uint32_t message_id = 0;
    Bytes request;
    std::vector<Bytes> response;
    absl::Time until;
  };
  std::vector<DeletedIkeSa> deleted_sas_;

  // The last request we answered and our answer.
  bool have_cached_ = false;
  uint32_t cached_message_id_ = 0;
  Bytes cached_request_;  // Fragment 1 of a fragmented request.
  std::vector<Bytes> cached_response_;
  std::optional<absl::Time> half_open_deadline_;
  // Where the request being answered came from: responses go back to the
  // request's source address and port (RFC 7296 §2.11), e.g. UDP 4500 after
  // the peer floated for NAT traversal.
  Endpoint reply_to_;

  // RFC 7383: the peer's fragmented request and response being collected,
  // and whether the message being handled was reassembled from them
  // (already authenticated and decrypted).
  Reassembler request_fragments_;
  Reassembler response_fragments_;
  bool reassembled_ = false;

  std::vector<OutboundDatagram> datagrams_;
  std::vector<EngineEvent> events_;
  EngineCounters counters_;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_ENGINE_IMPL_H_
