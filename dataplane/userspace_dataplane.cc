#include "dataplane/userspace_dataplane.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace strait::dataplane {

enum class UserspaceDataplane::Drop : int {
  // UserspaceDataplaneStats.
  kInvalidInner = 0,
  kNoPolicy,
  kNoSa,
  kAcquire,
  kUnknownSpi,
  kNotEsp,
  kSendError,
  kDeviceError,
  kInternal,
  // Counted on the SA; here only so that each is logged once.
  kReplay,
  kIntegrity,
  kMalformed,
  kSelectorMismatch,
  kSequenceOverflow,
  kDummy,
  kEnd,
};

namespace {

std::string FormatAddress(const Address& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (a.size() == 4) inet_ntop(AF_INET, a.data(), text, sizeof(text));
  if (a.size() == 16) inet_ntop(AF_INET6, a.data(), text, sizeof(text));
  return text;
}

std::string FormatSpi(uint32_t spi) { return absl::StrCat(absl::Hex(spi, absl::kZeroPad8)); }

absl::Status ValidateAddressPair(const Address& a, const Address& b, const char* what) {
  if ((a.size() != 4 && a.size() != 16) || a.size() != b.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " addresses must both be IPv4 or both IPv6"));
  }
  return absl::OkStatus();
}

bool Reached(const Lifetime& limit, const SaCounters& counters, absl::Duration age) {
  return (limit.bytes != 0 && counters.bytes >= limit.bytes) ||
         (limit.packets != 0 && counters.packets >= limit.packets) ||
         (limit.add_seconds != 0 && age >= absl::Seconds(limit.add_seconds));
}

int Specificity(const Selector& s) {
  return s.source_prefix + s.destination_prefix + (s.ip_protocol != 0) + (s.source_port != 0) +
         (s.destination_port != 0);
}

bool SameKey(const PolicyConfig& a, const Selector& selector, Direction direction, uint32_t mark,
             uint32_t mark_mask) {
  return a.direction == direction && a.selector == selector && a.mark == mark &&
         a.mark_mask == mark_mask;
}

// Device traffic carries no mark and no interface id.
bool AppliesToDeviceTraffic(const PolicyConfig& p) {
  return p.if_id == 0 && (p.mark & p.mark_mask) == 0;
}

bool TemplateMatches(const PolicyConfig& p, const SaConfig& sa) {
  return p.tunnel_source == sa.source && p.tunnel_destination == sa.id.destination &&
         (p.reqid == 0 || p.reqid == sa.reqid);
}

const char* DropMessage(int kind) {
  static const char* const kMessages[] = {
      "inner packet from the device is not IPv4/IPv6, dropped",
      "inner packet matches no out policy, dropped",
      "out policy has no SA yet, packet dropped",
      "acquire sent for an out policy without SA",
      "ESP packet for an unknown SPI, dropped",
      "UDP 4500 datagram is not ESP (runt, zero SPI or keepalive), ignored",
      "sending ESP-in-UDP failed",
      "device read/write failed",
      "ESP encryption failed inside OpenSSL",
      "ESP packet replayed or behind the window, dropped",
      "ESP packet failed its ICV, dropped",
      "ESP packet malformed (length, padding or inner packet), dropped",
      "decapsulated packet outside the SA's policy selectors, dropped",
      "outbound sequence numbers exhausted, SA expired",
      "dummy ESP packet (next header 59), dropped",
  };
  return kind < static_cast<int>(sizeof(kMessages) / sizeof(kMessages[0])) ? kMessages[kind] : "?";
}

}  // namespace

struct UserspaceDataplane::SaEntry {
  SaEntry(const SaConfig& sa, uint64_t order, absl::Time added)
      : config(sa), order(order), added(added), replay(sa.replay_window, sa.esn) {
    // Keys live only in the codec's OpenSSL contexts.
    config.encr_key = Secret();
    config.integ_key = Secret();
  }

  // Immutable except the fields UpdateSa replaces, which are read and
  // written under `mu`: soft, hard, encapsulation.
  SaConfig config;
  const uint64_t order;
  const absl::Time added;

  absl::Mutex mu;
  EspCodecPtr codec ABSL_GUARDED_BY(mu);
  ReplayWindow replay ABSL_GUARDED_BY(mu);
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  UserspaceSaStats stats ABSL_GUARDED_BY(mu);
  // Written under `mu`; read without it by the outbound SA choice.
  std::atomic<bool> soft_expired{false};
  std::atomic<bool> dead{false};  // Hard-expired or deleted.
};

