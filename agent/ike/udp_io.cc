#include "agent/ike/udp_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"

namespace strait::ike {

namespace {

// The largest UDP payload; IKE messages are far smaller, but reading into a
// full-size buffer keeps an oversized datagram from being silently cut.
constexpr size_t kMaxDatagram = 65535;

}  // namespace

socklen_t ToSockaddr(const Endpoint& e, sockaddr_storage* ss) {
  std::memset(ss, 0, sizeof(*ss));
  if (e.address.size() == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(e.port);
    std::memcpy(&sin->sin_addr, e.address.data(), 4);
    return sizeof(sockaddr_in);
  }
  if (e.address.size() == 16) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(e.port);
    std::memcpy(&sin6->sin6_addr, e.address.data(), 16);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

bool FromSockaddr(const sockaddr_storage& ss, Endpoint* e) {
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    const auto* p = reinterpret_cast<const uint8_t*>(&sin->sin_addr);
    e->address.assign(p, p + 4);
    e->port = ntohs(sin->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    const auto* p = reinterpret_cast<const uint8_t*>(&sin6->sin6_addr);
    e->address.assign(p, p + 16);
    e->port = ntohs(sin6->sin6_port);
    return true;
  }
  return false;
}

absl::StatusOr<Bytes> ParseIpAddress(const std::string& text) {
  Bytes out(16);
  if (inet_pton(AF_INET, text.c_str(), out.data()) == 1) {
    out.resize(4);
    return out;
  }
  if (inet_pton(AF_INET6, text.c_str(), out.data()) == 1) return out;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IP address"));
}

std::string FormatIpAddress(const Bytes& address) {
  char buf[INET6_ADDRSTRLEN] = {};
  const int family = address.size() == 4 ? AF_INET : address.size() == 16 ? AF_INET6 : 0;
  if (family == 0 || inet_ntop(family, address.data(), buf, sizeof(buf)) == nullptr) return "?";
  return buf;
}

absl::StatusOr<int> BindUdpSocket(const Endpoint& local, uint16_t* port) {
  sockaddr_storage ss;
  const socklen_t len = ToSockaddr(local, &ss);
  if (len == 0) return absl::InvalidArgumentError("local address must be IPv4 or IPv6");
  const int family = ss.ss_family;
  const int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) return ErrnoToStatus(errno, "socket");
  if (family == AF_INET6) {
    const int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoToStatus(
        err, absl::StrCat("bind ", FormatIpAddress(local.address), " port ", local.port));
  }
  sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  Endpoint actual;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0 ||
      !FromSockaddr(bound, &actual)) {
    const int err = errno;
    close(fd);
    return ErrnoToStatus(err, "getsockname");
  }
  *port = actual.port;
  return fd;
}

absl::StatusOr<std::unique_ptr<UdpIo>> UdpIo::Create(const Endpoint& local, uint16_t nat_t_port) {
  uint16_t port = 0;
  absl::StatusOr<int> fd = BindUdpSocket(local, &port);
  if (!fd.ok()) return fd.status();
  int nat_t_fd = -1;
  if (nat_t_port != 0) {
    uint16_t unused = 0;
    absl::StatusOr<int> second = BindUdpSocket(Endpoint{local.address, nat_t_port}, &unused);
    if (!second.ok()) {
      close(*fd);
      return second.status();
    }
    nat_t_fd = *second;
  }
  const int family = local.address.size() == 4 ? AF_INET : AF_INET6;
  return std::unique_ptr<UdpIo>(new UdpIo(*fd, nat_t_fd, family, port, nat_t_port));
}

UdpIo::~UdpIo() {
  close(fd_);
  if (nat_t_fd_ >= 0) close(nat_t_fd_);
}

