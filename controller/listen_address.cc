#include "controller/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strait::controller {
namespace {

absl::Status Invalid(absl::string_view entry, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("--listen: \"", entry, "\": ", reason));
}

absl::StatusOr<ListenAddress> ParseOne(absl::string_view entry) {
  ListenAddress address;
  address.uri = std::string(entry);
  absl::string_view rest = entry;
  if (absl::ConsumePrefix(&rest, "unix-abstract:")) {
    if (rest.empty()) {
      return Invalid(entry, "empty abstract socket name");
    }
    address.kind = ListenAddress::Kind::kUnix;
    return address;
  }
  if (absl::ConsumePrefix(&rest, "unix:")) {
    // "unix://" takes an absolute path only ("unix:///run/x.sock");
    // "unix:" takes any path.
    if (absl::ConsumePrefix(&rest, "//") && !absl::StartsWith(rest, "/")) {
      return Invalid(entry, "unix:// needs an absolute path, as in unix:///run/strait/c.sock");
    }
    if (rest.empty()) {
      return Invalid(entry, "empty socket path");
    }
    address.kind = ListenAddress::Kind::kUnix;
    address.unix_path = std::string(rest);
    return address;
  }
  if (absl::StrContains(rest, "://")) {
    return Invalid(entry, "unsupported scheme; use HOST:PORT or unix:PATH");
  }
  absl::string_view host;
  absl::string_view port;
  if (absl::ConsumePrefix(&rest, "[")) {
    size_t close = rest.find(']');
    if (close == absl::string_view::npos) {
      return Invalid(entry, "missing ']'");
    }
    host = rest.substr(0, close);
    rest.remove_prefix(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) {
      return Invalid(entry, "missing :PORT");
    }
    port = rest;
  } else {
    size_t colon = rest.rfind(':');
    if (colon == absl::string_view::npos) {
      return Invalid(entry, "missing :PORT");
    }
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (absl::StrContains(host, ':')) {
      return Invalid(entry, "an IPv6 address needs brackets, as in [::1]:7443");
    }
  }
  int port_number = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &port_number) || port_number < 0 ||
      port_number > 65535) {
    return Invalid(entry, "the port must be a number from 0 to 65535");
  }
  address.kind = ListenAddress::Kind::kTcp;
  address.host = std::string(host);
  address.port = port_number;
  return address;
}

}  // namespace

absl::StatusOr<std::vector<ListenAddress>> ParseListenAddresses(absl::string_view text) {
  std::vector<ListenAddress> addresses;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) {
      continue;
    }
    absl::StatusOr<ListenAddress> address = ParseOne(entry);
    if (!address.ok()) {
      return address.status();
    }
    addresses.push_back(*std::move(address));
  }
  if (addresses.empty()) {
    return absl::InvalidArgumentError("--listen: no address given");
  }
  return addresses;
}

bool IsLocalOnly(const ListenAddress& address) {
  if (address.kind == ListenAddress::Kind::kUnix) {
    return true;
  }
  if (absl::AsciiStrToLower(address.host) == "localhost") {
    return true;
  }
  in_addr v4;
  if (inet_pton(AF_INET, address.host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, address.host.c_str(), &v6) == 1) {
    return std::memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
  }
  return false;
}

absl::Status CheckInsecureListenAddresses(const std::vector<ListenAddress>& addresses) {
  for (const ListenAddress& address : addresses) {
    if (IsLocalOnly(address)) {
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen: refusing to serve plaintext gRPC (--insecure) on \"", address.uri,
        "\": only loopback TCP (127.0.0.0/8, [::1], localhost) and unix: sockets are allowed "
        "until TLS is supported"));
  }
  return absl::OkStatus();
}

}  // namespace strait::controller