struct UserspaceDataplane::PolicyEntry {
  PolicyConfig config;
  uint32_t priority = 0;  // Effective.
  int specificity = 0;
  uint64_t order = 0;
  absl::Mutex acquire_mu;
  absl::Time last_acquire ABSL_GUARDED_BY(acquire_mu) = absl::InfinitePast();
};

absl::StatusOr<std::unique_ptr<UserspaceDataplane>> UserspaceDataplane::Create(
    PacketDevicePtr device, DatagramSocket& socket, UserspaceDataplaneOptions options) {
  if (device == nullptr) return absl::InvalidArgumentError("userspace dataplane needs a device");
  if (options.timer_interval <= absl::ZeroDuration() ||
      options.device_poll <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timer interval and device poll must be positive");
  }
  if (!options.random) options.random = DefaultRandomBytes();
  return std::unique_ptr<UserspaceDataplane>(
      new UserspaceDataplane(std::move(device), socket, std::move(options)));
}

UserspaceDataplane::UserspaceDataplane(PacketDevicePtr device, DatagramSocket& socket,
                                       UserspaceDataplaneOptions options)
    : device_(std::move(device)),
      socket_(socket),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : RealClock::Get()) {}

UserspaceDataplane::~UserspaceDataplane() { Stop(); }

void UserspaceDataplane::Start() {
  if (device_thread_.joinable() || stop_.load()) return;
  device_thread_ = std::thread([this] { DeviceLoop(); });
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

void UserspaceDataplane::Stop() {
  stop_.store(true);
  {
    absl::MutexLock lock(&events_mu_);
    stopping_ = true;
  }
  if (device_thread_.joinable()) device_thread_.join();
  if (timer_thread_.joinable()) timer_thread_.join();
}

void UserspaceDataplane::DeviceLoop() {
  std::vector<uint8_t> buffer(65536);
  while (!stop_.load(std::memory_order_relaxed)) {
    absl::StatusOr<size_t> n = device_->Read(absl::MakeSpan(buffer), options_.device_poll);
    if (!n.ok()) {
      CountDrop(Drop::kDeviceError);
      absl::SleepFor(absl::Milliseconds(50));  // Do not spin on a broken device.
      continue;
    }
    if (*n > 0) HandleInnerPacket(absl::MakeConstSpan(buffer.data(), *n));
  }
}

void UserspaceDataplane::TimerLoop() {
  absl::Time next_check = absl::Now() + options_.timer_interval;
  while (true) {
    {
      absl::MutexLock lock(&events_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(events_mu_) {
        return stopping_ || !events_.empty();
      };
      events_mu_.AwaitWithDeadline(absl::Condition(&ready), next_check);
      if (stopping_) return;
    }
    if (absl::Now() >= next_check) {
      next_check = absl::Now() + options_.timer_interval;
      CheckLifetimes();  // Delivers too.
    } else {
      DeliverEvents();
    }
  }
}

void UserspaceDataplane::CountDrop(Drop drop) {
  const int kind = static_cast<int>(drop);
  drops_[kind].fetch_add(1, std::memory_order_relaxed);
  if (!logged_[kind].exchange(true, std::memory_order_relaxed)) {
    LOG_WARNING(DropMessage(kind))
        .With("dataplane", "userspace")
        .With("note", "logged once; see the counters");
  }
}

UserspaceDataplaneStats UserspaceDataplane::stats() const {
  auto get = [this](Drop d) { return drops_[static_cast<int>(d)].load(std::memory_order_relaxed); };
  UserspaceDataplaneStats s;
  s.invalid_inner = get(Drop::kInvalidInner);
  s.no_policy = get(Drop::kNoPolicy);
  s.no_sa = get(Drop::kNoSa);
  s.acquires = get(Drop::kAcquire);
  s.unknown_spi = get(Drop::kUnknownSpi);
  s.not_esp = get(Drop::kNotEsp);
  s.send_errors = get(Drop::kSendError);
  s.device_errors = get(Drop::kDeviceError);
  s.internal_errors = get(Drop::kInternal);
  return s;
}

// --- Packets.

UserspaceDataplane::PolicyEntryPtr UserspaceDataplane::FindOutPolicy(const PacketFlow& flow) const {
  for (const PolicyEntryPtr& p : policies_) {
    if (p->config.direction == Direction::kOut && AppliesToDeviceTraffic(p->config) &&
        SelectorMatches(p->config.selector, flow)) {
      return p;
    }
  }
  return nullptr;
}

UserspaceDataplane::SaEntryPtr UserspaceDataplane::FindOutSa(const PolicyConfig& policy) const {
  // As the kernel: among matching SAs prefer one not soft-expired (its
  // successor is up), then the newest.
  auto it = sas_by_tunnel_.find(std::make_pair(policy.tunnel_source, policy.tunnel_destination));
  if (it == sas_by_tunnel_.end()) return nullptr;
  SaEntryPtr best;
  bool best_fresh = false;
  for (const SaEntryPtr& sa : it->second) {
    if (!TemplateMatches(policy, sa->config) || sa->dead.load(std::memory_order_relaxed)) continue;
    const bool fresh = !sa->soft_expired.load(std::memory_order_relaxed);
    if (best == nullptr || (fresh && !best_fresh) ||
        (fresh == best_fresh && sa->order > best->order)) {
      best = sa;
      best_fresh = fresh;
    }
  }
  return best;
}

void UserspaceDataplane::Unindex(const SaEntryPtr& entry) {
  sas_.erase(entry->config.id);
  auto drop = [&entry](auto& index, const auto& key) {
    auto it = index.find(key);
    if (it == index.end()) return;
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), entry), v.end());
    if (v.empty()) index.erase(it);
  };
  drop(sas_by_spi_, entry->config.id.spi);
  drop(sas_by_tunnel_, std::make_pair(entry->config.source, entry->config.id.destination));
}

