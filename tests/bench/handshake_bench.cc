// handshake_bench: IKEv2 handshakes per second, Strait to Strait.
//
// Two threads, each with one UDP socket on loopback and an event loop that
// dispatches datagrams to engines by IKE SPI: the initiator keeps --window
// handshakes in flight (a new engine for each), the responder makes a new
// engine for every IKE_SA_INIT request with SPIr 0. Both authenticate with
// ECDSA P-256 certificates from one in-memory test CA; by default the IKE
// proposal is aes128gcm16-prfsha256-x25519 and the ESP one aes128gcm16.
// CHILD SAs go to a sink that only counts them.
//
// A handshake counts when the initiator's CHILD SA is established and the
// responder has established the same IKE SA (a ledger of SPIs shared by the
// two threads); it counts towards the rate when it ends inside the
// measurement window, which follows --warmup. See tests/bench/README.md.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/cert_auth.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/test_pki.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "common/clock.h"
#include "common/flags.h"
#include "common/intent/proposal.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"

ABSL_FLAG(int, window, 0,
          "Handshakes in flight at once. Default: twice the number of CPUs (at least 4).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Length of the measurement window.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2),
          "Handshakes before the measurement window, not counted.");
ABSL_FLAG(std::string, initiator_address, "127.0.0.1", "Address of the initiator's socket.");
ABSL_FLAG(std::string, responder_address, "127.0.0.2", "Address of the responder's socket.");
ABSL_FLAG(std::string, ike_proposals, "aes128gcm16-prfsha256-x25519",
          "IKE proposals of both sides (strongSwan syntax).");
ABSL_FLAG(std::string, esp_proposals, "aes128gcm16", "ESP proposals of both sides.");
ABSL_FLAG(bool, json, false, "Print one line of JSON instead of the text report.");
ABSL_FLAG(std::string, log_level, "warning", "Least severe log level on stderr.");

namespace strait::bench {
namespace {

using ike::Bytes;
using ike::Endpoint;
using ike::EngineConfig;
using ike::EngineEvent;
using ike::EnginePtr;

constexpr char kUsage[] = R"(measures IKEv2 handshakes per second between two Strait engines.

Usage: handshake_bench [--window N] [--duration 10s] [--warmup 2s] [--json]

Runs an initiator and a responder, each in its own thread with one UDP
socket, with ECDSA P-256 certificates from one test CA, and reports
completed handshakes (IKE SA and CHILD SA on both sides) per second and
their latency. Exit status 0 when at least one handshake completed in the
measurement window and none failed.)";

constexpr char kInitiatorName[] = "initiator.bench.strait.example";
constexpr char kResponderName[] = "responder.bench.strait.example";
// How often each loop runs the engines' timers (retransmits, half-open
// give-up); their timeouts are seconds, so this only bounds the slack.
constexpr absl::Duration kSweepInterval = absl::Milliseconds(50);
// The responder keeps an established SA this long to answer a retransmitted
// IKE_AUTH request whose response was lost.
constexpr absl::Duration kLinger = absl::Seconds(2);
// After the window, in-flight handshakes get this long to end.
constexpr absl::Duration kDrain = absl::Seconds(3);
constexpr size_t kIkeHeaderSize = 28;
constexpr int kSocketBuffer = 4 << 20;

// The fields of an IKE header that the loops dispatch on.
struct HeaderView {
  uint64_t spi_i = 0;
  uint64_t spi_r = 0;
  uint8_t exchange = 0;
  bool response = false;
};

uint64_t ReadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v = (v << 8) | p[i];
  }
  return v;
}

bool ParseHeader(absl::Span<const uint8_t> d, HeaderView* h) {
  if (d.size() < kIkeHeaderSize) {
    return false;
  }
  h->spi_i = ReadU64(d.data());
  h->spi_r = ReadU64(d.data() + 8);
  h->exchange = d[18];
  h->response = (d[19] & ike::kFlagResponse) != 0;
  return true;
}

// CPU time of the calling thread.
absl::Duration ThreadCpu() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

