#ifndef STRAIT_AGENT_IKE_TESTING_SIM_NETWORK_H_
#define STRAIT_AGENT_IKE_TESTING_SIM_NETWORK_H_

// A deterministic simulation of IKE engines on a faulty network.
//
// Engines (agent/ike/engine.h) are joined by an in-memory network that
// drops, duplicates, delays and reorders datagrams, under one virtual clock.
// Every random choice (faults, NAT ports, the engines' SPIs and nonces)
// comes from the run's seed, and everything that happens is ordered by
// (virtual time, sequence number), so a run replays exactly from its seed.
// (DH private values and SK IVs come from OpenSSL, which changes bytes on
// the wire but not what the engines decide.)
//
// The network checks what must hold at every step: no CHILD SA lives past
// its hard lifetime, the dataplane is never asked to install an SA twice or
// to remove one it does not have, and the run makes progress (a bounded
// number of steps). What must hold once a scenario settles is for the test
// to check, from the engines, their events and their sinks.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/engine.h"
#include "agent/ike/message.h"
#include "common/clock.h"

namespace strait::ike::sim {

// SplitMix64 of `seed` and `stream`: independent seeds for the parts of a
// run (the network, each engine, the scenario's own draws).
uint64_t MixSeed(uint64_t seed, uint64_t stream);

// Randomness for an engine's SPIs and nonces, from a seed.
class SeededRandom : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : rng_(seed) {}

  // RandomSource
  void Fill(absl::Span<uint8_t> out) override;

 private:
  std::mt19937_64 rng_;
};

// What one direction of a link does to each datagram: lost with
// probability `drop`, otherwise delivered after `delay` plus up to `jitter`,
// a second copy with probability `duplicate` (on its own delay), and with
// probability `reorder` a copy is held up to `reorder_delay` more, so that
// later datagrams overtake it.
struct LinkFaults {
  double drop = 0;
  double duplicate = 0;
  double reorder = 0;
  absl::Duration reorder_delay = absl::ZeroDuration();
  absl::Duration delay = absl::Milliseconds(10);
  absl::Duration jitter = absl::ZeroDuration();

  // The longest a datagram can take.
  absl::Duration MaxDelay() const { return delay + jitter + reorder_delay; }
};

// The dataplane of one engine: the CHILD SAs it installed and not yet
// removed, with the time each was installed. The agent removes the SAs of
// an IKE SA that failed or was deleted (RetireAll), as the runner does.
class SimSink : public ChildSaSink {
 public:
  struct Installed {
    ChildSa sa;
    absl::Time installed_at;
  };

  explicit SimSink(Clock& clock) : clock_(clock) {}

  // ChildSaSink
  absl::Status InstallChildSa(const ChildSa& sa) override;
  absl::Status RemoveChildSa(const ChildSa& sa) override;
  absl::Status ActivateChildSaOutbound(const ChildSa& sa) override;

  // The IKE SA is gone: every CHILD SA of it goes too.
  void RetireAll();

  const std::vector<Installed>& live() const { return live_; }
  // Every SA installed, in order, with its install time.
  const std::vector<Installed>& history() const { return history_; }
  // Misuse of the dataplane by the engine (an SPI installed twice, a
  // removal of an SA that is not there, an outbound SA activated twice).
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  Clock& clock_;
  std::vector<Installed> live_;
  std::vector<Installed> history_;
  std::vector<std::string> errors_;
};

// An engine's event and when it came out.
struct TimedEvent {
  absl::Time at;
  EngineEvent event;
};

