#ifndef STRAIT_AGENT_IKE_ENGINE_H_
#define STRAIT_AGENT_IKE_ENGINE_H_

// The sans-IO IKEv2 engine (RFC 7296): one IKE SA with one peer, driven by
// datagrams, timer ticks and Initiate(); its outputs (datagrams to send and
// events) collect in an outbox that the caller drains. No sockets, no
// threads, no wall clock: the clock and the random source are injected, so
// two engines wired together in memory run deterministically.
//
// This slice covers IKE_SA_INIT + IKE_AUTH with PSK or certificate
// authentication and the first CHILD SA, as initiator or responder. Not a thread-safe object: the
// I/O loop that owns it calls it from one thread.

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/cert_auth.h"
#include "agent/ike/message.h"
#include "common/clock.h"
#include "common/secret.h"

namespace strait::ike {

// An IP address (4 or 16 bytes, network order) and UDP port.
struct Endpoint {
  Bytes address;
  uint16_t port = 500;
};
bool operator==(const Endpoint& a, const Endpoint& b);

// IKEv2 identification types (RFC 7296 §3.5) that the engine accepts.
enum class IdentityType : uint8_t {
  kIpv4 = 1,
  kFqdn = 2,
  kRfc822 = 3,
  kIpv6 = 5,
  kDerAsn1Dn = 9,
};

struct Identity {
  IdentityType type = IdentityType::kFqdn;
  Bytes value;  // The ID data as sent: 4/16 address bytes, the name, or DER.
};
// Same type and value; DNs compare as names (X509_NAME_cmp), not bytes.
bool operator==(const Identity& a, const Identity& b);
// "10.0.0.1", "moon.example.com", "C=CH, O=Strait, CN=moon".
std::string IdentityText(const Identity& id);

// One proposal: IANA transform IDs. For IKE all fields count; for ESP
// `prf_id` is ignored and `dh_group` (PFS) is not used by IKE_AUTH, which
// never runs a key exchange for its child SA.
struct AlgorithmProposal {
  uint16_t encr_id = 0;
  int key_bits = 0;       // The Key Length attribute; 0 = none.
  uint16_t integ_id = 0;  // 0 for AEAD ciphers.
  uint16_t prf_id = 0;
  uint16_t dh_group = 0;
};
bool operator==(const AlgorithmProposal& a, const AlgorithmProposal& b);

// A traffic selector (RFC 7296 §3.13.1): an address range of one family,
// an IP protocol (0 = any) and a port range.
struct TrafficSelectorRange {
  Bytes start_address;  // 4 or 16 bytes; start and end of the same family.
  Bytes end_address;
  uint8_t ip_protocol = 0;
  uint16_t start_port = 0;
  uint16_t end_port = 0xffff;
};
bool operator==(const TrafficSelectorRange& a, const TrafficSelectorRange& b);

struct EngineConfig {
  Endpoint local;
  Endpoint remote;
  Identity local_id;
  Identity remote_id;
  // Authentication: a PSK, or certificates (both of `credentials` and
  // `trust_anchors`; `psk` is then unused). The peer must use the same kind.
  Secret psk;
  std::shared_ptr<const LocalCredentials> credentials;
  std::shared_ptr<const TrustAnchors> trust_anchors;
  // NAT traversal (RFC 7296 §2.23): when IKE_SA_INIT detects a NAT, the
  // initiator moves to this port for everything after it (the I/O layer
  // sends datagrams addressed to it with the non-ESP marker), and the CHILD
  // SA uses UDP encapsulation. 0: never move.
  uint16_t nat_t_port = 4500;
  // Act as if behind a NAT (natTraversal: force): our NAT_DETECTION_SOURCE_IP
  // cannot match, so both ends move to UDP 4500 and encapsulate ESP.
  bool force_encapsulation = false;
  // Behind a NAT, a one-byte keepalive (RFC 3948 §2.3) goes out when
  // nothing was sent for this long, to keep the NAT mapping; 0: none.
  absl::Duration nat_keepalive_interval = absl::Seconds(20);
  // Initiator: send INITIAL_CONTACT (RFC 7296 §2.4), telling the peer that
  // we hold no other IKE SA with it, so it may drop any it still has.
  bool initial_contact = true;
  // In order of preference; the responder picks the first local proposal
  // that the initiator offers, whatever the initiator's order.
  std::vector<AlgorithmProposal> ike_proposals;
  std::vector<AlgorithmProposal> esp_proposals;
  std::vector<TrafficSelectorRange> local_ts;
  std::vector<TrafficSelectorRange> remote_ts;
  // How long to wait after each transmission of a request before sending it
  // again; after the last wait the peer is declared not responding. A
  // responder gives up on a half-open SA after the sum of these.
  std::vector<absl::Duration> retransmit_timeouts = {
      absl::Seconds(1), absl::Seconds(2), absl::Seconds(4), absl::Seconds(8), absl::Seconds(16)};
  // Dead peer detection (RFC 7296 §2.4): once established, when nothing came
  // from the peer for `dpd_interval`, an empty INFORMATIONAL asks whether it
  // is alive; requests of an established SA (probes, deletes) are sent
  // again on the retransmit schedule (its last step repeating) until
  // `dpd_timeout` has passed, and then the peer is dead (PEER_DEAD). Zero
  // interval: no probes.
  absl::Duration dpd_interval = absl::ZeroDuration();
  absl::Duration dpd_timeout = absl::Seconds(150);
  // CHILD SA rekey (RFC 7296 §1.3.3): this long after a CHILD SA is
  // installed, less a random part of `rekey_fuzz`, this end replaces it
  // with CREATE_CHILD_SA (new SA installed before the old one is deleted).
  // Zero: only when RekeyChild() is called (or the peer rekeys).
  absl::Duration child_rekey_after = absl::ZeroDuration();
  absl::Duration rekey_fuzz = absl::ZeroDuration();
  // How long, after we answered the peer's CHILD SA rekey, its new SA's
  // outbound half waits for the peer's DELETE of the old SA before it is
  // activated anyway (ChildSaSink::ActivateChildSaOutbound). Long enough
  // for a lost response to be retransmitted: the old SA carries the
  // traffic meanwhile. Zero: no deferral, both halves at once.
  absl::Duration deferred_outbound_timeout = absl::Seconds(3);
  // When the peer deletes the last CHILD SA and keeps the IKE SA (strongSwan
  // on `swanctl --terminate --child`, or after the SA's hard expiry), this
  // end creates a new one in the IKE SA with CREATE_CHILD_SA (no REKEY_SA)
  // this long afterwards, unless the peer has made one by then. Zero: it
  // waits for the peer to do so.
  absl::Duration child_recreate_delay = absl::ZeroDuration();
  // IKE SA rekey (RFC 7296 §1.3.2): this long after the IKE SA was made
  // (or last rekeyed), less a random part of `ike_rekey_fuzz`, this end
  // replaces it with CREATE_CHILD_SA; the CHILD SAs move to the new IKE SA
  // as they are. Zero: only when RekeyIke() is called (or the peer rekeys).
  absl::Duration ike_rekey_after = absl::ZeroDuration();
  absl::Duration ike_rekey_fuzz = absl::ZeroDuration();
  // IKE fragmentation (RFC 7383): IKEV2_FRAGMENTATION_SUPPORTED is sent in
  // IKE_SA_INIT, and once both ends sent it, an encrypted message (IKE_AUTH
  // and later) that would make an IP datagram larger than `fragment_size`
  // bytes (IP and UDP headers included; strongSwan's default 1280) goes out
  // as Encrypted Fragment payloads. Fragments are accepted whenever
  // negotiated, unfragmented messages always.
  bool fragmentation = true;
  size_t fragment_size = 1280;
};

// Randomness for SPIs and nonces. DH private keys come from OpenSSL's DRBG
// (crypto_dh.h) and SK IVs likewise (crypto_sk.h).
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual void Fill(absl::Span<uint8_t> out) = 0;
};
using RandomSourcePtr = std::unique_ptr<RandomSource>;

