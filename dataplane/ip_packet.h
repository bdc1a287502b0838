#ifndef STRAIT_DATAPLANE_IP_PACKET_H_
#define STRAIT_DATAPLANE_IP_PACKET_H_

// What a policy selector sees of an inner IPv4/IPv6 packet, and the match
// itself, with the kernel's XFRM conventions: ICMP type and code stand in
// for the ports (type as source port, code as destination port), and
// fragments carry no ports, so that every fragment of a datagram takes the
// same policy.

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "dataplane/dataplane.h"

namespace strait::dataplane {

struct PacketFlow {
  int version = 0;  // 4 or 6.
  std::array<uint8_t, 16> source{};
  std::array<uint8_t, 16> destination{};
  uint8_t protocol = 0;  // Upper layer, after IPv6 extension headers.
  uint16_t source_port = 0;
  uint16_t destination_port = 0;
  bool fragment = false;  // Ports unknown.
  size_t length = 0;      // The packet's own length field (<= the buffer).

  size_t address_size() const { return version == 4 ? 4 : 16; }
};

// Parses the IP header of `packet` (and IPv6 extension headers, and the
// first bytes of TCP/UDP/SCTP/DCCP/UDP-Lite/ICMP). InvalidArgument when it
// is not a well-formed IPv4/IPv6 packet or is shorter than its length
// field says (bytes beyond it, e.g. RFC 4303 TFC padding, are allowed).
absl::StatusOr<PacketFlow> ParseIpPacket(absl::Span<const uint8_t> packet);

// True when `flow` falls under `selector`: same family, both prefixes,
// protocol (0: any) and ports (0: any).
bool SelectorMatches(const Selector& selector, const PacketFlow& flow);

// A selector for exactly this flow (host prefixes), e.g. for an acquire.
Selector FlowSelector(const PacketFlow& flow);

// InvalidArgument unless the selector's addresses are both 4 or both 16
// bytes and its prefix lengths fit them.
absl::Status ValidateSelector(const Selector& selector);

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_IP_PACKET_H_