void UdpIo::Flush(Engine& engine) {
  for (const OutboundDatagram& d : engine.TakeDatagrams()) {
    sockaddr_storage ss;
    const socklen_t len = ToSockaddr(d.to, &ss);
    if (len == 0 || ss.ss_family != family_) {
      ++counters_.send_errors;
      LOG_WARNING("IKE datagram to an address of another family dropped");
      continue;
    }
    const bool nat_t = nat_t_fd_ >= 0 && d.to.port == nat_t_port_;
    Bytes marked;
    if (nat_t && !d.keepalive) {
      marked.assign(std::begin(kNonEspMarker), std::end(kNonEspMarker));
      marked.insert(marked.end(), d.data.begin(), d.data.end());
    }
    const Bytes& out = nat_t && !d.keepalive ? marked : d.data;
    ssize_t n;
    do {
      n = sendto(nat_t ? nat_t_fd_ : fd_, out.data(), out.size(), 0,
                 reinterpret_cast<const sockaddr*>(&ss), len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      ++counters_.send_errors;
      LOG_WARNING("IKE sendto failed")
          .With("to", FormatIpAddress(d.to.address))
          .With("error", std::strerror(errno));
      continue;
    }
    ++counters_.sent;
  }
}

// Datagrams read per wake-up; poll() comes back at once for the rest.
constexpr int kMaxReadsPerWake = 256;

void UdpIo::Drain(Engine& engine, int fd, bool nat_t) {
  std::vector<uint8_t> buf(kMaxDatagram);
  for (int reads = 0; reads < kMaxReadsPerWake; ++reads) {
    sockaddr_storage from;
    socklen_t from_len = sizeof(from);
    const ssize_t n = recvfrom(fd, buf.data(), buf.size(), MSG_TRUNC,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // ECONNREFUSED and friends are reported for earlier sends; the engine
      // retransmits, so they are counted and the loop carries on.
      ++counters_.receive_errors;
      LOG_DEBUG("IKE recvfrom failed").With("error", std::strerror(errno));
      continue;
    }
    Endpoint sender;
    if (!FromSockaddr(from, &sender) || static_cast<size_t>(n) > buf.size()) {
      ++counters_.foreign_dropped;
      continue;
    }
    absl::Span<const uint8_t> datagram(buf.data(), static_cast<size_t>(n));
    if (nat_t) {
      if (datagram.size() == 1 && datagram[0] == 0xff) continue;  // NAT keepalive.
      if (datagram.size() < sizeof(kNonEspMarker) ||
          std::memcmp(datagram.data(), kNonEspMarker, sizeof(kNonEspMarker)) != 0) {
        ++counters_.esp_dropped;
        continue;
      }
      datagram.remove_prefix(sizeof(kNonEspMarker));
    }
    ++counters_.received;
    if (filter_) {
      Bytes reply;
      const bool pass = filter_(datagram, sender, &reply);
      if (!reply.empty()) SendTo(fd, nat_t, reply, sender);
      if (!pass) {
        ++counters_.filtered;
        continue;
      }
    }
    engine.HandleDatagram(datagram, sender);
  }
}

void UdpIo::SendTo(int fd, bool nat_t, const Bytes& data, const Endpoint& to) {
  sockaddr_storage ss;
  const socklen_t len = ToSockaddr(to, &ss);
  if (len == 0) return;
  Bytes out;
  if (nat_t) out.assign(std::begin(kNonEspMarker), std::end(kNonEspMarker));
  out.insert(out.end(), data.begin(), data.end());
  ssize_t n;
  do {
    n = sendto(fd, out.data(), out.size(), 0, reinterpret_cast<const sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    ++counters_.send_errors;
    return;
  }
  ++counters_.sent;
}

absl::Status UdpIo::Run(Engine& engine, Clock& clock, absl::Time until,
                        const std::function<bool()>& stop, absl::Duration slice) {
  while (true) {
    Flush(engine);
    if (stop()) return absl::OkStatus();
    const absl::Time now = clock.Now();
    if (now >= until) return absl::OkStatus();
    absl::Time wake = std::min(until, now + slice);
    if (std::optional<absl::Time> deadline = engine.NextDeadline(); deadline.has_value()) {
      wake = std::min(wake, *deadline);
    }
    // Round up so that we do not spin on a sub-millisecond remainder.
    const int64_t wait_ms =
        std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - now + absl::Microseconds(999)));
    pollfd pfds[2] = {{fd_, POLLIN, 0}, {nat_t_fd_, POLLIN, 0}};
    const int ready = poll(pfds, nat_t_fd_ >= 0 ? 2 : 1, static_cast<int>(wait_ms));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "poll");
    }
    if (ready > 0) {
      if (pfds[0].revents != 0) Drain(engine, fd_, false);
      if (nat_t_fd_ >= 0 && pfds[1].revents != 0) Drain(engine, nat_t_fd_, true);
    }
    engine.Tick(clock.Now());
  }
}

UdpIo::Filter ResponderCookieFilter(CookieGenerator& cookies, const Engine& engine, Bytes peer,
                                    uint64_t* cookies_sent) {
  return [&cookies, &engine, peer = std::move(peer), cookies_sent](
             absl::Span<const uint8_t> datagram, const Endpoint& from, Bytes* reply) {
    if (engine.state() != Engine::State::kIdle || from.address != peer) return true;
    absl::StatusOr<IkeSaInitRequest> request = ParseIkeSaInitRequest(datagram);
    if (!request.ok()) return true;  // Not a new IKE SA: the engine decides.
    if (request->cookie.has_value() &&
        cookies.Verify(*request->cookie, request->ni, from, request->spi_i)) {
      return true;
    }
    *reply = BuildCookieResponse(request->spi_i, cookies.Make(request->ni, from, request->spi_i));
    if (cookies_sent != nullptr) ++*cookies_sent;
    return false;
  };
}

}  // namespace strait::ike