UserspaceDataplane::SaEntryPtr UserspaceDataplane::FindInSa(uint32_t spi, const UdpEndpoint& from,
                                                            const Address& local) const {
  auto it = sas_by_spi_.find(spi);
  if (it == sas_by_spi_.end()) return nullptr;
  for (const SaEntryPtr& sa : it->second) {
    if (!local.empty() ? sa->config.id.destination == local : sa->config.source == from.address) {
      return sa;
    }
  }
  return nullptr;
}

bool UserspaceDataplane::InboundAllowed(const PacketFlow& flow, const SaConfig& sa) const {
  // The best matching in policy (local delivery) or fwd policy
  // (forwarding) must name this SA; which one applies is the host's
  // routing decision after the device, so either will do.
  bool in_seen = false;
  bool fwd_seen = false;
  for (const PolicyEntryPtr& p : policies_) {
    const Direction d = p->config.direction;
    if (d == Direction::kOut || (d == Direction::kIn && in_seen) ||
        (d == Direction::kFwd && fwd_seen) || !AppliesToDeviceTraffic(p->config) ||
        !SelectorMatches(p->config.selector, flow)) {
      continue;
    }
    if (TemplateMatches(p->config, sa)) return true;
    (d == Direction::kIn ? in_seen : fwd_seen) = true;
    if (in_seen && fwd_seen) break;
  }
  return false;
}

