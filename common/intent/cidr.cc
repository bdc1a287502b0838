#include "common/intent/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strait::intent {
namespace {

// Whether the first `bits` bits of `a` and `b` are equal.
bool PrefixEqual(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, int bits) {
  int full_bytes = bits / 8;
  if (!std::equal(a.begin(), a.begin() + full_bytes, b.begin())) {
    return false;
  }
  int rest = bits % 8;
  if (rest == 0) {
    return true;
  }
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full_bytes] & mask) == (b[full_bytes] & mask);
}

// `ip` with every bit past `prefix_length` cleared.
IpAddress Masked(const IpAddress& ip, int prefix_length) {
  IpAddress out = ip;
  for (int i = 0; i < 16; ++i) {
    int bit = i * 8;
    if (bit >= prefix_length) {
      out.bytes[i] = 0;
    } else if (prefix_length - bit < 8) {
      out.bytes[i] &= static_cast<uint8_t>(0xff << (8 - (prefix_length - bit)));
    }
  }
  return out;
}

}  // namespace

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  int af = family == 4 ? AF_INET : AF_INET6;
  if (family != 4 && family != 6) {
    return "<invalid address>";
  }
  if (inet_ntop(af, bytes.data(), buf, sizeof(buf)) == nullptr) {
    return "<invalid address>";
  }
  return buf;
}

absl::StatusOr<IpAddress> ParseIpAddress(absl::string_view text) {
  if (text.empty()) {
    return absl::InvalidArgumentError("empty address");
  }
  // inet_pton needs a NUL-terminated string; an embedded NUL would make it
  // read a prefix of the text only.
  if (absl::StrContains(text, absl::string_view("\0", 1)) || text.size() >= INET6_ADDRSTRLEN) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(text), "\" is not an IPv4 or IPv6 address"));
  }
  std::string copy(text);
  IpAddress ip;
  // glibc's inet_pton is strict: dotted quads only, no leading zeros, no
  // zone index (fe80::1%eth0), no surrounding spaces.
  if (inet_pton(AF_INET, copy.c_str(), ip.bytes.data()) == 1) {
    ip.family = 4;
    return ip;
  }
  if (inet_pton(AF_INET6, copy.c_str(), ip.bytes.data()) == 1) {
    ip.family = 6;
    return ip;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", absl::CEscape(text), "\" is not an IPv4 or IPv6 address"));
}

std::string Cidr::ToString() const { return absl::StrCat(address.ToString(), "/", prefix_length); }

bool Cidr::Contains(const IpAddress& ip) const {
  if (ip.family != address.family) {
    return false;
  }
  return PrefixEqual(address.bytes, ip.bytes, prefix_length);
}

bool Cidr::Overlaps(const Cidr& other) const {
  if (other.address.family != address.family) {
    return false;
  }
  // Two prefixes overlap exactly when the shorter one contains the longer.
  return PrefixEqual(address.bytes, other.address.bytes,
                     std::min(prefix_length, other.prefix_length));
}

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  Cidr cidr;
  size_t slash = text.find('/');
  absl::string_view address_text = text.substr(0, slash);
  auto address = ParseIpAddress(address_text);
  if (!address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(text), "\" is not a CIDR: ", address.status().message()));
  }
  cidr.address = *address;
  if (slash == absl::string_view::npos) {
    cidr.prefix_length = cidr.address.bits();
    return cidr;
  }
  absl::string_view prefix_text = text.substr(slash + 1);
  // SimpleAtoi accepts signs and surrounding spaces; a prefix is digits only,
  // without leading zeros.
  int prefix = -1;
  bool digits = !prefix_text.empty() && prefix_text.size() <= 3 &&
                std::all_of(prefix_text.begin(), prefix_text.end(), absl::ascii_isdigit) &&
                !(prefix_text.size() > 1 && prefix_text[0] == '0');
  if (!digits || !absl::SimpleAtoi(prefix_text, &prefix) || prefix > cidr.address.bits()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(text), "\" has an invalid prefix length (0 to ",
                     cidr.address.bits(), " for IPv", cidr.address.family, ")"));
  }
  cidr.prefix_length = prefix;
  IpAddress network = Masked(cidr.address, prefix);
  if (!(network == cidr.address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(text), "\" has host bits set past the /", prefix,
                     " prefix; did you mean ", network.ToString(), "/", prefix, "?"));
  }
  return cidr;
}

}  // namespace strait::intent