// RAND_bytes from OpenSSL.
RandomSourcePtr CreateOpenSslRandomSource();

// A negotiated ESP SA pair, keys by direction as seen from this engine.
struct ChildSa {
  uint32_t inbound_spi = 0;  // Chosen by us, what the peer sends with.
  uint32_t outbound_spi = 0;
  AlgorithmProposal algorithms;
  Secret outbound_encr_key;  // Key | salt for AES-GCM.
  Secret outbound_integ_key;
  Secret inbound_encr_key;
  Secret inbound_integ_key;
  std::vector<TrafficSelectorRange> local_ts;  // Negotiated (narrowed).
  std::vector<TrafficSelectorRange> remote_ts;
  // ESP in UDP (RFC 3948) because of a NAT, between these ports.
  bool udp_encapsulation = false;
  uint16_t local_port = 0;
  uint16_t remote_port = 0;
  // Make-before-break at a rekey we answered (RFC 7296 §2.8): the peer
  // cannot decrypt the new SA before our response reaches it, so
  // InstallChildSa() installs the inbound SA and the policies only, and
  // traffic keeps leaving on the old SA's outbound half; the outbound SA
  // follows in ActivateChildSaOutbound(). Our own new SA of a rekey
  // collision that we lost (§2.8.1) comes so too, and is deleted without
  // ever sending.
  bool outbound_deferred = false;
};

