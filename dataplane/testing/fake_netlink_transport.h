#ifndef STRAIT_DATAPLANE_TESTING_FAKE_NETLINK_TRANSPORT_H_
#define STRAIT_DATAPLANE_TESTING_FAKE_NETLINK_TRANSPORT_H_

// A NetlinkTransport that plays the kernel for tests: it keeps every
// datagram sent, acknowledges each request that asks for it (with scripted
// errors), answers dumps and GETs through a responder, and delivers
// datagrams a test queues (events). Its fd() is an eventfd that is readable
// while something waits to be received.

#include <linux/netlink.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/netlink_transport.h"

namespace strait::dataplane::testing {

using Bytes = std::vector<uint8_t>;

class FakeNetlinkTransport : public NetlinkTransport {
 public:
  // Data messages for one request (e.g. XFRM_MSG_NEWSA entries of a dump),
  // sent before its acknowledgement or NLMSG_DONE. Each must carry the
  // request's sequence number (see Message()).
  using Responder = std::function<std::vector<Bytes>(const nlmsghdr& request)>;

  FakeNetlinkTransport();
  ~FakeNetlinkTransport() override;

  // NetlinkTransport
  absl::Status Send(absl::Span<const uint8_t> datagram) override;
  absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) override;
  uint32_t port_id() const override { return 0; }
  int fd() const override { return event_fd_; }

  // The next requests that ask for an acknowledgement are refused with
  // these errnos (and extended-ACK reasons), in order; later ones succeed.
  void FailNext(int error, std::string reason = "");
  void SetResponder(Responder responder);
  // Queues a datagram for Receive(), e.g. a kernel event.
  void Queue(Bytes datagram);
  // The kernel's answer to the next Receive: ENOBUFS, as when it dropped
  // messages.
  void QueueOverflow();

  // Every datagram sent, and the messages in them.
  std::vector<Bytes> datagrams() const;
  std::vector<Bytes> messages() const;
  void ClearSent();
  // False once a sender read an answer while the bytes it had sent were not
  // yet wiped from its buffer.
  bool sender_wiped_before_reading() const;

  // A netlink message of `type` with `flags` and `seq`, holding `fixed`
  // followed by attributes appended by `attributes` (may be empty).
  static Bytes Message(uint16_t type, uint16_t flags, uint32_t seq, const void* fixed,
                       size_t fixed_length,
                       const std::function<void(nlmsghdr*)>& attributes = nullptr);

 private:
  void PushLocked(Bytes datagram) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int event_fd_;
  mutable absl::Mutex mu_;
  std::deque<Bytes> inbox_ ABSL_GUARDED_BY(mu_);  // Empty Bytes: ENOBUFS.
  std::deque<std::pair<int, std::string>> failures_ ABSL_GUARDED_BY(mu_);
  Responder responder_ ABSL_GUARDED_BY(mu_);
  std::vector<Bytes> sent_ ABSL_GUARDED_BY(mu_);
  const uint8_t* last_sent_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t last_sent_size_ ABSL_GUARDED_BY(mu_) = 0;
  bool wiped_ ABSL_GUARDED_BY(mu_) = true;
};

}  // namespace strait::dataplane::testing

#endif  // STRAIT_DATAPLANE_TESTING_FAKE_NETLINK_TRANSPORT_H_
