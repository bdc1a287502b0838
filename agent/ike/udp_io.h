#ifndef STRAIT_AGENT_IKE_UDP_IO_H_
#define STRAIT_AGENT_IKE_UDP_IO_H_

// A thin I/O loop around one sans-IO engine: one UDP socket (IPv4 or IPv6)
// bound to the local address and port, poll() with the engine's next
// deadline, datagrams in through HandleDatagram(), timers through Tick(),
// the outbox out through sendto(). One thread. Optionally a second socket
// on the NAT-T port (UDP 4500, RFC 3948): IKE there carries the four-byte
// non-ESP marker, which is stripped on input and added on output; ESP-in-UDP
// packets on it are dropped (no dataplane here).

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/ike/cookie.h"
#include "agent/ike/engine.h"
#include "common/clock.h"

namespace strait::ike {

// What the loop saw and did, for metrics and logs.
struct UdpIoCounters {
  uint64_t received = 0;
  uint64_t sent = 0;
  uint64_t receive_errors = 0;   // recvfrom failed (e.g. ICMP port unreachable).
  uint64_t send_errors = 0;      // sendto failed; the engine retransmits.
  uint64_t foreign_dropped = 0;  // From an address family we do not speak.
  uint64_t esp_dropped = 0;      // ESP-in-UDP (or a runt) on the NAT-T port.
  uint64_t filtered = 0;         // Kept from the engine by the filter.
};

class UdpIo {
 public:
  // Binds a UDP socket to `local` (4 or 16 address bytes; port 0 picks one)
  // and, when `nat_t_port` is not 0, a second one to that port of the same
  // address. Datagrams the engine addresses to `nat_t_port` leave through
  // the second socket with the non-ESP marker. Errors from socket()/bind()
  // come back as Status.
  static absl::StatusOr<std::unique_ptr<UdpIo>> Create(const Endpoint& local,
                                                       uint16_t nat_t_port = 0);
  ~UdpIo();
  UdpIo(const UdpIo&) = delete;
  UdpIo& operator=(const UdpIo&) = delete;

  // The bound port (useful after binding port 0).
  uint16_t port() const { return port_; }

  // Sends what the engine has in its outbox. A failed sendto is counted and
  // logged, not returned: the engine's retransmission timer covers it.
  void Flush(Engine& engine);

  // Drives `engine` until `stop()` returns true (checked after every step)
  // or `until` passes. Returns OK in both cases; an error only when poll()
  // itself fails for a reason other than EINTR. `slice` bounds each wait so
  // that `stop()` is seen promptly (e.g. a flag set by a signal handler).
  absl::Status Run(Engine& engine, Clock& clock, absl::Time until,
                   const std::function<bool()>& stop,
                   absl::Duration slice = absl::Milliseconds(200));

  const UdpIoCounters& counters() const { return counters_; }

  // Sees every IKE message (non-ESP marker stripped) before the engine and
  // returns false to keep it from the engine; a non-empty `*reply` goes
  // back to the sender through the socket the message came on (responder
  // cookies, cookie.h).
  using Filter =
      std::function<bool(absl::Span<const uint8_t> datagram, const Endpoint& from, Bytes* reply)>;
  void SetFilter(Filter filter) { filter_ = std::move(filter); }

 private:
  UdpIo(int fd, int nat_t_fd, int family, uint16_t port, uint16_t nat_t_port)
      : fd_(fd), nat_t_fd_(nat_t_fd), family_(family), port_(port), nat_t_port_(nat_t_port) {}
  // Reads the datagrams queued on `fd` (a bounded number, so that a flood
  // does not starve the timers) without blocking and hands each to the
  // engine; `nat_t` strips (and requires) the non-ESP marker.
  void Drain(Engine& engine, int fd, bool nat_t);
  void SendTo(int fd, bool nat_t, const Bytes& data, const Endpoint& to);

  int fd_;
  int nat_t_fd_;  // -1 without NAT-T.
  int family_;
  uint16_t port_;
  uint16_t nat_t_port_;
  UdpIoCounters counters_;
  Filter filter_;
};
using UdpIoPtr = std::unique_ptr<UdpIo>;

// A filter for a UdpIo around one responder `engine` that talks to `peer`
// (an address): while the engine is idle, an IKE_SA_INIT request from the
// peer without a valid COOKIE gets a stateless N(COOKIE) answer and never
// reaches the engine, so that a request with a spoofed source cannot take
// the engine's one responder slot. Everything else passes (the engine
// drops and counts what it should not see). Counts the cookies sent in
// `*cookies_sent` when set. `cookies`, `engine` and `cookies_sent` must
// outlive the filter.
UdpIo::Filter ResponderCookieFilter(CookieGenerator& cookies, const Engine& engine, Bytes peer,
                                    uint64_t* cookies_sent = nullptr);

// For I/O loops that own sockets themselves (the agent's IKE runner).

// RFC 3948 section 2.2: IKE on the NAT-T port starts with four zero bytes.
inline constexpr uint8_t kNonEspMarker[4] = {0, 0, 0, 0};
// A non-blocking, close-on-exec UDP socket bound to `local` (IPv6 ones are
// v6-only); the bound port goes to `*port`. Errors of socket()/bind().
absl::StatusOr<int> BindUdpSocket(const Endpoint& local, uint16_t* port);
// Fills `ss`; returns its length, or 0 when the address is neither IPv4 nor
// IPv6.
socklen_t ToSockaddr(const Endpoint& e, sockaddr_storage* ss);
// False for families other than IPv4 and IPv6.
bool FromSockaddr(const sockaddr_storage& ss, Endpoint* e);

// "192.0.2.1" or "2001:db8::1" to 4 or 16 bytes; InvalidArgument otherwise.
absl::StatusOr<Bytes> ParseIpAddress(const std::string& text);
// The reverse, for logs and JSON.
std::string FormatIpAddress(const Bytes& address);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_UDP_IO_H_