// One non-blocking UDP socket (IPv4 or IPv6).
class UdpSocket {
 public:
  static absl::StatusOr<std::unique_ptr<UdpSocket>> Create(const Endpoint& local) {
    sockaddr_storage ss;
    const socklen_t len = ike::ToSockaddr(local, &ss);
    if (len == 0) {
      return absl::InvalidArgumentError("bad local address");
    }
    const int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
    }
    auto sock = std::unique_ptr<UdpSocket>(new UdpSocket(fd));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSocketBuffer, sizeof(kSocketBuffer));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof(kSocketBuffer));
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      return absl::InternalError(
          absl::StrCat("bind ", ike::FormatIpAddress(local.address), ": ", std::strerror(errno)));
    }
    socklen_t got = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &got);
    Endpoint bound;
    ike::FromSockaddr(ss, &bound);
    sock->local_ = local;
    sock->local_.port = bound.port;
    return sock;
  }
  ~UdpSocket() { close(fd_); }
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  const Endpoint& local() const { return local_; }

  // Waits up to `timeout` for a datagram to read.
  void Wait(absl::Duration timeout) {
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout))));
  }

  // One datagram, or false when none is queued.
  bool Receive(Bytes* data, Endpoint* from) {
    data->resize(65535);
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const ssize_t n =
        recvfrom(fd_, data->data(), data->size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ++receive_errors_;
      }
      return false;
    }
    data->resize(static_cast<size_t>(n));
    *from = Endpoint();
    ike::FromSockaddr(ss, from);
    return true;
  }

  void Send(const Bytes& data, const Endpoint& to) {
    sockaddr_storage ss;
    const socklen_t len = ike::ToSockaddr(to, &ss);
    if (sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) < 0) {
      ++send_errors_;  // The engine's retransmission covers it.
    }
  }

  uint64_t receive_errors() const { return receive_errors_; }
  uint64_t send_errors() const { return send_errors_; }

 private:
  explicit UdpSocket(int fd) : fd_(fd) {}

  int fd_;
  Endpoint local_;
  uint64_t receive_errors_ = 0;
  uint64_t send_errors_ = 0;
};

// Counts CHILD SAs instead of installing them.
class CountingSink : public ike::ChildSaSink {
 public:
  // ChildSaSink
  absl::Status InstallChildSa(const ike::ChildSa&) override {
    ++installed_;
    return absl::OkStatus();
  }
  absl::Status RemoveChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }

  uint64_t installed() const { return installed_; }

 private:
  uint64_t installed_ = 0;
};

// IKE SAs (by SPIi) that the responder has established and the initiator
// has not yet claimed: proof that a handshake completed on both sides.
class Ledger {
 public:
  void Add(uint64_t spi_i) {
    absl::MutexLock lock(&mu_);
    spis_.insert(spi_i);
  }
  // True (and forgets it) when the responder established `spi_i`.
  bool Claim(uint64_t spi_i) {
    absl::MutexLock lock(&mu_);
    return spis_.erase(spi_i) == 1;
  }
  size_t unclaimed() {
    absl::MutexLock lock(&mu_);
    return spis_.size();
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<uint64_t> spis_ ABSL_GUARDED_BY(mu_);
};

// When the measurement window opens and closes; set by the main thread
// before the loops start.
struct Schedule {
  absl::Time window_start;
  absl::Time window_end;
  absl::Time drain_end;
};

// What one side saw, read after its thread has ended.
struct SideReport {
  uint64_t established = 0;  // CHILD SAs, over the whole run.
  uint64_t established_in_window = 0;
  std::map<std::string, uint64_t> failures;  // By reason, whole run.
  uint64_t unknown_spi_dropped = 0;
  uint64_t retransmits = 0;
  uint64_t engine_drops = 0;  // Datagrams the engines dropped (see EngineCounters).
  uint64_t socket_errors = 0;
  absl::Duration cpu_in_window;
  std::string ike_suite;  // Of the first IKE SA, and whether all agreed.
  std::string esp_suite;
  std::string auth_method;
  uint64_t mismatched = 0;  // SAs with another suite or auth method.
};

void AddEngineCounters(const ike::EngineCounters& c, SideReport* r) {
  r->retransmits += c.retransmits_sent;
  r->engine_drops +=
      c.malformed_dropped + c.undecryptable_dropped + c.unexpected_dropped + c.stale_dropped;
}

// Checks each event against the first one seen, so that the report can say
// that every SA used the same algorithms and authentication.
void NoteSuite(const EngineEvent& e, SideReport* r) {
  if (e.kind == EngineEvent::Kind::kIkeSaEstablished) {
    const std::string suite = ike::SuiteName(e.algorithms, true);
    if (r->ike_suite.empty()) {
      r->ike_suite = suite;
      r->auth_method = e.auth_method;
    } else if (suite != r->ike_suite || e.auth_method != r->auth_method) {
      ++r->mismatched;
    }
  } else if (e.kind == EngineEvent::Kind::kChildSaEstablished) {
    const std::string suite = ike::SuiteName(e.algorithms, false);
    if (r->esp_suite.empty()) {
      r->esp_suite = suite;
    } else if (suite != r->esp_suite) {
      ++r->mismatched;
    }
  }
}

// The initiator: keeps `window` handshakes in flight until the window closes,
// then lets the last ones end.
class InitiatorLoop {
 public:
  InitiatorLoop(EngineConfig config, UdpSocket& socket, Ledger& ledger, const Schedule& schedule,
                int window)
      : config_(std::move(config)),
        socket_(socket),
        ledger_(ledger),
        schedule_(schedule),
        window_(window),
        random_(ike::CreateOpenSslRandomSource()) {}

