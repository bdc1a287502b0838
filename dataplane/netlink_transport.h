#ifndef STRAIT_DATAPLANE_NETLINK_TRANSPORT_H_
#define STRAIT_DATAPLANE_NETLINK_TRANSPORT_H_

// Datagram I/O with a netlink bus, apart from what the messages mean, so
// that tests can capture the exact bytes a backend sends and script the
// kernel's answers (testing/fake_netlink_transport.h).

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace strait::dataplane {

class NetlinkTransport {
 public:
  virtual ~NetlinkTransport() = default;

  // Sends one datagram of one or more netlink messages. The caller may wipe
  // `datagram` as soon as this returns.
  virtual absl::Status Send(absl::Span<const uint8_t> datagram) = 0;

  // Receives one datagram into `buffer` and returns its length.
  // DeadlineExceeded when nothing arrived within the transport's timeout;
  // ResourceExhausted when the kernel dropped messages because the receive
  // queue was full (ENOBUFS).
  virtual absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) = 0;

  // The port id the kernel addresses its answers to; 0 when not known.
  virtual uint32_t port_id() const = 0;

  // A descriptor that poll() reports readable when Receive() has something
  // to return.
  virtual int fd() const = 0;
};
using NetlinkTransportPtr = std::unique_ptr<NetlinkTransport>;

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_NETLINK_TRANSPORT_H_