void UserspaceDataplane::HandleInnerPacket(absl::Span<const uint8_t> packet) {
  absl::StatusOr<PacketFlow> flow = ParseIpPacket(packet);
  if (!flow.ok()) {
    CountDrop(Drop::kInvalidInner);
    return;
  }
  const absl::Span<const uint8_t> inner = packet.first(flow->length);
  PolicyEntryPtr policy;
  SaEntryPtr sa;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    policy = FindOutPolicy(*flow);
    if (policy != nullptr) sa = FindOutSa(policy->config);
  }
  if (policy == nullptr) {
    CountDrop(Drop::kNoPolicy);
    return;
  }
  if (sa == nullptr) {
    CountDrop(Drop::kNoSa);
    MaybeAcquire(policy, *flow);
    return;
  }

  thread_local std::vector<uint8_t> buffer;
  UdpEndpoint local;
  UdpEndpoint remote;
  bool soft = false;
  bool hard = false;
  {
    absl::MutexLock lock(&sa->mu);
    if (sa->dead) {
      CountDrop(Drop::kNoSa);
      return;
    }
    const uint64_t max_seq = sa->config.esn ? ~uint64_t{0} : 0xffffffffULL;
    if (sa->next_seq == 0 || sa->next_seq > max_seq) {
      // RFC 4303 §3.3.3: the counter must not cycle; the SA is spent.
      ++sa->stats.sequence_overflows;
      CountDrop(Drop::kSequenceOverflow);
      sa->dead = true;
      hard = true;
    } else {
      const uint8_t next_header = flow->version == 4 ? kNextHeaderIpv4 : kNextHeaderIpv6;
      absl::Status status = sa->codec->Encapsulate(sa->next_seq, inner, next_header, &buffer);
      if (!status.ok()) {
        CountDrop(Drop::kInternal);
        return;
      }
      ++sa->next_seq;
      sa->stats.counters.bytes += inner.size();
      ++sa->stats.counters.packets;
      if (Reached(sa->config.hard, sa->stats.counters, absl::ZeroDuration())) {
        sa->dead = true;
        hard = true;
      } else if (!sa->soft_expired &&
                 Reached(sa->config.soft, sa->stats.counters, absl::ZeroDuration())) {
        sa->soft_expired = true;
        soft = true;
      }
      const UdpEncapsulation& encap = *sa->config.encapsulation;
      local = UdpEndpoint{sa->config.source, encap.source_port};
      remote = UdpEndpoint{sa->config.id.destination, encap.destination_port};
    }
  }
  if (!local.address.empty()) {
    absl::Status status = socket_.Send(buffer, local, remote);
    if (!status.ok()) CountDrop(Drop::kSendError);
  }
  if (soft) {
    DataplaneEvent event;
    event.kind = DataplaneEvent::Kind::kSoftExpire;
    event.sa = sa->config.id;
    event.reqid = sa->config.reqid;
    Emit(std::move(event));
  }
  if (hard) RemoveExpired(sa);
}

void UserspaceDataplane::HandleEspDatagram(absl::Span<const uint8_t> payload,
                                           const UdpEndpoint& from, const Address& local) {
  absl::StatusOr<EspHeader> header = EspCodec::ParseHeader(payload);
  if (!header.ok() || header->spi == 0) {
    CountDrop(Drop::kNotEsp);  // Runts, NAT keepalives (0xff), IKE (non-ESP marker).
    return;
  }
  SaEntryPtr sa;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    sa = FindInSa(header->spi, from, local);
  }
  if (sa == nullptr) {
    CountDrop(Drop::kUnknownSpi);
    return;
  }

  thread_local std::vector<uint8_t> plain;
  PacketFlow flow;
  bool soft = false;
  bool hard = false;
  bool deliver = false;
  {
    absl::MutexLock lock(&sa->mu);
    if (sa->dead) {
      CountDrop(Drop::kUnknownSpi);
      return;
    }
    const uint64_t seq = sa->replay.Estimate(header->seq_lo);
    if (sa->replay.Check(seq) != ReplayWindow::Verdict::kOk) {
      ++sa->stats.counters.replay_failures;
      CountDrop(Drop::kReplay);
      return;
    }
    absl::StatusOr<EspPlaintext> opened =
        sa->codec->Decapsulate(payload, static_cast<uint32_t>(seq >> 32), &plain);
    if (!opened.ok()) {
      if (opened.status().code() == absl::StatusCode::kUnauthenticated) {
        ++sa->stats.counters.integrity_failures;
        CountDrop(Drop::kIntegrity);
      } else {
        ++sa->stats.malformed;
        CountDrop(Drop::kMalformed);
      }
      return;
    }
    // Authentic: only now does the number count as seen (and the packet
    // toward the SA's counters and lifetimes, as in the kernel).
    sa->replay.Update(seq);
    sa->stats.counters.bytes += opened->size;
    ++sa->stats.counters.packets;
    if (Reached(sa->config.hard, sa->stats.counters, absl::ZeroDuration())) {
      sa->dead = true;
      hard = true;
    } else if (!sa->soft_expired &&
               Reached(sa->config.soft, sa->stats.counters, absl::ZeroDuration())) {
      sa->soft_expired = true;
      soft = true;
    }
    if (opened->next_header == kNextHeaderNoNext) {
      ++sa->stats.dummy_packets;  // Traffic flow confidentiality filler.
      CountDrop(Drop::kDummy);
    } else {
      absl::StatusOr<PacketFlow> parsed =
          ParseIpPacket(absl::MakeConstSpan(plain.data(), opened->size));
      const int want = opened->next_header == kNextHeaderIpv4   ? 4
                       : opened->next_header == kNextHeaderIpv6 ? 6
                                                                : 0;
      if (!parsed.ok() || parsed->version != want) {
        ++sa->stats.malformed;
        CountDrop(Drop::kMalformed);
      } else {
        flow = *parsed;
        deliver = true;
      }
    }
  }
  if (deliver) {
    bool allowed;
    {
      absl::ReaderMutexLock lock(&state_mu_);
      allowed = InboundAllowed(flow, sa->config);
    }
    if (!allowed) {
      {
        absl::MutexLock lock(&sa->mu);
        ++sa->stats.selector_mismatches;
      }
      CountDrop(Drop::kSelectorMismatch);
    } else if (!device_->Write(absl::MakeConstSpan(plain.data(), flow.length)).ok()) {
      CountDrop(Drop::kDeviceError);
    }
  }
  if (soft) {
    DataplaneEvent event;
    event.kind = DataplaneEvent::Kind::kSoftExpire;
    event.sa = sa->config.id;
    event.reqid = sa->config.reqid;
    Emit(std::move(event));
  }
  if (hard) RemoveExpired(sa);
}

