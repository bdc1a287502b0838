#include "dataplane/ip_packet.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace strait::dataplane {
namespace {

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoDccp = 33;
constexpr uint8_t kProtoIcmpv6 = 58;
constexpr uint8_t kProtoSctp = 132;
constexpr uint8_t kProtoUdpLite = 136;
// IPv6 extension headers walked past.
constexpr uint8_t kHopByHop = 0;
constexpr uint8_t kRouting = 43;
constexpr uint8_t kFragment = 44;
constexpr uint8_t kAh = 51;
constexpr uint8_t kDestinationOptions = 60;
constexpr int kMaxExtensionHeaders = 8;

uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// Ports (or ICMP type/code) from the transport header at `l4`, when the
// packet holds them; the kernel leaves them 0 otherwise.
void ParsePorts(const uint8_t* l4, size_t available, PacketFlow* flow) {
  switch (flow->protocol) {
    case kProtoTcp:
    case kProtoUdp:
    case kProtoDccp:
    case kProtoSctp:
    case kProtoUdpLite:
      if (available >= 4) {
        flow->source_port = Load16(l4);
        flow->destination_port = Load16(l4 + 2);
      }
      break;
    case kProtoIcmp:
    case kProtoIcmpv6:
      if (available >= 2) {
        flow->source_port = l4[0];
        flow->destination_port = l4[1];
      }
      break;
    default:
      break;
  }
}

absl::StatusOr<PacketFlow> ParseIpv4(absl::Span<const uint8_t> p) {
  if (p.size() < 20) return absl::InvalidArgumentError("IPv4 header truncated");
  PacketFlow flow;
  flow.version = 4;
  const size_t header = size_t{p[0] & 0x0fu} * 4;
  const size_t total = Load16(&p[2]);
  if (header < 20 || header > p.size() || total < header || total > p.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("IPv4 lengths inconsistent: header ", header, ", total ", total));
  }
  flow.length = total;
  flow.fragment = (Load16(&p[6]) & 0x3fff) != 0;  // MF or an offset.
  flow.protocol = p[9];
  std::memcpy(flow.source.data(), &p[12], 4);
  std::memcpy(flow.destination.data(), &p[16], 4);
  if (!flow.fragment) ParsePorts(&p[header], total - header, &flow);
  return flow;
}

absl::StatusOr<PacketFlow> ParseIpv6(absl::Span<const uint8_t> p) {
  if (p.size() < 40) return absl::InvalidArgumentError("IPv6 header truncated");
  PacketFlow flow;
  flow.version = 6;
  const size_t payload = Load16(&p[4]);
  if (payload == 0) return absl::InvalidArgumentError("IPv6 jumbograms are not tunnelled");
  if (40 + payload > p.size()) return absl::InvalidArgumentError("IPv6 payload truncated");
  flow.length = 40 + payload;
  std::memcpy(flow.source.data(), &p[8], 16);
  std::memcpy(flow.destination.data(), &p[24], 16);
  uint8_t next = p[6];
  size_t offset = 40;
  for (int i = 0; i < kMaxExtensionHeaders; ++i) {
    if (next != kHopByHop && next != kRouting && next != kDestinationOptions && next != kFragment &&
        next != kAh) {
      break;
    }
    if (offset + 8 > flow.length) return absl::InvalidArgumentError("IPv6 extension truncated");
    const uint8_t* ext = &p[offset];
    size_t ext_size;
    if (next == kFragment) {
      flow.fragment = true;
      ext_size = 8;
    } else if (next == kAh) {
      ext_size = (size_t{ext[1]} + 2) * 4;
    } else {
      ext_size = (size_t{ext[1]} + 1) * 8;
    }
    next = ext[0];
    offset += ext_size;
    if (offset > flow.length) return absl::InvalidArgumentError("IPv6 extension truncated");
  }
  flow.protocol = next;
  if (!flow.fragment) ParsePorts(&p[offset], flow.length - offset, &flow);
  return flow;
}

bool PrefixMatches(const Address& prefix, uint8_t bits, const uint8_t* address) {
  const size_t whole = bits / 8;
  if (std::memcmp(prefix.data(), address, whole) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (prefix[whole] & mask) == (address[whole] & mask);
}

}  // namespace

absl::StatusOr<PacketFlow> ParseIpPacket(absl::Span<const uint8_t> packet) {
  if (packet.empty()) return absl::InvalidArgumentError("empty packet");
  switch (packet[0] >> 4) {
    case 4:
      return ParseIpv4(packet);
    case 6:
      return ParseIpv6(packet);
  }
  return absl::InvalidArgumentError(absl::StrCat("IP version ", packet[0] >> 4));
}

bool SelectorMatches(const Selector& s, const PacketFlow& flow) {
  const size_t size = flow.address_size();
  if (s.source.size() != size || s.destination.size() != size) return false;
  if (!PrefixMatches(s.destination, s.destination_prefix, flow.destination.data()) ||
      !PrefixMatches(s.source, s.source_prefix, flow.source.data())) {
    return false;
  }
  if (s.ip_protocol != 0 && s.ip_protocol != flow.protocol) return false;
  if (s.source_port != 0 && s.source_port != flow.source_port) return false;
  if (s.destination_port != 0 && s.destination_port != flow.destination_port) return false;
  return true;
}

Selector FlowSelector(const PacketFlow& flow) {
  Selector s;
  const size_t size = flow.address_size();
  s.source.assign(flow.source.begin(), flow.source.begin() + size);
  s.destination.assign(flow.destination.begin(), flow.destination.begin() + size);
  s.source_prefix = s.destination_prefix = static_cast<uint8_t>(size * 8);
  s.ip_protocol = flow.protocol;
  s.source_port = flow.source_port;
  s.destination_port = flow.destination_port;
  return s;
}

absl::Status ValidateSelector(const Selector& s) {
  const size_t size = s.source.size();
  if ((size != 4 && size != 16) || s.destination.size() != size) {
    return absl::InvalidArgumentError("selector addresses must both be IPv4 or both IPv6");
  }
  if (s.source_prefix > size * 8 || s.destination_prefix > size * 8) {
    return absl::InvalidArgumentError("selector prefix longer than its address");
  }
  return absl::OkStatus();
}

}  // namespace strait::dataplane
