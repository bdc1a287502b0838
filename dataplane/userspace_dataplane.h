#ifndef STRAIT_DATAPLANE_USERSPACE_DATAPLANE_H_
#define STRAIT_DATAPLANE_USERSPACE_DATAPLANE_H_

// The userspace ESP backend of the Dataplane, for kernels without ESP
// (containers, sandboxes): tunnel-mode ESP in UDP (RFC 4303, RFC 3948)
// between a TUN device and the IKE runner's UDP 4500 socket, on the wire
// exactly as the kernel's (and strongSwan libipsec's) ESP.
//
//   outbound: device → ParseIpPacket → best "out" policy → its SA (reqid,
//     tunnel addresses; the newest live one) → EspCodec → DatagramSocket.
//   inbound:  HandleEspDatagram → SA by SPI → replay check → EspCodec
//     (ICV, padding) → replay update → counters → selector check of the
//     inner packet against the "in"/"fwd" policies → device.
//
// SAs and policies live in memory. Lookups take a reader lock; each SA
// has its own lock for its codec, replay window and counters, so packets
// of different SAs are processed in parallel.
//
// What a peer or the network sends is dropped and counted, never fatal:
// per SA (UserspaceSaStats) when the SA is known, otherwise in
// UserspaceDataplaneStats; each kind of drop is logged once.
//
// Differences from the kernel backend, by design:
//   * Only UDP-encapsulated SAs (RFC 3948): AddSa refuses an SA without
//     `encapsulation`, so the IKE side must force NAT-T (as strongSwan does
//     for kernel-libipsec).
//   * Policies with an if_id or a non-zero mark never match device
//     traffic (it carries no mark); they are stored and listed.
//   * Policy priority 0 means kDefaultPolicyPriority; among equal
//     priorities the more specific selector wins, then the older policy.
//   * Byte counters and byte lifetimes count inner packet bytes.
//
// MTU: the device's MTU must leave room for the outer IP and UDP headers
// and the ESP overhead so that full-size TCP (whose MSS follows the
// device MTU) is never fragmented on the path; see InnerMtuForPath() in
// esp_codec.h (1500-byte path: 1406 fits every algorithm over IPv4, 1390
// over IPv6; TunOptions defaults to 1390). Larger inner packets are still
// sent: the kernel fragments the outer UDP datagram.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/clock.h"
#include "dataplane/dataplane.h"
#include "dataplane/esp_codec.h"
#include "dataplane/ip_packet.h"
#include "dataplane/packet_io.h"
#include "dataplane/replay_window.h"

namespace strait::dataplane {

inline constexpr uint32_t kDefaultPolicyPriority = 1u << 20;

struct UserspaceDataplaneOptions {
  // Time for lifetimes and acquire pacing; RealClock when null.
  Clock* clock = nullptr;
  // CBC IVs and GCM IV masks; RAND_bytes when empty.
  RandomBytes random;
  // How often the timer thread checks time lifetimes.
  absl::Duration timer_interval = absl::Seconds(1);
  // At most one acquire event per policy in this interval (the kernel's
  // larval SA lives 30 s).
  absl::Duration acquire_interval = absl::Seconds(30);
  // When set, out policies route their destination prefixes into the
  // device (reference-counted per prefix). Must outlive the dataplane; it
  // may be the device itself (TunDevice is both).
  RouteTable* routes = nullptr;
  // How long the device thread waits in one Read() before it looks at the
  // stop flag.
  absl::Duration device_poll = absl::Milliseconds(200);
};

// Per-SA counters beyond the interface's.
struct UserspaceSaStats {
  SaCounters counters;
  uint64_t malformed = 0;            // Too short, bad trailer or bad inner packet.
  uint64_t selector_mismatches = 0;  // Inner packet outside the SA's in/fwd policy.
  uint64_t sequence_overflows = 0;   // Outbound packets with no number left.
  uint64_t dummy_packets = 0;        // Next header 59 (RFC 4303 §2.6), dropped.
};

// Drops that belong to no SA.
struct UserspaceDataplaneStats {
  uint64_t invalid_inner = 0;    // From the device, not an IPv4/IPv6 packet.
  uint64_t no_policy = 0;        // From the device, no out policy matched.
  uint64_t no_sa = 0;            // An out policy matched but has no SA.
  uint64_t acquires = 0;         // Acquire events sent for those.
  uint64_t unknown_spi = 0;      // ESP for no installed SA.
  uint64_t not_esp = 0;          // Runts, zero SPI (IKE), NAT keepalives.
  uint64_t send_errors = 0;      // DatagramSocket::Send failed.
  uint64_t device_errors = 0;    // PacketDevice Read/Write failed.
  uint64_t internal_errors = 0;  // OpenSSL refused to encrypt.
};

class UserspaceDataplane : public Dataplane {
 public:
  // `device` (owned) carries inner packets; `socket` sends ESP-in-UDP and
  // must outlive the dataplane. InvalidArgument for unusable options.
  // Threads only start with Start().
  static absl::StatusOr<std::unique_ptr<UserspaceDataplane>> Create(
      PacketDevicePtr device, DatagramSocket& socket, UserspaceDataplaneOptions options = {});
  ~UserspaceDataplane() override;  // Stop()
  UserspaceDataplane(const UserspaceDataplane&) = delete;
  UserspaceDataplane& operator=(const UserspaceDataplane&) = delete;