  void Run() {
    Clock& clock = RealClock::Get();
    absl::Time next_sweep = clock.Now() + kSweepInterval;
    bool cpu_started = false;
    absl::Duration cpu_at_start;
    Bytes data;
    Endpoint from;
    for (;;) {
      const absl::Time now = clock.Now();
      if (!cpu_started && now >= schedule_.window_start) {
        cpu_started = true;
        cpu_at_start = ThreadCpu();
      }
      const bool open = now < schedule_.window_end;
      if (!open && cpu_started && report_.cpu_in_window == absl::ZeroDuration()) {
        report_.cpu_in_window = ThreadCpu() - cpu_at_start;
      }
      if (!open && (in_flight_.empty() || now >= schedule_.drain_end)) {
        break;
      }
      while (open && in_flight_.size() < static_cast<size_t>(window_)) {
        StartOne();
      }

      socket_.Wait(std::max(absl::ZeroDuration(), next_sweep - clock.Now()));
      while (socket_.Receive(&data, &from)) {
        HeaderView h;
        if (!ParseHeader(data, &h) || !h.response) {
          ++report_.unknown_spi_dropped;
          continue;
        }
        auto it = in_flight_.find(h.spi_i);
        if (it == in_flight_.end()) {
          ++report_.unknown_spi_dropped;
          continue;
        }
        it->second.engine->HandleDatagram(data, from);
        Pump(it->first);
        // Keep the window full between datagrams, not only between polls.
        if (clock.Now() < schedule_.window_end) {
          while (in_flight_.size() < static_cast<size_t>(window_)) {
            StartOne();
          }
        }
      }
      if (clock.Now() >= next_sweep) {
        const absl::Time t = clock.Now();
        std::vector<uint64_t> spis;
        for (auto& [spi, flight] : in_flight_) {
          spis.push_back(spi);
        }
        for (uint64_t spi : spis) {
          in_flight_[spi].engine->Tick(t);
          Pump(spi);
        }
        next_sweep = t + kSweepInterval;
      }
    }
    for (auto& [spi, flight] : in_flight_) {
      AddEngineCounters(flight.engine->counters(), &report_);
    }
    report_.socket_errors = socket_.receive_errors() + socket_.send_errors();
  }

  const SideReport& report() const { return report_; }
  const std::vector<absl::Duration>& latencies() const { return latencies_; }
  uint64_t one_sided() const { return one_sided_; }

 private:
  struct Flight {
    EnginePtr engine;
    absl::Time started;
  };

  void StartOne() {
    absl::StatusOr<EnginePtr> engine =
        ike::CreateEngine(config_, RealClock::Get(), *random_, sink_);
    if (!engine.ok()) {
      ++report_.failures[absl::StrCat("config: ", engine.status().message())];
      window_ = 0;  // Nothing will work; end the run.
      return;
    }
    const absl::Time started = RealClock::Get().Now();
    if (absl::Status s = (*engine)->Initiate(); !s.ok()) {
      ++report_.failures[absl::StrCat("initiate: ", s.message())];
      window_ = 0;
      return;
    }
    std::vector<ike::OutboundDatagram> out = (*engine)->TakeDatagrams();
    HeaderView h;
    if (out.empty() || !ParseHeader(out[0].data, &h)) {
      ++report_.failures["INTERNAL_ERROR"];
      return;
    }
    for (const auto& d : out) {
      socket_.Send(d.data, d.to);
    }
    in_flight_[h.spi_i] = Flight{*std::move(engine), started};
    Pump(h.spi_i);  // Events, if Initiate() failed.
  }

