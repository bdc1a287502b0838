// Deterministic simulation of IKE engines on a faulty network (DESIGN.md,
// "Agent and IKEv2"): every scenario runs over many seeds, each with its
// own random faults, timings and choices, and checks invariants at every
// step (sim_network.h) and once the run settles.
//
// A failing seed replays alone, with a trace of every datagram and event:
//   bazel test //agent/ike:simulation_test --test_env=STRAIT_SIM_SEED=<seed>
//     --test_filter=SimulationTest.<Scenario> --test_output=all
// STRAIT_SIM_SEEDS=<n> changes how many seeds each scenario runs.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_proposal.h"
#include "agent/ike/testing/sim_network.h"
#include "common/logging.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

using Kind = EngineEvent::Kind;
using State = Engine::State;
using sim::LinkFaults;
using sim::MixSeed;
using sim::SimNetwork;
using sim::SimSink;

// --- Seeds ---

std::optional<uint64_t> OnlySeed() {
  const char* s = std::getenv("STRAIT_SIM_SEED");
  if (s == nullptr || *s == '\0') return std::nullopt;
  return std::strtoull(s, nullptr, 10);
}

int SeedCount() {
  const char* s = std::getenv("STRAIT_SIM_SEEDS");
  if (s == nullptr || *s == '\0') return 1000;
  return std::max(1, std::atoi(s));
}

// What the network did to datagrams, over every seed of a scenario.
SimNetwork::Stats g_stats;

class SimulationTest : public ::testing::Test {
 protected:
  void SetUp() override { g_stats = {}; }

  static void SetUpTestSuite() {
    SetLogLevel(OnlySeed().has_value() ? LogLevel::kDebug : LogLevel::kError);
  }

  // Runs `scenario` for every seed, each failure traced with its seed; gives
  // up after a few failing seeds rather than printing a thousand.
  void ForEachSeed(const std::function<void(uint64_t)>& scenario) {
    std::vector<uint64_t> seeds;
    if (std::optional<uint64_t> only = OnlySeed(); only.has_value()) {
      seeds.push_back(*only);
    } else {
      for (int s = 1; s <= SeedCount(); ++s) seeds.push_back(static_cast<uint64_t>(s));
    }
    const ::testing::TestResult& result =
        *::testing::UnitTest::GetInstance()->current_test_info()->result();
    std::vector<uint64_t> failed;
    for (uint64_t seed : seeds) {
      SCOPED_TRACE(absl::StrCat("seed ", seed, " (replay with --test_env=STRAIT_SIM_SEED=", seed,
                                " --test_output=all)"));
      const int parts = result.total_part_count();
      scenario(seed);
      if (result.total_part_count() != parts) failed.push_back(seed);
      if (failed.size() >= 3) {
        ADD_FAILURE() << "stopped after failing seeds " << absl::StrJoin(failed, ", ");
        return;
      }
    }
    seeds_run_ = static_cast<int>(seeds.size());
  }

  int seeds_run_ = 0;
};

// --- The world: hosts, addresses, tunnels ---

// One end's settings.
struct Side {
  std::string ike = "aes128gcm16-prfsha256-x25519";
  std::string esp = "aes128gcm16";
  absl::Duration dpd_interval = absl::ZeroDuration();
  absl::Duration dpd_timeout = absl::Seconds(150);
  absl::Duration rekey_after = absl::ZeroDuration();
  absl::Duration rekey_fuzz = absl::ZeroDuration();
  absl::Duration ike_rekey_after = absl::ZeroDuration();
  absl::Duration ike_rekey_fuzz = absl::ZeroDuration();
};

// A tunnel between two engines: `i` initiates, `r` responds.
struct Tunnel {
  int i = -1;
  int r = -1;
};

class World {
 public:
  World(uint64_t seed, const SimNetwork::Options& options)
      : net(seed, WithTrace(options)), rng(MixSeed(seed, 1)), ipv6_(rng() % 2 == 1) {}
  ~World() {
    const SimNetwork::Stats& s = net.stats();
    g_stats.sent += s.sent;
    g_stats.dropped += s.dropped;
    g_stats.duplicated += s.duplicated;
    g_stats.reordered += s.reordered;
  }

  // Host `n`'s public address: 192.0.2.n or 2001:db8::n.
  Bytes Address(uint8_t n) const {
    if (!ipv6_) return {192, 0, 2, n};
    Bytes a(16, 0);
    a[0] = 0x20, a[1] = 0x01, a[2] = 0x0d, a[3] = 0xb8, a[15] = n;
    return a;
  }
  // Host `n`'s address behind a NAT: 10.99.0.n or fd99::n.
  Bytes PrivateAddress(uint8_t n) const {
    if (!ipv6_) return {10, 99, 0, n};
    Bytes a(16, 0);
    a[0] = 0xfd, a[1] = 0x99, a[15] = n;
    return a;
  }
  // A NAT's public address: 198.51.100.n or 2001:db8:ffff::n.
  Bytes NatAddress(uint8_t n) const {
    if (!ipv6_) return {198, 51, 100, n};
    Bytes a(16, 0);
    a[0] = 0x20, a[1] = 0x01, a[2] = 0x0d, a[3] = 0xb8, a[4] = 0xff, a[5] = 0xff, a[15] = n;
    return a;
  }
  // The network behind host `n`: 10.n.0.0/16 or fd00:0:n::/48.
  TrafficSelectorRange Subnet(uint8_t n) const {
    TrafficSelectorRange r;
    if (!ipv6_) {
      r.start_address = {10, n, 0, 0};
      r.end_address = {10, n, 255, 255};
    } else {
      r.start_address = Bytes(16, 0);
      r.start_address[0] = 0xfd, r.start_address[5] = n;
      r.end_address = Bytes(16, 0xff);
      r.end_address[0] = 0xfd, r.end_address[1] = 0, r.end_address[2] = 0, r.end_address[3] = 0;
      r.end_address[4] = 0, r.end_address[5] = n;
    }
    return r;
  }