void UserspaceDataplane::MaybeAcquire(const PolicyEntryPtr& policy, const PacketFlow& flow) {
  const absl::Time now = clock_.Now();
  {
    absl::MutexLock lock(&policy->acquire_mu);
    if (now - policy->last_acquire < options_.acquire_interval) return;
    policy->last_acquire = now;
  }
  CountDrop(Drop::kAcquire);
  DataplaneEvent event;
  event.kind = DataplaneEvent::Kind::kAcquire;
  event.reqid = policy->config.reqid;
  event.selector = FlowSelector(flow);
  Emit(std::move(event));
}

// --- Lifetimes and events.

void UserspaceDataplane::RemoveExpired(const SaEntryPtr& entry) {
  {
    absl::MutexLock lock(&state_mu_);
    auto it = sas_.find(entry->config.id);
    if (it == sas_.end() || it->second != entry) return;  // Deleted meanwhile.
    Unindex(entry);
  }
  LOG_INFO("SA hard-expired and removed")
      .With("dataplane", "userspace")
      .With("spi", FormatSpi(entry->config.id.spi))
      .With("destination", FormatAddress(entry->config.id.destination));
  DataplaneEvent event;
  event.kind = DataplaneEvent::Kind::kHardExpire;
  event.sa = entry->config.id;
  event.reqid = entry->config.reqid;
  Emit(std::move(event));
}

void UserspaceDataplane::CheckLifetimes() {
  const absl::Time now = clock_.Now();
  std::vector<SaEntryPtr> entries;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    entries.reserve(sas_.size());
    for (const auto& [id, sa] : sas_) entries.push_back(sa);
  }
  for (const SaEntryPtr& sa : entries) {
    bool soft = false;
    bool hard = false;
    {
      absl::MutexLock lock(&sa->mu);
      if (sa->dead) continue;
      const absl::Duration age = now - sa->added;
      if (Reached(sa->config.hard, sa->stats.counters, age)) {
        sa->dead = true;
        hard = true;
      } else if (!sa->soft_expired && Reached(sa->config.soft, sa->stats.counters, age)) {
        sa->soft_expired = true;
        soft = true;
      }
    }
    if (soft) {
      DataplaneEvent event;
      event.kind = DataplaneEvent::Kind::kSoftExpire;
      event.sa = sa->config.id;
      event.reqid = sa->config.reqid;
      Emit(std::move(event));
    }
    if (hard) RemoveExpired(sa);
  }
  DeliverEvents();
}

void UserspaceDataplane::Emit(DataplaneEvent event) {
  absl::MutexLock lock(&events_mu_);
  events_.push_back(std::move(event));
}

void UserspaceDataplane::DeliverEvents() {
  absl::MutexLock deliver(&deliver_mu_);
  std::deque<DataplaneEvent> events;
  {
    absl::MutexLock lock(&events_mu_);
    events.swap(events_);
  }
  if (events.empty()) return;
  std::function<void(const DataplaneEvent&)> callback;
  {
    absl::MutexLock lock(&subscriber_mu_);
    callback = subscriber_;
  }
  if (!callback) return;  // Nobody listens, as with kernel multicast.
  for (const DataplaneEvent& event : events) callback(event);
}

void UserspaceDataplane::Subscribe(std::function<void(const DataplaneEvent&)> callback) {
  absl::MutexLock lock(&subscriber_mu_);
  subscriber_ = std::move(callback);
}

// --- Control plane.