  // Sends the engine's datagrams and acts on its events; forgets the engine
  // when its handshake has ended.
  void Pump(uint64_t spi) {
    auto it = in_flight_.find(spi);
    ike::Engine& engine = *it->second.engine;
    for (const auto& d : engine.TakeDatagrams()) {
      socket_.Send(d.data, d.to);
    }
    bool ended = false;
    for (const EngineEvent& e : engine.TakeEvents()) {
      NoteSuite(e, &report_);
      if (e.kind == EngineEvent::Kind::kChildSaEstablished) {
        ended = true;
        if (!ledger_.Claim(e.ike_spi_i)) {
          ++one_sided_;
          continue;
        }
        ++report_.established;
        const absl::Time now = RealClock::Get().Now();
        if (now >= schedule_.window_start && now < schedule_.window_end) {
          ++report_.established_in_window;
          latencies_.push_back(now - it->second.started);
        }
      } else if (e.kind == EngineEvent::Kind::kFailed) {
        ended = true;
        ++report_.failures[ike::FailureReasonName(e.reason)];
      }
    }
    if (ended) {
      AddEngineCounters(engine.counters(), &report_);
      in_flight_.erase(it);
    }
  }

  const EngineConfig config_;
  UdpSocket& socket_;
  Ledger& ledger_;
  const Schedule& schedule_;
  int window_;
  ike::RandomSourcePtr random_;
  CountingSink sink_;
  absl::flat_hash_map<uint64_t, Flight> in_flight_;
  std::vector<absl::Duration> latencies_;
  uint64_t one_sided_ = 0;
  SideReport report_;
};

// The responder: one engine per IKE_SA_INIT request, found again by SPIr
// (or, for a retransmitted IKE_SA_INIT, by SPIi and source).
class ResponderLoop {
 public:
  ResponderLoop(EngineConfig config, UdpSocket& socket, Ledger& ledger, const Schedule& schedule)
      : config_(std::move(config)),
        socket_(socket),
        ledger_(ledger),
        schedule_(schedule),
        random_(ike::CreateOpenSslRandomSource()) {}

  // Runs until `stop` is set.
  void Run(const std::atomic<bool>& stop) {
    Clock& clock = RealClock::Get();
    absl::Time next_sweep = clock.Now() + kSweepInterval;
    bool cpu_started = false;
    bool cpu_done = false;
    absl::Duration cpu_at_start;
    Bytes data;
    Endpoint from;
    while (!stop.load(std::memory_order_relaxed)) {
      socket_.Wait(std::max(absl::ZeroDuration(), next_sweep - clock.Now()));
      while (socket_.Receive(&data, &from)) {
        Dispatch(data, from);
      }
      const absl::Time now = clock.Now();
      if (!cpu_started && now >= schedule_.window_start) {
        cpu_started = true;
        cpu_at_start = ThreadCpu();
      }
      if (cpu_started && !cpu_done && now >= schedule_.window_end) {
        cpu_done = true;
        report_.cpu_in_window = ThreadCpu() - cpu_at_start;
      }
      if (now >= next_sweep) {
        Sweep(now);
        next_sweep = now + kSweepInterval;
      }
    }
    for (auto& [spi, sa] : sas_) {
      AddEngineCounters(sa.engine->counters(), &report_);
    }
    report_.socket_errors = socket_.receive_errors() + socket_.send_errors();
  }

  const SideReport& report() const { return report_; }

 private:
  struct Sa {
    EnginePtr engine;
    uint64_t spi_i = 0;
    Endpoint peer;
    bool ended = false;
  };
  // A half-open SA by what its IKE_SA_INIT request carried.
  using InitKey = std::pair<uint64_t, std::pair<Bytes, uint16_t>>;

