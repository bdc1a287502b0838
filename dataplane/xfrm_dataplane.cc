#include "dataplane/xfrm_dataplane.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "dataplane/netlink_transport_impl.h"

namespace strait::dataplane {
namespace {

// A batch datagram holds at most this many bytes; the send buffer is twice
// that because libmnl's batch writes the message that overflows a datagram
// behind it before moving it to the front of the next.
constexpr size_t kBatchLimitBytes = size_t{32} * 1024;
constexpr size_t kSendBufferBytes = 2 * kBatchLimitBytes;
// The kernel sizes dump datagrams by our reads, up to 32 KiB.
constexpr size_t kReceiveBufferBytes = size_t{64} * 1024;

// XFRMNLGRP_* are group numbers; bind() takes a bitmask.
constexpr uint32_t GroupBit(int group) { return 1u << (group - 1); }

// What a receive loop is waiting for, shared with libmnl's callbacks.
struct ReceiveState {
  uint32_t first_seq = 0;
  size_t count = 0;
  bool dump = false;
  size_t pending = 0;
  const std::function<absl::Status(const nlmsghdr&)>* on_data = nullptr;
  std::vector<std::pair<int, std::string>>* answers = nullptr;  // errno, reason
  absl::Status status;

  // The index of the request `message` answers, or -1 when it answers an
  // older request (whose answers we stopped waiting for).
  ptrdiff_t IndexOf(const nlmsghdr& message) const {
    uint32_t offset = message.nlmsg_seq - first_seq;  // Wraps for older ones.
    return offset < count ? static_cast<ptrdiff_t>(offset) : -1;
  }
};

int CollectReason(const nlattr* attr, void* data) {
  if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
      mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0) {
    *static_cast<std::string*>(data) = mnl_attr_get_str(attr);
  }
  return MNL_CB_OK;
}

// The extended ACK's text, behind the error and the echoed request (only
// its header when capped).
std::string ExtendedAckReason(const nlmsghdr& message) {
  std::string reason;
  if (!(message.nlmsg_flags & NLM_F_ACK_TLVS)) return reason;
  const auto* error = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(&message));
  size_t offset = sizeof(nlmsgerr);
  if (!(message.nlmsg_flags & NLM_F_CAPPED)) offset += error->msg.nlmsg_len - sizeof(nlmsghdr);
  if (offset >= mnl_nlmsg_get_payload_len(&message)) return reason;
  mnl_attr_parse(&message, static_cast<unsigned int>(offset), CollectReason, &reason);
  return reason;
}

int OnData(const nlmsghdr* message, void* data) {
  auto* state = static_cast<ReceiveState*>(data);
  if (state->IndexOf(*message) < 0 || state->on_data == nullptr) return MNL_CB_OK;
  state->status = (*state->on_data)(*message);
  return state->status.ok() ? MNL_CB_OK : MNL_CB_ERROR;
}

int OnError(const nlmsghdr* message, void* data) {
  auto* state = static_cast<ReceiveState*>(data);
  if (mnl_nlmsg_get_payload_len(message) < sizeof(nlmsgerr)) {
    state->status = absl::InternalError("netlink: short NLMSG_ERROR");
    return MNL_CB_ERROR;
  }
  ptrdiff_t index = state->IndexOf(*message);
  if (index < 0) return MNL_CB_OK;
  auto& answer = (*state->answers)[index];
  if (answer.first >= 0) return MNL_CB_OK;  // Answered already.
  const auto* error = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(message));
  answer.first = -error->error;
  answer.second = ExtendedAckReason(*message);
  // An error ends a dump too.
  state->pending = state->dump ? 0 : state->pending - 1;
  return MNL_CB_OK;
}

int OnDone(const nlmsghdr* message, void* data) {
  auto* state = static_cast<ReceiveState*>(data);
  if (!state->dump || state->IndexOf(*message) < 0 || state->pending == 0) return MNL_CB_OK;
  auto& answer = (*state->answers)[0];
  answer.first = 0;
  // A dump that failed part-way says so in NLMSG_DONE's payload.
  if (mnl_nlmsg_get_payload_len(message) >= sizeof(int)) {
    int error = *static_cast<const int*>(mnl_nlmsg_get_payload(message));
    if (error < 0) answer.first = -error;
  }
  state->pending = 0;
  return MNL_CB_OK;
}

