#include "agent/ike_runner.h"

#include <linux/udp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent/child_sa_install.h"
#include "agent/ike/cookie_impl.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/message.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "agent/snapshot_secrets.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/message_differencer.h"

namespace strait::agent {
namespace {

using strait::v1::NodeTunnel;
using strait::v1::TunnelPhase;

// The largest UDP payload: a full-size buffer keeps an oversized datagram
// from being cut silently.
constexpr size_t kMaxDatagram = 65535;
// Datagrams read from one socket per wake-up, so that a flood on one
// address does not starve the others or the timers.
constexpr int kMaxReadsPerWake = 256;
// The loop re-reads the (injected) clock at least this often.
constexpr absl::Duration kMaxPollWait = absl::Seconds(1);
// Senders named in a "no tunnel" warning; later ones are only counted.
constexpr size_t kMaxWarnedSources = 256;
// A responder gives up on a half-open SA a little after its engine would.
constexpr absl::Duration kHalfOpenSlack = absl::Seconds(1);
// Receive buffer of a NAT-T socket that carries the userspace dataplane's
// ESP: room for bursts while this thread decrypts (as UdpEspSocket has).
constexpr int kEspReceiveBufferBytes = 4 << 20;

// IKE header fields the dispatcher reads (RFC 7296 section 3.1).
constexpr size_t kExchangeTypeOffset = 18;
constexpr size_t kFlagsOffset = 19;

uint64_t ReadBe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t nanos = absl::ToUnixNanos(t);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

bool IsAuthFailure(ike::FailureReason reason) {
  return reason == ike::FailureReason::kAuthenticationFailed ||
         reason == ike::FailureReason::kPeerIdentityMismatch;
}

const char* Role(bool initiator) { return initiator ? "initiator" : "responder"; }

// Validating a configuration builds an engine that never runs.
class UnusedSink : public ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const ike::ChildSa&) override {
    return absl::InternalError("unused");
  }
  absl::Status RemoveChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }
};

// A Reconcile (snapshot set) or the stop (snapshot null).
struct Command {
  SnapshotPtr snapshot;
  absl::Notification* done = nullptr;
};

// What other threads hand to the loop, and the eventfd that wakes it.
// Shared with the dataplane's event callback, which may outlive the loop.
class Mailbox {
 public:
  explicit Mailbox(int fd) : fd_(fd) {}
  ~Mailbox() { close(fd_); }
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  int fd() const { return fd_; }

