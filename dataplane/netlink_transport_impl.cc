#include "dataplane/netlink_transport_impl.h"

#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace strait::dataplane {
namespace {

std::string ErrnoText(int error) { return absl::StrCat(strerror(error), " (errno ", error, ")"); }

absl::Status SocketError(absl::string_view what, int error) {
  std::string message = absl::StrCat("netlink ", what, ": ", ErrnoText(error));
  switch (error) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EPROTONOSUPPORT:
    case EAFNOSUPPORT:
      return absl::UnimplementedError(
          absl::StrCat(message, "; the kernel lacks this netlink family (for XFRM: xfrm_user)"));
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NetlinkSocketTransport>> NetlinkSocketTransport::Create(
    int protocol, const NetlinkSocketOptions& options) {
  SocketPtr socket(mnl_socket_open(protocol));
  if (socket == nullptr) return SocketError("socket", errno);

  // Capped acknowledgements are what keep key material from coming back in
  // error replies; refuse to run without them. Extended acknowledgements
  // only add the kernel's reason to errors.
  int on = 1;
  if (mnl_socket_setsockopt(socket.get(), NETLINK_CAP_ACK, &on, sizeof(on)) < 0) {
    return SocketError("setsockopt(NETLINK_CAP_ACK)", errno);
  }
  mnl_socket_setsockopt(socket.get(), NETLINK_EXT_ACK, &on, sizeof(on));

  int fd = mnl_socket_get_fd(socket.get());
  int size = options.receive_buffer_bytes;
  // SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN, which
  // changing XFRM state needs anyway; without it take what rmem_max allows.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  if (options.receive_timeout > absl::ZeroDuration()) {
    timeval timeout = absl::ToTimeval(options.receive_timeout);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0) {
      return SocketError("setsockopt(SO_RCVTIMEO)", errno);
    }
  }
  if (mnl_socket_bind(socket.get(), options.groups, MNL_SOCKET_AUTOPID) < 0) {
    return SocketError(absl::StrCat("bind(groups 0x", absl::Hex(options.groups), ")"), errno);
  }
  return std::unique_ptr<NetlinkSocketTransport>(new NetlinkSocketTransport(std::move(socket)));
}

absl::Status NetlinkSocketTransport::Send(absl::Span<const uint8_t> datagram) {
  ssize_t sent = mnl_socket_sendto(socket_.get(), datagram.data(), datagram.size());
  if (sent < 0) return SocketError("sendto", errno);
  if (static_cast<size_t>(sent) != datagram.size()) {
    return absl::InternalError(
        absl::StrCat("netlink sendto: sent ", sent, " of ", datagram.size(), " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> NetlinkSocketTransport::Receive(absl::Span<uint8_t> buffer) {
  while (true) {
    ssize_t received = mnl_socket_recvfrom(socket_.get(), buffer.data(), buffer.size());
    if (received >= 0) return static_cast<size_t>(received);
    int error = errno;
    switch (error) {
      case EINTR:
        continue;
      case EAGAIN:
        return absl::DeadlineExceededError("netlink: no answer from the kernel in time");
      case ENOBUFS:
        return absl::ResourceExhaustedError(
            "netlink: receive queue overflowed, the kernel dropped messages");
      case ENOSPC:  // libmnl's report of a truncated datagram.
        return absl::InternalError(
            absl::StrCat("netlink: datagram larger than the ", buffer.size(), "-byte buffer"));
      default:
        return SocketError("recvfrom", error);
    }
  }
}

uint32_t NetlinkSocketTransport::port_id() const { return mnl_socket_get_portid(socket_.get()); }

int NetlinkSocketTransport::fd() const { return mnl_socket_get_fd(socket_.get()); }

}  // namespace strait::dataplane