  // Starts the device thread (device → encrypt → send) and the timer
  // thread (time lifetimes, event delivery).
  void Start();
  // Stops and joins both; idempotent.
  void Stop();

  // Packet entry points; thread-safe.
  //
  // One inner packet from the device: encrypted and sent, or dropped and
  // counted. The device thread calls it; so may tests.
  void HandleInnerPacket(absl::Span<const uint8_t> packet);
  // One received ESP-in-UDP datagram payload, exactly as received (first
  // four bytes: the SPI, non-zero; the caller strips nothing). `local` is
  // the address it arrived on: the SA is found by (local, SPI) as in the
  // kernel; when empty, by SPI and the SA's source == from.address.
  void HandleEspDatagram(absl::Span<const uint8_t> payload, const UdpEndpoint& from,
                         const Address& local = {});

  // Checks time lifetimes against the clock and delivers pending events on
  // the calling thread. The timer thread calls it every timer_interval;
  // tests call it after moving a FakeClock.
  void CheckLifetimes();

  absl::StatusOr<UserspaceSaStats> GetSaStats(const SaId& id);
  UserspaceDataplaneStats stats() const;

  // Moves an SA's outbound sequence counter (to test ESN rollover and
  // counter exhaustion without sending 2^32 packets).
  absl::Status SetNextSequenceForTesting(const SaId& id, uint64_t next);

  // Dataplane
  std::string name() const override { return "userspace"; }
  absl::Status AddSa(const SaConfig& sa) override;
  absl::Status UpdateSa(const SaConfig& sa) override;
  absl::Status DeleteSa(const SaId& id) override;
  absl::Status AddPolicy(const PolicyConfig& policy) override;
  absl::Status AddPolicies(const std::vector<PolicyConfig>& policies) override;
  absl::Status DeletePolicy(const Selector& selector, Direction direction, uint32_t mark = 0,
                            uint32_t mark_mask = 0, uint32_t if_id = 0) override;
  absl::StatusOr<SaCounters> GetCounters(const SaId& id) override;
  absl::StatusOr<InstalledState> List() override;
  void Subscribe(std::function<void(const DataplaneEvent&)> callback) override;

 private:
  struct SaEntry;
  struct PolicyEntry;
  using SaEntryPtr = std::shared_ptr<SaEntry>;
  using PolicyEntryPtr = std::shared_ptr<PolicyEntry>;
  enum class Drop : int;

  UserspaceDataplane(PacketDevicePtr device, DatagramSocket& socket,
                     UserspaceDataplaneOptions options);

  // Lookups under state_mu_ (reader).
  PolicyEntryPtr FindOutPolicy(const PacketFlow& flow) const ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  SaEntryPtr FindOutSa(const PolicyConfig& policy) const ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  SaEntryPtr FindInSa(uint32_t spi, const UdpEndpoint& from, const Address& local) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  bool InboundAllowed(const PacketFlow& flow, const SaConfig& sa) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);

  // Takes `entry` out of sas_ and the indexes.
  void Unindex(const SaEntryPtr& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Removes `entry` if it is still installed (hard expiry).
  void RemoveExpired(const SaEntryPtr& entry);
  void MaybeAcquire(const PolicyEntryPtr& policy, const PacketFlow& flow);
  void Emit(DataplaneEvent event);
  void DeliverEvents();
  void CountDrop(Drop drop);
  void DeviceLoop();
  void TimerLoop();

  const PacketDevicePtr device_;
  DatagramSocket& socket_;
  const UserspaceDataplaneOptions options_;
  Clock& clock_;

  // Serialises the control plane (AddSa, AddPolicies, ...), so that route
  // changes happen outside state_mu_ without racing each other.
  absl::Mutex control_mu_ ABSL_ACQUIRED_BEFORE(state_mu_);
  std::map<std::pair<Address, uint8_t>, int> route_refs_ ABSL_GUARDED_BY(control_mu_);

  mutable absl::Mutex state_mu_;
  std::map<SaId, SaEntryPtr> sas_ ABSL_GUARDED_BY(state_mu_);
  std::unordered_map<uint32_t, std::vector<SaEntryPtr>> sas_by_spi_ ABSL_GUARDED_BY(state_mu_);
  // By (source, destination): the candidates of an out policy's template.
  std::map<std::pair<Address, Address>, std::vector<SaEntryPtr>> sas_by_tunnel_
      ABSL_GUARDED_BY(state_mu_);
  // Sorted by (priority, specificity, age): the first match wins.
  std::vector<PolicyEntryPtr> policies_ ABSL_GUARDED_BY(state_mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(state_mu_) = 0;

  absl::Mutex events_mu_;
  std::deque<DataplaneEvent> events_ ABSL_GUARDED_BY(events_mu_);
  bool stopping_ ABSL_GUARDED_BY(events_mu_) = false;
  absl::Mutex deliver_mu_;  // One delivery at a time, in order.
  absl::Mutex subscriber_mu_;
  std::function<void(const DataplaneEvent&)> subscriber_ ABSL_GUARDED_BY(subscriber_mu_);

  std::atomic<bool> stop_{false};
  std::thread device_thread_;
  std::thread timer_thread_;

  // UserspaceDataplaneStats (and per-SA kinds, for logging), and which
  // kinds were logged already.
  static constexpr int kDropKinds = 16;
  std::atomic<uint64_t> drops_[kDropKinds] = {};
  std::atomic<bool> logged_[kDropKinds] = {};
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_USERSPACE_DATAPLANE_H_