  void Dispatch(const Bytes& data, const Endpoint& from) {
    HeaderView h;
    if (!ParseHeader(data, &h) || h.response) {
      ++report_.unknown_spi_dropped;
      return;
    }
    if (h.exchange == ike::kExchangeIkeSaInit && h.spi_r == 0) {
      const InitKey key{h.spi_i, {from.address, from.port}};
      if (auto it = half_open_.find(key); it != half_open_.end()) {
        Deliver(it->second, data, from);
        return;
      }
      NewSa(data, from, key);
      return;
    }
    if (sas_.contains(h.spi_r)) {
      Deliver(h.spi_r, data, from);
    } else {
      ++report_.unknown_spi_dropped;
    }
  }

  void NewSa(const Bytes& data, const Endpoint& from, const InitKey& key) {
    EngineConfig config = config_;
    config.remote = from;
    absl::StatusOr<EnginePtr> engine =
        ike::CreateEngine(std::move(config), RealClock::Get(), *random_, sink_);
    if (!engine.ok()) {
      ++report_.failures[absl::StrCat("config: ", engine.status().message())];
      return;
    }
    (*engine)->HandleDatagram(data, from);
    std::vector<ike::OutboundDatagram> out = (*engine)->TakeDatagrams();
    HeaderView h;
    const bool keep = (*engine)->state() == ike::Engine::State::kAuthWait && !out.empty() &&
                      ParseHeader(out[0].data, &h) && h.spi_r != 0 && !sas_.contains(h.spi_r);
    if (!keep) {
      // Refused statelessly (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD) or
      // failed: nothing to keep.
      for (const auto& d : out) {
        socket_.Send(d.data, d.to);
      }
      for (const EngineEvent& e : (*engine)->TakeEvents()) {
        if (e.kind == EngineEvent::Kind::kFailed) {
          ++report_.failures[ike::FailureReasonName(e.reason)];
        }
      }
      AddEngineCounters((*engine)->counters(), &report_);
      return;
    }
    // Registered before the response leaves, so that the IKE_AUTH request
    // finds it.
    half_open_[key] = h.spi_r;
    sas_[h.spi_r] = Sa{*std::move(engine), key.first, from};
    for (const auto& d : out) {
      socket_.Send(d.data, d.to);
    }
    Pump(h.spi_r);
  }

  void Deliver(uint64_t spi_r, const Bytes& data, const Endpoint& from) {
    sas_[spi_r].engine->HandleDatagram(data, from);
    Pump(spi_r);
  }

  // Acts on the engine's events, then sends its datagrams: the ledger hears
  // of an established SA before the IKE_AUTH response that tells the
  // initiator.
  void Pump(uint64_t spi_r) {
    Sa& sa = sas_[spi_r];
    for (const EngineEvent& e : sa.engine->TakeEvents()) {
      NoteSuite(e, &report_);
      if (e.kind == EngineEvent::Kind::kChildSaEstablished) {
        ledger_.Add(e.ike_spi_i);
        ++report_.established;
        const absl::Time now = RealClock::Get().Now();
        if (now >= schedule_.window_start && now < schedule_.window_end) {
          ++report_.established_in_window;
        }
        End(spi_r, sa, now + kLinger);
      } else if (e.kind == EngineEvent::Kind::kFailed) {
        ++report_.failures[ike::FailureReasonName(e.reason)];
        End(spi_r, sa, RealClock::Get().Now());
      }
    }
    for (const auto& d : sa.engine->TakeDatagrams()) {
      socket_.Send(d.data, d.to);
    }
  }

  void End(uint64_t spi_r, Sa& sa, absl::Time forget_at) {
    if (sa.ended) {
      return;
    }
    sa.ended = true;
    half_open_.erase(InitKey{sa.spi_i, {sa.peer.address, sa.peer.port}});
    expiry_.push_back({forget_at, spi_r});
  }

  void Sweep(absl::Time now) {
    // Timers run only on half-open SAs (the give-up deadline).
    std::vector<uint64_t> half_open;
    half_open.reserve(half_open_.size());
    for (const auto& [key, spi_r] : half_open_) {
      half_open.push_back(spi_r);
    }
    for (uint64_t spi_r : half_open) {
      sas_[spi_r].engine->Tick(now);
      Pump(spi_r);
    }
    // Expiry times are pushed in order, save for failures (forgotten at
    // once), which may wait behind a lingering SA for up to kLinger.
    while (!expiry_.empty() && expiry_.front().first <= now) {
      auto it = sas_.find(expiry_.front().second);
      AddEngineCounters(it->second.engine->counters(), &report_);
      sas_.erase(it);
      expiry_.pop_front();
    }
  }