// Where established CHILD SAs go: the dataplane, through the agent.
class ChildSaSink {
 public:
  virtual ~ChildSaSink() = default;
  // An error fails the negotiation locally (the SA stays unusable).
  // With `sa.outbound_deferred`, only its inbound half and its policies.
  virtual absl::Status InstallChildSa(const ChildSa& sa) = 0;
  // The outbound half of an SA installed with `outbound_deferred` (the flag
  // now cleared; encapsulation ports as they are now): the engine calls it
  // when the peer deletes the SA it replaces (so the peer has it), after
  // `deferred_outbound_timeout` if that DELETE does not come, or when no
  // other SA with an outbound half is left. An SA may also be removed
  // without ever being activated (a redundant SA of a rekey collision, the
  // IKE SA's end). Errors are logged and counted; the old SA carries on.
  // Sinks that install both halves in InstallChildSa() anyway may ignore
  // it.
  virtual absl::Status ActivateChildSaOutbound(const ChildSa& sa) {
    (void)sa;
    return absl::OkStatus();
  }
  // The CHILD SA is gone (rekeyed and replaced, or deleted by the peer);
  // its SPIs name it. Errors are logged, nothing else.
  virtual absl::Status RemoveChildSa(const ChildSa& sa) = 0;
  // The peer's NAT mapping moved (RFC 7296 §2.23): the UDP-encapsulated
  // SA (its remote_port already updated) now reaches the peer at `peer`,
  // whose address may have changed too. Errors are logged, nothing else.
  // Sinks without encapsulated SAs may ignore it.
  virtual absl::Status MoveChildSa(const ChildSa& sa, const Endpoint& peer) {
    (void)sa;
    (void)peer;
    return absl::OkStatus();
  }
};

enum class FailureReason {
  kNoProposalChosen,
  kAuthenticationFailed,
  kPeerIdentityMismatch,
  kTsUnacceptable,
  kPeerNotResponding,
  kPeerDead,       // An established peer stopped answering (DPD).
  kDeletedByPeer,  // The peer deleted the IKE SA.
  kInternalError,  // Crypto or dataplane failure on our side.
};
const char* FailureReasonName(FailureReason reason);