  // A tunnel from host `a` (the initiator) to host `b`. `a_address`: where
  // `a` really is (its private address behind a NAT), `a_seen_at`: the
  // address `b` knows it by (the NAT's).
  Tunnel AddTunnel(uint8_t a, uint8_t b, const Side& i, const Side& r,
                   const std::optional<Bytes>& a_address = std::nullopt,
                   const std::optional<Bytes>& a_seen_at = std::nullopt) {
    const Endpoint ep_a{a_address.value_or(Address(a)), 500};
    const Endpoint ep_a_seen{a_seen_at.value_or(Address(a)), 500};
    const Endpoint ep_b{Address(b), 500};
    Tunnel t;
    t.i = Add(absl::StrCat("host", a, "(i)"), Config(i, ep_a, ep_b, a, b));
    t.r = Add(absl::StrCat("host", b, "(r of ", a, ")"), Config(r, ep_b, ep_a_seen, b, a));
    return t;
  }

  // Random faults for a link; `max_drop` bounds the loss.
  LinkFaults RandomFaults(double max_drop) {
    LinkFaults f;
    f.drop = Uniform(0, max_drop);
    f.duplicate = Uniform(0, 0.1);
    f.reorder = Uniform(0, 0.2);
    f.reorder_delay = absl::Milliseconds(Uniform(0, 1500));
    f.delay = absl::Milliseconds(Uniform(1, 100));
    f.jitter = absl::Milliseconds(Uniform(0, 50));
    return f;
  }
  // Both directions between two addresses, each with its own faults.
  void RandomizeLink(const Bytes& x, const Bytes& y, double max_drop) {
    net.SetLinkFaults(x, y, RandomFaults(max_drop));
    net.SetLinkFaults(y, x, RandomFaults(max_drop));
  }
  // Both directions with random delays and jitter, without loss,
  // duplicates or reordering.
  void CleanLink(const Bytes& x, const Bytes& y) {
    LinkFaults f = RandomFaults(0);
    f.duplicate = f.reorder = 0;
    net.SetLinkFaults(x, y, f);
    net.SetLinkFaults(y, x, f);
  }

  double Uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  }
  absl::Duration UniformDuration(absl::Duration lo, absl::Duration hi) {
    return lo + absl::Milliseconds(Uniform(0, absl::ToDoubleMilliseconds(hi - lo)));
  }
  bool Chance(double p) { return Uniform(0, 1) < p; }

  SimNetwork net;
  std::mt19937_64 rng;

 private:
  static SimNetwork::Options WithTrace(SimNetwork::Options o) {
    o.trace = OnlySeed().has_value();
    return o;
  }

  EngineConfig Config(const Side& side, const Endpoint& local, const Endpoint& remote,
                      uint8_t local_host, uint8_t remote_host) const {
    EngineConfig c;
    c.local = local;
    c.remote = remote;
    auto id = [](uint8_t n) {
      const std::string name = absl::StrCat("host", n, ".example");
      return Identity{IdentityType::kFqdn, Bytes(name.begin(), name.end())};
    };
    c.local_id = id(local_host);
    c.remote_id = id(remote_host);
    c.psk = Secret("simulated pre-shared key");
    auto ike = ParseAlgorithmProposals(side.ike, intent::ProposalKind::kIke);
    auto esp = ParseAlgorithmProposals(side.esp, intent::ProposalKind::kEsp);
    EXPECT_TRUE(ike.ok() && esp.ok());
    if (ike.ok()) c.ike_proposals = *ike;
    if (esp.ok()) c.esp_proposals = *esp;
    c.local_ts = {Subnet(local_host)};
    c.remote_ts = {Subnet(remote_host)};
    c.dpd_interval = side.dpd_interval;
    c.dpd_timeout = side.dpd_timeout;
    c.child_rekey_after = side.rekey_after;
    c.rekey_fuzz = side.rekey_fuzz;
    c.ike_rekey_after = side.ike_rekey_after;
    c.ike_rekey_fuzz = side.ike_rekey_fuzz;
    return c;
  }

  int Add(std::string name, EngineConfig config) {
    absl::StatusOr<int> node = net.AddEngine(std::move(name), std::move(config));
    EXPECT_TRUE(node.ok()) << node.status();
    return node.value_or(0);
  }

  bool ipv6_;
};

// --- Invariants ---

std::string Describe(const std::vector<SimSink::Installed>& sas) {
  std::vector<std::string> parts;
  parts.reserve(sas.size());
  for (const auto& i : sas) {
    parts.push_back(absl::StrFormat("%08x/%08x", i.sa.inbound_spi, i.sa.outbound_spi));
  }
  return absl::StrCat("[", absl::StrJoin(parts, " "), "]");
}

void ExpectNoViolations(const SimNetwork& net) {
  const std::vector<std::string> v = net.violations();
  EXPECT_TRUE(v.empty()) << absl::StrJoin(v, "\n");
}

// Exactly one CHILD SA at each end, each the other's half: SPIs and keys
// mirrored, the same algorithms and encapsulation, selectors swapped.
void ExpectMirrored(SimNetwork& net, const Tunnel& t) {
  const auto& i = net.sink(t.i).live();
  const auto& r = net.sink(t.r).live();
  ASSERT_EQ(i.size(), 1u) << net.name(t.i) << " has " << Describe(i);
  ASSERT_EQ(r.size(), 1u) << net.name(t.r) << " has " << Describe(r);
  const ChildSa& a = i[0].sa;
  const ChildSa& b = r[0].sa;
  EXPECT_EQ(a.outbound_spi, b.inbound_spi);
  EXPECT_EQ(a.inbound_spi, b.outbound_spi);
  EXPECT_FALSE(a.outbound_encr_key.empty());
  EXPECT_EQ(a.outbound_encr_key.view(), b.inbound_encr_key.view());
  EXPECT_EQ(a.inbound_encr_key.view(), b.outbound_encr_key.view());
  EXPECT_EQ(a.outbound_integ_key.view(), b.inbound_integ_key.view());
  EXPECT_EQ(a.inbound_integ_key.view(), b.outbound_integ_key.view());
  EXPECT_NE(a.outbound_encr_key.view(), a.inbound_encr_key.view());
  EXPECT_EQ(a.algorithms, b.algorithms);
  EXPECT_EQ(a.local_ts, b.remote_ts);
  EXPECT_EQ(a.remote_ts, b.local_ts);
  EXPECT_EQ(a.udp_encapsulation, b.udp_encapsulation);
}

