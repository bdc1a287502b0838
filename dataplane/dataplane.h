#ifndef STRAIT_DATAPLANE_DATAPLANE_H_
#define STRAIT_DATAPLANE_DATAPLANE_H_

// The Dataplane: where negotiated ESP SAs and their policies go. The IKE
// side of the agent is its only client. Backends: the kernel's XFRM over
// netlink (xfrm_dataplane.h), userspace ESP over a TUN device, and a
// recording fake for tests (fake_dataplane.h).
//
// Addresses are raw network-order bytes (4 or 16); algorithms are IKEv2
// transform IDs (IANA), so callers never spell kernel algorithm names.
// Every implementation is thread-safe.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/secret.h"

namespace strait::dataplane {

using Address = std::vector<uint8_t>;  // 4 or 16 bytes, network order.

// Reqids tie an SA to its policies. Callers allocate them in this range and
// backends refuse others: the kernel's XFRM tables are shared with other IKE
// daemons (strongSwan and Libreswan count their reqids up from small
// numbers), and the XFRM backend recognises Strait's own SAs and policies by
// a reqid in this range ("ST" in the top 16 bits) when it lists and
// reconciles them.
inline constexpr uint32_t kReqidFirst = 0x53540001;
inline constexpr uint32_t kReqidLast = 0x5354ffff;
inline constexpr bool IsStraitReqid(uint32_t reqid) {
  return reqid >= kReqidFirst && reqid <= kReqidLast;
}

// An SA is named by (destination, SPI, protocol ESP).
struct SaId {
  Address destination;
  uint32_t spi = 0;
};
bool operator==(const SaId& a, const SaId& b);
bool operator<(const SaId& a, const SaId& b);

// Byte/packet/time limits of an SA; 0 means none.
struct Lifetime {
  uint64_t bytes = 0;
  uint64_t packets = 0;
  uint64_t add_seconds = 0;  // Seconds after installation.
};

// ESP-in-UDP (RFC 3948) ports, as seen from the SA's source.
struct UdpEncapsulation {
  uint16_t source_port = 4500;
  uint16_t destination_port = 4500;
};

// A tunnel-mode ESP SA.
struct SaConfig {
  SaId id;
  Address source;      // Outer addresses; destination is id.destination.
  uint32_t reqid = 0;  // In [kReqidFirst, kReqidLast].
  // IKEv2 transform IDs: encryption 20 (AES-GCM-16, key | 4-byte salt) or
  // 12 (AES-CBC), with integrity 12/13/14 (HMAC-SHA2-256-128/384-192/
  // 512-256) for CBC; `key_bits` is the cipher key length without salt.
  uint16_t encr_id = 0;
  int key_bits = 0;
  uint16_t integ_id = 0;
  Secret encr_key;
  Secret integ_key;
  uint32_t replay_window = 64;  // Packets; 0 disables anti-replay.
  bool esn = false;             // 64-bit sequence numbers.
  std::optional<UdpEncapsulation> encapsulation;
  Lifetime soft;  // Expire event (rekey) when reached.
  Lifetime hard;  // Removed when reached.
  uint32_t mark = 0;
  uint32_t mark_mask = 0;  // 0: no mark.
  uint32_t if_id = 0;      // 0: none (XFRM interfaces).
};

enum class Direction { kIn, kOut, kFwd };
const char* DirectionName(Direction d);

// Which packets a policy applies to: prefixes of one family, optional
// protocol and ports.
struct Selector {
  Address source;
  uint8_t source_prefix = 0;
  Address destination;
  uint8_t destination_prefix = 0;
  uint8_t ip_protocol = 0;   // 0: any.
  uint16_t source_port = 0;  // 0: any (single ports only).
  uint16_t destination_port = 0;
};
bool operator==(const Selector& a, const Selector& b);

// Packets matching `selector` in `direction` go through (out) or must have
// come through (in/fwd) a tunnel-mode ESP SA between the template's outer
// addresses with `reqid`.
struct PolicyConfig {
  Selector selector;
  Direction direction = Direction::kOut;
  Address tunnel_source;
  Address tunnel_destination;
  uint32_t reqid = 0;     // In [kReqidFirst, kReqidLast].
  uint32_t priority = 0;  // 0: the backend's default.
  uint32_t mark = 0;
  uint32_t mark_mask = 0;
  uint32_t if_id = 0;
};

struct SaCounters {
  uint64_t bytes = 0;
  uint64_t packets = 0;
  uint64_t replay_failures = 0;     // Replayed or outside the window.
  uint64_t integrity_failures = 0;  // Failed authentication / decryption.
};

// What is installed, as a backend sees it (keys are never listed).
struct InstalledState {
  std::vector<SaConfig> sas;  // Without keys.
  std::vector<PolicyConfig> policies;
};

struct DataplaneEvent {
  enum class Kind {
    kSoftExpire,  // Time to rekey the SA.
    kHardExpire,  // The SA is gone.
    kAcquire,     // Traffic matched a policy without an SA.
  };
  Kind kind = Kind::kSoftExpire;
  SaId sa;                           // Expire events.
  uint32_t reqid = 0;                // All kinds, when known.
  std::optional<Selector> selector;  // Acquire.
};

class Dataplane {
 public:
  virtual ~Dataplane() = default;

  // "xfrm", "userspace", "fake".
  virtual std::string name() const = 0;

  // AlreadyExists when an SA with the same id is installed.
  virtual absl::Status AddSa(const SaConfig& sa) = 0;
  // Replaces lifetimes and encapsulation of an installed SA; NotFound
  // when there is none.
  virtual absl::Status UpdateSa(const SaConfig& sa) = 0;
  // NotFound when there is none.
  virtual absl::Status DeleteSa(const SaId& id) = 0;

  // Adds or replaces the policy with the same selector and direction.
  virtual absl::Status AddPolicy(const PolicyConfig& policy) = 0;
  // Several at once; as one batch where the backend can.
  virtual absl::Status AddPolicies(const std::vector<PolicyConfig>& policies) = 0;
  // NotFound when there is none. A policy is named by selector, direction,
  // mark (value and mask) and if_id, as it was added.
  virtual absl::Status DeletePolicy(const Selector& selector, Direction direction,
                                    uint32_t mark = 0, uint32_t mark_mask = 0,
                                    uint32_t if_id = 0) = 0;

  virtual absl::StatusOr<SaCounters> GetCounters(const SaId& id) = 0;
  // What this agent installed (backends tag their state) and still holds.
  virtual absl::StatusOr<InstalledState> List() = 0;

  // Events arrive on a backend thread; the callback must not block for long.
  // One subscriber; a later call replaces it.
  virtual void Subscribe(std::function<void(const DataplaneEvent&)> callback) = 0;
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_DATAPLANE_H_