struct EngineEvent {
  // kDeleted: the IKE SA (and its CHILD SA) is gone, deleted by us
  // (Delete()) or by the peer (`by_peer`); kChildSaDeleted: the peer
  // deleted the CHILD SA (`child_inbound_spi`), the IKE SA stays.
  // kChildSaRekeyFailed: our CREATE_CHILD_SA failed (`reason`); the old
  // CHILD SA stays and the rekey is tried again later.
  // kIkeSaRekeyed: a rekey (ours or the peer's) replaced the IKE SA: the
  // event's SPIs, role and algorithms are the new SA's, `old_ike_spi_*` the
  // replaced one's (whose SPIs keep working until it is deleted); the
  // CHILD SAs are unchanged. kIkeSaRekeyFailed: our IKE SA rekey failed
  // (`reason`); the IKE SA stays and the rekey is tried again later.
  enum class Kind {
    kIkeSaEstablished,
    kChildSaEstablished,
    kFailed,
    kDeleted,
    kChildSaDeleted,
    kChildSaRekeyFailed,
    kIkeSaRekeyed,
    kIkeSaRekeyFailed,
  };
  Kind kind = Kind::kFailed;
  // kIkeSaEstablished and kChildSaEstablished.
  uint64_t ike_spi_i = 0;
  uint64_t ike_spi_r = 0;
  bool initiator = false;
  AlgorithmProposal algorithms;  // IKE or ESP, by kind.
  // kIkeSaEstablished: NAT detection (RFC 7296 §2.23).
  bool local_behind_nat = false;
  bool remote_behind_nat = false;
  // kIkeSaEstablished: the peer's authenticated identity and how it
  // authenticated ("psk", "ecdsa-with-SHA384", "sha256WithRSAEncryption",
  // "rsa-pkcs1-sha1", ...), and whether it sent INITIAL_CONTACT.
  std::string remote_identity;
  std::string auth_method;
  bool initial_contact = false;
  // kChildSaEstablished.
  uint32_t child_inbound_spi = 0;
  uint32_t child_outbound_spi = 0;
  // kChildSaEstablished by a rekey: the inbound SPI of the SA it replaces.
  bool rekeyed = false;
  uint32_t replaced_inbound_spi = 0;
  std::vector<TrafficSelectorRange> local_ts;
  std::vector<TrafficSelectorRange> remote_ts;
  // kFailed.
  FailureReason reason = FailureReason::kInternalError;
  std::string detail;
  // kDeleted.
  bool by_peer = false;
  // kIkeSaRekeyed.
  uint64_t old_ike_spi_i = 0;
  uint64_t old_ike_spi_r = 0;
};

struct OutboundDatagram {
  Bytes data;
  Endpoint to;
  // A NAT-keepalive (RFC 3948 §2.3): the single byte 0xFF, sent from the
  // NAT-T port without the non-ESP marker.
  bool keepalive = false;
};

// What the engine dropped or repeated, for metrics. Every datagram it did
// not act on is counted once.
struct EngineCounters {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;
  uint64_t malformed_dropped = 0;       // Failed to decode or Verify().
  uint64_t undecryptable_dropped = 0;   // SK payload failed to open.
  uint64_t unexpected_dropped = 0;      // Wrong SPI, exchange, state or source.
  uint64_t stale_dropped = 0;           // Old message ID, or a changed retransmit.
  uint64_t retransmits_sent = 0;        // Our requests sent again on timeout.
  uint64_t responses_resent = 0;        // Cached responses to retransmits.
  uint64_t dpd_probes_sent = 0;         // Liveness checks (not their retransmits).
  uint64_t deletes_sent = 0;            // DELETE requests for the IKE SA.
  uint64_t deletes_received = 0;        // DELETE requests from the peer (IKE or CHILD).
  uint64_t child_rekeys_initiated = 0;  // Our CREATE_CHILD_SA rekeys that completed.
  uint64_t child_rekeys_answered = 0;   // The peer's that we completed.
  uint64_t child_rekey_failures = 0;
  // Outbound halves of CHILD SAs of the peer's rekeys activated without
  // its DELETE of the old SA (deferred_outbound_timeout passed), and those
  // the sink failed to install.
  uint64_t deferred_outbound_timeouts = 0;
  uint64_t outbound_activation_failures = 0;
  uint64_t ike_rekeys_initiated = 0;  // Our IKE SA rekeys that completed (and survived).
  uint64_t ike_rekeys_answered = 0;   // The peer's that we completed (and survived).
  uint64_t ike_rekey_failures = 0;
  uint64_t old_ike_sas_expired = 0;  // Replaced IKE SAs dropped without a DELETE exchange.
  // Both ends rekeyed the same SA (RFC 7296 §2.8.1, §2.8.2), CHILD or IKE.
  uint64_t rekey_collisions = 0;
  uint64_t nat_keepalives_sent = 0;
  uint64_t peer_moves = 0;  // The peer's NAT mapping changed (RFC 7296 §2.23).
  // RFC 7383 fragmentation: SKF datagrams sent (retransmissions included),
  // authenticated fragments received, messages reassembled from them, and
  // authenticated fragments dropped by the reassembly (duplicates, fewer
  // fragments than before, over the limits, timed out).
  uint64_t fragments_sent = 0;
  uint64_t fragments_received = 0;
  uint64_t messages_reassembled = 0;
  uint64_t reassembly_dropped = 0;