class SimNetwork {
 public:
  struct Options {
    // Every link's faults unless set per link.
    LinkFaults faults;
    // No CHILD SA may stay installed longer (checked at every step).
    absl::Duration hard_lifetime = absl::InfiniteDuration();
    // No IKE SA may stay an engine's current one longer (from when it was
    // established or adopted by a rekey), and none that a rekey replaced
    // may be kept longer after it (checked at every step, when set).
    absl::Duration ike_hard_lifetime = absl::InfiniteDuration();
    absl::Duration old_ike_sa_lifetime = absl::InfiniteDuration();
    // Steps (deliveries, actions, timer rounds) a run may take in all: more
    // means an engine that keeps asking for the same instant (a livelock).
    int64_t max_steps = 2'000'000;
    // Prints every datagram's fate and every event on stderr.
    bool trace = false;
  };

  SimNetwork(uint64_t seed, const Options& options);
  explicit SimNetwork(uint64_t seed) : SimNetwork(seed, Options()) {}
  SimNetwork(const SimNetwork&) = delete;
  SimNetwork& operator=(const SimNetwork&) = delete;

  // --- Topology ---

  // An engine at `config.local`, its own address (a private one behind a
  // NAT). Several engines may share an address, as the IKE SAs of one host
  // do; datagrams reach them as the runner dispatches: a new IKE_SA_INIT
  // request by the peer's address, anything else by our IKE SPI in it (of
  // the current IKE SA or of one a rekey replaced, Engine::local_spis()). The
  // engine listens on the local port and on its NAT-T port, and sends from
  // the NAT-T port once the peer talks to it there or when it sends to
  // that port (as the runner does).
  absl::StatusOr<int> AddEngine(std::string name, EngineConfig config);

  // A NAT with `public_address` in front of `inside` addresses: a datagram
  // leaving one of them gets the public address and a port mapped to its
  // private address and port (one mapping per private endpoint, whatever
  // the destination), and datagrams to a mapped public port go back in.
  void AddNat(Bytes public_address, std::vector<Bytes> inside);
  // The NAT forgets its mappings (a timeout, a reboot): later datagrams get
  // new ports, and datagrams to the old ones are lost.
  void RebindNat(const Bytes& public_address);
  // The public port that a private endpoint is mapped to now, if any.
  std::optional<uint16_t> NatPort(const Bytes& public_address, const Endpoint& inside) const;

  // --- Faults ---

  // The direction from one address to another (private addresses for
  // engines behind a NAT).
  void SetLinkFaults(const Bytes& from, const Bytes& to, const LinkFaults& faults);
  // Every link stops losing, duplicating and reordering; delays stay, with
  // the jitter bounded by the delay.
  void Heal();
  // The faults of the link from one address to another.
  const LinkFaults& FaultsFor(const Bytes& from, const Bytes& to) const;
  // The engine crashes: from now on it sends, receives and ticks no more.
  void Kill(int node);

  // --- Running ---

  // Runs `action` at `at` (in order with the deliveries due then).
  void At(absl::Time at, std::function<void()> action);
  void After(absl::Duration delay, std::function<void()> action) {
    At(now() + delay, std::move(action));
  }
  // Delivers datagrams, runs actions and engine timers in time order up to
  // `until`, then leaves the clock there. False when the step budget ran
  // out (recorded as a violation).
  bool RunUntil(absl::Time until);
  bool RunFor(absl::Duration d) { return RunUntil(now() + d); }
  // Runs until `done()` holds (before any step), at most until `until`.
  bool RunUntilOr(absl::Time until, const std::function<bool()>& done);

  // --- Observing ---

