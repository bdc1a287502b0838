#ifndef STRAIT_DATAPLANE_UDP_ESP_SOCKET_H_
#define STRAIT_DATAPLANE_UDP_ESP_SOCKET_H_

// A UDP socket of its own for ESP-in-UDP (RFC 3948), for running the
// userspace backend without the IKE runner (tests, tools). In the agent
// the runner owns UDP 4500 and shares it instead: ESP datagrams (first
// four bytes non-zero) go to UserspaceDataplane::HandleEspDatagram, and
// the runner's socket implements DatagramSocket for the way out.
//
// Received datagrams are sorted as the kernel's UDP_ENCAP_ESPINUDP socket
// does: a single 0xff byte is a NAT keepalive, a zero first word is IKE
// behind the non-ESP marker (counted and dropped here: no IKE on this
// socket), anything else of at least an ESP header is ESP.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "dataplane/packet_io.h"

namespace strait::dataplane {

struct UdpEspSocketCounters {
  uint64_t esp = 0;
  uint64_t keepalives = 0;
  uint64_t ike_dropped = 0;  // Non-ESP marker: IKE belongs on the runner's socket.
  uint64_t runts = 0;
  uint64_t receive_errors = 0;
  uint64_t sent = 0;
  uint64_t send_errors = 0;
};

class UdpEspSocket : public DatagramSocket {
 public:
  // (payload, from, local address) of one ESP datagram.
  using EspHandler = std::function<void(absl::Span<const uint8_t> payload, const UdpEndpoint& from,
                                        const Address& local)>;

  // Binds `local` (4 or 16 address bytes; port 0 picks one).
  static absl::StatusOr<std::unique_ptr<UdpEspSocket>> Create(const UdpEndpoint& local);
  ~UdpEspSocket() override;  // Stop()
  UdpEspSocket(const UdpEspSocket&) = delete;
  UdpEspSocket& operator=(const UdpEspSocket&) = delete;

  const UdpEndpoint& local() const { return local_; }

  // Receives on a thread of its own and hands ESP to `handler`.
  void Start(EspHandler handler);
  void Stop();

  UdpEspSocketCounters counters() const;

  // DatagramSocket: sends to `remote` from the bound address; `local`
  // names the SA's source and is not checked against the binding.
  absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                    const UdpEndpoint& remote) override;

 private:
  UdpEspSocket(int fd, UdpEndpoint local) : fd_(fd), local_(std::move(local)) {}
  void ReceiveLoop(const EspHandler& handler);

  const int fd_;
  const UdpEndpoint local_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::atomic<uint64_t> esp_{0}, keepalives_{0}, ike_dropped_{0}, runts_{0}, receive_errors_{0},
      sent_{0}, send_errors_{0};
};
using UdpEspSocketPtr = std::unique_ptr<UdpEspSocket>;

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_UDP_ESP_SOCKET_H_