  // retransmits_sent by the request's exchange: [exchange type -
  // kExchangeIkeSaInit] for IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA and
  // INFORMATIONAL.
  std::array<uint64_t, 4> retransmits_by_exchange = {};
};

class Engine {
 public:
  enum class State {
    kIdle,
    kInitSent,
    kAuthSent,
    kAuthWait,
    kEstablished,
    kFailed,
    kDeleting,  // Our DELETE is out.
    kDeleted,
  };

  virtual ~Engine() = default;

  // Starts IKE_SA_INIT as initiator. FailedPrecondition unless idle.
  virtual absl::Status Initiate() = 0;
  // Deletes the IKE SA (tunnel removed, agent stopping): an INFORMATIONAL
  // DELETE when established, then kDeleted once answered or given up on.
  // A negotiation in progress just ends (kDeleted at once).
  virtual void Delete() = 0;
  // Rekeys the CHILD SA now (a kernel soft-expire, say), or as soon as the
  // request in flight is answered. FailedPrecondition unless established.
  virtual absl::Status RekeyChild() = 0;
  // Deletes the newest CHILD SA with an INFORMATIONAL DELETE and keeps the
  // IKE SA (what strongSwan does on a CHILD SA's hard expiry or `swanctl
  // --terminate --child`). FailedPrecondition unless established with one.
  virtual absl::Status DeleteChild() = 0;
  // Rekeys the IKE SA now, or as soon as the request in flight is
  // answered. FailedPrecondition unless established.
  virtual absl::Status RekeyIke() = 0;
  // A UDP payload received from `from` (non-ESP marker already stripped).
  virtual void HandleDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from) = 0;
  // Runs timers due at `now` (retransmission, give-up).
  virtual void Tick(absl::Time now) = 0;
  // When Tick() next has something to do, if anything.
  virtual std::optional<absl::Time> NextDeadline() const = 0;

  // The outbox.
  virtual std::vector<OutboundDatagram> TakeDatagrams() = 0;
  virtual std::vector<EngineEvent> TakeEvents() = 0;

  virtual State state() const = 0;
  virtual const EngineCounters& counters() const = 0;
  // When this end rekeys the CHILD SA next, if it is scheduled.
  virtual std::optional<absl::Time> next_child_rekey() const = 0;
  // When this end rekeys the IKE SA next, if it is scheduled.
  virtual std::optional<absl::Time> next_ike_rekey() const = 0;
  // The current IKE SA's SPIs (initiator's, responder's; 0 while unknown).
  virtual std::pair<uint64_t, uint64_t> ike_spis() const = 0;
  // Our SPIs (the dispatch keys) of the current IKE SA, of the ones a
  // rekey replaced that are not deleted yet (or that the peer deleted and
  // that still answer its retransmitted DELETE for a while), and of the
  // peer's new SA in a rekey collision not settled yet. The current one
  // first. Empty before we chose one.
  virtual std::vector<uint64_t> local_spis() const = 0;
  // Replaced IKE SAs still kept (until their DELETE exchange or timeout).
  virtual size_t old_ike_sa_count() const = 0;
};
using EnginePtr = std::unique_ptr<Engine>;

// The engine itself comes from CreateEngine() in engine_impl.h.

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_ENGINE_H_