// Both ends up, on the same IKE SA, with one mirrored CHILD SA.
void ExpectUp(SimNetwork& net, const Tunnel& t) {
  ASSERT_EQ(net.engine(t.i).state(), State::kEstablished) << net.name(t.i);
  ASSERT_EQ(net.engine(t.r).state(), State::kEstablished) << net.name(t.r);
  const sim::TimedEvent* ike_i = net.FindEvent(t.i, Kind::kIkeSaEstablished);
  const sim::TimedEvent* ike_r = net.FindEvent(t.r, Kind::kIkeSaEstablished);
  ASSERT_NE(ike_i, nullptr);
  ASSERT_NE(ike_r, nullptr);
  EXPECT_EQ(ike_i->event.ike_spi_i, ike_r->event.ike_spi_i);
  EXPECT_EQ(ike_i->event.ike_spi_r, ike_r->event.ike_spi_r);
  EXPECT_EQ(net.FindEvent(t.i, Kind::kFailed), nullptr);
  EXPECT_EQ(net.FindEvent(t.r, Kind::kFailed), nullptr);
  ExpectMirrored(net, t);
}

// The engine holds no IKE SA and no CHILD SA any more.
void ExpectDown(SimNetwork& net, int node) {
  const State s = net.engine(node).state();
  EXPECT_TRUE(s == State::kFailed || s == State::kDeleted || s == State::kIdle)
      << net.name(node) << " is in state " << static_cast<int>(s);
  EXPECT_TRUE(net.sink(node).live().empty())
      << net.name(node) << " keeps " << Describe(net.sink(node).live());
}

// Heals the network and lets every exchange in flight finish within
// `settle`; then on a perfect network nothing may be sent again for lack of
// an answer: an engine still retransmitting waits for a response that will
// never come. Stops when no datagram is on the wire, so that no exchange
// (a rekey before its DELETE, say) is halfway.
void Settle(SimNetwork& net, absl::Duration settle) {
  net.Heal();
  ASSERT_TRUE(net.RunFor(settle));
  std::vector<uint64_t> retransmits;
  retransmits.reserve(net.size());
  for (int n = 0; n < net.size(); ++n) {
    retransmits.push_back(net.engine(n).counters().retransmits_sent);
  }
  // Longer than the longest wait between retransmissions (16 s).
  ASSERT_TRUE(net.RunFor(absl::Seconds(20)));
  ASSERT_TRUE(net.RunUntilOr(net.now() + absl::Seconds(60), [&] { return net.in_flight() == 0; }));
  ASSERT_EQ(net.in_flight(), 0);
  for (int n = 0; n < net.size(); ++n) {
    if (!net.alive(n)) continue;
    EXPECT_EQ(net.engine(n).counters().retransmits_sent, retransmits[n])
        << net.name(n) << " still retransmits on a perfect network";
  }
}

bool BothEstablished(SimNetwork& net, const Tunnel& t) {
  return net.engine(t.i).state() == State::kEstablished &&
         net.engine(t.r).state() == State::kEstablished;
}

// Brings the tunnel up over a lossless link (delays, jitter) when a
// scenario is about what comes after.
void Establish(World& w, const Tunnel& t, const Bytes& a, const Bytes& b) {
  w.CleanLink(a, b);
  ASSERT_TRUE(w.net.engine(t.i).Initiate().ok());
  ASSERT_TRUE(
      w.net.RunUntilOr(w.net.now() + absl::Seconds(30), [&] { return BothEstablished(w.net, t); }));
  ASSERT_TRUE(BothEstablished(w.net, t));
}

uint64_t Counter(SimNetwork& net, const Tunnel& t, uint64_t EngineCounters::*field) {
  return net.engine(t.i).counters().*field + net.engine(t.r).counters().*field;
}

// Our failed CREATE_CHILD_SAs, by what the peer said.
void CountRekeyFailures(const SimNetwork& net, const Tunnel& t, std::map<std::string, int>& out) {
  for (int n : {t.i, t.r}) {
    for (const sim::TimedEvent& e : net.events(n)) {
      if (e.event.kind == Kind::kChildSaRekeyFailed) ++out[e.event.detail];
    }
  }
}

std::string Tally(const std::map<std::string, int>& counts) {
  if (counts.empty()) return "none";
  return absl::StrJoin(counts, ", ", [](std::string* out, const auto& kv) {
    absl::StrAppend(out, kv.second, " \"", kv.first, "\"");
  });
}

void Report(const std::string& scenario, int seeds, const std::string& what) {
  std::cout << "[simulation] " << scenario << ": " << seeds << " seeds; " << what << "; "
            << g_stats.sent << " datagrams sent, " << g_stats.dropped << " dropped, "
            << g_stats.duplicated << " duplicated, " << g_stats.reordered << " held back"
            << std::endl;
  g_stats = {};
}

// --- (a) Establishment under loss, duplication, reordering and delay ---

TEST_F(SimulationTest, EstablishesOrFailsCleanly) {
  int established = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    i.dpd_interval = r.dpd_interval = absl::Seconds(30);
    i.dpd_timeout = r.dpd_timeout = absl::Seconds(60);
    // A quarter of the runs start with a group the responder refuses:
    // INVALID_KE_PAYLOAD, then x25519.
    if (w.Chance(0.25)) i.ike = "aes128gcm16-prfsha256-ecp256-x25519";
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    w.RandomizeLink(w.Address(1), w.Address(2), 0.3);
    w.net.After(w.UniformDuration(absl::ZeroDuration(), absl::Seconds(1)),
                [&] { EXPECT_TRUE(w.net.engine(t.i).Initiate().ok()); });
    // Both ends give up on a negotiation within about a minute.
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(70)));
    // Long enough for DPD (30 s + 60 s) to end a half that the other lost.
    Settle(w.net, absl::Seconds(110));
    ExpectNoViolations(w.net);
    if (BothEstablished(w.net, t)) {
      ++established;
      ExpectUp(w.net, t);
      EXPECT_EQ(w.net.sink(t.i).history().size(), 1u);
      return;
    }
    // Neither end holds anything, and only for want of answers.
    ExpectDown(w.net, t.i);
    ExpectDown(w.net, t.r);
    for (int n : {t.i, t.r}) {
      for (const sim::TimedEvent& e : w.net.events(n)) {
        if (e.event.kind != Kind::kFailed) continue;
        EXPECT_TRUE(e.event.reason == FailureReason::kPeerNotResponding ||
                    e.event.reason == FailureReason::kPeerDead)
            << w.net.name(n) << ": " << FailureReasonName(e.event.reason) << " " << e.event.detail;
      }
    }
  });
  Report("establish", seeds_run_, absl::StrCat(established, " established"));
  if (seeds_run_ >= 100) {
    EXPECT_GT(established, seeds_run_ * 9 / 10);
  }
}

