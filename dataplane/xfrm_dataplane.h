#ifndef STRAIT_DATAPLANE_XFRM_DATAPLANE_H_
#define STRAIT_DATAPLANE_XFRM_DATAPLANE_H_

// The kernel XFRM backend of the Dataplane: NETLINK_XFRM through libmnl.
//
// What it installs
//   SAs are tunnel-mode ESP (XFRM_MSG_NEWSA, UpdateSa XFRM_MSG_UPDSA) with
//   XFRM_STATE_AF_UNSPEC and no selector, so either inner family can use
//   them and the policies alone select traffic. Encryption 20 becomes the
//   AEAD "rfc4106(gcm(aes))" (key | salt, 128-bit ICV); encryption 12
//   becomes "cbc(aes)" with "hmac(sha256|384|512)" truncated to
//   128/192/256 bits. Windows above 32 packets and ESN use
//   XFRMA_REPLAY_ESN_VAL. Policies are added or replaced
//   (XFRM_MSG_UPDPOLICY) with one tunnel-mode ESP template that accepts any
//   algorithm: the SA with the template's reqid decides.
//
// Tag: the reqid
//   The kernel's tables are shared with whatever else runs on the node
//   (strongSwan, Libreswan, an operator's `ip xfrm`). Strait's SAs and
//   policies are the ones whose reqid (a policy's: its template's) lies in
//   [kReqidFirst, kReqidLast] (dataplane.h); AddSa/AddPolicy refuse any
//   other with InvalidArgument, List() returns only those, and Reconcile()
//   (reconcile.h) therefore never touches anything else. A reqid is the
//   one field every SA and policy template carries that changes nothing
//   about which packets match, unlike marks or priorities. Events about
//   other reqids are dropped, not delivered.
//
// Priority
//   A policy with priority 0 gets xfrm::DefaultPriority(selector): a band
//   from 2000 in which the more specific selector wins (xfrm_messages.h).
//
// Keys
//   Key material goes from the Secret straight into the request buffer,
//   which is wiped (OPENSSL_cleanse) right after the send, before the answer
//   is read; so is every datagram received, since SA dumps and GETSA answers
//   carry keys. The socket asks for capped acknowledgements, so errors do
//   not echo requests back. Keys are never logged or listed.
//
// Marks
//   The kernel finds a marked SA only when given its mark, which SaId does
//   not hold. The backend remembers the marks of the SAs it added or listed;
//   for others DeleteSa/GetCounters look the mark up in a dump.
//
// Events
//   A second socket joins XFRMNLGRP_EXPIRE and XFRMNLGRP_ACQUIRE; one thread
//   polls it and an eventfd, parses soft/hard expires and acquires, and calls
//   the subscriber. The destructor signals the eventfd and joins the thread.
//   A full receive queue loses events: counted (events_lost) and logged.
//
// Every method is thread-safe; requests are serialised on one socket.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "dataplane/dataplane.h"
#include "dataplane/netlink_transport.h"
#include "dataplane/xfrm_messages.h"

namespace strait::dataplane {

struct XfrmDataplaneOptions {
  // Open the event socket and thread (expire and acquire events).
  bool events = true;
  // How long a request waits for the kernel's answer.
  absl::Duration request_timeout = absl::Seconds(10);
};

// What the backend did and saw, for metrics.
struct XfrmDataplaneStats {
  uint64_t requests = 0;          // Netlink requests sent (a batch counts each).
  uint64_t kernel_errors = 0;     // Requests the kernel refused.
  uint64_t events_delivered = 0;  // To the subscriber (or dropped for want of one).
  uint64_t events_foreign = 0;    // About reqids outside Strait's range.
  uint64_t events_lost = 0;       // Receive queue overflows (ENOBUFS).
  uint64_t events_malformed = 0;  // Messages that did not parse.
};

class XfrmDataplane : public Dataplane {
 public:
  // Most messages a batch puts in one datagram. The kernel queues every
  // acknowledgement of a datagram before we read one; this bounds that.
  static constexpr size_t kBatchMaxMessages = 128;

  // Opens NETLINK_XFRM sockets in the caller's network namespace.
  static absl::StatusOr<std::unique_ptr<XfrmDataplane>> Create(
      const XfrmDataplaneOptions& options = {});
  // Over given transports, e.g. fakes that capture what is sent. `events`
  // may be null: no event thread then.
  static absl::StatusOr<std::unique_ptr<XfrmDataplane>> CreateWithTransports(
      NetlinkTransportPtr requests, NetlinkTransportPtr events);
  ~XfrmDataplane() override;
  XfrmDataplane(const XfrmDataplane&) = delete;
  XfrmDataplane& operator=(const XfrmDataplane&) = delete;