absl::Status UserspaceDataplane::AddSa(const SaConfig& sa) {
  RETURN_IF_ERROR(ValidateAddressPair(sa.source, sa.id.destination, "SA"));
  if (sa.id.spi == 0) return absl::InvalidArgumentError("SPI 0 is reserved");
  if (!sa.encapsulation.has_value()) {
    return absl::InvalidArgumentError(
        "userspace ESP sends ESP-in-UDP only (RFC 3948): the SA needs UDP encapsulation "
        "(force NAT-T on the IKE side)");
  }
  if (sa.replay_window > ReplayWindow::kMaxSize) {
    return absl::InvalidArgumentError(absl::StrCat("replay window ", sa.replay_window,
                                                   " above the maximum ", ReplayWindow::kMaxSize));
  }
  EspTransform transform;
  transform.encr_id = sa.encr_id;
  transform.key_bits = sa.key_bits;
  transform.integ_id = sa.integ_id;
  transform.encr_key = sa.encr_key;
  transform.integ_key = sa.integ_key;
  ASSIGN_OR_RETURN(EspCodecPtr codec,
                   EspCodec::Create(sa.id.spi, transform, sa.esn, options_.random));

  absl::MutexLock control(&control_mu_);
  absl::MutexLock lock(&state_mu_);
  if (sas_.count(sa.id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("SA ", FormatSpi(sa.id.spi), " to ",
                                                 FormatAddress(sa.id.destination), " exists"));
  }
  auto entry = std::make_shared<SaEntry>(sa, next_order_++, clock_.Now());
  {
    absl::MutexLock entry_lock(&entry->mu);
    entry->codec = std::move(codec);
  }
  sas_.emplace(sa.id, entry);
  sas_by_spi_[sa.id.spi].push_back(entry);
  sas_by_tunnel_[std::make_pair(sa.source, sa.id.destination)].push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status UserspaceDataplane::UpdateSa(const SaConfig& sa) {
  if (!sa.encapsulation.has_value()) {
    return absl::InvalidArgumentError("userspace ESP needs UDP encapsulation");
  }
  SaEntryPtr entry;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    auto it = sas_.find(sa.id);
    if (it != sas_.end()) entry = it->second;
  }
  if (entry == nullptr) return absl::NotFoundError("no such SA");
  absl::MutexLock lock(&entry->mu);
  entry->config.soft = sa.soft;
  entry->config.hard = sa.hard;
  entry->config.encapsulation = sa.encapsulation;
  entry->soft_expired = false;  // As the kernel: new lifetimes, a new chance.
  return absl::OkStatus();
}

absl::Status UserspaceDataplane::DeleteSa(const SaId& id) {
  SaEntryPtr entry;
  {
    absl::MutexLock lock(&state_mu_);
    auto it = sas_.find(id);
    if (it == sas_.end()) return absl::NotFoundError("no such SA");
    entry = it->second;
    Unindex(entry);
  }
  absl::MutexLock lock(&entry->mu);
  entry->dead = true;
  entry->codec.reset();  // Keys go now, not when the last packet lets go.
  return absl::OkStatus();
}

absl::Status UserspaceDataplane::AddPolicy(const PolicyConfig& policy) {
  return AddPolicies({policy});
}