  const EngineConfig config_;
  UdpSocket& socket_;
  Ledger& ledger_;
  const Schedule& schedule_;
  ike::RandomSourcePtr random_;
  CountingSink sink_;
  absl::flat_hash_map<uint64_t, Sa> sas_;
  std::map<InitKey, uint64_t> half_open_;
  std::deque<std::pair<absl::Time, uint64_t>> expiry_;
  SideReport report_;
};

// Nearest-rank percentile of a sorted, non-empty vector.
absl::Duration Percentile(const std::vector<absl::Duration>& sorted, double p) {
  size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string FailuresText(const std::map<std::string, uint64_t>& failures) {
  std::vector<std::string> parts;
  parts.reserve(failures.size());
  for (const auto& [reason, n] : failures) {
    parts.push_back(absl::StrCat(reason, " ", n));
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

std::string FailuresJson(const std::map<std::string, uint64_t>& failures) {
  std::vector<std::string> parts;
  parts.reserve(failures.size());
  for (const auto& [reason, n] : failures) {
    parts.push_back(absl::StrCat(JsonString(reason), ":", n));
  }
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

absl::StatusOr<Endpoint> ParseEndpoint(const std::string& text) {
  ASSIGN_OR_RETURN(Bytes address, ike::ParseIpAddress(text));
  return Endpoint{std::move(address), 0};
}

// Both sides' configuration, each with its own certificate from one CA.
struct Configs {
  EngineConfig initiator;
  EngineConfig responder;
};

absl::StatusOr<Configs> MakeConfigs(const Endpoint& initiator, const Endpoint& responder) {
  const absl::Time now = absl::Now();
  ike::testing::TestCa ca("Strait Bench CA", now - absl::Hours(1), now + absl::Hours(24),
                          ike::testing::KeyType::kEcdsaP256);
  ASSIGN_OR_RETURN(auto initiator_anchors, ike::TrustAnchors::FromPem(ca.certificate_pem()));
  ASSIGN_OR_RETURN(auto responder_anchors, ike::TrustAnchors::FromPem(ca.certificate_pem()));
  auto credentials =
      [&](const std::string& name) -> absl::StatusOr<std::shared_ptr<const ike::LocalCredentials>> {
    ike::testing::IssuedCertificate leaf =
        ca.Issue(name, {"DNS:" + name}, ike::testing::KeyType::kEcdsaP256, now - absl::Hours(1),
                 now + absl::Hours(24));
    Secret key(leaf.private_key_pem);
    WipeString(&leaf.private_key_pem);
    return ike::LocalCredentials::FromPem(leaf.certificate_pem, key);
  };

  EngineConfig base;
  ASSIGN_OR_RETURN(base.ike_proposals, ike::ParseProposals(absl::GetFlag(FLAGS_ike_proposals),
                                                           intent::ProposalKind::kIke));
  ASSIGN_OR_RETURN(base.esp_proposals, ike::ParseProposals(absl::GetFlag(FLAGS_esp_proposals),
                                                           intent::ProposalKind::kEsp));
  ASSIGN_OR_RETURN(auto ts_i, ike::ParseSelectors("10.1.0.0/24"));
  ASSIGN_OR_RETURN(auto ts_r, ike::ParseSelectors("10.2.0.0/24"));
  ASSIGN_OR_RETURN(ike::Identity id_i, ike::ParseIdentity(kInitiatorName));
  ASSIGN_OR_RETURN(ike::Identity id_r, ike::ParseIdentity(kResponderName));

  Configs c;
  c.initiator = base;
  c.initiator.local = initiator;
  c.initiator.remote = responder;
  c.initiator.local_id = id_i;
  c.initiator.remote_id = id_r;
  c.initiator.local_ts = ts_i;
  c.initiator.remote_ts = ts_r;
  ASSIGN_OR_RETURN(c.initiator.credentials, credentials(kInitiatorName));
  c.initiator.trust_anchors = initiator_anchors;

  c.responder = base;
  c.responder.local = responder;
  c.responder.remote = initiator;  // Replaced by each request's source.
  c.responder.local_id = id_r;
  c.responder.remote_id = id_i;
  c.responder.local_ts = ts_r;
  c.responder.remote_ts = ts_i;
  ASSIGN_OR_RETURN(c.responder.credentials, credentials(kResponderName));
  c.responder.trust_anchors = responder_anchors;
  return c;
}

struct Result {
  int window = 0;
  absl::Duration warmup;
  absl::Duration duration;
  SideReport initiator;
  SideReport responder;
  std::vector<absl::Duration> latencies;  // Sorted.
  uint64_t one_sided = 0;
  size_t unclaimed = 0;
};

double Rate(const Result& r) {
  return static_cast<double>(r.initiator.established_in_window) / absl::ToDoubleSeconds(r.duration);
}

// Milliseconds of the side's thread CPU time per handshake in the window.
std::string CpuPerHandshake(const SideReport& side, uint64_t handshakes, const char* none) {
  if (handshakes == 0) {
    return none;
  }
  return absl::StrFormat("%.3f", Ms(side.cpu_in_window) / static_cast<double>(handshakes));
}

void PrintText(const Result& r) {
  const uint64_t n = r.initiator.established_in_window;
  absl::PrintF(
      "strait<->strait handshake_bench: window %d, warm-up %s, measured %s, IKE %s, ESP %s, "
      "ECDSA P-256 certificates\n",
      r.window, absl::FormatDuration(r.warmup), absl::FormatDuration(r.duration),
      absl::GetFlag(FLAGS_ike_proposals), absl::GetFlag(FLAGS_esp_proposals));
  absl::PrintF("negotiated: IKE %s, ESP %s, auth initiator %s / responder %s (%d mismatched)\n",
               r.initiator.ike_suite, r.initiator.esp_suite, r.initiator.auth_method,
               r.responder.auth_method, r.initiator.mismatched + r.responder.mismatched);
  absl::PrintF("handshakes: %d in %.2f s = %.1f handshakes/s\n", n,
               absl::ToDoubleSeconds(r.duration), Rate(r));
  if (!r.latencies.empty()) {
    absl::Duration sum;
    for (absl::Duration d : r.latencies) {
      sum += d;
    }
    absl::PrintF("latency: mean %.2f ms, p50 %.2f ms, p99 %.2f ms\n",
                 Ms(sum / static_cast<int64_t>(r.latencies.size())),
                 Ms(Percentile(r.latencies, 0.5)), Ms(Percentile(r.latencies, 0.99)));
  }
  absl::PrintF("cpu per handshake: initiator thread %s ms, responder thread %s ms\n",
               CpuPerHandshake(r.initiator, n, "n/a"), CpuPerHandshake(r.responder, n, "n/a"));
  absl::PrintF(
      "failures: initiator %s; responder %s; one-sided %d, unclaimed %d; retransmits %d; "
      "dropped %d\n",
      FailuresText(r.initiator.failures), FailuresText(r.responder.failures), r.one_sided,
      r.unclaimed, r.initiator.retransmits + r.responder.retransmits,
      r.initiator.engine_drops + r.responder.engine_drops + r.initiator.unknown_spi_dropped +
          r.responder.unknown_spi_dropped);
}

void PrintJson(const Result& r) {
  const uint64_t n = r.initiator.established_in_window;
  absl::Duration sum;
  for (absl::Duration d : r.latencies) {
    sum += d;
  }
  const bool have = !r.latencies.empty();
  std::string out = absl::StrCat(
      "{\"implementation\":\"strait\",\"window\":", r.window,
      ",\"warmup_s\":", absl::ToDoubleSeconds(r.warmup),
      ",\"duration_s\":", absl::ToDoubleSeconds(r.duration), ",\"handshakes\":", n,
      ",\"handshakes_per_second\":", absl::StrFormat("%.2f", Rate(r)), ",\"latency_ms\":{\"mean\":",
      absl::StrFormat("%.3f", have ? Ms(sum / static_cast<int64_t>(r.latencies.size())) : 0.0),
      ",\"p50\":", absl::StrFormat("%.3f", have ? Ms(Percentile(r.latencies, 0.5)) : 0.0),
      ",\"p99\":", absl::StrFormat("%.3f", have ? Ms(Percentile(r.latencies, 0.99)) : 0.0), "}",
      ",\"cpu_ms_per_handshake\":{\"initiator\":", CpuPerHandshake(r.initiator, n, "null"),
      ",\"responder\":", CpuPerHandshake(r.responder, n, "null"), "}",
      ",\"ike\":", JsonString(r.initiator.ike_suite),
      ",\"esp\":", JsonString(r.initiator.esp_suite),
      ",\"auth\":{\"initiator\":", JsonString(r.initiator.auth_method),
      ",\"responder\":", JsonString(r.responder.auth_method), "}",
      ",\"mismatched\":", r.initiator.mismatched + r.responder.mismatched,
      ",\"failures\":{\"initiator\":", FailuresJson(r.initiator.failures),
      ",\"responder\":", FailuresJson(r.responder.failures), "}", ",\"one_sided\":", r.one_sided,
      ",\"unclaimed\":", r.unclaimed,
      ",\"retransmits\":", r.initiator.retransmits + r.responder.retransmits, "}");
  absl::PrintF("%s\n", out);
}

int Main(int argc, char** argv) {
  ParsedFlags flags = ParseFlags({kUsage, {"tests/bench/"}, "handshake_bench (Strait)"},
                                 NormalizeFlagNames(std::vector<std::string>(argv, argv + argc)));
  if (flags.exit_now) {
    return 0;
  }
  if (absl::Status s = SetLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "handshake_bench: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  int window = absl::GetFlag(FLAGS_window);
  if (window <= 0) {
    window = std::max(4, 2 * static_cast<int>(std::thread::hardware_concurrency()));
  }
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const absl::Duration warmup = absl::GetFlag(FLAGS_warmup);
  if (duration <= absl::ZeroDuration() || warmup < absl::ZeroDuration()) {
    std::fprintf(stderr, "handshake_bench: --duration must be positive, --warmup not negative\n");
    return 2;
  }

  absl::StatusOr<Endpoint> initiator_at = ParseEndpoint(absl::GetFlag(FLAGS_initiator_address));
  absl::StatusOr<Endpoint> responder_at = ParseEndpoint(absl::GetFlag(FLAGS_responder_address));
  if (!initiator_at.ok() || !responder_at.ok()) {
    std::fprintf(stderr, "handshake_bench: bad --initiator_address or --responder_address\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<UdpSocket>> initiator_socket = UdpSocket::Create(*initiator_at);
  absl::StatusOr<std::unique_ptr<UdpSocket>> responder_socket = UdpSocket::Create(*responder_at);
  if (!initiator_socket.ok() || !responder_socket.ok()) {
    std::fprintf(stderr, "handshake_bench: %s\n",
                 (!initiator_socket.ok() ? initiator_socket.status() : responder_socket.status())
                     .ToString()
                     .c_str());
    return 1;
  }
  absl::StatusOr<Configs> configs =
      MakeConfigs((*initiator_socket)->local(), (*responder_socket)->local());
  if (!configs.ok()) {
    std::fprintf(stderr, "handshake_bench: %s\n", configs.status().ToString().c_str());
    return 2;
  }

  Ledger ledger;
  Schedule schedule;
  schedule.window_start = absl::Now() + warmup;
  schedule.window_end = schedule.window_start + duration;
  schedule.drain_end = schedule.window_end + kDrain;

  InitiatorLoop initiator(std::move(configs->initiator), **initiator_socket, ledger, schedule,
                          window);
  ResponderLoop responder(std::move(configs->responder), **responder_socket, ledger, schedule);
  std::atomic<bool> stop_responder{false};
  std::thread responder_thread([&] { responder.Run(stop_responder); });
  std::thread initiator_thread([&] { initiator.Run(); });
  initiator_thread.join();
  stop_responder.store(true);
  responder_thread.join();

  Result r;
  r.window = window;
  r.warmup = warmup;
  r.duration = duration;
  r.initiator = initiator.report();
  r.responder = responder.report();
  r.latencies = initiator.latencies();
  std::sort(r.latencies.begin(), r.latencies.end());
  r.one_sided = initiator.one_sided();
  r.unclaimed = ledger.unclaimed();
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
  } else {
    PrintText(r);
  }
  const bool failed = !r.initiator.failures.empty() || !r.responder.failures.empty() ||
                      r.one_sided != 0 || r.initiator.mismatched + r.responder.mismatched != 0;
  return r.initiator.established_in_window > 0 && !failed ? 0 : 1;
}

}  // namespace
}  // namespace strait::bench

int main(int argc, char** argv) { return strait::bench::Main(argc, argv); }