// --- (b) Scheduled CHILD SA rekeys over ten rekey periods ---

TEST_F(SimulationTest, ScheduledRekeysKeepOneMirroredSa) {
  // An SA installed at t is replaced from t + rekey_after (the fuzz only
  // brings that forward); the rekey may wait for a request in flight, then
  // runs its own exchange and the DELETE of the old SA, each of which ends
  // within the DPD timeout or fails the IKE SA (and the agent removes the
  // SAs). Past that bound an SA has outlived its rekey.
  const absl::Duration kRekey = absl::Seconds(60);
  const absl::Duration kDpdTimeout = absl::Seconds(90);
  SimNetwork::Options options;
  options.hard_lifetime = kRekey + 3 * kDpdTimeout;
  absl::Duration max_age;
  uint64_t rekeys = 0, collisions = 0;
  std::map<std::string, int> failures;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, options);
    Side i, r;
    i.dpd_timeout = r.dpd_timeout = kDpdTimeout;
    // Who rekeys: the initiator, the responder or both (and then they
    // sometimes collide).
    const int who = static_cast<int>(w.rng() % 3);
    for (Side* s : {&i, &r}) {
      if ((s == &i && who == 1) || (s == &r && who == 0)) continue;
      s->rekey_after = kRekey;
      s->rekey_fuzz = absl::Seconds(10);
    }
    if (w.Chance(0.5)) i.esp = r.esp = "aes128gcm16-x25519";  // PFS: a KE in every rekey.
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    Establish(w, t, w.Address(1), w.Address(2));
    w.RandomizeLink(w.Address(1), w.Address(2), 0.1);
    ASSERT_TRUE(w.net.RunFor(10 * kRekey));
    Settle(w.net, absl::Seconds(30));
    ExpectNoViolations(w.net);
    ExpectUp(w.net, t);
    // Ten periods of at most a minute each: ten rekeys at least.
    EXPECT_GE(w.net.sink(t.i).history().size(), 11u);
    EXPECT_GE(w.net.sink(t.r).history().size(), 11u);
    max_age = std::max(max_age, w.net.max_sa_age());
    rekeys += Counter(w.net, t, &EngineCounters::child_rekeys_initiated);
    collisions += Counter(w.net, t, &EngineCounters::rekey_collisions);
    CountRekeyFailures(w.net, t, failures);
  });
  Report("scheduled rekeys", seeds_run_,
         absl::StrCat(rekeys, " rekeys, ", collisions, " collisions; oldest SA ",
                      absl::FormatDuration(max_age), "; failed rekeys: ", Tally(failures)));
}

// --- (c) Both ends rekey the same CHILD SA at once ---

TEST_F(SimulationTest, RekeyCollisionsSettleOnOneSa) {
  const absl::Duration kRekey = absl::Seconds(60);
  int seeds_with_collisions = 0;
  std::map<std::string, int> failures;
  uint64_t collisions = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    if (w.Chance(0.5)) i.esp = r.esp = "aes128gcm16-x25519";
    // Half the runs: one end also rekeys on schedule, and must go on doing
    // so whatever the collisions did to its schedule.
    std::optional<bool> scheduled;
    if (w.Chance(0.5)) {
      scheduled = w.Chance(0.5);
      Side& s = *scheduled ? i : r;
      s.rekey_after = kRekey;
      s.rekey_fuzz = absl::Seconds(10);
    }
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    Establish(w, t, w.Address(1), w.Address(2));
    w.RandomizeLink(w.Address(1), w.Address(2), 0.15);
    // Two rounds: both call RekeyChild() within a round trip or so.
    for (int round = 0; round < 2; ++round) {
      const absl::Duration at = absl::Seconds(5 + 30 * round);
      const absl::Duration gap =
          w.Chance(0.25) ? absl::ZeroDuration()
                         : w.UniformDuration(absl::ZeroDuration(), absl::Milliseconds(300));
      const bool initiator_first = w.Chance(0.5);
      w.net.After(at, [&w, &t, initiator_first] {
        EXPECT_TRUE(w.net.engine(initiator_first ? t.i : t.r).RekeyChild().ok());
      });
      w.net.After(at + gap, [&w, &t, initiator_first] {
        EXPECT_TRUE(w.net.engine(initiator_first ? t.r : t.i).RekeyChild().ok());
      });
    }
    // The rounds, and the retries of rekeys that failed (30 s to 55 s on).
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(90)));
    if (scheduled.has_value()) {
      // Then the scheduled end goes on: two more rekeys at least.
      const absl::Time from = w.net.now();
      ASSERT_TRUE(w.net.RunFor(2 * kRekey + absl::Seconds(10)));
      const SimSink& sink = w.net.sink(*scheduled ? t.i : t.r);
      int later = 0;
      for (const auto& h : sink.history()) later += h.installed_at > from ? 1 : 0;
      EXPECT_GE(later, 2) << "the scheduled end stopped rekeying";
    }
    Settle(w.net, absl::Seconds(30));
    ExpectNoViolations(w.net);
    ExpectUp(w.net, t);
    CountRekeyFailures(w.net, t, failures);
    const uint64_t c = Counter(w.net, t, &EngineCounters::rekey_collisions);
    collisions += c;
    seeds_with_collisions += c > 0 ? 1 : 0;
  });
  Report("rekey collisions", seeds_run_,
         absl::StrCat(seeds_with_collisions, " seeds with collisions, ", collisions,
                      " in all; failed rekeys: ", Tally(failures)));
  if (seeds_run_ >= 100) {
    EXPECT_GT(seeds_with_collisions, seeds_run_ / 3);
  }
}

// --- (c2) IKE SA rekeys, with CHILD SA rekeys and crossings ---

// Our failed IKE SA rekeys, by what the peer said.
void CountIkeRekeyFailures(const SimNetwork& net, const Tunnel& t,
                           std::map<std::string, int>& out) {
  for (int n : {t.i, t.r}) {
    for (const sim::TimedEvent& e : net.events(n)) {
      if (e.event.kind == Kind::kIkeSaRekeyFailed) ++out[e.event.detail];
    }
  }
}

