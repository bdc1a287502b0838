#ifndef STRAIT_DATAPLANE_NETLINK_TRANSPORT_IMPL_H_
#define STRAIT_DATAPLANE_NETLINK_TRANSPORT_IMPL_H_

// A NetlinkTransport over a libmnl socket.

#include <libmnl/libmnl.h>

#include <memory>

#include "absl/time/time.h"
#include "dataplane/netlink_transport.h"

namespace strait::dataplane {

struct NetlinkSocketOptions {
  // Multicast groups to join, as a bitmask (group g is bit g - 1).
  uint32_t groups = 0;
  // How long Receive() waits; zero waits forever (for sockets that are
  // polled first).
  absl::Duration receive_timeout = absl::Seconds(10);
  // Receive buffer. Every acknowledgement of a batch is queued before the
  // first is read, and each costs about 1 KiB of socket memory, so the
  // default leaves room for far more than one batch.
  int receive_buffer_bytes = 4 << 20;
};

class NetlinkSocketTransport : public NetlinkTransport {
 public:
  // Opens and binds a socket of netlink `protocol` (e.g. NETLINK_XFRM) with
  // extended and capped acknowledgements: errors then carry the kernel's
  // reason and never echo the request (which may hold keys) back.
  static absl::StatusOr<std::unique_ptr<NetlinkSocketTransport>> Create(
      int protocol, const NetlinkSocketOptions& options);

  // NetlinkTransport
  absl::Status Send(absl::Span<const uint8_t> datagram) override;
  absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) override;
  uint32_t port_id() const override;
  int fd() const override;

 private:
  struct SocketCloser {
    void operator()(mnl_socket* socket) const { mnl_socket_close(socket); }
  };
  using SocketPtr = std::unique_ptr<mnl_socket, SocketCloser>;

  explicit NetlinkSocketTransport(SocketPtr socket) : socket_(std::move(socket)) {}

  SocketPtr socket_;
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_NETLINK_TRANSPORT_IMPL_H_
