#include "dataplane/testing/fake_netlink_transport.h"

#include <libmnl/libmnl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace strait::dataplane::testing {

FakeNetlinkTransport::FakeNetlinkTransport() : event_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

FakeNetlinkTransport::~FakeNetlinkTransport() {
  if (event_fd_ >= 0) close(event_fd_);
}

Bytes FakeNetlinkTransport::Message(uint16_t type, uint16_t flags, uint32_t seq, const void* fixed,
                                    size_t fixed_length,
                                    const std::function<void(nlmsghdr*)>& attributes) {
  Bytes buffer(MNL_SOCKET_BUFFER_SIZE * 4, 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buffer.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = flags;
  nlh->nlmsg_seq = seq;
  if (fixed_length > 0) {
    memcpy(mnl_nlmsg_put_extra_header(nlh, fixed_length), fixed, fixed_length);
  }
  if (attributes) attributes(nlh);
  buffer.resize(nlh->nlmsg_len);
  return buffer;
}

void FakeNetlinkTransport::PushLocked(Bytes datagram) {
  inbox_.push_back(std::move(datagram));
  uint64_t one = 1;
  (void)!write(event_fd_, &one, sizeof(one));
}

absl::Status FakeNetlinkTransport::Send(absl::Span<const uint8_t> datagram) {
  absl::MutexLock lock(&mu_);
  sent_.emplace_back(datagram.begin(), datagram.end());
  last_sent_ = datagram.data();
  last_sent_size_ = datagram.size();

  const auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data());
  int remaining = static_cast<int>(datagram.size());
  while (mnl_nlmsg_ok(nlh, remaining)) {
    if (responder_) {
      for (Bytes& reply : responder_(*nlh)) PushLocked(std::move(reply));
    }
    if (nlh->nlmsg_flags & NLM_F_DUMP) {
      int done = 0;
      PushLocked(Message(NLMSG_DONE, NLM_F_MULTI, nlh->nlmsg_seq, &done, sizeof(done)));
    } else if (nlh->nlmsg_flags & NLM_F_ACK) {
      int error = 0;
      std::string reason;
      if (!failures_.empty()) {
        std::tie(error, reason) = failures_.front();
        failures_.pop_front();
      }
      // Capped, as the real socket asks for: the request's header only.
      nlmsgerr ack = {};
      ack.error = -error;
      ack.msg = *nlh;
      uint16_t flags = NLM_F_CAPPED | (reason.empty() ? 0 : NLM_F_ACK_TLVS);
      PushLocked(Message(NLMSG_ERROR, flags, nlh->nlmsg_seq, &ack, sizeof(ack), [&](nlmsghdr* m) {
        if (!reason.empty()) mnl_attr_put_strz(m, NLMSGERR_ATTR_MSG, reason.c_str());
      }));
    }
    nlh = mnl_nlmsg_next(nlh, &remaining);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> FakeNetlinkTransport::Receive(absl::Span<uint8_t> buffer) {
  absl::MutexLock lock(&mu_);
  if (last_sent_ != nullptr) {
    if (std::any_of(last_sent_, last_sent_ + last_sent_size_, [](uint8_t b) { return b != 0; })) {
      wiped_ = false;
    }
    last_sent_ = nullptr;
  }
  if (inbox_.empty()) return absl::DeadlineExceededError("fake netlink: nothing to receive");
  uint64_t count;
  (void)!read(event_fd_, &count, sizeof(count));
  Bytes datagram = std::move(inbox_.front());
  inbox_.pop_front();
  // Readable again while more waits.
  for (size_t i = 0; i < inbox_.size(); ++i) {
    uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof(one));
  }
  if (datagram.empty()) return absl::ResourceExhaustedError("fake netlink: ENOBUFS");
  if (datagram.size() > buffer.size()) return absl::InternalError("fake netlink: truncated");
  std::copy(datagram.begin(), datagram.end(), buffer.begin());
  return datagram.size();
}

void FakeNetlinkTransport::FailNext(int error, std::string reason) {
  absl::MutexLock lock(&mu_);
  failures_.emplace_back(error, std::move(reason));
}

void FakeNetlinkTransport::SetResponder(Responder responder) {
  absl::MutexLock lock(&mu_);
  responder_ = std::move(responder);
}

void FakeNetlinkTransport::Queue(Bytes datagram) {
  absl::MutexLock lock(&mu_);
  PushLocked(std::move(datagram));
}

void FakeNetlinkTransport::QueueOverflow() {
  absl::MutexLock lock(&mu_);
  PushLocked(Bytes());
}

std::vector<Bytes> FakeNetlinkTransport::datagrams() const {
  absl::MutexLock lock(&mu_);
  return sent_;
}

std::vector<Bytes> FakeNetlinkTransport::messages() const {
  absl::MutexLock lock(&mu_);
  std::vector<Bytes> out;
  for (const Bytes& datagram : sent_) {
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data());
    int remaining = static_cast<int>(datagram.size());
    while (mnl_nlmsg_ok(nlh, remaining)) {
      const auto* begin = reinterpret_cast<const uint8_t*>(nlh);
      out.emplace_back(begin, begin + nlh->nlmsg_len);
      nlh = mnl_nlmsg_next(nlh, &remaining);
    }
  }
  return out;
}

void FakeNetlinkTransport::ClearSent() {
  absl::MutexLock lock(&mu_);
  sent_.clear();
}

bool FakeNetlinkTransport::sender_wiped_before_reading() const {
  absl::MutexLock lock(&mu_);
  return wiped_;
}

}  // namespace strait::dataplane::testing