// The CHILD SAs an end installed: the first one, and one for each CHILD SA
// rekey it made or answered (two for a collision, one of them deleted).
// An IKE SA rekey moves the CHILD SAs as they are and installs nothing.
void ExpectChildSasOnlyFromChildRekeys(SimNetwork& net, int node) {
  const EngineCounters& c = net.engine(node).counters();
  EXPECT_EQ(net.sink(node).history().size(), 1 + c.child_rekeys_initiated + c.child_rekeys_answered)
      << net.name(node) << " installed a CHILD SA that no CHILD SA rekey made";
}

// Both ends on the same current IKE SA, the one their last rekey event
// named, and nothing else: every replaced SA deleted.
void ExpectOneIkeSa(SimNetwork& net, const Tunnel& t) {
  EXPECT_EQ(net.engine(t.i).ike_spis(), net.engine(t.r).ike_spis());
  for (int n : {t.i, t.r}) {
    EXPECT_EQ(net.engine(n).old_ike_sa_count(), 0u) << net.name(n) << " keeps a replaced IKE SA";
    // Besides, deleted ones that still answer a retransmitted DELETE.
    const std::vector<uint64_t> spis = net.engine(n).local_spis();
    ASSERT_FALSE(spis.empty());
    const auto [spi_i, spi_r] = net.engine(n).ike_spis();
    EXPECT_TRUE(spis[0] == spi_i || spis[0] == spi_r) << net.name(n);
    const EngineEvent* last = nullptr;
    for (const sim::TimedEvent& e : net.events(n)) {
      if (e.event.kind == Kind::kIkeSaRekeyed) last = &e.event;
    }
    if (last != nullptr) {
      EXPECT_EQ(net.engine(n).ike_spis(), std::make_pair(last->ike_spi_i, last->ike_spi_r))
          << net.name(n) << " is not on the IKE SA of its last rekey";
    }
  }
}

TEST_F(SimulationTest, IkeRekeysKeepOneIkeSa) {
  // Short IKE SA lifetimes on both ends, so that scheduled rekeys cross
  // now and then, CHILD SA rekeys on one end, both or neither, and rounds
  // in which both ends rekey the IKE SA at once, or one the IKE SA and the
  // other a CHILD SA; all over a lossy, duplicating, reordering link.
  const absl::Duration kIkeRekey = absl::Seconds(30);
  const absl::Duration kChildRekey = absl::Seconds(45);
  const absl::Duration kDpdTimeout = absl::Seconds(60);
  const absl::Duration kRun = absl::Seconds(120);
  SimNetwork::Options options;
  // A rekey may wait for a request in flight, then runs its exchange and
  // the DELETE of the old SA, each ending within the DPD timeout.
  options.hard_lifetime = kChildRekey + 3 * kDpdTimeout;
  options.ike_hard_lifetime = kIkeRekey + 3 * kDpdTimeout;
  // A replaced IKE SA goes with its DELETE exchange, or when the peer's
  // DELETE does not come within the DPD timeout; one the peer deleted
  // answers retransmissions of its DELETE for the retransmission window
  // (31 s) more.
  options.old_ike_sa_lifetime = kDpdTimeout + absl::Seconds(32);
  uint64_t ike_rekeys = 0, child_rekeys = 0, collisions = 0, expired = 0;
  int unchanged_children = 0;
  absl::Duration max_ike_age, max_old_age;
  std::map<std::string, int> ike_failures, child_failures;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, options);
    Side i, r;
    i.dpd_timeout = r.dpd_timeout = kDpdTimeout;
    for (Side* s : {&i, &r}) {
      s->ike_rekey_after = kIkeRekey;
      s->ike_rekey_fuzz = absl::Seconds(w.Chance(0.3) ? 0 : 10);
    }
    // CHILD SA rekeys: 0 none, 1 initiator, 2 responder, 3 both.
    const int child_rekeyers = static_cast<int>(w.rng() % 4);
    if (child_rekeyers & 1) i.rekey_after = kChildRekey, i.rekey_fuzz = absl::Seconds(10);
    if (child_rekeyers & 2) r.rekey_after = kChildRekey, r.rekey_fuzz = absl::Seconds(10);
    if (w.Chance(0.3)) i.ike = r.ike = "aes256-sha256-x25519";  // CBC and HMAC.
    if (w.Chance(0.3)) i.esp = r.esp = "aes128gcm16-x25519";    // PFS in CHILD SA rekeys.
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    Establish(w, t, w.Address(1), w.Address(2));
    const uint32_t first_child = w.net.sink(t.i).live()[0].sa.inbound_spi;
    w.RandomizeLink(w.Address(1), w.Address(2), 0.1);
    // Two rounds of rekeys at once: both ends the IKE SA, or one the IKE SA
    // and the other the CHILD SA, within a round trip or so.
    bool manual_child = false;
    for (int round = 0; round < 2; ++round) {
      const absl::Duration at =
          w.UniformDuration(absl::Seconds(5 + 50 * round), absl::Seconds(45 + 50 * round));
      const absl::Duration gap =
          w.Chance(0.25) ? absl::ZeroDuration()
                         : w.UniformDuration(absl::ZeroDuration(), absl::Milliseconds(300));
      const bool initiator_first = w.Chance(0.5);
      const int first = initiator_first ? t.i : t.r;
      const int second = initiator_first ? t.r : t.i;
      const int kind = static_cast<int>(w.rng() % 3);  // 0: IKE/IKE; 1: IKE/CHILD; 2: CHILD/IKE.
      manual_child |= kind != 0;
      w.net.After(at, [&w, first, kind] {
        // Refused only when the IKE SA is gone, which it must not be.
        EXPECT_TRUE(
            (kind == 2 ? w.net.engine(first).RekeyChild() : w.net.engine(first).RekeyIke()).ok());
      });
      w.net.After(at + gap, [&w, second, kind] {
        EXPECT_TRUE(
            (kind == 1 ? w.net.engine(second).RekeyChild() : w.net.engine(second).RekeyIke()).ok());
      });
    }
    ASSERT_TRUE(w.net.RunFor(kRun));
    Settle(w.net, absl::Seconds(30));
    // Then at some moment before every replaced SA left could have timed
    // out (the rekeys go on meanwhile), each end holds just one IKE SA.
    auto one_each = [&] {
      return w.net.in_flight() == 0 && w.net.engine(t.i).old_ike_sa_count() == 0 &&
             w.net.engine(t.r).old_ike_sa_count() == 0;
    };
    ASSERT_TRUE(w.net.RunUntilOr(w.net.now() + options.old_ike_sa_lifetime, one_each));
    ExpectNoViolations(w.net);
    ExpectUp(w.net, t);
    ExpectOneIkeSa(w.net, t);
    ExpectChildSasOnlyFromChildRekeys(w.net, t.i);
    ExpectChildSasOnlyFromChildRekeys(w.net, t.r);
    if (child_rekeyers == 0 && !manual_child) {
      // No CHILD SA rekey at all: the first CHILD SA is still the one.
      ++unchanged_children;
      EXPECT_EQ(w.net.sink(t.i).live()[0].sa.inbound_spi, first_child);
      EXPECT_EQ(w.net.sink(t.i).history().size(), 1u);
      EXPECT_EQ(w.net.sink(t.r).history().size(), 1u);
    }
    // Every half minute at most, on one end or the other.
    const uint64_t n = Counter(w.net, t, &EngineCounters::ike_rekeys_initiated);
    EXPECT_GE(n, 4u) << "the IKE SA was rarely rekeyed";
    ike_rekeys += n;
    child_rekeys += Counter(w.net, t, &EngineCounters::child_rekeys_initiated);
    collisions += Counter(w.net, t, &EngineCounters::rekey_collisions);
    expired += Counter(w.net, t, &EngineCounters::old_ike_sas_expired);
    max_ike_age = std::max(max_ike_age, w.net.max_ike_sa_age());
    max_old_age = std::max(max_old_age, w.net.max_old_ike_sa_age());
    CountIkeRekeyFailures(w.net, t, ike_failures);
    CountRekeyFailures(w.net, t, child_failures);
  });
  Report("IKE rekeys", seeds_run_,
         absl::StrCat(
             ike_rekeys, " IKE SA rekeys, ", child_rekeys, " CHILD SA rekeys, ", collisions,
             " collisions, ", unchanged_children, " runs without CHILD SA rekeys; oldest IKE SA ",
             absl::FormatDuration(max_ike_age), ", replaced IKE SA kept up to ",
             absl::FormatDuration(max_old_age), ", ", expired,
             " dropped without a DELETE exchange; failed IKE SA rekeys: ", Tally(ike_failures),
             "; failed CHILD SA rekeys: ", Tally(child_failures)));
}