int OnEvent(const nlmsghdr* message, void* data) {
  (*static_cast<std::function<void(const nlmsghdr&)>*>(data))(*message);
  return MNL_CB_OK;
}

std::string DescribePolicy(const PolicyConfig& p) {
  return absl::StrFormat("%s %s reqid 0x%08x", DirectionName(p.direction),
                         xfrm::SelectorToString(p.selector), p.reqid);
}

std::string DescribeSa(const SaConfig& sa) {
  return absl::StrFormat("%s src %s reqid 0x%08x", xfrm::SaIdToString(sa.id),
                         xfrm::AddressToString(sa.source), sa.reqid);
}

}  // namespace

absl::StatusOr<std::unique_ptr<XfrmDataplane>> XfrmDataplane::Create(
    const XfrmDataplaneOptions& options) {
  NetlinkSocketOptions request_options;
  request_options.receive_timeout = options.request_timeout;
  ASSIGN_OR_RETURN(auto requests, NetlinkSocketTransport::Create(NETLINK_XFRM, request_options));
  NetlinkTransportPtr events;
  if (options.events) {
    NetlinkSocketOptions event_options;
    event_options.groups = GroupBit(XFRMNLGRP_EXPIRE) | GroupBit(XFRMNLGRP_ACQUIRE);
    event_options.receive_timeout = absl::ZeroDuration();  // Polled.
    ASSIGN_OR_RETURN(events, NetlinkSocketTransport::Create(NETLINK_XFRM, event_options));
  }
  return CreateWithTransports(std::move(requests), std::move(events));
}

