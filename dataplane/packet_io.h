#ifndef STRAIT_DATAPLANE_PACKET_IO_H_
#define STRAIT_DATAPLANE_PACKET_IO_H_

// The packet I/O of the userspace ESP backend, behind small interfaces so
// that tests run without devices:
//   PacketDevice    inner packets to and from the host (a TUN device);
//   RouteTable      routes that send the remote selectors into the device;
//   DatagramSocket  ESP-in-UDP out (RFC 3948), e.g. the IKE runner's UDP
//                   4500 socket, shared with IKE. Received ESP-in-UDP comes
//                   in through UserspaceDataplane::HandleEspDatagram().

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "dataplane/dataplane.h"

namespace strait::dataplane {

struct UdpEndpoint {
  Address address;  // 4 or 16 bytes, network order.
  uint16_t port = 0;
};
inline bool operator==(const UdpEndpoint& a, const UdpEndpoint& b) {
  return a.address == b.address && a.port == b.port;
}

class PacketDevice {
 public:
  virtual ~PacketDevice() = default;
  // Waits up to `timeout` for one inner packet (IPv4 or IPv6) and copies it
  // into `buffer`. Returns its size, or 0 when none came in time. An error
  // means the device failed (the caller counts it and carries on).
  virtual absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer, absl::Duration timeout) = 0;
  // Hands a decapsulated inner packet to the host.
  virtual absl::Status Write(absl::Span<const uint8_t> packet) = 0;
};
using PacketDevicePtr = std::unique_ptr<PacketDevice>;

class RouteTable {
 public:
  virtual ~RouteTable() = default;
  // Routes `selector.destination/destination_prefix` into the device, with
  // a preferred source address inside `selector.source/source_prefix` when
  // the host has one (so that locally sent packets match the policy).
  // Adding a route that exists replaces it.
  virtual absl::Status AddRoute(const Selector& selector) = 0;
  // Removes the route AddRoute() made for the same destination prefix.
  virtual absl::Status DeleteRoute(const Selector& selector) = 0;
};

class DatagramSocket {
 public:
  virtual ~DatagramSocket() = default;
  // Sends one UDP datagram whose payload is `payload` (an ESP packet, SPI
  // first, no non-ESP marker) from `local` to `remote`. Thread-safe.
  virtual absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                            const UdpEndpoint& remote) = 0;
};

// A DatagramSocket from a function, e.g. the IKE runner's sendto() on its
// UDP 4500 socket.
class CallbackDatagramSocket : public DatagramSocket {
 public:
  using SendFunction = std::function<absl::Status(
      absl::Span<const uint8_t> payload, const UdpEndpoint& local, const UdpEndpoint& remote)>;
  explicit CallbackDatagramSocket(SendFunction send) : send_(std::move(send)) {}

  // DatagramSocket
  absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                    const UdpEndpoint& remote) override {
    return send_(payload, local, remote);
  }

 private:
  const SendFunction send_;
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_PACKET_IO_H_