// --- (d) Dead peer detection ---

TEST_F(SimulationTest, DpdKeepsALivePeer) {
  uint64_t probes = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    // Probing from one end or both, at different rates; with at most 10%
    // loss a probe goes unanswered for 150 s with odds of 1e-9.
    const int who = static_cast<int>(w.rng() % 3);
    if (who != 1) i.dpd_interval = w.UniformDuration(absl::Seconds(5), absl::Seconds(30));
    if (who != 0) r.dpd_interval = w.UniformDuration(absl::Seconds(5), absl::Seconds(30));
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    Establish(w, t, w.Address(1), w.Address(2));
    w.RandomizeLink(w.Address(1), w.Address(2), 0.1);
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(200)));
    Settle(w.net, absl::Seconds(30));
    ExpectNoViolations(w.net);
    ExpectUp(w.net, t);
    const uint64_t p = Counter(w.net, t, &EngineCounters::dpd_probes_sent);
    EXPECT_GE(p, 200u / 30);
    probes += p;
  });
  Report("DPD, live peer", seeds_run_, absl::StrCat(probes, " probes, no false positive"));
}

TEST_F(SimulationTest, DpdDeclaresAKilledPeerDeadInTime) {
  // When the survivor gave up, as a share of the time it was allowed.
  double earliest = 1, latest = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    const bool initiator_survives = w.Chance(0.5);
    Side& survivor = initiator_survives ? i : r;
    Side& victim = initiator_survives ? r : i;
    survivor.dpd_interval = w.UniformDuration(absl::Seconds(5), absl::Seconds(60));
    survivor.dpd_timeout = w.UniformDuration(absl::Seconds(30), absl::Seconds(150));
    if (w.Chance(0.5)) victim.dpd_interval = w.UniformDuration(absl::Seconds(5), absl::Seconds(60));
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    const int s = initiator_survives ? t.i : t.r;
    const int v = initiator_survives ? t.r : t.i;
    Establish(w, t, w.Address(1), w.Address(2));
    // With at most 5% loss the survivor has no reason to give up early.
    w.RandomizeLink(w.Address(1), w.Address(2), 0.05);
    const absl::Duration max_delay =
        std::max(w.net.FaultsFor(w.Address(1), w.Address(2)).MaxDelay(),
                 w.net.FaultsFor(w.Address(2), w.Address(1)).MaxDelay());
    const absl::Time killed = w.net.now() + w.UniformDuration(absl::Seconds(1), absl::Seconds(120));
    w.net.At(killed, [&w, v] { w.net.Kill(v); });
    // The victim's last datagram lands within `max_delay`; the survivor
    // probes after an idle interval and gives up a timeout later.
    const absl::Time deadline = killed + max_delay + survivor.dpd_interval + survivor.dpd_timeout;
    ASSERT_TRUE(w.net.RunUntil(deadline + absl::Seconds(30)));
    ExpectNoViolations(w.net);
    const sim::TimedEvent* dead = w.net.FindEvent(s, Kind::kFailed);
    ASSERT_NE(dead, nullptr) << w.net.name(s) << " never noticed";
    EXPECT_EQ(dead->event.reason, FailureReason::kPeerDead) << dead->event.detail;
    EXPECT_GT(dead->at, killed) << "declared dead while alive";
    EXPECT_LE(dead->at, deadline) << "late by " << absl::FormatDuration(dead->at - deadline);
    ExpectDown(w.net, s);
    const double share = absl::FDivDuration(dead->at - killed, deadline - killed);
    earliest = std::min(earliest, share);
    latest = std::max(latest, share);
  });
  Report("DPD, killed peer", seeds_run_,
         absl::StrFormat("declared dead after %.0f%% to %.0f%% of interval + timeout + delay",
                         100 * earliest, 100 * latest));
}

// --- (e) DELETE from either end, or both ---