absl::StatusOr<std::unique_ptr<XfrmDataplane>> XfrmDataplane::CreateWithTransports(
    NetlinkTransportPtr requests, NetlinkTransportPtr events) {
  int stop_fd = -1;
  if (events != nullptr) {
    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  return std::unique_ptr<XfrmDataplane>(
      new XfrmDataplane(std::move(requests), std::move(events), stop_fd));
}

XfrmDataplane::XfrmDataplane(NetlinkTransportPtr requests, NetlinkTransportPtr events, int stop_fd)
    : requests_(std::move(requests)),
      events_(std::move(events)),
      stop_fd_(stop_fd),
      send_buffer_(kSendBufferBytes),
      receive_buffer_(kReceiveBufferBytes) {
  if (events_ != nullptr) event_thread_ = std::thread([this] { EventLoop(); });
}

XfrmDataplane::~XfrmDataplane() {
  if (event_thread_.joinable()) {
    uint64_t one = 1;
    while (write(stop_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
    event_thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
}

uint32_t XfrmDataplane::NextSeqLocked(size_t count) {
  // Sequence 0 reads as "any" to some parsers; never hand it out.
  if (next_seq_ == 0 || next_seq_ + count < next_seq_) next_seq_ = 1;
  uint32_t first = next_seq_;
  next_seq_ += static_cast<uint32_t>(count);
  return first;
}

absl::Status XfrmDataplane::ExchangeLocked(absl::Span<uint8_t> datagram, uint32_t first_seq,
                                           size_t count, bool dump, const MessageHandler* on_data,
                                           std::vector<Answer>& answers) {
  absl::Status sent = requests_->Send(datagram);
  OPENSSL_cleanse(datagram.data(), datagram.size());
  if (!sent.ok()) return sent;
  requests_sent_ += count;

  std::vector<std::pair<int, std::string>> raw(count, {-1, ""});
  ReceiveState state;
  state.first_seq = first_seq;
  state.count = count;
  state.dump = dump;
  state.pending = count;
  state.on_data = on_data;
  state.answers = &raw;

  mnl_cb_t control[NLMSG_MIN_TYPE] = {};
  control[NLMSG_ERROR] = OnError;
  control[NLMSG_DONE] = OnDone;
  absl::Span<uint8_t> buffer(receive_buffer_);
  while (state.pending > 0) {
    absl::StatusOr<size_t> received = requests_->Receive(buffer);
    if (!received.ok()) {
      return absl::Status(received.status().code(),
                          absl::StrCat(received.status().message(), " (", state.pending, " of ",
                                       count, " answers outstanding)"));
    }
    // Sequence numbers are checked by the callbacks (a batch spans many);
    // libmnl checks the port id.
    int rc = mnl_cb_run2(buffer.data(), *received, 0, requests_->port_id(), OnData, &state, control,
                         NLMSG_MIN_TYPE);
    int error = errno;
    OPENSSL_cleanse(buffer.data(), *received);
    if (!state.status.ok()) return state.status;
    if (rc < 0) {
      return absl::InternalError(absl::StrCat("netlink: bad answer: ", strerror(error)));
    }
  }
  answers.clear();
  for (auto& [error, reason] : raw) answers.push_back({error, std::move(reason)});
  return absl::OkStatus();
}

absl::Status XfrmDataplane::Transact(absl::string_view operation, Builder build,
                                     const MessageHandler* on_data) {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    uint32_t seq = NextSeqLocked(1);
    absl::StatusOr<size_t> length = build(seq, absl::MakeSpan(send_buffer_));
    if (!length.ok()) {
      OPENSSL_cleanse(send_buffer_.data(), send_buffer_.size());
      return length.status();
    }
    RETURN_IF_ERROR(ExchangeLocked(absl::MakeSpan(send_buffer_.data(), *length), seq, 1,
                                   /*dump=*/false, on_data, answers));
  }
  if (answers[0].error == 0) return absl::OkStatus();
  ++kernel_errors_;
  return xfrm::KernelError(answers[0].error, operation, answers[0].reason);
}

absl::Status XfrmDataplane::Dump(uint16_t type, const MessageHandler& on_entry) {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    uint32_t seq = NextSeqLocked(1);
    ASSIGN_OR_RETURN(size_t length, xfrm::BuildDump(type, seq, absl::MakeSpan(send_buffer_)));
    RETURN_IF_ERROR(ExchangeLocked(absl::MakeSpan(send_buffer_.data(), length), seq, 1,
                                   /*dump=*/true, &on_entry, answers));
  }
  if (answers[0].error == 0) return absl::OkStatus();
  ++kernel_errors_;
  return xfrm::KernelError(answers[0].error, type == XFRM_MSG_GETSA ? "dump SAs" : "dump policies",
                           answers[0].reason);
}

absl::Status XfrmDataplane::SendSa(uint16_t type, absl::string_view verb, const SaConfig& sa) {
  RETURN_IF_ERROR(xfrm::ValidateSa(sa));
  RETURN_IF_ERROR(Transact(absl::StrCat(verb, " SA ", DescribeSa(sa)),
                           [&](uint32_t seq, absl::Span<uint8_t> buffer) {
                             return xfrm::BuildAddSa(type, sa, seq, buffer);
                           }));
  RememberMark(sa.id, {sa.mark, sa.mark_mask});
  LOG_DEBUG("xfrm SA installed")
      .With("op", verb)
      .With("spi", absl::StrFormat("0x%08x", sa.id.spi))
      .With("dst", xfrm::AddressToString(sa.id.destination))
      .With("reqid", static_cast<uint64_t>(sa.reqid));
  return absl::OkStatus();
}

absl::Status XfrmDataplane::AddSa(const SaConfig& sa) { return SendSa(XFRM_MSG_NEWSA, "add", sa); }

absl::Status XfrmDataplane::UpdateSa(const SaConfig& sa) {
  return SendSa(XFRM_MSG_UPDSA, "update", sa);
}

void XfrmDataplane::RememberMark(const SaId& id, xfrm::Mark mark) {
  absl::MutexLock lock(&marks_mu_);
  if (mark.mask == 0) {
    marks_.erase({id.destination, id.spi});
  } else {
    marks_[{id.destination, id.spi}] = mark;
  }
}

void XfrmDataplane::ForgetMark(const SaId& id) {
  absl::MutexLock lock(&marks_mu_);
  marks_.erase({id.destination, id.spi});
}

absl::Status XfrmDataplane::WithSaMark(const SaId& id,
                                       absl::FunctionRef<absl::Status(xfrm::Mark)> request) {
  if (id.destination.size() != 4 && id.destination.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("SA destination: ", id.destination.size(), " bytes, want 4 or 16"));
  }
  std::optional<xfrm::Mark> known;
  {
    absl::MutexLock lock(&marks_mu_);
    auto it = marks_.find({id.destination, id.spi});
    if (it != marks_.end()) known = it->second;
  }
  absl::Status status = request(known.value_or(xfrm::Mark{}));
  if (known || !absl::IsNotFound(status)) return status;

  // Maybe marked by an earlier run of the agent: find the mark in a dump.
  std::optional<xfrm::Mark> found;
  RETURN_IF_ERROR(Dump(XFRM_MSG_GETSA, [&](const nlmsghdr& message) {
    absl::StatusOr<SaConfig> sa = xfrm::ParseSa(message);
    if (sa.ok() && sa->id == id && sa->mark_mask != 0) found = xfrm::Mark{sa->mark, sa->mark_mask};
    return absl::OkStatus();
  }));
  if (!found) return status;
  RememberMark(id, *found);
  return request(*found);
}

absl::Status XfrmDataplane::DeleteSa(const SaId& id) {
  RETURN_IF_ERROR(WithSaMark(id, [&](xfrm::Mark mark) {
    return Transact(absl::StrCat("delete SA ", xfrm::SaIdToString(id)),
                    [&](uint32_t seq, absl::Span<uint8_t> buffer) {
                      return xfrm::BuildSaById(XFRM_MSG_DELSA, id, mark, seq, buffer);
                    });
  }));
  ForgetMark(id);
  return absl::OkStatus();
}

absl::StatusOr<SaCounters> XfrmDataplane::GetCounters(const SaId& id) {
  SaCounters counters;
  MessageHandler on_reply = [&](const nlmsghdr& message) -> absl::Status {
    if (message.nlmsg_type != XFRM_MSG_NEWSA) return absl::OkStatus();
    ASSIGN_OR_RETURN(counters, xfrm::ParseSaCounters(message));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(WithSaMark(id, [&](xfrm::Mark mark) {
    return Transact(
        absl::StrCat("get SA ", xfrm::SaIdToString(id)),
        [&](uint32_t seq, absl::Span<uint8_t> buffer) {
          return xfrm::BuildSaById(XFRM_MSG_GETSA, id, mark, seq, buffer);
        },
        &on_reply);
  }));
  return counters;
}

absl::Status XfrmDataplane::AddPolicy(const PolicyConfig& policy) {
  RETURN_IF_ERROR(xfrm::ValidatePolicy(policy));
  return Transact(absl::StrCat("add policy ", DescribePolicy(policy)),
                  [&](uint32_t seq, absl::Span<uint8_t> buffer) {
                    return xfrm::BuildAddPolicy(policy, seq, buffer);
                  });
}

absl::Status XfrmDataplane::AddPolicies(const std::vector<PolicyConfig>& policies) {
  for (size_t i = 0; i < policies.size(); ++i) {
    absl::Status valid = xfrm::ValidatePolicy(policies[i]);
    if (!valid.ok()) {
      return absl::Status(valid.code(), absl::StrCat("policy ", i + 1, " of ", policies.size(),
                                                     ": ", valid.message()));
    }
  }
  if (policies.empty()) return absl::OkStatus();

  absl::MutexLock lock(&mu_);
  struct BatchStop {
    void operator()(mnl_nlmsg_batch* b) const { mnl_nlmsg_batch_stop(b); }
  };
  std::unique_ptr<mnl_nlmsg_batch, BatchStop> batch(
      mnl_nlmsg_batch_start(send_buffer_.data(), kBatchLimitBytes));
  if (batch == nullptr) return absl::ResourceExhaustedError("netlink batch: out of memory");

  uint32_t base_seq = NextSeqLocked(policies.size());
  size_t first = 0;  // The first policy of the datagram being filled.
  auto send = [&](size_t end) -> absl::Status {
    auto* head = static_cast<uint8_t*>(mnl_nlmsg_batch_head(batch.get()));
    size_t size = mnl_nlmsg_batch_size(batch.get());
    return SendPolicyBatchLocked(absl::MakeSpan(head, size), base_seq + first, first, end,
                                 policies);
  };
  for (size_t i = 0; i < policies.size(); ++i) {
    auto* current = static_cast<uint8_t*>(mnl_nlmsg_batch_current(batch.get()));
    size_t room = send_buffer_.size() - static_cast<size_t>(current - send_buffer_.data());
    RETURN_IF_ERROR(
        xfrm::BuildAddPolicy(policies[i], base_seq + i, absl::MakeSpan(current, room)).status());
    // When policy i does not fit, the datagram ends before it and libmnl's
    // reset moves it to the front of the next one.
    bool fits = mnl_nlmsg_batch_next(batch.get());
    size_t end = fits ? i + 1 : i;
    if (!fits || end - first == kBatchMaxMessages) {
      if (end == first) return absl::InternalError("netlink batch: message larger than a batch");
      RETURN_IF_ERROR(send(end));
      mnl_nlmsg_batch_reset(batch.get());
      first = end;
    }
  }
  if (first < policies.size()) RETURN_IF_ERROR(send(policies.size()));
  LOG_DEBUG("xfrm policies installed").With("count", static_cast<uint64_t>(policies.size()));
  return absl::OkStatus();
}

absl::Status XfrmDataplane::SendPolicyBatchLocked(absl::Span<uint8_t> datagram, uint32_t first_seq,
                                                  size_t first, size_t end,
                                                  const std::vector<PolicyConfig>& policies) {
  std::vector<Answer> answers;
  absl::Status exchanged =
      ExchangeLocked(datagram, first_seq, end - first, /*dump=*/false, nullptr, answers);
  if (!exchanged.ok()) {
    return absl::Status(exchanged.code(), absl::StrCat("add policies ", first + 1, "-", end, " of ",
                                                       policies.size(), ": ", exchanged.message()));
  }
  size_t failed = 0;
  size_t first_failed = 0;
  for (size_t j = 0; j < answers.size(); ++j) {
    if (answers[j].error == 0) continue;
    if (failed++ == 0) first_failed = j;
  }
  if (failed == 0) return absl::OkStatus();
  kernel_errors_ += failed;
  size_t index = first + first_failed;
  absl::Status status =
      xfrm::KernelError(answers[first_failed].error,
                        absl::StrCat("add policy ", index + 1, " of ", policies.size(), " (",
                                     DescribePolicy(policies[index]), ")"),
                        answers[first_failed].reason);
  std::string note =
      absl::StrCat("; ", failed, " of the ", end - first, " policies in its batch failed");
  if (end < policies.size()) absl::StrAppend(&note, ", policies ", end + 1, "- were not sent");
  return absl::Status(status.code(), absl::StrCat(status.message(), note));
}

absl::Status XfrmDataplane::DeletePolicy(const Selector& selector, Direction direction,
                                         uint32_t mark, uint32_t mark_mask, uint32_t if_id) {
  RETURN_IF_ERROR(xfrm::ValidateSelector(selector));
  RETURN_IF_ERROR(xfrm::ValidateMark(mark, mark_mask));
  return Transact(
      absl::StrCat("delete policy ", DirectionName(direction), " ",
                   xfrm::SelectorToString(selector)),
      [&](uint32_t seq, absl::Span<uint8_t> buffer) {
        return xfrm::BuildDeletePolicy(selector, direction, {mark, mark_mask}, if_id, seq, buffer);
      });
}

absl::StatusOr<InstalledState> XfrmDataplane::List() {
  InstalledState state;
  RETURN_IF_ERROR(Dump(XFRM_MSG_GETSA, [&](const nlmsghdr& message) {
    absl::StatusOr<SaConfig> sa = xfrm::ParseSa(message);
    // Another daemon's exotic SA is none of our business; one of ours that
    // does not parse can only have been made by hand in our reqid range.
    if (!sa.ok()) {
      LOG_DEBUG("xfrm: SA not understood, skipped").With("error", sa.status().ToString());
    } else if (IsStraitReqid(sa->reqid) && sa->id.spi != 0) {
      state.sas.push_back(*std::move(sa));
    }
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(Dump(XFRM_MSG_GETPOLICY, [&](const nlmsghdr& message) {
    absl::StatusOr<PolicyConfig> policy = xfrm::ParsePolicy(message);
    if (!policy.ok()) {
      LOG_DEBUG("xfrm: policy not understood, skipped").With("error", policy.status().ToString());
    } else if (IsStraitReqid(policy->reqid)) {
      state.policies.push_back(*std::move(policy));
    }
    return absl::OkStatus();
  }));
  for (const SaConfig& sa : state.sas) RememberMark(sa.id, {sa.mark, sa.mark_mask});
  return state;
}

void XfrmDataplane::Subscribe(std::function<void(const DataplaneEvent&)> callback) {
  absl::MutexLock lock(&callback_mu_);
  callback_ = std::move(callback);
}

XfrmDataplaneStats XfrmDataplane::stats() const {
  XfrmDataplaneStats s;
  s.requests = requests_sent_;
  s.kernel_errors = kernel_errors_;
  s.events_delivered = events_delivered_;
  s.events_foreign = events_foreign_;
  s.events_lost = events_lost_;
  s.events_malformed = events_malformed_;
  return s;
}

void XfrmDataplane::EventLoop() {
  std::vector<uint8_t> buffer(kReceiveBufferBytes);
  std::function<void(const nlmsghdr&)> handler = [this](const nlmsghdr& m) { HandleEvent(m); };
  pollfd fds[2] = {{events_->fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (true) {
    int ready = poll(fds, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("xfrm events: poll failed, no more events").With("error", strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    absl::StatusOr<size_t> received = events_->Receive(absl::MakeSpan(buffer));
    if (!received.ok()) {
      if (absl::IsResourceExhausted(received.status())) {
        // Lost expires are found again by the agent's periodic List().
        if (events_lost_++ == 0) {
          LOG_WARNING("xfrm events lost: receive queue overflowed (counted from now on)");
        }
        continue;
      }
      LOG_ERROR("xfrm events: receive failed").With("error", received.status().ToString());
      // Do not spin on a persistent error; a stop request still ends the wait.
      poll(&fds[1], 1, 100);
      if (fds[1].revents != 0) return;
      continue;
    }
    // Multicast messages carry port id 0 and no sequence number.
    if (mnl_cb_run2(buffer.data(), *received, 0, 0, OnEvent, &handler, nullptr, 0) < 0) {
      ++events_malformed_;
    }
  }
}

void XfrmDataplane::HandleEvent(const nlmsghdr& message) {
  absl::StatusOr<std::optional<DataplaneEvent>> event = xfrm::ParseEvent(message);
  if (!event.ok()) {
    if (events_malformed_++ == 0) {
      LOG_WARNING("xfrm event not understood").With("error", event.status().ToString());
    }
    return;
  }
  if (!event->has_value()) return;  // E.g. policy expiry: not ours to care about.
  const DataplaneEvent& e = **event;
  if (!IsStraitReqid(e.reqid)) {
    ++events_foreign_;
    return;
  }
  if (e.kind == DataplaneEvent::Kind::kHardExpire) ForgetMark(e.sa);
  std::function<void(const DataplaneEvent&)> callback;
  {
    absl::MutexLock lock(&callback_mu_);
    callback = callback_;
  }
  ++events_delivered_;
  if (callback) callback(e);
}

}  // namespace strait::dataplane