  FakeClock& clock() { return clock_; }
  absl::Time now() { return clock_.Now(); }
  int size() const { return static_cast<int>(nodes_.size()); }
  Engine& engine(int node) { return *nodes_[node]->engine; }
  SimSink& sink(int node) { return nodes_[node]->sink; }
  const std::string& name(int node) const { return nodes_[node]->name; }
  bool alive(int node) const { return nodes_[node]->alive; }
  const std::vector<TimedEvent>& events(int node) const { return nodes_[node]->events; }
  // The first event of `kind` from `node`, if any.
  const TimedEvent* FindEvent(int node, EngineEvent::Kind kind) const;
  // Datagrams on the wire now.
  int in_flight() const { return in_flight_; }
  // The network's counts.
  struct Stats {
    uint64_t sent = 0;
    uint64_t dropped = 0;
    uint64_t duplicated = 0;
    uint64_t reordered = 0;
    uint64_t delivered = 0;
    uint64_t unroutable = 0;  // No engine there, or no NAT mapping.
  };
  const Stats& stats() const { return stats_; }
  // The oldest any CHILD SA got while installed, over every engine.
  absl::Duration max_sa_age() const { return max_sa_age_; }
  // With the IKE SA checks on: the oldest any current IKE SA got, and the
  // longest a replaced one was kept.
  absl::Duration max_ike_sa_age() const { return max_ike_sa_age_; }
  absl::Duration max_old_ike_sa_age() const { return max_old_ike_sa_age_; }
  // Broken step invariants, with the time and the engine: empty when all
  // is well.
  std::vector<std::string> violations() const;

 private:
  struct Node {
    Node(std::string n, uint64_t seed, Clock& clock)
        : name(std::move(n)), random(seed), sink(clock) {}
    std::string name;
    Endpoint local;
    Bytes remote_address;  // The configured peer.
    uint16_t nat_t_port = 0;
    uint64_t local_spi = 0;  // Our IKE SPI, once we sent a message with it.
    SeededRandom random;
    SimSink sink;
    EnginePtr engine;
    bool alive = true;
    bool floated = false;  // The peer talks to our NAT-T port: we answer from it.
    std::vector<TimedEvent> events;
    std::set<uint32_t> expired;  // Inbound SPIs reported past their hard lifetime.
    // The current IKE SA (our SPI) and since when; replaced ones still kept,
    // since when they were seen replaced; IKE SPIs reported.
    uint64_t current_ike_spi = 0;
    absl::Time current_ike_since;
    std::map<uint64_t, absl::Time> old_ike_since;
    std::set<uint64_t> ike_reported;
  };
  struct Nat {
    Bytes public_address;
    std::vector<Bytes> inside;
    std::map<std::pair<Bytes, uint16_t>, uint16_t> out;  // Private endpoint to public port.
    std::map<uint16_t, Endpoint> in;
    uint16_t next_port = 0;
  };
  struct Event {
    absl::Time at;
    uint64_t seq = 0;
    std::function<void()> action;  // Set: an action; empty: a delivery.
    Bytes data;
    Endpoint from;  // As the receiver sees it (after any NAT on the sender's side).
    Endpoint to;    // As sent (a NAT's public address is translated on arrival).
  };
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };

  std::optional<absl::Time> NextTime() const;
  // One step at the current time: the first event due, else the timers due.
  void Step();
  void Deliver(Event& e);
  // Whether the runner would hand this datagram to `node`.
  static bool Dispatches(const Node& node, const Bytes& data, const Endpoint& from);
  // Drains every engine's outbox onto the network and its events.
  void Flush();
  void Route(Node& from, OutboundDatagram d);
  Nat* NatInFrontOf(const Bytes& address);
  Nat* NatAt(const Bytes& public_address);
  void CheckStep();
  void CheckIkeSas(Node& node);
  void Violation(const Node* node, const std::string& what);
  void Trace(const std::string& line);
  double Uniform01() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  absl::Duration UpTo(absl::Duration max);

  const uint64_t seed_;
  Options options_;
  FakeClock clock_;
  const absl::Time start_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<Nat> nats_;
  std::map<std::pair<Bytes, Bytes>, LinkFaults> link_faults_;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  uint64_t next_seq_ = 0;
  int in_flight_ = 0;
  int64_t steps_ = 0;
  Stats stats_;
  absl::Duration max_sa_age_;
  absl::Duration max_ike_sa_age_;
  absl::Duration max_old_ike_sa_age_;
  std::vector<std::string> violations_;
};

}  // namespace strait::ike::sim

#endif  // STRAIT_AGENT_IKE_TESTING_SIM_NETWORK_H_