TEST_F(SimulationTest, DeleteFromEitherEndTearsBothDown) {
  int answered = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    i.dpd_interval = r.dpd_interval = absl::Seconds(20);
    i.dpd_timeout = r.dpd_timeout = absl::Seconds(60);
    const Tunnel t = w.AddTunnel(1, 2, i, r);
    w.RandomizeLink(w.Address(1), w.Address(2), 0.2);
    EXPECT_TRUE(w.net.engine(t.i).Initiate().ok());
    // Sometimes while the IKE SA is still being set up, sometimes with a
    // rekey in flight; from one end or from both.
    const int who = static_cast<int>(w.rng() % 5);  // 0, 1: initiator; 2, 3: responder; 4: both.
    const absl::Duration at = w.UniformDuration(absl::ZeroDuration(), absl::Seconds(8));
    if (w.Chance(0.3)) {
      const int rekeyer = w.Chance(0.5) ? t.i : t.r;
      w.net.After(at - absl::Milliseconds(50), [&w, rekeyer] {
        (void)w.net.engine(rekeyer).RekeyChild();  // Refused before establishment.
      });
    }
    std::vector<int> deleters;
    if (who <= 1 || who == 4) deleters.push_back(t.i);
    if (who >= 2) deleters.push_back(t.r);
    for (int d : deleters) {
      const absl::Duration when =
          at + (d == t.r && who == 4
                    ? w.UniformDuration(absl::ZeroDuration(), absl::Milliseconds(200))
                    : absl::ZeroDuration());
      w.net.After(when, [&w, d] { w.net.engine(d).Delete(); });
    }
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(60)));
    // Long enough for DPD (20 s + 60 s) to end a half that missed the DELETE.
    Settle(w.net, absl::Seconds(100));
    ExpectNoViolations(w.net);
    for (int d : deleters) {
      EXPECT_EQ(w.net.engine(d).state(), State::kDeleted) << w.net.name(d);
      const sim::TimedEvent* e = w.net.FindEvent(d, Kind::kDeleted);
      ASSERT_NE(e, nullptr);
      // An answered DELETE: the peer deleted the IKE SA.
      if (e->event.detail == "deleted") {
        ++answered;
        const int peer = d == t.i ? t.r : t.i;
        const sim::TimedEvent* p = w.net.FindEvent(peer, Kind::kDeleted);
        ASSERT_NE(p, nullptr) << w.net.name(peer) << " answered a DELETE but did not delete";
        EXPECT_TRUE(p->event.by_peer || deleters.size() == 2);
      }
    }
    ExpectDown(w.net, t.i);
    ExpectDown(w.net, t.r);
  });
  Report("delete", seeds_run_, absl::StrCat(answered, " DELETEs answered"));
}

// --- (f) A NAT in front of the initiator ---

TEST_F(SimulationTest, NatInFrontOfTheInitiator) {
  const absl::Duration kRekey = absl::Seconds(60);
  const absl::Duration kDpdTimeout = absl::Seconds(150);
  SimNetwork::Options options;
  options.hard_lifetime = kRekey + 3 * kDpdTimeout;
  int rebound = 0;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, options);
    Side i, r;
    // The initiator's probes keep the NAT mapping alive and tell the
    // responder where it went after a rebinding.
    i.dpd_interval = absl::Seconds(20);
    i.dpd_timeout = r.dpd_timeout = kDpdTimeout;
    Side& rekeyer = w.Chance(0.5) ? i : r;
    rekeyer.rekey_after = kRekey;
    rekeyer.rekey_fuzz = absl::Seconds(10);
    const Bytes inside = w.PrivateAddress(1);
    const Bytes outside = w.NatAddress(1);
    w.net.AddNat(outside, {inside});
    const Tunnel t = w.AddTunnel(1, 2, i, r, inside, outside);
    w.RandomizeLink(inside, w.Address(2), 0.05);
    w.net.After(w.UniformDuration(absl::ZeroDuration(), absl::Seconds(1)),
                [&] { EXPECT_TRUE(w.net.engine(t.i).Initiate().ok()); });
    const bool rebind = w.Chance(0.5);
    if (rebind) {
      ++rebound;
      w.net.After(w.UniformDuration(absl::Seconds(30), absl::Seconds(100)),
                  [&w, outside] { w.net.RebindNat(outside); });
    }
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(150)));
    Settle(w.net, absl::Seconds(30));
    if (rebind) {
      // A rekey after the responder learned the new mapping gives SAs
      // that use it.
      EXPECT_TRUE(w.net.engine(w.Chance(0.5) ? t.i : t.r).RekeyChild().ok());
      Settle(w.net, absl::Seconds(10));
    }
    ExpectNoViolations(w.net);
    ExpectUp(w.net, t);
    const EngineEvent& ike_i = w.net.FindEvent(t.i, Kind::kIkeSaEstablished)->event;
    const EngineEvent& ike_r = w.net.FindEvent(t.r, Kind::kIkeSaEstablished)->event;
    EXPECT_TRUE(ike_i.local_behind_nat);
    EXPECT_FALSE(ike_i.remote_behind_nat);
    EXPECT_FALSE(ike_r.local_behind_nat);
    EXPECT_TRUE(ike_r.remote_behind_nat);
    // ESP in UDP between the initiator's NAT-T port, as mapped, and the
    // responder's.
    const std::optional<uint16_t> mapped = w.net.NatPort(outside, Endpoint{inside, 4500});
    ASSERT_TRUE(mapped.has_value());
    const ChildSa& a = w.net.sink(t.i).live()[0].sa;
    const ChildSa& b = w.net.sink(t.r).live()[0].sa;
    EXPECT_TRUE(a.udp_encapsulation);
    EXPECT_EQ(a.local_port, 4500);
    EXPECT_EQ(a.remote_port, 4500);
    EXPECT_TRUE(b.udp_encapsulation);
    EXPECT_EQ(b.local_port, 4500);
    EXPECT_EQ(b.remote_port, *mapped);
  });
  Report("NAT", seeds_run_, absl::StrCat(rebound, " with the NAT's mappings lost midway"));
}

// --- (g) One responder host, two initiators, two IKE SAs ---