absl::Status UserspaceDataplane::AddPolicies(const std::vector<PolicyConfig>& policies) {
  for (const PolicyConfig& p : policies) {
    RETURN_IF_ERROR(ValidateSelector(p.selector));
    RETURN_IF_ERROR(ValidateAddressPair(p.tunnel_source, p.tunnel_destination, "tunnel"));
  }
  absl::MutexLock control(&control_mu_);
  // Routes first, outside state_mu_ (netlink may take a while); undone if
  // one fails, so that the batch is all or nothing.
  std::vector<const PolicyConfig*> routed;
  if (options_.routes != nullptr) {
    std::vector<PolicyConfig> existing;
    {
      absl::ReaderMutexLock lock(&state_mu_);
      for (const PolicyEntryPtr& e : policies_) existing.push_back(e->config);
    }
    for (const PolicyConfig& p : policies) {
      if (p.direction != Direction::kOut) continue;
      const bool replaces = std::any_of(existing.begin(), existing.end(), [&](const auto& e) {
        return SameKey(e, p.selector, p.direction, p.mark, p.mark_mask);
      });
      if (replaces) continue;
      const auto key = std::make_pair(p.selector.destination, p.selector.destination_prefix);
      if (route_refs_[key]++ == 0) {
        absl::Status status = options_.routes->AddRoute(p.selector);
        if (!status.ok()) {
          route_refs_[key]--;
          for (const PolicyConfig* done : routed) {
            const auto k =
                std::make_pair(done->selector.destination, done->selector.destination_prefix);
            if (--route_refs_[k] == 0) options_.routes->DeleteRoute(done->selector).IgnoreError();
          }
          return status;
        }
      }
      routed.push_back(&p);
      existing.push_back(p);
    }
  }
  absl::MutexLock lock(&state_mu_);
  for (const PolicyConfig& p : policies) {
    auto entry = std::make_shared<PolicyEntry>();
    entry->config = p;
    entry->priority = p.priority != 0 ? p.priority : kDefaultPolicyPriority;
    entry->specificity = Specificity(p.selector);
    auto same = std::find_if(policies_.begin(), policies_.end(), [&](const PolicyEntryPtr& e) {
      return SameKey(e->config, p.selector, p.direction, p.mark, p.mark_mask);
    });
    if (same != policies_.end()) {
      entry->order = (*same)->order;  // Replacing keeps its place among equals.
      policies_.erase(same);
    } else {
      entry->order = next_order_++;
    }
    auto position = std::upper_bound(
        policies_.begin(), policies_.end(), entry, [](const PolicyEntryPtr& a, const auto& b) {
          return std::make_tuple(a->priority, -a->specificity, a->order) <
                 std::make_tuple(b->priority, -b->specificity, b->order);
        });
    policies_.insert(position, std::move(entry));
  }
  return absl::OkStatus();
}

absl::Status UserspaceDataplane::DeletePolicy(const Selector& selector, Direction direction,
                                              uint32_t mark, uint32_t mark_mask,
                                              uint32_t /*if_id*/) {
  absl::MutexLock control(&control_mu_);
  {
    absl::MutexLock lock(&state_mu_);
    auto it = std::find_if(policies_.begin(), policies_.end(), [&](const PolicyEntryPtr& e) {
      return SameKey(e->config, selector, direction, mark, mark_mask);
    });
    if (it == policies_.end()) {
      return absl::NotFoundError(absl::StrCat("no ", DirectionName(direction), " policy"));
    }
    policies_.erase(it);
  }
  if (options_.routes != nullptr && direction == Direction::kOut) {
    const auto key = std::make_pair(selector.destination, selector.destination_prefix);
    auto ref = route_refs_.find(key);
    if (ref != route_refs_.end() && --ref->second == 0) {
      route_refs_.erase(ref);
      absl::Status status = options_.routes->DeleteRoute(selector);
      if (!status.ok()) {
        // The policy is gone either way; a stale route only sends packets
        // into the device, where they are dropped for want of a policy.
        LOG_WARNING("removing a route from the device failed")
            .With("dataplane", "userspace")
            .With("error", status.ToString());
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SaCounters> UserspaceDataplane::GetCounters(const SaId& id) {
  ASSIGN_OR_RETURN(UserspaceSaStats stats, GetSaStats(id));
  return stats.counters;
}

absl::StatusOr<UserspaceSaStats> UserspaceDataplane::GetSaStats(const SaId& id) {
  SaEntryPtr entry;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    auto it = sas_.find(id);
    if (it != sas_.end()) entry = it->second;
  }
  if (entry == nullptr) return absl::NotFoundError("no such SA");
  absl::MutexLock lock(&entry->mu);
  return entry->stats;
}

absl::Status UserspaceDataplane::SetNextSequenceForTesting(const SaId& id, uint64_t next) {
  SaEntryPtr entry;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    auto it = sas_.find(id);
    if (it != sas_.end()) entry = it->second;
  }
  if (entry == nullptr) return absl::NotFoundError("no such SA");
  absl::MutexLock lock(&entry->mu);
  entry->next_seq = next;
  return absl::OkStatus();
}

absl::StatusOr<InstalledState> UserspaceDataplane::List() {
  InstalledState state;
  absl::ReaderMutexLock lock(&state_mu_);
  for (const auto& [id, entry] : sas_) {
    absl::MutexLock entry_lock(&entry->mu);
    state.sas.push_back(entry->config);
  }
  for (const PolicyEntryPtr& p : policies_) state.policies.push_back(p->config);
  return state;
}

}  // namespace strait::dataplane
