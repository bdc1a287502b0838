#ifndef STRAIT_COMMON_INTENT_CIDR_H_
#define STRAIT_COMMON_INTENT_CIDR_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strait::intent {

struct IpAddress {
  int family = 0;                   // 4 or 6
  std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4 bytes.

  int bits() const { return family == 4 ? 32 : 128; }
  std::string ToString() const;
  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && a.bytes == b.bytes;
  }
};

// Parses a literal IPv4 or IPv6 address. `family` is 4 or 6.
absl::StatusOr<IpAddress> ParseIpAddress(absl::string_view text);

struct Cidr {
  IpAddress address;  // host bits are zero
  int prefix_length = 0;

  std::string ToString() const;
  // 0.0.0.0/0 or ::/0.
  bool IsAllAddresses() const { return prefix_length == 0; }
  bool Contains(const IpAddress& ip) const;
  // Whether the two networks share at least one address (same family only).
  bool Overlaps(const Cidr& other) const;
};

// Parses "10.1.0.0/24", "2001:db8::/48", or a bare address (a host route).
// Rejects host bits set past the prefix ("10.1.0.1/24"), naming the network
// that was probably meant.
absl::StatusOr<Cidr> ParseCidr(absl::string_view text);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_CIDR_H_