TEST_F(SimulationTest, TwoInitiatorsShareAResponderHost) {
  const absl::Duration kRekey = absl::Seconds(60);
  const absl::Duration kDpdTimeout = absl::Seconds(150);
  SimNetwork::Options options;
  options.hard_lifetime = kRekey + 3 * kDpdTimeout;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, options);
    std::vector<Tunnel> tunnels;
    std::vector<Bytes> addresses;
    for (uint8_t host : {1, 3}) {
      Side i, r;
      i.dpd_interval = absl::Seconds(30);
      i.dpd_timeout = r.dpd_timeout = kDpdTimeout;
      Side& rekeyer = w.Chance(0.5) ? i : r;
      rekeyer.rekey_after = kRekey;
      rekeyer.rekey_fuzz = absl::Seconds(10);
      if (host == 1 && w.Chance(0.5)) {
        w.net.AddNat(w.NatAddress(1), {w.PrivateAddress(1)});
        tunnels.push_back(w.AddTunnel(host, 2, i, r, w.PrivateAddress(1), w.NatAddress(1)));
        addresses.push_back(w.PrivateAddress(1));
      } else {
        tunnels.push_back(w.AddTunnel(host, 2, i, r));
        addresses.push_back(w.Address(host));
      }
      w.RandomizeLink(addresses.back(), w.Address(2), 0.05);
      const int node = tunnels.back().i;
      w.net.After(w.UniformDuration(absl::ZeroDuration(), absl::Seconds(5)),
                  [&w, node] { EXPECT_TRUE(w.net.engine(node).Initiate().ok()); });
    }
    // A rekey of each CHILD SA, and probes, through the shared host.
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(90)));
    Settle(w.net, absl::Seconds(30));
    ExpectNoViolations(w.net);
    for (const Tunnel& t : tunnels) {
      ExpectUp(w.net, t);
      EXPECT_GE(w.net.sink(t.r).history().size(), 2u) << "no rekey";
    }
    // Two separate IKE SAs and CHILD SAs on the responder host.
    const EngineEvent& a = w.net.FindEvent(tunnels[0].r, Kind::kIkeSaEstablished)->event;
    const EngineEvent& b = w.net.FindEvent(tunnels[1].r, Kind::kIkeSaEstablished)->event;
    EXPECT_NE(a.ike_spi_r, b.ike_spi_r);
    EXPECT_NE(a.ike_spi_i, b.ike_spi_i);
    EXPECT_NE(w.net.sink(tunnels[0].r).live()[0].sa.inbound_spi,
              w.net.sink(tunnels[1].r).live()[0].sa.inbound_spi);
  });
  Report("two initiators", seeds_run_, "both IKE SAs up and apart");
}

// --- (h) Everything at once ---

// Rekey schedules, DPD, PFS and a NAT at random on either end, up to 35%
// loss, and random RekeyChild(), Delete() and NAT rebindings: whatever
// happens, the two ends end up consistent.
TEST_F(SimulationTest, ChaosConverges) {
  int up = 0;
  std::map<std::string, int> failures;
  ForEachSeed([&](uint64_t seed) {
    World w(seed, {});
    Side i, r;
    absl::Duration longest = absl::ZeroDuration();
    for (Side* s : {&i, &r}) {
      if (w.Chance(0.5)) {
        s->rekey_after = w.UniformDuration(absl::Seconds(20), absl::Seconds(90));
        s->rekey_fuzz = w.UniformDuration(absl::ZeroDuration(), s->rekey_after / 3);
      }
      if (w.Chance(0.6)) {
        s->dpd_interval = w.UniformDuration(absl::Seconds(5), absl::Seconds(40));
        s->dpd_timeout = w.UniformDuration(absl::Seconds(20), absl::Seconds(120));
      }
      longest = std::max(longest, s->dpd_interval + s->dpd_timeout);
    }
    if (w.Chance(0.5)) i.esp = r.esp = "aes128gcm16-x25519";
    const bool nat = w.Chance(0.3);
    const Bytes a = nat ? w.PrivateAddress(1) : w.Address(1);
    if (nat) w.net.AddNat(w.NatAddress(1), {a});
    const Tunnel t = nat ? w.AddTunnel(1, 2, i, r, a, w.NatAddress(1)) : w.AddTunnel(1, 2, i, r);
    w.RandomizeLink(a, w.Address(2), 0.35);
    EXPECT_TRUE(w.net.engine(t.i).Initiate().ok());
    const int actions = static_cast<int>(w.rng() % 8);
    for (int k = 0; k < actions; ++k) {
      const absl::Duration at = w.UniformDuration(absl::ZeroDuration(), absl::Seconds(150));
      const int kind = static_cast<int>(w.rng() % 10);
      const int node = w.Chance(0.5) ? t.i : t.r;
      if (kind < 7) {
        w.net.After(at, [&w, node] { (void)w.net.engine(node).RekeyChild(); });
      } else if (kind < 8) {
        w.net.After(at, [&w, node] { w.net.engine(node).Delete(); });
      } else if (nat) {
        w.net.After(at, [&w] { w.net.RebindNat(w.NatAddress(1)); });
      }
    }
    ASSERT_TRUE(w.net.RunFor(absl::Seconds(200)));
    // Every end that probes has given up on a silent peer by then.
    Settle(w.net, longest + absl::Seconds(60));
    ExpectNoViolations(w.net);
    CountRekeyFailures(w.net, t, failures);
    const bool ei = w.net.engine(t.i).state() == State::kEstablished;
    const bool er = w.net.engine(t.r).state() == State::kEstablished;
    if (ei && er) {
      ++up;
      ExpectUp(w.net, t);
      return;
    }
    // An end that is still up cannot have noticed: it neither probes nor
    // rekeys. It may hold two CHILD SAs: the peer gave up halfway through
    // a rekey that this end answered, before its DELETE of the old SA.
    for (auto [n, e, s] : {std::tuple{t.i, ei, &i}, std::tuple{t.r, er, &r}}) {
      if (e) {
        EXPECT_EQ(s->dpd_interval, absl::ZeroDuration())
            << w.net.name(n) << " missed its peer's end";
        EXPECT_EQ(s->rekey_after, absl::ZeroDuration())
            << w.net.name(n) << " missed its peer's end";
        EXPECT_LE(w.net.sink(n).live().size(), 2u);
      } else {
        ExpectDown(w.net, n);
      }
    }
  });
  Report("chaos", seeds_run_, absl::StrCat(up, " up at the end; failed rekeys: ", Tally(failures)));
}

}  // namespace
}  // namespace strait::ike
