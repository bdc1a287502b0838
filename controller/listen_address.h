#ifndef STRAIT_CONTROLLER_LISTEN_ADDRESS_H_
#define STRAIT_CONTROLLER_LISTEN_ADDRESS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strait::controller {

// One gRPC listening address of the controller.
struct ListenAddress {
  enum class Kind { kTcp, kUnix };
  Kind kind = Kind::kTcp;
  // As given, and as handed to grpc::ServerBuilder.
  std::string uri;
  // kTcp: the host ("127.0.0.1", "::1", "localhost") and port (0 = any).
  std::string host;
  int port = 0;
  // kUnix: the socket's path; empty for an abstract socket.
  std::string unix_path;
};

// Parses a comma-separated --listen value. Each entry is "HOST:PORT" (an
// IPv4 literal, "[IPv6]" or a name), "unix:PATH", "unix:///ABSOLUTE/PATH"
// or "unix-abstract:NAME". Errors are INVALID_ARGUMENT naming the entry.
absl::StatusOr<std::vector<ListenAddress>> ParseListenAddresses(absl::string_view text);

// Whether `address` is reachable only from this host: a Unix socket, or TCP
// on 127.0.0.0/8, ::1 or "localhost".
bool IsLocalOnly(const ListenAddress& address);

// Plaintext gRPC (--insecure) is served on local-only addresses alone:
// INVALID_ARGUMENT naming the first address that is not.
absl::Status CheckInsecureListenAddresses(const std::vector<ListenAddress>& addresses);

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_LISTEN_ADDRESS_H_
