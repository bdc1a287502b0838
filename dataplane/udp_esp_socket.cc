#include "dataplane/udp_esp_socket.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/esp_codec.h"

namespace strait::dataplane {
namespace {

socklen_t ToSockaddr(const UdpEndpoint& endpoint, sockaddr_storage* storage) {
  std::memset(storage, 0, sizeof(*storage));
  if (endpoint.address.size() == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(storage);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(endpoint.port);
    std::memcpy(&sin->sin_addr, endpoint.address.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(storage);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(endpoint.port);
  std::memcpy(&sin6->sin6_addr, endpoint.address.data(), 16);
  return sizeof(sockaddr_in6);
}

UdpEndpoint FromSockaddr(const sockaddr_storage& storage) {
  UdpEndpoint endpoint;
  if (storage.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&sin->sin_addr);
    endpoint.address.assign(bytes, bytes + 4);
    endpoint.port = ntohs(sin->sin_port);
  } else if (storage.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&sin6->sin6_addr);
    endpoint.address.assign(bytes, bytes + 16);
    endpoint.port = ntohs(sin6->sin6_port);
  }
  return endpoint;
}

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<UdpEspSocket>> UdpEspSocket::Create(const UdpEndpoint& local) {
  if (local.address.size() != 4 && local.address.size() != 16) {
    return absl::InvalidArgumentError("local address must be 4 or 16 bytes");
  }
  const int family = local.address.size() == 4 ? AF_INET : AF_INET6;
  const int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  if (family == AF_INET6) {
    const int on = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  }
  // Room for bursts while the dataplane catches up (capped by rmem_max).
  const int buffer = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
  sockaddr_storage storage;
  socklen_t size = ToSockaddr(local, &storage);
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), size) < 0) {
    absl::Status status = Errno(absl::StrCat("bind UDP port ", local.port));
    close(fd);
    return status;
  }
  size = sizeof(storage);
  getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &size);
  return std::unique_ptr<UdpEspSocket>(new UdpEspSocket(fd, FromSockaddr(storage)));
}

UdpEspSocket::~UdpEspSocket() {
  Stop();
  close(fd_);
}

void UdpEspSocket::Start(EspHandler handler) {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this, handler = std::move(handler)] { ReceiveLoop(handler); });
}

void UdpEspSocket::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void UdpEspSocket::ReceiveLoop(const EspHandler& handler) {
  std::vector<uint8_t> buffer(65536);
  while (!stop_.load(std::memory_order_relaxed)) {
    pollfd p{fd_, POLLIN, 0};
    const int ready = poll(&p, 1, 100);
    if (ready <= 0) continue;
    sockaddr_storage from;
    socklen_t from_size = sizeof(from);
    const ssize_t n = recvfrom(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_size);
    if (n < 0) {
      // ICMP errors (port unreachable) surface here; nothing to do.
      if (errno != EAGAIN && errno != EINTR) receive_errors_.fetch_add(1);
      continue;
    }
    if (n == 1 && buffer[0] == 0xff) {
      keepalives_.fetch_add(1);
      continue;
    }
    if (static_cast<size_t>(n) < kEspHeaderSize) {
      runts_.fetch_add(1);
      continue;
    }
    if (buffer[0] == 0 && buffer[1] == 0 && buffer[2] == 0 && buffer[3] == 0) {
      ike_dropped_.fetch_add(1);
      continue;
    }
    esp_.fetch_add(1);
    handler(absl::MakeConstSpan(buffer.data(), static_cast<size_t>(n)), FromSockaddr(from),
            local_.address);
  }
}

UdpEspSocketCounters UdpEspSocket::counters() const {
  UdpEspSocketCounters c;
  c.esp = esp_.load();
  c.keepalives = keepalives_.load();
  c.ike_dropped = ike_dropped_.load();
  c.runts = runts_.load();
  c.receive_errors = receive_errors_.load();
  c.sent = sent_.load();
  c.send_errors = send_errors_.load();
  return c;
}

absl::Status UdpEspSocket::Send(absl::Span<const uint8_t> payload, const UdpEndpoint& /*local*/,
                                const UdpEndpoint& remote) {
  if (remote.address.size() != local_.address.size()) {
    send_errors_.fetch_add(1);
    return absl::InvalidArgumentError("remote address family differs from the socket's");
  }
  sockaddr_storage storage;
  const socklen_t size = ToSockaddr(remote, &storage);
  if (sendto(fd_, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&storage), size) <
      0) {
    send_errors_.fetch_add(1);
    return Errno("sendto");
  }
  sent_.fetch_add(1);
  return absl::OkStatus();
}

}  // namespace strait::dataplane
