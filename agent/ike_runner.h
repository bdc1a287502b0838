#ifndef STRAIT_AGENT_IKE_RUNNER_H_
#define STRAIT_AGENT_IKE_RUNNER_H_

// Runs IKEv2 for the applied snapshot (strait-agent --enable-ike).
//
// One thread runs an event loop over every socket: each local address that
// tunnels use gets one UDP socket on the IKE port and one on the NAT-T port
// (IKE behind the non-ESP marker), IPv4 or IPv6, shared by all its tunnels.
// Each IKE SA is a sans-IO engine; the loop waits in poll() for datagrams,
// for the engines' next deadlines, and for an eventfd that Reconcile(),
// Stop() and dataplane events use to wake it.
//
// Dispatch: a datagram goes to the IKE SA whose SPI (ours: the initiator
// SPI of SAs we initiated, the responder SPI of the others) it carries. A
// new IKE_SA_INIT request (responder SPI 0) goes to the tunnel whose local
// address is the socket's and whose remote address is the sender's, which
// starts a responder engine for it; that SA stays half-open until it is
// established and then replaces the tunnel's previous IKE SA (the peer
// restarted or reauthenticates). Anything else is dropped and counted
// (strait_agent_ike_dropped_total{reason="no_tunnel"}). Before a responder
// starts, IkeAdmission may answer with a stateless N(COOKIE) or drop the
// request (cookies under load, per-source and global half-open limits).
//
// Initiating tunnels (start_action START; of a node-to-node tunnel, the end
// whose node name sorts first) start an initiator engine, and another after
// a failure, with exponential backoff. Established CHILD SAs go into the
// dataplane (child_sa_install.h); a replaced or removed IKE SA takes its
// CHILD SA's state out again. A CHILD SA's soft expiry makes an initiator
// reauthenticate (a new IKE SA that replaces the old one, until
// CREATE_CHILD_SA rekeying lands); a hard expiry ends the IKE SA, keeping
// the policies so that traffic is dropped, not sent in clear, until a new
// one is up.
//
// Each tunnel end's state goes to the applier as its reported status:
// CONNECTING while negotiating, ESTABLISHED with the IKE and CHILD SA,
// CONNECTING with reason CHILD_SA_DELETED while the IKE SA has no CHILD SA
// (the peer deleted it; an initiating end creates a new one after
// kChildRecreateDelay), FAILED with the engine's failure reason (kept while
// retrying), ERROR when
// the tunnel's local configuration is unusable.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/applier_impl.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike_admission.h"
#include "agent/metrics.h"
#include "common/clock.h"
#include "dataplane/dataplane.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::agent {

// ERROR reasons.
inline constexpr char kInvalidConfigReason[] = "INVALID_CONFIG";
inline constexpr char kSocketErrorReason[] = "SOCKET_ERROR";
// An earlier tunnel has the same local and remote addresses: a new IKE SA
// from that peer could not be told apart until IKE_AUTH picks the tunnel.
inline constexpr char kPeerAddressInUseReason[] = "PEER_ADDRESS_IN_USE";

// CONNECTING reason: the peer deleted the CHILD SA and kept the IKE SA.
inline constexpr char kChildSaDeletedReason[] = "CHILD_SA_DELETED";
// How long an initiating tunnel waits for the peer to create a new CHILD
// SA in place of one it deleted before creating it itself.
inline constexpr absl::Duration kChildRecreateDelay = absl::Seconds(2);

struct IkeRunnerOptions {
  // UDP ports of IKE and of NAT-T (RFC 3948), ours and the peers'; tests
  // pick others. A nat_t_port of 0 binds no NAT-T socket.
  uint16_t ike_port = 500;
  uint16_t nat_t_port = 4500;
  // After a failed negotiation an initiator waits this long, doubled after
  // each further failure up to max_initiator_backoff (with jitter), before
  // it initiates again.
  absl::Duration initiator_backoff = absl::Seconds(5);
  absl::Duration max_initiator_backoff = absl::Minutes(5);
  // How often to try again to bind a local address that failed.
  absl::Duration bind_retry = absl::Seconds(5);
  // IKE fragmentation (RFC 7383): the largest IP datagram an encrypted IKE
  // message may make before it is fragmented; 0: fragmentation off.
  size_t fragment_size = 1280;
  // The engines' retransmission schedule (EngineConfig); empty: theirs.
  std::vector<absl::Duration> retransmit_timeouts;
  // Half-open IKE SAs a tunnel keeps as responder; a new one beyond this
  // replaces the oldest, and only with a valid COOKIE (ike_admission.h).
  size_t max_half_open_per_tunnel = 4;
  // Cookie threshold, per-source and global limits of half-open IKE SAs
  // (--ike-cookie-threshold, --ike-half-open-per-source,
  // --ike-max-half-open).
  IkeAdmissionOptions admission;
  // This node's certificate and key for tunnels with certificate auth that
  // name none (--ike-certificate, --ike-private-key).
  ike::CertificateDefaults certificates;
  // ESP-in-UDP that arrives on a NAT-T socket (anything but IKE and
  // keepalives), as received (SPI first), with its sender and the local
  // address: for the userspace dataplane. Unset: dropped. Called on the
  // runner's thread; must not block.
  std::function<void(absl::Span<const uint8_t> payload, const ike::Endpoint& from,
                     const ike::Bytes& local)>
      esp_handler;
  // Every tunnel acts as natTraversal: force (the userspace dataplane only
  // speaks ESP in UDP).
  bool force_encapsulation = false;
  // Sets UDP_ENCAP_ESPINUDP on the NAT-T sockets so that the kernel
  // decapsulates ESP in UDP (the XFRM dataplane).
  bool kernel_udp_encapsulation = false;
};

class IkeRunner {
 public:
  // Starts the event loop. `node` is this agent's node name; `applier`
  // receives the tunnels' status; `dataplane` takes the CHILD SAs. They,
  // `clock` and `metrics` must outlive the runner. Internal when the loop's
  // eventfd cannot be made.
  static absl::StatusOr<std::unique_ptr<IkeRunner>> Create(std::string node, ApplierImpl& applier,
                                                           dataplane::Dataplane& dataplane,
                                                           Clock& clock, IkeMetrics& metrics,
                                                           IkeRunnerOptions options = {});
  ~IkeRunner();  // Stop()
  IkeRunner(const IkeRunner&) = delete;
  IkeRunner& operator=(const IkeRunner&) = delete;

  // Makes the running tunnels those of `snapshot`: starts new ones, stops
  // removed ones (taking their state out of the dataplane), restarts changed
  // ones. Returns once the loop has done so.
  void Reconcile(const strait::v1::Snapshot& snapshot);
  // Stops every tunnel, takes their state out of the dataplane and ends the
  // loop; Reconcile does nothing afterwards. Idempotent.
  void Stop();
  // Sends one ESP-in-UDP packet from the NAT-T socket of `local`'s address
  // (the userspace dataplane's way out). Thread-safe. FailedPrecondition
  // when no NAT-T socket is bound there.
  absl::Status SendEsp(absl::Span<const uint8_t> payload, const ike::Endpoint& local,
                       const ike::Endpoint& remote);

 private:
  class Loop;
  explicit IkeRunner(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_IKE_RUNNER_H_
