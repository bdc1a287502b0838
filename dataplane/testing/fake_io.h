#ifndef STRAIT_DATAPLANE_TESTING_FAKE_IO_H_
#define STRAIT_DATAPLANE_TESTING_FAKE_IO_H_

// In-memory PacketDevice, DatagramSocket and RouteTable for tests of the
// userspace dataplane.

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/packet_io.h"

namespace strait::dataplane::testing {

// Read() serves Inject()ed packets; Write()s are recorded.
class FakeDevice : public PacketDevice {
 public:
  void Inject(std::vector<uint8_t> packet);
  std::vector<std::vector<uint8_t>> written();
  size_t written_count();
  void set_fail_writes(bool fail);

  // PacketDevice
  absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer, absl::Duration timeout) override;
  absl::Status Write(absl::Span<const uint8_t> packet) override;

 private:
  absl::Mutex mu_;
  std::deque<std::vector<uint8_t>> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<uint8_t>> written_ ABSL_GUARDED_BY(mu_);
  bool fail_writes_ ABSL_GUARDED_BY(mu_) = false;
};

// Records every datagram and hands it to `forward` (e.g. the peer
// dataplane's HandleEspDatagram) when set.
class FakeSocket : public DatagramSocket {
 public:
  struct Sent {
    std::vector<uint8_t> payload;
    UdpEndpoint local;
    UdpEndpoint remote;
  };
  using Forward = std::function<void(const Sent&)>;

  void set_forward(Forward forward);
  void set_fail(bool fail);
  std::vector<Sent> sent();
  Sent last();  // The latest datagram; there must be one.
  size_t sent_count();

  // DatagramSocket
  absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                    const UdpEndpoint& remote) override;

 private:
  absl::Mutex mu_;
  std::vector<Sent> sent_ ABSL_GUARDED_BY(mu_);
  Forward forward_ ABSL_GUARDED_BY(mu_);
  bool fail_ ABSL_GUARDED_BY(mu_) = false;
};

class FakeRoutes : public RouteTable {
 public:
  std::vector<Selector> added;
  std::vector<Selector> deleted;
  bool fail = false;

  // RouteTable
  absl::Status AddRoute(const Selector& selector) override;
  absl::Status DeleteRoute(const Selector& selector) override;
};

}  // namespace strait::dataplane::testing

#endif  // STRAIT_DATAPLANE_TESTING_FAKE_IO_H_