  // False once closed: the loop is gone.
  bool Post(Command command) {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return false;
      commands_.push_back(std::move(command));
    }
    Wake();
    return true;
  }
  void Post(const dataplane::DataplaneEvent& event) {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      events_.push_back(event);
    }
    Wake();
  }
  std::deque<Command> TakeCommands() {
    absl::MutexLock lock(&mu_);
    return std::exchange(commands_, {});
  }
  std::deque<dataplane::DataplaneEvent> TakeEvents() {
    absl::MutexLock lock(&mu_);
    return std::exchange(events_, {});
  }
  // Refuses everything from now on; returns what was still queued.
  std::deque<Command> Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    events_.clear();
    return std::exchange(commands_, {});
  }
  // Resets the eventfd after a wake-up.
  void Drain() {
    uint64_t value;
    while (read(fd_, &value, sizeof(value)) < 0 && errno == EINTR) {
    }
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    while (write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }

  const int fd_;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  std::deque<dataplane::DataplaneEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// Everything below runs on the loop's thread, except Reconcile() and
// Stop(), which only talk to it through the mailbox.
class IkeRunner::Loop {
 public:
  Loop(std::string node, ApplierImpl& applier, dataplane::Dataplane& dataplane, Clock& clock,
       IkeMetrics& metrics, IkeRunnerOptions options, std::shared_ptr<Mailbox> mailbox)
      : node_(std::move(node)),
        applier_(applier),
        dataplane_(dataplane),
        clock_(clock),
        metrics_(metrics),
        options_(std::move(options)),
        mailbox_(std::move(mailbox)),
        random_(ike::CreateOpenSslRandomSource()),
        cookies_(ike::CreateCookieGenerator(clock_, *random_)),
        admission_(*cookies_, metrics_, options_.admission),
        buffer_(kMaxDatagram + 1) {}
  ~Loop() { Stop(); }

  void Start() {
    dataplane_.Subscribe(
        [mailbox = mailbox_](const dataplane::DataplaneEvent& e) { mailbox->Post(e); });
    thread_ = std::thread([this] { Run(); });
  }

  void Reconcile(const strait::v1::Snapshot& snapshot) {
    absl::Notification done;
    if (mailbox_->Post(Command{CopySnapshot(snapshot), &done})) done.WaitForNotification();
  }

  void Stop() {
    absl::Notification done;
    if (mailbox_->Post(Command{nullptr, &done})) done.WaitForNotification();
    std::call_once(joined_, [this] {
      if (thread_.joinable()) thread_.join();
      dataplane_.Subscribe(nullptr);
    });
  }

 private:
  struct Tunnel;
  struct Sa;

  // The engine's way into the dataplane.
  class Sink : public ike::ChildSaSink {
   public:
    Sink(Loop& loop, Sa& sa) : loop_(loop), sa_(sa) {}
    absl::Status InstallChildSa(const ike::ChildSa& child) override {
      return loop_.InstallChild(sa_, child);
    }
    absl::Status RemoveChildSa(const ike::ChildSa& child) override {
      loop_.RemoveChild(sa_, child);
      return absl::OkStatus();
    }
    absl::Status MoveChildSa(const ike::ChildSa& child, const ike::Endpoint& peer) override {
      return loop_.MoveChild(sa_, child, peer);
    }
    absl::Status ActivateChildSaOutbound(const ike::ChildSa& child) override {
      return loop_.ActivateChildOutbound(sa_, child);
    }

   private:
    Loop& loop_;
    Sa& sa_;
  };

  // The sockets of one local address, shared by its tunnels.
  struct LocalAddress {
    ~LocalAddress() { CloseSockets(); }
    void CloseSockets() {
      if (ike_fd >= 0) close(ike_fd);
      if (nat_t_fd >= 0) close(nat_t_fd);
      ike_fd = nat_t_fd = -1;
    }
    bool ready() const { return ike_fd >= 0; }

    ike::Bytes address;
    int ike_fd = -1;
    int nat_t_fd = -1;  // -1 also when NAT-T is off.
    std::string error;  // Why the sockets are not bound.
    absl::Time retry_at = absl::InfiniteFuture();
    int users = 0;
  };

  // One IKE SA: an engine and what the runner knows about it.
  struct Sa {
    enum class Fate { kRunning, kEstablished, kFailed };

    Tunnel* tunnel = nullptr;
    bool initiator = false;
    std::unique_ptr<Sink> sink;  // Declared before the engine, which uses it.
    ike::EnginePtr engine;
    // Ours (the dispatch keys), as the engine names them: the current IKE
    // SA's, and a rekeyed one's until it is deleted.
    std::vector<uint64_t> local_spis;
    uint64_t peer_spi = 0;  // Responders: the initiator's SPI.
    // The peer's outer address once its NAT mapping moved it off the
    // tunnel's configured one (MoveChild); CHILD SAs made later go there.
    ike::Bytes moved_peer_address;
    absl::Time started;
    absl::Time give_up = absl::InfiniteFuture();  // Responders, while half-open.
    // Responders, while counted as half-open by admission_: the sender,
    // and whether its request came with a valid cookie.
    std::optional<ike::Bytes> half_open_source;
    bool half_open_verified = false;
    bool nat_t = false;  // The peer talks to our NAT-T port.
    Fate fate = Fate::kRunning;
    std::optional<ike::EngineEvent> failure;
    ike::EngineCounters seen;               // Already counted in the metrics.
    std::optional<InstalledChildSa> child;  // The newest.
    // CHILD SAs replaced by a rekey, until the engine removes them.
    std::vector<InstalledChildSa> older_children;
    strait::v1::IkeSaStatus ike_status;
    strait::v1::ChildSaStatus child_status;
    std::string summary;            // For the status message.
    bool reauthenticating = false;  // A soft expiry asked for a new IKE SA.
  };

  struct Tunnel {
    ~Tunnel() { WipeSpecSecrets(&raw_spec); }
    std::vector<Sa*> Sas() const {
      std::vector<Sa*> out;
      if (current != nullptr) out.push_back(current.get());
      if (initiating != nullptr) out.push_back(initiating.get());
      for (const auto& sa : responding) out.push_back(sa.get());
      return out;
    }

    std::string name;
    strait::v1::TunnelSpec raw_spec;  // As applied, to notice changes.
    bool initiator = false;
    ike::EngineConfig config;
    ChildSaParams child_params;
    std::string error_reason;  // ERROR without sockets: bad configuration.
    std::string error_message;
    LocalAddress* local = nullptr;  // Unless error_reason is set.
    std::unique_ptr<Sa> current;    // Established.
    std::unique_ptr<Sa> initiating;
    std::vector<std::unique_ptr<Sa>> responding;  // Half-open, oldest first.
    absl::Time initiate_at = absl::InfiniteFuture();
    // Failed negotiations in a row (for the backoff), and the last one's
    // reason and detail.
    int failures = 0;
    std::optional<std::pair<std::string, std::string>> last_failure;
    TunnelPhase logged_phase = strait::v1::TUNNEL_PHASE_UNSPECIFIED;
    std::string logged_reason;
  };

  using PeerKey = std::pair<ike::Bytes, ike::Bytes>;  // Local, remote address.

  void Run();
  // Returns false on the stop command.
  bool HandleMailbox();
  void ReconcileNow(const strait::v1::Snapshot& snapshot);
  void Shutdown();

  void StartTunnel(const NodeTunnel& nt);
  absl::Status Configure(Tunnel& t, const strait::v1::TunnelSpec& spec);
  void StopTunnel(const std::string& name);

  LocalAddress* Acquire(const ike::Bytes& address);
  void Bind(LocalAddress& la);
  void Release(LocalAddress* la);

  void Drain(LocalAddress& la, int fd, bool nat_t);
  void Dispatch(LocalAddress& la, bool nat_t, absl::Span<const uint8_t> datagram,
                const ike::Endpoint& from);
  void DropNoTunnel(const ike::Endpoint& from, absl::string_view why);
  // Cookies and half-open limits for a new IKE_SA_INIT to `t`: false when
  // it was answered statelessly or dropped.
  // `*verified`: the request came with a valid cookie.
  bool Admit(LocalAddress& la, bool nat_t, const Tunnel& t, absl::Span<const uint8_t> datagram,
             const ike::Endpoint& from, bool* verified);
  // Sends `data` (an IKE message) from `la`'s socket, with the non-ESP
  // marker on the NAT-T one.
  void SendStateless(LocalAddress& la, bool nat_t, const ike::Bytes& data, const ike::Endpoint& to);
  // Ends `sa`'s count as half-open (authenticated, or gone).
  void EndHalfOpen(Sa& sa);
  Sa* StartResponder(Tunnel& t, uint64_t peer_spi, const ike::Endpoint& from, bool verified);
  void StartInitiator(Tunnel& t);
  absl::StatusOr<std::unique_ptr<Sa>> NewSa(Tunnel& t, bool initiator);

  // After every call into an engine: sends its datagrams, learns its SPI,
  // takes its events and counters. Changes no container.
  void Flush(Sa& sa);
  void Send(Sa& sa, const ike::OutboundDatagram& d);
  // Points our SPIs of `sa` (by_spi_) at it: those the engine uses now.
  void SyncSpis(Sa& sa);
  // Moves established SAs into place and retires ended ones; reports.
  void Settle(Tunnel& t);
  void Promote(Tunnel& t, std::unique_ptr<Sa> sa);
  void RecordFailure(Tunnel& t, const Sa& sa);
  void ScheduleRetry(Tunnel& t);
  // Forgets `sa`, taking its CHILD SA out of the dataplane except for the
  // policies in `keep`.
  void Retire(std::unique_ptr<Sa> sa, const std::vector<dataplane::PolicyConfig>& keep);
  absl::Status InstallChild(Sa& sa, const ike::ChildSa& child);
  void RemoveChild(Sa& sa, const ike::ChildSa& child);
  // The peer's NAT mapping moved: the SAs' encapsulation (and, if the
  // peer's address changed, the SAs and policies) follow it.
  absl::Status MoveChild(Sa& sa, const ike::ChildSa& child, const ike::Endpoint& peer);
  // The outbound SA of a CHILD SA installed without it (a rekey we
  // answered, RFC 7296 §2.8), once the peer can decrypt it.
  absl::Status ActivateChildOutbound(Sa& sa, const ike::ChildSa& child);
  // The installed state of one of `sa`'s CHILD SAs, by our inbound SPI.
  static InstalledChildSa* FindChild(Sa& sa, uint32_t inbound_spi);
  void OnDataplaneEvent(const dataplane::DataplaneEvent& e);

  absl::Time NextWake();
  void RunTimers(absl::Time now);
  void Report(Tunnel& t);
  void UpdateGauges();
  // The dataplane's per-SA counters into the metrics, every 2 s at most.
  void PollSaCounters();
  // One CHILD SA's counters into the metrics: by PollSaCounters, and once
  // more right before the SA leaves the dataplane, so that the tunnel's
  // totals keep what it carried since the last poll.
  void ReportChildCounters(const std::string& tunnel, const InstalledChildSa& child);
  absl::Time next_counter_poll_ = absl::InfinitePast();

  const std::string node_;
  ApplierImpl& applier_;
  dataplane::Dataplane& dataplane_;
  Clock& clock_;
  IkeMetrics& metrics_;
  const IkeRunnerOptions options_;
  const std::shared_ptr<Mailbox> mailbox_;
  std::thread thread_;
  std::once_flag joined_;

  // The loop thread's own.
  ike::RandomSourcePtr random_;
  ike::CookieGeneratorPtr cookies_;
  IkeAdmission admission_;
  absl::BitGen bitgen_;
  std::vector<uint8_t> buffer_;
  // Strait's reqid range, which the XFRM backend tags its state with.
  uint32_t next_reqid_ = dataplane::kReqidFirst;
  absl::flat_hash_map<std::string, std::unique_ptr<Tunnel>> tunnels_;
  absl::flat_hash_map<ike::Bytes, std::unique_ptr<LocalAddress>> locals_;
  absl::flat_hash_map<PeerKey, Tunnel*> by_peer_;
  absl::flat_hash_map<uint64_t, Sa*> by_spi_;
  absl::flat_hash_set<ike::Bytes> warned_sources_;

 public:
  // The NAT-T sockets, for SendEsp() from the dataplane's threads.
  absl::Status SendEsp(absl::Span<const uint8_t> payload, const ike::Endpoint& local,
                       const ike::Endpoint& remote) {
    sockaddr_storage ss;
    const socklen_t len = ike::ToSockaddr(remote, &ss);
    if (len == 0) return absl::InvalidArgumentError("bad ESP destination");
    absl::MutexLock lock(&esp_mu_);
    auto it = esp_fds_.find(local.address);
    if (it == esp_fds_.end()) {
      return absl::FailedPreconditionError("no NAT-T socket on the local address");
    }
    ssize_t n;
    do {
      n = sendto(it->second, payload.data(), payload.size(), 0,
                 reinterpret_cast<const sockaddr*>(&ss), len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return absl::UnavailableError(strerror(errno));
    return absl::OkStatus();
  }

 private:
  // Publishes (fd >= 0) or withdraws the NAT-T socket of an address.
  void PublishNatT(const ike::Bytes& address, int fd) {
    absl::MutexLock lock(&esp_mu_);
    if (fd >= 0) {
      esp_fds_[address] = fd;
    } else {
      esp_fds_.erase(address);
    }
  }
  absl::Mutex esp_mu_;
  absl::flat_hash_map<ike::Bytes, int> esp_fds_ ABSL_GUARDED_BY(esp_mu_);
};

// --- the loop ---

void IkeRunner::Loop::Run() {
  std::vector<pollfd> fds;
  std::vector<std::pair<LocalAddress*, bool>> owners;  // Of fds[1..]: address, NAT-T.
  while (true) {
    fds.assign(1, pollfd{mailbox_->fd(), POLLIN, 0});
    owners.clear();
    for (auto& [address, la] : locals_) {
      if (la->ike_fd >= 0) {
        fds.push_back(pollfd{la->ike_fd, POLLIN, 0});
        owners.emplace_back(la.get(), false);
      }
      if (la->nat_t_fd >= 0) {
        fds.push_back(pollfd{la->nat_t_fd, POLLIN, 0});
        owners.emplace_back(la.get(), true);
      }
    }
    const absl::Time now = clock_.Now();
    const absl::Duration wait = std::clamp(NextWake() - now, absl::ZeroDuration(), kMaxPollWait);
    // Rounded up, so that the loop does not spin on a sub-millisecond rest.
    const int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(wait + absl::Microseconds(999)));
    const int ready = poll(fds.data(), fds.size(), wait_ms);
    if (ready < 0 && errno != EINTR) {
      LOG_ERROR("IKE event loop: poll failed").With("node", node_).With("error", strerror(errno));
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (ready > 0 && fds[0].revents != 0) {
      if (!HandleMailbox()) return;
      // Tunnels and sockets may have changed: poll again.
      continue;
    }
    if (ready > 0) {
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) Drain(*owners[i - 1].first, fds[i].fd, owners[i - 1].second);
      }
    }
    RunTimers(clock_.Now());
    UpdateGauges();
  }
}

bool IkeRunner::Loop::HandleMailbox() {
  mailbox_->Drain();
  for (const dataplane::DataplaneEvent& e : mailbox_->TakeEvents()) OnDataplaneEvent(e);
  // Reconcile returns once its effects are visible, metrics included.
  std::vector<absl::Notification*> done;
  for (Command& command : mailbox_->TakeCommands()) {
    if (command.snapshot == nullptr) {
      Shutdown();
      command.done->Notify();
      for (absl::Notification* d : done) d->Notify();
      for (Command& late : mailbox_->Close()) late.done->Notify();
      return false;
    }
    ReconcileNow(*command.snapshot);
    done.push_back(command.done);
  }
  RunTimers(clock_.Now());
  UpdateGauges();
  for (absl::Notification* d : done) d->Notify();
  return true;
}

void IkeRunner::Loop::ReconcileNow(const strait::v1::Snapshot& snapshot) {
  absl::flat_hash_map<std::string, const NodeTunnel*> wanted;
  for (const NodeTunnel& t : snapshot.tunnels()) wanted[t.name()] = &t;
  // Gone, changed, and blocked by another tunnel's peer (examined again).
  std::vector<std::string> stop;
  for (const auto& [name, t] : tunnels_) {
    auto it = wanted.find(name);
    const bool same =
        it != wanted.end() && t->error_reason != kPeerAddressInUseReason &&
        google::protobuf::util::MessageDifferencer::Equals(t->raw_spec, it->second->spec());
    if (!same) stop.push_back(name);
  }
  for (const std::string& name : stop) StopTunnel(name);
  for (const NodeTunnel& t : snapshot.tunnels()) {
    if (!tunnels_.contains(t.name())) StartTunnel(t);
  }
}

void IkeRunner::Loop::Shutdown() {
  std::vector<std::string> names;
  for (const auto& [name, t] : tunnels_) names.push_back(name);
  for (const std::string& name : names) StopTunnel(name);
  UpdateGauges();
}

// --- tunnels ---

void IkeRunner::Loop::StartTunnel(const NodeTunnel& nt) {
  auto owned = std::make_unique<Tunnel>();
  Tunnel& t = *owned;
  t.name = nt.name();
  t.raw_spec = nt.spec();
  tunnels_[t.name] = std::move(owned);

  strait::v1::Tunnel full;
  *full.mutable_spec() = nt.spec();
  intent::ApplyDefaults(&full);
  const strait::v1::TunnelSpec& spec = full.spec();
  t.initiator = spec.start_action() != strait::v1::START_ACTION_ADD &&
                (spec.remote().node().empty() || node_ < spec.remote().node());
  absl::Status configured = Configure(t, spec);
  WipeSpecSecrets(full.mutable_spec());
  if (!configured.ok()) {
    t.error_reason = kInvalidConfigReason;
    t.error_message = std::string(configured.message());
    Report(t);
    return;
  }
  PeerKey key{t.config.local.address, t.config.remote.address};
  if (auto it = by_peer_.find(key); it != by_peer_.end()) {
    t.error_reason = kPeerAddressInUseReason;
    t.error_message = absl::StrCat("tunnel \"", it->second->name,
                                   "\" already runs between these local and remote "
                                   "addresses; a new IKE SA from the peer could not be told apart");
    Report(t);
    return;
  }
  by_peer_[key] = &t;
  t.local = Acquire(t.config.local.address);
  if (t.initiator) t.initiate_at = clock_.Now();
  Report(t);
}

absl::Status IkeRunner::Loop::Configure(Tunnel& t, const strait::v1::TunnelSpec& spec) {
  absl::StatusOr<ike::EngineConfig> config = ike::EngineConfigFromSpec(spec, options_.certificates);
  if (!config.ok()) return config.status();
  if (options_.force_encapsulation) config->force_encapsulation = true;
  config->nat_t_port = options_.nat_t_port;
  config->local.port = options_.ike_port;
  config->remote.port = options_.ike_port;
  config->fragmentation = options_.fragment_size != 0;
  if (options_.fragment_size != 0) config->fragment_size = options_.fragment_size;
  if (!options_.retransmit_timeouts.empty()) {
    config->retransmit_timeouts = options_.retransmit_timeouts;
  }
  // The end that brings the tunnel up also brings back a CHILD SA that the
  // peer deleted without its IKE SA; the other end waits for it.
  if (t.initiator) config->child_recreate_delay = kChildRecreateDelay;
  UnusedSink unused;
  absl::StatusOr<ike::EnginePtr> check = ike::CreateEngine(*config, clock_, *random_, unused);
  if (!check.ok()) return check.status();
  t.config = *std::move(config);

  ChildSaParams& p = t.child_params;
  p.local_address = t.config.local.address;
  p.remote_address = t.config.remote.address;
  p.reqid = next_reqid_++;
  p.replay_window = spec.esp().replay_window();
  const absl::Duration lifetime = FromProto(spec.esp().lifetime());
  const absl::Duration soft = lifetime - FromProto(spec.esp().rekey_margin());
  if (lifetime > absl::ZeroDuration()) {
    p.hard.add_seconds = static_cast<uint64_t>(absl::ToInt64Seconds(lifetime));
  }
  if (soft > absl::ZeroDuration()) {
    p.soft.add_seconds = static_cast<uint64_t>(absl::ToInt64Seconds(soft));
  }
  return absl::OkStatus();
}

void IkeRunner::Loop::StopTunnel(const std::string& name) {
  auto it = tunnels_.find(name);
  if (it == tunnels_.end()) return;
  Tunnel& t = *it->second;
  if (t.current != nullptr) {
    // Tell the peer (once; no waiting for its answer).
    t.current->engine->Delete();
    Flush(*t.current);
    Retire(std::move(t.current), {});
  }
  if (t.initiating != nullptr) Retire(std::move(t.initiating), {});
  for (auto& sa : t.responding) Retire(std::move(sa), {});
  t.responding.clear();
  if (t.local != nullptr) {
    by_peer_.erase(PeerKey{t.config.local.address, t.config.remote.address});
    Release(t.local);
  }
  metrics_.SetNextRekey(name, std::nullopt);
  LOG_INFO("tunnel stopped").With("node", node_).With("tunnel", name);
  tunnels_.erase(it);
}

// --- sockets ---

IkeRunner::Loop::LocalAddress* IkeRunner::Loop::Acquire(const ike::Bytes& address) {
  std::unique_ptr<LocalAddress>& slot = locals_[address];
  if (slot == nullptr) {
    slot = std::make_unique<LocalAddress>();
    slot->address = address;
    Bind(*slot);
  }
  ++slot->users;
  return slot.get();
}

void IkeRunner::Loop::Bind(LocalAddress& la) {
  PublishNatT(la.address, -1);
  la.CloseSockets();
  uint16_t port = 0;
  absl::StatusOr<int> ike_fd =
      ike::BindUdpSocket(ike::Endpoint{la.address, options_.ike_port}, &port);
  absl::StatusOr<int> nat_t_fd = -1;
  if (ike_fd.ok() && options_.nat_t_port != 0) {
    nat_t_fd = ike::BindUdpSocket(ike::Endpoint{la.address, options_.nat_t_port}, &port);
  }
  if (ike_fd.ok() && nat_t_fd.ok()) {
    la.ike_fd = *ike_fd;
    la.nat_t_fd = *nat_t_fd;
    if (la.nat_t_fd >= 0 && options_.kernel_udp_encapsulation) {
      // The kernel then decapsulates ESP in UDP itself; IKE (non-ESP
      // marker) still comes to us.
      const int type = UDP_ENCAP_ESPINUDP;
      if (setsockopt(la.nat_t_fd, IPPROTO_UDP, UDP_ENCAP, &type, sizeof(type)) != 0) {
        LOG_WARNING("cannot set UDP_ENCAP on the NAT-T socket")
            .With("node", node_)
            .With("error", strerror(errno));
      }
    }
    if (la.nat_t_fd >= 0 && options_.esp_handler) {
      // The default (rmem_default, about 200 KiB) overflows under a single
      // TCP stream. SO_RCVBUFFORCE passes net.core.rmem_max with
      // CAP_NET_ADMIN, which the TUN device needs anyway.
      const int size = kEspReceiveBufferBytes;
      if (setsockopt(la.nat_t_fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
        setsockopt(la.nat_t_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
      }
    }
    if (la.nat_t_fd >= 0) PublishNatT(la.address, la.nat_t_fd);
    if (!la.error.empty()) {
      LOG_INFO("IKE sockets bound")
          .With("node", node_)
          .With("address", ike::FormatIpAddress(la.address));
    }
    la.error.clear();
    la.retry_at = absl::InfiniteFuture();
    return;
  }
  if (ike_fd.ok()) close(*ike_fd);
  const std::string error =
      std::string((ike_fd.ok() ? nat_t_fd.status() : ike_fd.status()).message());
  if (error != la.error) {
    LOG_WARNING("cannot bind the IKE sockets; trying again")
        .With("node", node_)
        .With("address", ike::FormatIpAddress(la.address))
        .With("error", error)
        .With("retry", absl::FormatDuration(options_.bind_retry));
  }
  la.error = error;
  la.retry_at = clock_.Now() + options_.bind_retry;
}

void IkeRunner::Loop::Release(LocalAddress* la) {
  if (--la->users > 0) return;
  PublishNatT(la->address, -1);
  locals_.erase(la->address);
}

// --- datagrams in ---

void IkeRunner::Loop::Drain(LocalAddress& la, int fd, bool nat_t) {
  for (int i = 0; i < kMaxReadsPerWake; ++i) {
    sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    const ssize_t n = recvfrom(fd, buffer_.data(), buffer_.size(), MSG_TRUNC,
                               reinterpret_cast<sockaddr*>(&ss), &ss_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // ICMP errors for earlier sends (ECONNREFUSED, ...): the engines
      // retransmit, so these only get a debug line.
      LOG_DEBUG("IKE recvfrom failed").With("node", node_).With("error", strerror(errno));
      continue;
    }
    ike::Endpoint from;
    if (!ike::FromSockaddr(ss, &from)) continue;
    if (static_cast<size_t>(n) > kMaxDatagram) {
      metrics_.Dropped(IkeMetrics::kMalformed);
      continue;
    }
    absl::Span<const uint8_t> datagram(buffer_.data(), static_cast<size_t>(n));
    if (nat_t) {
      // RFC 3948: a one-byte 0xff is a NAT keepalive; four zero bytes
      // announce IKE; anything else is ESP, which the dataplane owns.
      if (datagram.size() == 1 && datagram[0] == 0xff) continue;
      if (datagram.size() < sizeof(ike::kNonEspMarker)) {
        metrics_.Dropped(IkeMetrics::kMalformed);
        continue;
      }
      if (std::memcmp(datagram.data(), ike::kNonEspMarker, sizeof(ike::kNonEspMarker)) != 0) {
        if (options_.esp_handler) {
          options_.esp_handler(datagram, from, la.address);
        } else {
          LOG_DEBUG("ESP-in-UDP on the NAT-T port ignored").With("node", node_);
        }
        continue;
      }
      datagram.remove_prefix(sizeof(ike::kNonEspMarker));
    }
    Dispatch(la, nat_t, datagram, from);
  }
}

void IkeRunner::Loop::Dispatch(LocalAddress& la, bool nat_t, absl::Span<const uint8_t> datagram,
                               const ike::Endpoint& from) {
  if (datagram.size() < ike::kIkeHeaderSize) {
    metrics_.Dropped(IkeMetrics::kMalformed);
    return;
  }
  const uint8_t exchange = datagram[kExchangeTypeOffset];
  const uint8_t flags = datagram[kFlagsOffset];
  metrics_.Message(exchange, /*inbound=*/true);
  const uint64_t spi_i = ReadBe64(datagram.data());
  const uint64_t spi_r = ReadBe64(datagram.data() + 8);
  const bool from_initiator = (flags & ike::kFlagInitiator) != 0;

  Sa* sa = nullptr;
  if (from_initiator && spi_r == 0) {
    // A new IKE SA, or a retransmission of its first request.
    if (exchange != ike::kExchangeIkeSaInit || (flags & ike::kFlagResponse) != 0) {
      metrics_.Dropped(IkeMetrics::kUnexpected);
      return;
    }
    auto it = by_peer_.find(PeerKey{la.address, from.address});
    if (it == by_peer_.end()) {
      DropNoTunnel(from, "no tunnel between these addresses");
      return;
    }
    Tunnel& t = *it->second;
    for (Sa* candidate : t.Sas()) {
      if (!candidate->initiator && candidate->peer_spi == spi_i) sa = candidate;
    }
    if (sa == nullptr) {
      bool verified = false;
      if (!Admit(la, nat_t, t, datagram, from, &verified)) return;
      sa = StartResponder(t, spi_i, from, verified);
    }
    if (sa == nullptr) return;
  } else {
    // Our SPI: the responder's if the sender initiated, else the initiator's.
    auto it = by_spi_.find(from_initiator ? spi_r : spi_i);
    if (it == by_spi_.end() || it->second->tunnel->config.local.address != la.address) {
      DropNoTunnel(from, "unknown IKE SPI");
      return;
    }
    sa = it->second;
  }
  if (nat_t) sa->nat_t = true;
  Tunnel& t = *sa->tunnel;
  sa->engine->HandleDatagram(datagram, from);
  Flush(*sa);
  Settle(t);
}

void IkeRunner::Loop::DropNoTunnel(const ike::Endpoint& from, absl::string_view why) {
  metrics_.Dropped(IkeMetrics::kNoTunnel);
  // Named once per sender: a scan or a misconfigured peer must not flood
  // the log. The metric counts every one.
  if (warned_sources_.size() < kMaxWarnedSources && warned_sources_.insert(from.address).second) {
    LOG_WARNING("IKE datagram for no tunnel dropped")
        .With("node", node_)
        .With("from", ike::FormatIpAddress(from.address))
        .With("port", static_cast<int>(from.port))
        .With("why", why);
  } else {
    LOG_DEBUG("IKE datagram for no tunnel dropped")
        .With("node", node_)
        .With("from", ike::FormatIpAddress(from.address))
        .With("why", why);
  }
}

bool IkeRunner::Loop::Admit(LocalAddress& la, bool nat_t, const Tunnel& t,
                            absl::Span<const uint8_t> datagram, const ike::Endpoint& from,
                            bool* verified) {
  const bool full = t.responding.size() >= std::max<size_t>(1, options_.max_half_open_per_tunnel);
  IkeAdmission::Decision d = admission_.Check(datagram, from, full);
  *verified = d.verified;
  switch (d.verdict) {
    case IkeAdmission::Verdict::kAdmit:
      return true;
    case IkeAdmission::Verdict::kCookie:
      SendStateless(la, nat_t, d.reply, from);
      return false;
    case IkeAdmission::Verdict::kDrop:
      LOG_DEBUG("IKE_SA_INIT refused (half-open limit)")
          .With("node", node_)
          .With("tunnel", t.name)
          .With("from", ike::FormatIpAddress(from.address));
      return false;
  }
  return false;
}

void IkeRunner::Loop::SendStateless(LocalAddress& la, bool nat_t, const ike::Bytes& data,
                                    const ike::Endpoint& to) {
  const int fd = nat_t ? la.nat_t_fd : la.ike_fd;
  sockaddr_storage ss;
  const socklen_t len = ike::ToSockaddr(to, &ss);
  if (fd < 0 || len == 0) return;
  ike::Bytes marked;
  if (nat_t) marked.assign(std::begin(ike::kNonEspMarker), std::end(ike::kNonEspMarker));
  marked.insert(marked.end(), data.begin(), data.end());
  ssize_t n;
  do {
    n = sendto(fd, marked.data(), marked.size(), 0, reinterpret_cast<const sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    LOG_DEBUG("IKE sendto failed").With("node", node_).With("error", strerror(errno));
    return;
  }
  metrics_.Message(ike::kExchangeIkeSaInit, /*inbound=*/false);
}

void IkeRunner::Loop::EndHalfOpen(Sa& sa) {
  if (!sa.half_open_source.has_value()) return;
  admission_.Closed(*sa.half_open_source, sa.half_open_verified);
  sa.half_open_source.reset();
}

// --- IKE SAs ---

absl::StatusOr<std::unique_ptr<IkeRunner::Loop::Sa>> IkeRunner::Loop::NewSa(Tunnel& t,
                                                                            bool initiator) {
  auto sa = std::make_unique<Sa>();
  sa->tunnel = &t;
  sa->initiator = initiator;
  sa->started = clock_.Now();
  sa->sink = std::make_unique<Sink>(*this, *sa);
  absl::StatusOr<ike::EnginePtr> engine = ike::CreateEngine(t.config, clock_, *random_, *sa->sink);
  if (!engine.ok()) return engine.status();
  sa->engine = *std::move(engine);
  return sa;
}

IkeRunner::Loop::Sa* IkeRunner::Loop::StartResponder(Tunnel& t, uint64_t peer_spi,
                                                     const ike::Endpoint& from, bool verified) {
  absl::StatusOr<std::unique_ptr<Sa>> sa = NewSa(t, /*initiator=*/false);
  if (!sa.ok()) {
    LOG_ERROR("cannot start an IKE responder")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("error", sa.status().ToString());
    return nullptr;
  }
  (*sa)->peer_spi = peer_spi;
  (*sa)->half_open_source = from.address;
  (*sa)->half_open_verified = verified;
  admission_.Opened(from.address, verified);
  absl::Duration half_open;
  for (absl::Duration d : t.config.retransmit_timeouts) half_open += d;
  (*sa)->give_up = (*sa)->started + half_open + kHalfOpenSlack;
  if (t.responding.size() >= std::max<size_t>(1, options_.max_half_open_per_tunnel)) {
    // The oldest that came without a cookie goes first: it may be spoofed,
    // while this one (admitted with a cookie when the tunnel is full) is not.
    auto victim = std::find_if(t.responding.begin(), t.responding.end(),
                               [](const std::unique_ptr<Sa>& s) { return !s->half_open_verified; });
    if (victim == t.responding.end()) victim = t.responding.begin();
    LOG_DEBUG("half-open IKE SA replaced by a newer one").With("tunnel", t.name);
    std::unique_ptr<Sa> replaced = std::move(*victim);
    t.responding.erase(victim);
    Retire(std::move(replaced), {});
  }
  t.responding.push_back(*std::move(sa));
  return t.responding.back().get();
}

void IkeRunner::Loop::StartInitiator(Tunnel& t) {
  t.initiate_at = absl::InfiniteFuture();
  absl::StatusOr<std::unique_ptr<Sa>> sa = NewSa(t, /*initiator=*/true);
  if (!sa.ok()) {
    LOG_ERROR("cannot start an IKE initiator")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("error", sa.status().ToString());
    ScheduleRetry(t);
    return;
  }
  Sa& started = **sa;
  t.initiating = *std::move(sa);
  LOG_DEBUG("initiating an IKE SA")
      .With("node", node_)
      .With("tunnel", t.name)
      .With("reauthentication", t.current != nullptr);
  const absl::Status initiated = started.engine->Initiate();
  Flush(started);
  if (!initiated.ok() && started.fate != Sa::Fate::kFailed) {
    started.fate = Sa::Fate::kFailed;
    started.failure = ike::EngineEvent{};
    started.failure->reason = ike::FailureReason::kInternalError;
    started.failure->detail = initiated.ToString();
  }
}

void IkeRunner::Loop::Flush(Sa& sa) {
  SyncSpis(sa);
  for (const ike::OutboundDatagram& d : sa.engine->TakeDatagrams()) Send(sa, d);
  for (ike::EngineEvent& e : sa.engine->TakeEvents()) {
    switch (e.kind) {
      case ike::EngineEvent::Kind::kIkeSaEstablished: {
        strait::v1::IkeSaStatus& s = sa.ike_status;
        s.set_initiator_spi(absl::StrFormat("%016x", e.ike_spi_i));
        s.set_responder_spi(absl::StrFormat("%016x", e.ike_spi_r));
        s.set_initiator(e.initiator);
        s.set_algorithms(ike::SuiteName(e.algorithms, /*ike=*/true));
        s.set_local_behind_nat(e.local_behind_nat);
        s.set_remote_behind_nat(e.remote_behind_nat);
        s.set_remote_identity(e.remote_identity);
        s.set_auth_method(e.auth_method);
        if (e.local_behind_nat || e.remote_behind_nat) metrics_.NatDetected();
        SetTimestamp(clock_.Now(), s.mutable_established_time());
        break;
      }
      case ike::EngineEvent::Kind::kIkeSaRekeyed: {
        // The CHILD SAs stay as they are; the status names the new SPIs.
        strait::v1::IkeSaStatus& s = sa.ike_status;
        s.set_initiator_spi(absl::StrFormat("%016x", e.ike_spi_i));
        s.set_responder_spi(absl::StrFormat("%016x", e.ike_spi_r));
        s.set_initiator(e.initiator);
        s.set_algorithms(ike::SuiteName(e.algorithms, /*ike=*/true));
        SetTimestamp(clock_.Now(), s.mutable_established_time());
        sa.summary = absl::StrFormat("IKE %s, SPIs %016x_i %016x_r; ESP %s, SPIs %s_i %s_o (%s)",
                                     s.algorithms(), e.ike_spi_i, e.ike_spi_r,
                                     sa.child_status.algorithms(), sa.child_status.inbound_spi(),
                                     sa.child_status.outbound_spi(), Role(sa.initiator));
        LOG_INFO("IKE SA rekeyed")
            .With("node", node_)
            .With("tunnel", sa.tunnel->name)
            .With("spi_i", s.initiator_spi())
            .With("spi_r", s.responder_spi())
            .With("old_spi_i", absl::StrFormat("%016x", e.old_ike_spi_i))
            .With("old_spi_r", absl::StrFormat("%016x", e.old_ike_spi_r));
        break;
      }
      case ike::EngineEvent::Kind::kIkeSaRekeyFailed:
        LOG_WARNING("IKE SA rekey failed")
            .With("node", node_)
            .With("tunnel", sa.tunnel->name)
            .With("reason", ike::FailureReasonName(e.reason))
            .With("detail", e.detail);
        break;
      case ike::EngineEvent::Kind::kChildSaDeleted:
        break;
      case ike::EngineEvent::Kind::kChildSaRekeyFailed:
        LOG_WARNING("CHILD SA rekey failed")
            .With("node", node_)
            .With("tunnel", sa.tunnel->name)
            .With("reason", ike::FailureReasonName(e.reason))
            .With("detail", e.detail);
        break;
      case ike::EngineEvent::Kind::kDeleted:
        // The IKE SA is gone: deleted by the peer (an initiator connects
        // again after its backoff) or by us.
        sa.fate = Sa::Fate::kFailed;
        e.reason =
            e.by_peer ? ike::FailureReason::kDeletedByPeer : ike::FailureReason::kInternalError;
        sa.failure = std::move(e);
        break;
      case ike::EngineEvent::Kind::kChildSaEstablished:
        sa.fate = Sa::Fate::kEstablished;
        sa.summary =
            absl::StrFormat("IKE %s, SPIs %016x_i %016x_r; ESP %s, SPIs %08x_i %08x_o (%s)",
                            sa.ike_status.algorithms(), e.ike_spi_i, e.ike_spi_r,
                            ike::SuiteName(e.algorithms, /*ike=*/false), e.child_inbound_spi,
                            e.child_outbound_spi, Role(e.initiator));
        break;
      case ike::EngineEvent::Kind::kFailed:
        sa.fate = Sa::Fate::kFailed;
        sa.failure = std::move(e);
        break;
    }
  }
  const ike::EngineCounters& c = sa.engine->counters();
  metrics_.Dropped(IkeMetrics::kMalformed, c.malformed_dropped - sa.seen.malformed_dropped);
  metrics_.Dropped(IkeMetrics::kUndecryptable,
                   c.undecryptable_dropped - sa.seen.undecryptable_dropped);
  metrics_.Dropped(IkeMetrics::kUnexpected, c.unexpected_dropped - sa.seen.unexpected_dropped);
  metrics_.Dropped(IkeMetrics::kStale, c.stale_dropped - sa.seen.stale_dropped);
  metrics_.Dropped(IkeMetrics::kReassembly, c.reassembly_dropped - sa.seen.reassembly_dropped);
  metrics_.Fragments(/*inbound=*/false, c.fragments_sent - sa.seen.fragments_sent);
  metrics_.Fragments(/*inbound=*/true, c.fragments_received - sa.seen.fragments_received);
  metrics_.Reassembled(c.messages_reassembled - sa.seen.messages_reassembled);
  metrics_.ChildRekeys(true, true, c.child_rekeys_initiated - sa.seen.child_rekeys_initiated);
  metrics_.ChildRekeys(true, false, c.child_rekey_failures - sa.seen.child_rekey_failures);
  metrics_.ChildRekeys(false, true, c.child_rekeys_answered - sa.seen.child_rekeys_answered);
  metrics_.IkeRekeys(true, true, c.ike_rekeys_initiated - sa.seen.ike_rekeys_initiated);
  metrics_.IkeRekeys(true, false, c.ike_rekey_failures - sa.seen.ike_rekey_failures);
  metrics_.IkeRekeys(false, true, c.ike_rekeys_answered - sa.seen.ike_rekeys_answered);
  metrics_.RekeyCollisions(c.rekey_collisions - sa.seen.rekey_collisions);
  metrics_.DeferredOutbound(false,
                            c.deferred_outbound_timeouts - sa.seen.deferred_outbound_timeouts);
  metrics_.DeferredOutbound(true,
                            c.outbound_activation_failures - sa.seen.outbound_activation_failures);
  metrics_.DpdProbes(c.dpd_probes_sent - sa.seen.dpd_probes_sent);
  metrics_.Deletes(true, c.deletes_sent - sa.seen.deletes_sent);
  metrics_.Deletes(false, c.deletes_received - sa.seen.deletes_received);
  for (size_t i = 0; i < c.retransmits_by_exchange.size(); ++i) {
    metrics_.Retransmits(ike::kExchangeIkeSaInit + static_cast<int>(i),
                         c.retransmits_by_exchange[i] - sa.seen.retransmits_by_exchange[i]);
  }
  sa.seen = c;
}

void IkeRunner::Loop::SyncSpis(Sa& sa) {
  std::vector<uint64_t> now = sa.engine->local_spis();
  for (uint64_t spi : sa.local_spis) {
    if (std::find(now.begin(), now.end(), spi) != now.end()) continue;
    auto it = by_spi_.find(spi);
    if (it != by_spi_.end() && it->second == &sa) by_spi_.erase(it);
  }
  std::vector<uint64_t> kept;
  for (uint64_t spi : now) {
    auto [it, added] = by_spi_.emplace(spi, &sa);
    if (added || it->second == &sa) {
      kept.push_back(spi);
    } else if (std::find(sa.local_spis.begin(), sa.local_spis.end(), spi) == sa.local_spis.end()) {
      // Two random 64-bit SPIs alike: the newer SA gets no datagrams
      // and fails (or its rekey does); the next attempt draws another.
      LOG_ERROR("IKE SPI collision").With("node", node_).With("tunnel", sa.tunnel->name);
    }
  }
  sa.local_spis = std::move(kept);
}

void IkeRunner::Loop::Send(Sa& sa, const ike::OutboundDatagram& d) {
  LocalAddress* la = sa.tunnel->local;
  if (la == nullptr || !la->ready()) return;
  sockaddr_storage ss;
  const socklen_t len = ike::ToSockaddr(d.to, &ss);
  if (len == 0 || d.to.address.size() != la->address.size()) return;
  const bool nat_t = la->nat_t_fd >= 0 && (sa.nat_t || d.to.port == options_.nat_t_port);
  ike::Bytes marked;
  if (nat_t && !d.keepalive) {
    marked.assign(std::begin(ike::kNonEspMarker), std::end(ike::kNonEspMarker));
    marked.insert(marked.end(), d.data.begin(), d.data.end());
  }
  const ike::Bytes& out = nat_t && !d.keepalive ? marked : d.data;
  ssize_t n;
  do {
    n = sendto(nat_t ? la->nat_t_fd : la->ike_fd, out.data(), out.size(), 0,
               reinterpret_cast<const sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // The engine's retransmission covers it.
    LOG_DEBUG("IKE sendto failed")
        .With("node", node_)
        .With("to", ike::FormatIpAddress(d.to.address))
        .With("error", strerror(errno));
    return;
  }
  if (d.data.size() > kExchangeTypeOffset) {
    metrics_.Message(d.data[kExchangeTypeOffset], /*inbound=*/false);
  }
}

void IkeRunner::Loop::Settle(Tunnel& t) {
  const absl::Time now = clock_.Now();
  if (t.current != nullptr && t.current->fate == Sa::Fate::kFailed) {
    RecordFailure(t, *t.current);
    std::vector<dataplane::PolicyConfig> keep =
        t.current->child ? t.current->child->policies : std::vector<dataplane::PolicyConfig>{};
    const bool dead = t.current->failure.has_value() &&
                      t.current->failure->reason == ike::FailureReason::kPeerDead;
    // What a dead peer gets (spec.dpd.action): restart connects again at
    // once; hold keeps the policies (traffic is dropped, not sent in clear)
    // and connects again when traffic asks for it (acquire) or the peer
    // comes back; clear removes everything and waits for the peer.
    const strait::v1::DpdAction action = t.raw_spec.dpd().action();
    if (dead) {
      metrics_.PeerDead(action == strait::v1::DPD_ACTION_CLEAR  ? "clear"
                        : action == strait::v1::DPD_ACTION_HOLD ? "hold"
                                                                : "restart");
    }
    if (dead && action == strait::v1::DPD_ACTION_CLEAR) keep.clear();
    Retire(std::move(t.current), keep);
    if (t.initiator && !(dead && action != strait::v1::DPD_ACTION_RESTART &&
                         action != strait::v1::DPD_ACTION_UNSPECIFIED)) {
      t.initiate_at = std::min(t.initiate_at, now);
    }
  }
  if (t.initiating != nullptr) {
    if (t.initiating->fate == Sa::Fate::kEstablished) {
      Promote(t, std::move(t.initiating));
    } else if (t.initiating->fate == Sa::Fate::kFailed) {
      RecordFailure(t, *t.initiating);
      Retire(std::move(t.initiating), {});
      ScheduleRetry(t);
    }
  }
  for (size_t i = 0; i < t.responding.size();) {
    Sa& sa = *t.responding[i];
    // An engine still idle after its first datagram answered statelessly
    // (or not at all) and keeps nothing: a retransmission starts afresh.
    const bool ended = sa.fate != Sa::Fate::kRunning || sa.give_up <= now ||
                       sa.engine->state() == ike::Engine::State::kIdle;
    if (!ended) {
      ++i;
      continue;
    }
    std::unique_ptr<Sa> owned = std::move(t.responding[i]);
    t.responding.erase(t.responding.begin() + static_cast<std::ptrdiff_t>(i));
    if (owned->fate == Sa::Fate::kEstablished) {
      Promote(t, std::move(owned));
    } else {
      if (owned->fate == Sa::Fate::kFailed) RecordFailure(t, *owned);
      Retire(std::move(owned), {});
    }
  }
  Report(t);
}

void IkeRunner::Loop::Promote(Tunnel& t, std::unique_ptr<Sa> sa) {
  metrics_.HandshakeSucceeded(sa->initiator, clock_.Now() - sa->started);
  EndHalfOpen(*sa);
  sa->give_up = absl::InfiniteFuture();
  LogLine line = LOG_INFO("IKE SA established");
  line.With("node", node_)
      .With("tunnel", t.name)
      .With("role", Role(sa->initiator))
      .With("spi_i", sa->ike_status.initiator_spi())
      .With("spi_r", sa->ike_status.responder_spi())
      .With("local_behind_nat", sa->ike_status.local_behind_nat())
      .With("remote_behind_nat", sa->ike_status.remote_behind_nat());
  if (t.current != nullptr) {
    // The peer restarted, or this is a reauthentication (ours, or the
    // peer's racing our reconnect): make before break. The peer hears of
    // the old IKE SA's end (once; no waiting for its answer): otherwise it
    // may keep the old CHILD SA and send into it, as charon with
    // kernel-libipsec did, while ours is gone.
    line.With("replaces_spi_i", t.current->ike_status.initiator_spi())
        .With("replaces_spi_r", t.current->ike_status.responder_spi());
    t.current->engine->Delete();
    Flush(*t.current);
    Retire(std::move(t.current),
           sa->child ? sa->child->policies : std::vector<dataplane::PolicyConfig>{});
  }
  t.current = std::move(sa);
  t.failures = 0;
  t.last_failure.reset();
  t.initiate_at = absl::InfiniteFuture();
}

void IkeRunner::Loop::RecordFailure(Tunnel& t, const Sa& sa) {
  const ike::FailureReason reason =
      sa.failure ? sa.failure->reason : ike::FailureReason::kInternalError;
  const std::string name = ike::FailureReasonName(reason);
  const std::string detail = sa.failure ? sa.failure->detail : std::string();
  metrics_.HandshakeFailed(sa.initiator, name);
  if (IsAuthFailure(reason)) metrics_.AuthFailed(name);
  // Logged when the reason changes; retries that fail alike are counted.
  const bool again = t.last_failure.has_value() && t.last_failure->first == name;
  LogLine(again ? LogLevel::kDebug : LogLevel::kInfo, "IKE negotiation failed")
      .With("node", node_)
      .With("tunnel", t.name)
      .With("role", Role(sa.initiator))
      .With("reason", name)
      .With("detail", detail);
  t.last_failure = std::make_pair(name, detail);
}

void IkeRunner::Loop::ScheduleRetry(Tunnel& t) {
  if (!t.initiator) return;
  ++t.failures;
  absl::Duration ceiling = options_.initiator_backoff;
  for (int i = 1; i < t.failures && ceiling < options_.max_initiator_backoff; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, options_.max_initiator_backoff);
  // Half fixed, half jitter: tunnels that failed together spread out.
  const absl::Duration delay =
      ceiling / 2 + absl::Nanoseconds(absl::Uniform<int64_t>(
                        bitgen_, 0, std::max<int64_t>(1, absl::ToInt64Nanoseconds(ceiling / 2))));
  t.initiate_at = clock_.Now() + delay;
}

void IkeRunner::Loop::Retire(std::unique_ptr<Sa> sa,
                             const std::vector<dataplane::PolicyConfig>& keep) {
  EndHalfOpen(*sa);
  for (uint64_t spi : sa->local_spis) {
    auto it = by_spi_.find(spi);
    if (it != by_spi_.end() && it->second == sa.get()) by_spi_.erase(it);
  }
  sa->local_spis.clear();
  for (const InstalledChildSa& older : sa->older_children) {
    ReportChildCounters(sa->tunnel->name, older);
    if (absl::Status s = RemoveChildSa(dataplane_, older, keep); !s.ok()) {
      LOG_ERROR("cannot remove a CHILD SA from the dataplane")
          .With("node", node_)
          .With("tunnel", sa->tunnel->name)
          .With("error", s.ToString());
    }
  }
  sa->older_children.clear();
  if (sa->child.has_value()) {
    ReportChildCounters(sa->tunnel->name, *sa->child);
    if (absl::Status s = RemoveChildSa(dataplane_, *sa->child, keep); !s.ok()) {
      LOG_ERROR("cannot remove a CHILD SA from the dataplane")
          .With("node", node_)
          .With("tunnel", sa->tunnel->name)
          .With("dataplane", dataplane_.name())
          .With("error", s.ToString());
    }
  }
}

absl::Status IkeRunner::Loop::InstallChild(Sa& sa, const ike::ChildSa& child) {
  Tunnel& t = *sa.tunnel;
  ChildSaParams params = t.child_params;
  if (!sa.moved_peer_address.empty()) params.remote_address = sa.moved_peer_address;
  absl::StatusOr<ChildSaState> state = MapChildSa(child, params);
  absl::StatusOr<InstalledChildSa> installed =
      state.ok() ? InstallChildSa(dataplane_, *state, !child.outbound_deferred) : state.status();
  if (!installed.ok()) {
    LOG_WARNING("cannot install the CHILD SA")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("dataplane", dataplane_.name())
        .With("error", installed.status().ToString());
    return absl::Status(installed.status().code(),
                        absl::StrCat("dataplane: ", installed.status().message()));
  }
  if (sa.child.has_value()) {
    // A rekey: the old SA stays until the engine removes it.
    sa.older_children.push_back(*std::move(sa.child));
  }
  sa.child = *std::move(installed);
  strait::v1::ChildSaStatus& s = sa.child_status;
  s.Clear();
  s.set_inbound_spi(absl::StrFormat("%08x", child.inbound_spi));
  s.set_outbound_spi(absl::StrFormat("%08x", child.outbound_spi));
  s.set_algorithms(ike::SuiteName(child.algorithms, /*ike=*/false));
  for (const ike::TrafficSelectorRange& r : child.local_ts) {
    s.add_local_traffic_selectors(ike::FormatSelector(r));
  }
  for (const ike::TrafficSelectorRange& r : child.remote_ts) {
    s.add_remote_traffic_selectors(ike::FormatSelector(r));
  }
  SetTimestamp(clock_.Now(), s.mutable_installed_time());
  return absl::OkStatus();
}

void IkeRunner::Loop::RemoveChild(Sa& sa, const ike::ChildSa& child) {
  const std::vector<dataplane::PolicyConfig> none;
  auto remove = [&](const InstalledChildSa& installed,
                    const std::vector<dataplane::PolicyConfig>& keep) {
    ReportChildCounters(sa.tunnel->name, installed);
    if (absl::Status s = RemoveChildSa(dataplane_, installed, keep); !s.ok()) {
      LOG_ERROR("cannot remove a CHILD SA from the dataplane")
          .With("node", node_)
          .With("tunnel", sa.tunnel->name)
          .With("error", s.ToString());
    }
  };
  for (auto it = sa.older_children.begin(); it != sa.older_children.end(); ++it) {
    if (it->inbound.spi != child.inbound_spi) continue;
    // Replaced: the newest SA uses the same policies.
    remove(*it, sa.child.has_value() ? sa.child->policies : none);
    sa.older_children.erase(it);
    return;
  }
  if (sa.child.has_value() && sa.child->inbound.spi == child.inbound_spi) {
    // The newest went (a rekey collision's redundant SA, or a peer's
    // DELETE): an older one, if any, takes its place.
    if (!sa.older_children.empty()) {
      InstalledChildSa gone = *std::move(sa.child);
      sa.child = std::move(sa.older_children.back());
      sa.older_children.pop_back();
      remove(gone, sa.child->policies);
    } else {
      remove(*sa.child, none);
      sa.child.reset();
    }
  }
}

InstalledChildSa* IkeRunner::Loop::FindChild(Sa& sa, uint32_t inbound_spi) {
  if (sa.child.has_value() && sa.child->inbound.spi == inbound_spi) return &*sa.child;
  for (InstalledChildSa& older : sa.older_children) {
    if (older.inbound.spi == inbound_spi) return &older;
  }
  return nullptr;
}

absl::Status IkeRunner::Loop::ActivateChildOutbound(Sa& sa, const ike::ChildSa& child) {
  InstalledChildSa* installed = FindChild(sa, child.inbound_spi);
  if (installed == nullptr) return absl::NotFoundError("no such CHILD SA installed");
  Tunnel& t = *sa.tunnel;
  ChildSaParams params = t.child_params;
  // Where the SA went, should the peer's NAT mapping have moved it.
  params.remote_address = installed->outbound.destination;
  absl::StatusOr<ChildSaState> state = MapChildSa(child, params);
  absl::Status status =
      state.ok() ? InstallChildSaOutbound(dataplane_, *state, *installed) : state.status();
  if (!status.ok()) {
    LOG_WARNING("cannot install the rekeyed CHILD SA's outbound SA")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("dataplane", dataplane_.name())
        .With("error", status.ToString());
    return absl::Status(status.code(), absl::StrCat("dataplane: ", status.message()));
  }
  return absl::OkStatus();
}

absl::Status IkeRunner::Loop::MoveChild(Sa& sa, const ike::ChildSa& child,
                                        const ike::Endpoint& peer) {
  InstalledChildSa* installed = FindChild(sa, child.inbound_spi);
  if (installed == nullptr) return absl::NotFoundError("no such CHILD SA installed");
  Tunnel& t = *sa.tunnel;
  ChildSaParams params = t.child_params;
  params.remote_address = peer.address;
  absl::StatusOr<ChildSaState> state = MapChildSa(child, params);
  if (!state.ok()) return state.status();
  absl::Status status;
  if (installed->outbound.destination == peer.address) {
    // Only the port moved: update both SAs in place, keeping their
    // counters and sequence numbers.
    status = dataplane_.UpdateSa(state->inbound);
    if (status.ok() && installed->outbound_installed) status = dataplane_.UpdateSa(state->outbound);
  } else {
    // A new address is a new outbound SA and new policy templates.
    ReportChildCounters(t.name, *installed);
    status = RemoveChildSa(dataplane_, *installed);
    absl::StatusOr<InstalledChildSa> moved =
        status.ok() ? InstallChildSa(dataplane_, *state, installed->outbound_installed) : status;
    if (moved.ok()) *installed = *std::move(moved);
    status = moved.status();
  }
  if (!status.ok()) {
    LOG_WARNING("cannot move the CHILD SA to the peer's new mapping")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("dataplane", dataplane_.name())
        .With("error", status.ToString());
    return status;
  }
  sa.moved_peer_address =
      peer.address == t.child_params.remote_address ? ike::Bytes() : peer.address;
  metrics_.PeerMoved();
  LOG_INFO("CHILD SA follows the peer's NAT mapping")
      .With("node", node_)
      .With("tunnel", t.name)
      .With("peer", ike::FormatIpAddress(peer.address))
      .With("port", static_cast<uint64_t>(peer.port));
  return absl::OkStatus();
}

void IkeRunner::Loop::OnDataplaneEvent(const dataplane::DataplaneEvent& e) {
  if (e.kind == dataplane::DataplaneEvent::Kind::kAcquire) {
    // Traffic hit a policy without an SA (a held tunnel): connect now.
    for (auto& [name, owned] : tunnels_) {
      Tunnel& t = *owned;
      if (t.initiator && t.current == nullptr && t.initiating == nullptr &&
          (e.reqid == 0 || e.reqid == t.child_params.reqid)) {
        t.initiate_at = std::min(t.initiate_at, clock_.Now());
      }
    }
    return;
  }
  for (auto& [name, owned] : tunnels_) {
    Tunnel& t = *owned;
    Sa* sa = t.current.get();
    if (sa == nullptr || !sa->child.has_value() ||
        !(sa->child->inbound == e.sa || sa->child->outbound == e.sa)) {
      continue;
    }
    if (e.kind == dataplane::DataplaneEvent::Kind::kSoftExpire) {
      // Time to rekey: CREATE_CHILD_SA, either end.
      LOG_INFO("CHILD SA soft expiry: rekeying").With("node", node_).With("tunnel", t.name);
      if (absl::Status s = sa->engine->RekeyChild(); !s.ok()) {
        LOG_WARNING("cannot rekey the CHILD SA")
            .With("node", node_)
            .With("tunnel", t.name)
            .With("error", s.ToString());
      }
      Flush(*sa);
      return;
    }
    // Hard expiry: the SA is gone. The policies stay, so that traffic is
    // dropped rather than sent in clear until a new SA is up.
    LOG_WARNING("CHILD SA expired; IKE SA closed")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("spi", absl::StrFormat("%08x", e.sa.spi));
    const std::vector<dataplane::PolicyConfig> keep = sa->child->policies;
    Retire(std::move(t.current), keep);
    if (t.initiator) t.initiate_at = std::min(t.initiate_at, clock_.Now());
    Report(t);
    return;
  }
}

// --- timers and status ---

absl::Time IkeRunner::Loop::NextWake() {
  absl::Time wake = absl::InfiniteFuture();
  for (const auto& [address, la] : locals_) {
    if (!la->ready()) wake = std::min(wake, la->retry_at);
  }
  for (const auto& [name, t] : tunnels_) {
    if (t->local == nullptr || !t->local->ready()) continue;
    if (t->initiator && t->initiating == nullptr &&
        (t->current == nullptr || t->current->reauthenticating)) {
      wake = std::min(wake, t->initiate_at);
    }
    for (Sa* sa : t->Sas()) {
      if (std::optional<absl::Time> d = sa->engine->NextDeadline()) wake = std::min(wake, *d);
      wake = std::min(wake, sa->give_up);
    }
  }
  return wake;
}

void IkeRunner::Loop::RunTimers(absl::Time now) {
  for (auto& [address, la] : locals_) {
    if (la->ready() || la->retry_at > now) continue;
    Bind(*la);
    if (!la->ready()) continue;
    for (auto& [name, t] : tunnels_) {
      if (t->local == la.get()) Report(*t);
    }
  }
  for (auto& [name, owned] : tunnels_) {
    Tunnel& t = *owned;
    if (t.local == nullptr || !t.local->ready()) continue;
    bool touched = false;
    for (Sa* sa : t.Sas()) {
      std::optional<absl::Time> d = sa->engine->NextDeadline();
      if (d.has_value() && *d <= now) {
        sa->engine->Tick(now);
        Flush(*sa);
        touched = true;
      }
      touched = touched || sa->give_up <= now;
    }
    if (t.initiator && t.initiating == nullptr &&
        (t.current == nullptr || t.current->reauthenticating) && t.initiate_at <= now) {
      StartInitiator(t);
      touched = true;
    }
    if (touched) Settle(t);
  }
}

void IkeRunner::Loop::Report(Tunnel& t) {
  strait::v1::TunnelEndStatus status;
  status.set_dataplane(dataplane_.name() == "fake" ? "memory" : dataplane_.name());
  if (!t.error_reason.empty()) {
    status.set_phase(strait::v1::TUNNEL_PHASE_ERROR);
    status.set_reason(t.error_reason);
    status.set_message(t.error_message);
  } else if (t.local != nullptr && !t.local->ready()) {
    status.set_phase(strait::v1::TUNNEL_PHASE_ERROR);
    status.set_reason(kSocketErrorReason);
    status.set_message(t.local->error);
  } else if (t.current != nullptr && !t.current->child.has_value()) {
    // The peer deleted the CHILD SA and kept the IKE SA: no traffic flows
    // until a new CHILD SA is up.
    status.set_phase(strait::v1::TUNNEL_PHASE_CONNECTING);
    status.set_reason(kChildSaDeletedReason);
    status.set_message(t.initiator
                           ? "the peer deleted the CHILD SA; creating a new one in the IKE SA"
                           : "the peer deleted the CHILD SA; waiting for it to create a new one");
    *status.mutable_ike_sa() = t.current->ike_status;
  } else if (t.current != nullptr) {
    status.set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
    status.set_reason("ESTABLISHED");
    status.set_message(t.current->summary);
    *status.mutable_ike_sa() = t.current->ike_status;
    *status.add_child_sas() = t.current->child_status;
  } else if (t.last_failure.has_value()) {
    status.set_phase(strait::v1::TUNNEL_PHASE_FAILED);
    status.set_reason(t.last_failure->first);
    status.set_message(t.last_failure->second);
  } else {
    status.set_phase(strait::v1::TUNNEL_PHASE_CONNECTING);
    status.set_reason(t.initiator ? "INITIATING" : "AWAITING_PEER");
    status.set_message(t.initiator ? "initiating the IKE SA" : "waiting for the peer to initiate");
  }
  if (status.phase() != t.logged_phase || status.reason() != t.logged_reason) {
    t.logged_phase = status.phase();
    t.logged_reason = status.reason();
    LOG_INFO("tunnel state")
        .With("node", node_)
        .With("tunnel", t.name)
        .With("phase", strait::v1::TunnelPhase_Name(status.phase()))
        .With("reason", status.reason())
        .With("message", status.message());
  }
  applier_.SetEndStatus(t.name, status);
}

void IkeRunner::Loop::UpdateGauges() {
  int64_t connecting = 0;
  int64_t established = 0;
  int64_t children = 0;
  for (const auto& [name, t] : tunnels_) {
    for (Sa* sa : t->Sas()) {
      if (sa == t->current.get()) {
        ++established;
      } else {
        ++connecting;
      }
      if (sa->child.has_value()) ++children;
    }
    metrics_.SetNextRekey(
        name, t->current != nullptr ? t->current->engine->next_child_rekey() : std::nullopt);
  }
  metrics_.SetIkeSas(connecting, established);
  metrics_.SetHalfOpenSas(static_cast<int64_t>(admission_.half_open()));
  metrics_.SetChildSas(children);
  PollSaCounters();
}

void IkeRunner::Loop::PollSaCounters() {
  const absl::Time now = clock_.Now();
  if (now < next_counter_poll_) return;
  next_counter_poll_ = now + absl::Seconds(2);
  for (const auto& [name, t] : tunnels_) {
    if (t->current == nullptr) continue;
    Sa& sa = *t->current;
    std::vector<const InstalledChildSa*> children;
    if (sa.child.has_value()) children.push_back(&*sa.child);
    for (const InstalledChildSa& older : sa.older_children) children.push_back(&older);
    for (const InstalledChildSa* child : children) ReportChildCounters(name, *child);
  }
  metrics_.EndSaRound();
}

void IkeRunner::Loop::ReportChildCounters(const std::string& tunnel,
                                          const InstalledChildSa& child) {
  for (const bool inbound : {true, false}) {
    const dataplane::SaId& id = inbound ? child.inbound : child.outbound;
    absl::StatusOr<dataplane::SaCounters> c = dataplane_.GetCounters(id);
    if (!c.ok()) continue;
    IkeMetrics::SaSample sample;
    sample.tunnel = tunnel;
    sample.spi = absl::StrFormat("%08x", id.spi);
    sample.inbound = inbound;
    sample.bytes = c->bytes;
    sample.packets = c->packets;
    sample.replay_failures = c->replay_failures;
    sample.integrity_failures = c->integrity_failures;
    metrics_.ReportSa(sample);
  }
}

// --- IkeRunner ---

absl::StatusOr<std::unique_ptr<IkeRunner>> IkeRunner::Create(std::string node, ApplierImpl& applier,
                                                             dataplane::Dataplane& dataplane,
                                                             Clock& clock, IkeMetrics& metrics,
                                                             IkeRunnerOptions options) {
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  auto loop = std::make_unique<Loop>(std::move(node), applier, dataplane, clock, metrics,
                                     std::move(options), std::make_shared<Mailbox>(fd));
  loop->Start();
  return std::unique_ptr<IkeRunner>(new IkeRunner(std::move(loop)));
}

IkeRunner::IkeRunner(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

IkeRunner::~IkeRunner() { Stop(); }

void IkeRunner::Reconcile(const strait::v1::Snapshot& snapshot) { loop_->Reconcile(snapshot); }

void IkeRunner::Stop() { loop_->Stop(); }

absl::Status IkeRunner::SendEsp(absl::Span<const uint8_t> payload, const ike::Endpoint& local,
                                const ike::Endpoint& remote) {
  return loop_->SendEsp(payload, local, remote);
}

}  // namespace strait::agent