  // Dataplane
  std::string name() const override { return "xfrm"; }
  absl::Status AddSa(const SaConfig& sa) override;
  absl::Status UpdateSa(const SaConfig& sa) override;
  absl::Status DeleteSa(const SaId& id) override;
  absl::Status AddPolicy(const PolicyConfig& policy) override;
  // Datagrams of up to kBatchMaxMessages requests, each acknowledged. On the
  // first refusal it stops after that datagram and reports the policy
  // (index, direction, selector) and the kernel's reason; earlier policies
  // stay installed (List/Reconcile sort that out). All policies are
  // validated before anything is sent.
  absl::Status AddPolicies(const std::vector<PolicyConfig>& policies) override;
  absl::Status DeletePolicy(const Selector& selector, Direction direction, uint32_t mark = 0,
                            uint32_t mark_mask = 0, uint32_t if_id = 0) override;
  absl::StatusOr<SaCounters> GetCounters(const SaId& id) override;
  // Strait-tagged SAs (without keys, and without the kernel's larval
  // acquire entries, which have SPI 0) and policies.
  absl::StatusOr<InstalledState> List() override;
  void Subscribe(std::function<void(const DataplaneEvent&)> callback) override;

  XfrmDataplaneStats stats() const;

 private:
  // The kernel's answer to one request: 0 or a positive errno, and the
  // extended ACK's reason.
  struct Answer {
    int error = 0;
    std::string reason;
  };
  using MessageHandler = std::function<absl::Status(const nlmsghdr&)>;
  using Builder = absl::FunctionRef<absl::StatusOr<size_t>(uint32_t seq, absl::Span<uint8_t>)>;

  XfrmDataplane(NetlinkTransportPtr requests, NetlinkTransportPtr events, int stop_fd);

  // Reserves `count` consecutive sequence numbers.
  uint32_t NextSeqLocked(size_t count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `datagram` (`count` requests numbered from `first_seq`, or one
  // dump), wipes it, and reads until every request is answered (a dump: until
  // it is done). Messages of other requests are stale and skipped; data
  // messages of these go to `on_data`. Transport and parse failures are
  // returned; the kernel's answers land in `answers`.
  absl::Status ExchangeLocked(absl::Span<uint8_t> datagram, uint32_t first_seq, size_t count,
                              bool dump, const MessageHandler* on_data,
                              std::vector<Answer>& answers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One request built by `build`; its answer as a Status naming `operation`.
  absl::Status Transact(absl::string_view operation, Builder build,
                        const MessageHandler* on_data = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // Dumps `type` (XFRM_MSG_GETSA or XFRM_MSG_GETPOLICY) into `on_entry`.
  absl::Status Dump(uint16_t type, const MessageHandler& on_entry) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SendSa(uint16_t type, absl::string_view verb, const SaConfig& sa);
  // Runs `request` with the SA's mark: remembered, else none, else (on
  // NotFound) the one a dump shows for the SA.
  absl::Status WithSaMark(const SaId& id, absl::FunctionRef<absl::Status(xfrm::Mark)> request);
  absl::Status SendPolicyBatchLocked(absl::Span<uint8_t> datagram, uint32_t first_seq, size_t first,
                                     size_t end, const std::vector<PolicyConfig>& policies)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RememberMark(const SaId& id, xfrm::Mark mark);
  void ForgetMark(const SaId& id);

  void EventLoop();
  void HandleEvent(const nlmsghdr& message);

  const NetlinkTransportPtr requests_;
  const NetlinkTransportPtr events_;  // May be null.
  const int stop_fd_;                 // eventfd that ends EventLoop; -1 without events.

  absl::Mutex mu_;  // One request at a time on requests_.
  uint32_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<uint8_t> send_buffer_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> receive_buffer_ ABSL_GUARDED_BY(mu_);

  absl::Mutex marks_mu_;
  absl::flat_hash_map<std::pair<Address, uint32_t>, xfrm::Mark> marks_ ABSL_GUARDED_BY(marks_mu_);

  absl::Mutex callback_mu_;
  std::function<void(const DataplaneEvent&)> callback_ ABSL_GUARDED_BY(callback_mu_);

  std::atomic<uint64_t> requests_sent_{0};
  std::atomic<uint64_t> kernel_errors_{0};
  std::atomic<uint64_t> events_delivered_{0};
  std::atomic<uint64_t> events_foreign_{0};
  std::atomic<uint64_t> events_lost_{0};
  std::atomic<uint64_t> events_malformed_{0};

  std::thread event_thread_;  // Last: starts once everything above exists.
};
using XfrmDataplanePtr = std::unique_ptr<XfrmDataplane>;

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_XFRM_DATAPLANE_H_
