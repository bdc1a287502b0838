#include "agent/ike/testing/sim_network.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/ike/engine_impl.h"

namespace strait::ike::sim {

namespace {

constexpr size_t kFlagsOffset = 19;

uint64_t ReadSpi(const Bytes& data, size_t offset) {
  uint64_t spi = 0;
  for (size_t i = 0; i < 8; ++i) spi = spi << 8 | data[offset + i];
  return spi;
}

std::string AddressText(const Bytes& a) {
  if (a.size() == 4) return absl::StrJoin(a, ".");
  std::string out;
  for (size_t i = 0; i + 1 < a.size(); i += 2) {
    absl::StrAppend(&out, i == 0 ? "" : ":", absl::Hex(a[i] << 8 | a[i + 1]));
  }
  return out;
}

std::string EndpointText(const Endpoint& e) {
  return absl::StrCat(e.address.size() == 16 ? "[" : "", AddressText(e.address),
                      e.address.size() == 16 ? "]" : "", ":", e.port);
}

}  // namespace

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void SeededRandom::Fill(absl::Span<uint8_t> out) {
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng_());
}

// --- SimSink ---

absl::Status SimSink::InstallChildSa(const ChildSa& sa) {
  for (const Installed& i : live_) {
    if (i.sa.inbound_spi == sa.inbound_spi) {
      errors_.push_back(absl::StrFormat("inbound SPI %08x installed twice", sa.inbound_spi));
      return absl::AlreadyExistsError("SPI in use");
    }
  }
  live_.push_back(Installed{sa, clock_.Now()});
  history_.push_back(Installed{sa, clock_.Now()});
  return absl::OkStatus();
}

absl::Status SimSink::RemoveChildSa(const ChildSa& sa) {
  for (auto it = live_.begin(); it != live_.end(); ++it) {
    if (it->sa.inbound_spi == sa.inbound_spi) {
      live_.erase(it);
      return absl::OkStatus();
    }
  }
  errors_.push_back(absl::StrFormat("removal of SPI %08x, which is not installed", sa.inbound_spi));
  return absl::NotFoundError("no such SA");
}

absl::Status SimSink::ActivateChildSaOutbound(const ChildSa& sa) {
  for (Installed& i : live_) {
    if (i.sa.inbound_spi != sa.inbound_spi) continue;
    if (!i.sa.outbound_deferred || sa.outbound_deferred) {
      errors_.push_back(absl::StrFormat("SPI %08x: outbound SA activated twice", sa.inbound_spi));
      return absl::FailedPreconditionError("not deferred");
    }
    i.sa = sa;
    return absl::OkStatus();
  }
  errors_.push_back(
      absl::StrFormat("outbound SA of SPI %08x activated, which is not installed", sa.inbound_spi));
  return absl::NotFoundError("no such SA");
}

void SimSink::RetireAll() { live_.clear(); }

// --- SimNetwork ---

SimNetwork::SimNetwork(uint64_t seed, const Options& options)
    : seed_(seed), options_(options), start_(clock_.Now()), rng_(MixSeed(seed, 0)) {}

absl::StatusOr<int> SimNetwork::AddEngine(std::string name, EngineConfig config) {
  const int index = size();
  auto node = std::make_unique<Node>(std::move(name), MixSeed(seed_, 100 + index), clock_);
  node->local = config.local;
  node->remote_address = config.remote.address;
  node->nat_t_port = config.nat_t_port;
  absl::StatusOr<EnginePtr> engine =
      CreateEngine(std::move(config), clock_, node->random, node->sink);
  if (!engine.ok()) return engine.status();
  node->engine = *std::move(engine);
  nodes_.push_back(std::move(node));
  return index;
}

void SimNetwork::AddNat(Bytes public_address, std::vector<Bytes> inside) {
  Nat nat;
  nat.public_address = std::move(public_address);
  nat.inside = std::move(inside);
  nat.next_port = static_cast<uint16_t>(20000 + rng_() % 20000);
  nats_.push_back(std::move(nat));
}

void SimNetwork::RebindNat(const Bytes& public_address) {
  Nat* nat = NatAt(public_address);
  if (nat == nullptr) return;
  nat->out.clear();
  nat->in.clear();
  Trace(absl::StrCat("NAT ", AddressText(public_address), " forgets its mappings"));
}

std::optional<uint16_t> SimNetwork::NatPort(const Bytes& public_address,
                                            const Endpoint& inside) const {
  for (const Nat& nat : nats_) {
    if (nat.public_address != public_address) continue;
    auto it = nat.out.find({inside.address, inside.port});
    if (it != nat.out.end()) return it->second;
  }
  return std::nullopt;
}

SimNetwork::Nat* SimNetwork::NatInFrontOf(const Bytes& address) {
  for (Nat& nat : nats_) {
    if (std::find(nat.inside.begin(), nat.inside.end(), address) != nat.inside.end()) return &nat;
  }
  return nullptr;
}

SimNetwork::Nat* SimNetwork::NatAt(const Bytes& public_address) {
  for (Nat& nat : nats_) {
    if (nat.public_address == public_address) return &nat;
  }
  return nullptr;
}

void SimNetwork::SetLinkFaults(const Bytes& from, const Bytes& to, const LinkFaults& faults) {
  link_faults_[{from, to}] = faults;
}

void SimNetwork::Heal() {
  auto heal = [](LinkFaults& f) {
    f.drop = 0;
    f.duplicate = 0;
    f.reorder = 0;
    f.reorder_delay = absl::ZeroDuration();
    f.jitter = std::min(f.jitter, f.delay);
  };
  heal(options_.faults);
  for (auto& [link, faults] : link_faults_) heal(faults);
  Trace("the network heals");
}

void SimNetwork::Kill(int node) {
  nodes_[node]->alive = false;
  Trace(absl::StrCat(nodes_[node]->name, " dies"));
}

const LinkFaults& SimNetwork::FaultsFor(const Bytes& from, const Bytes& to) const {
  auto it = link_faults_.find({from, to});
  return it != link_faults_.end() ? it->second : options_.faults;
}

absl::Duration SimNetwork::UpTo(absl::Duration max) {
  if (max <= absl::ZeroDuration()) return absl::ZeroDuration();
  // Microsecond steps: fine enough to reorder, coarse enough to read.
  const int64_t us = absl::ToInt64Microseconds(max);
  return absl::Microseconds(static_cast<int64_t>(rng_() % static_cast<uint64_t>(us + 1)));
}

void SimNetwork::At(absl::Time at, std::function<void()> action) {
  Event e;
  e.at = at;
  e.seq = next_seq_++;
  e.action = std::move(action);
  queue_.push(std::move(e));
}

bool SimNetwork::Dispatches(const Node& node, const Bytes& data, const Endpoint& from) {
  if (data.size() < kIkeHeaderSize) return true;  // The engine counts it malformed.
  const bool from_initiator = (data[kFlagsOffset] & kFlagInitiator) != 0;
  const uint64_t spi_r = ReadSpi(data, 8);
  if (from_initiator && spi_r == 0) return node.remote_address == from.address;
  const uint64_t ours = from_initiator ? spi_r : ReadSpi(data, 0);
  if (ours == 0) return false;
  if (node.local_spi == ours) return true;
  // The runner dispatches by every SPI of ours that the engine still
  // uses: the current IKE SA's and those of the SAs a rekey replaced.
  const std::vector<uint64_t> spis = node.engine->local_spis();
  return std::find(spis.begin(), spis.end(), ours) != spis.end();
}

void SimNetwork::Route(Node& from, OutboundDatagram d) {
  ++stats_.sent;
  if (d.data.size() >= kIkeHeaderSize) {
    // The runner learns the engine's SPI likewise, to dispatch by it.
    const bool initiator = (d.data[kFlagsOffset] & kFlagInitiator) != 0;
    const uint64_t ours = ReadSpi(d.data, initiator ? 0 : 8);
    if (ours != 0) from.local_spi = ours;
  }
  // The runner sends from the NAT-T socket to the peer's NAT-T port, and
  // to a peer that talks to ours.
  const bool nat_t = from.nat_t_port != 0 && (from.floated || d.to.port == from.nat_t_port);
  Endpoint source{from.local.address, nat_t ? from.nat_t_port : from.local.port};
  const Endpoint private_source = source;
  if (Nat* nat = NatInFrontOf(source.address); nat != nullptr) {
    auto [it, fresh] = nat->out.try_emplace({source.address, source.port}, nat->next_port);
    if (fresh) {
      nat->in[nat->next_port] = source;
      if (options_.trace)
        Trace(absl::StrCat("NAT maps ", EndpointText(source), " to ",
                           AddressText(nat->public_address), ":", nat->next_port));
      ++nat->next_port;
      if (nat->next_port < 1024) nat->next_port = 1024;
    }
    source = Endpoint{nat->public_address, it->second};
  }
  // The link runs to the receiving host: behind a NAT, the private one.
  Bytes to_host = d.to.address;
  if (Nat* nat = NatAt(d.to.address); nat != nullptr) {
    auto it = nat->in.find(d.to.port);
    if (it != nat->in.end()) to_host = it->second.address;
  }
  const LinkFaults& f = FaultsFor(private_source.address, to_host);
  // Trace lines are only built when tracing: they cost more than the rest.
  auto what = [&] {
    return absl::StrCat(from.name, " ", EndpointText(source), " -> ", EndpointText(d.to), " (",
                        d.data.size(), " bytes)");
  };
  if (Uniform01() < f.drop) {
    ++stats_.dropped;
    if (options_.trace) Trace(absl::StrCat("drop ", what()));
    return;
  }
  const int copies = Uniform01() < f.duplicate ? 2 : 1;
  if (copies == 2) ++stats_.duplicated;
  for (int c = 0; c < copies; ++c) {
    absl::Duration delay = f.delay + UpTo(f.jitter);
    if (Uniform01() < f.reorder) {
      ++stats_.reordered;
      delay += UpTo(f.reorder_delay);
    }
    Event e;
    e.at = now() + delay;
    e.seq = next_seq_++;
    e.data = d.data;
    e.from = source;
    e.to = d.to;
    if (options_.trace) {
      Trace(absl::StrCat("send ", what(), c == 1 ? " again" : "", ", due in ",
                         absl::FormatDuration(delay)));
    }
    queue_.push(std::move(e));
    ++in_flight_;
  }
}

void SimNetwork::Deliver(Event& e) {
  Endpoint to = e.to;
  if (Nat* nat = NatAt(to.address); nat != nullptr) {
    auto it = nat->in.find(to.port);
    if (it == nat->in.end()) {
      ++stats_.unroutable;
      Trace(absl::StrCat("no NAT mapping for ", EndpointText(to), ": lost"));
      return;
    }
    to = it->second;
  }
  bool delivered = false;
  for (auto& node : nodes_) {
    if (!node->alive || node->local.address != to.address) continue;
    const bool nat_t_port = node->nat_t_port != 0 && to.port == node->nat_t_port;
    if (to.port != node->local.port && !nat_t_port) continue;
    if (!Dispatches(*node, e.data, e.from)) continue;
    if (nat_t_port) node->floated = true;
    delivered = true;
    if (options_.trace)
      Trace(absl::StrCat("deliver ", EndpointText(e.from), " -> ", node->name, " ",
                         EndpointText(to)));
    node->engine->HandleDatagram(e.data, e.from);
  }
  if (delivered) {
    ++stats_.delivered;
  } else {
    ++stats_.unroutable;
    Trace(absl::StrCat("no engine at ", EndpointText(to), " takes it: lost"));
  }
}

void SimNetwork::Flush() {
  for (auto& node : nodes_) {
    std::vector<OutboundDatagram> out = node->engine->TakeDatagrams();
    std::vector<EngineEvent> events = node->engine->TakeEvents();
    if (!node->alive) continue;
    for (OutboundDatagram& d : out) Route(*node, std::move(d));
    for (EngineEvent& e : events) {
      using Kind = EngineEvent::Kind;
      if (options_.trace) {
        std::string text = absl::StrCat(node->name, " event ", static_cast<int>(e.kind));
        if (e.kind == Kind::kFailed) absl::StrAppend(&text, " ", FailureReasonName(e.reason));
        if (e.kind == Kind::kChildSaEstablished) {
          absl::StrAppend(&text,
                          absl::StrFormat(" child in %08x out %08x%s", e.child_inbound_spi,
                                          e.child_outbound_spi, e.rekeyed ? " (rekeyed)" : ""));
        }
        if (!e.detail.empty()) absl::StrAppend(&text, " ", e.detail);
        Trace(text);
      }
      // The agent retires the CHILD SAs of an IKE SA that is gone.
      if (e.kind == Kind::kFailed || e.kind == Kind::kDeleted) node->sink.RetireAll();
      node->events.push_back(TimedEvent{now(), std::move(e)});
    }
  }
}

std::optional<absl::Time> SimNetwork::NextTime() const {
  std::optional<absl::Time> next;
  if (!queue_.empty()) next = queue_.top().at;
  for (const auto& node : nodes_) {
    if (!node->alive) continue;
    std::optional<absl::Time> d = node->engine->NextDeadline();
    if (d.has_value() && (!next.has_value() || *d < *next)) next = d;
  }
  return next;
}

void SimNetwork::Step() {
  if (!queue_.empty() && queue_.top().at <= now()) {
    // top() is const; the element is popped right after, so moving from
    // it is safe and saves copying the datagram.
    Event e = std::move(const_cast<Event&>(queue_.top()));
    queue_.pop();
    if (e.action) {
      e.action();
    } else {
      --in_flight_;
      Deliver(e);
    }
  } else {
    for (auto& node : nodes_) {
      if (!node->alive) continue;
      std::optional<absl::Time> d = node->engine->NextDeadline();
      if (d.has_value() && *d <= now()) node->engine->Tick(now());
    }
  }
  Flush();
}

void SimNetwork::CheckStep() {
  for (auto& node : nodes_) {
    if (!node->alive) continue;
    // Make before break: while a node has CHILD SAs, one of them sends.
    const auto& live = node->sink.live();
    if (!live.empty() && std::all_of(live.begin(), live.end(), [](const SimSink::Installed& i) {
          return i.sa.outbound_deferred;
        })) {
      Violation(node.get(), absl::StrFormat("no CHILD SA to send on (%d installed, none sends)",
                                            static_cast<int>(live.size())));
    }
    for (const SimSink::Installed& i : node->sink.live()) {
      const absl::Duration age = now() - i.installed_at;
      max_sa_age_ = std::max(max_sa_age_, age);
      if (age > options_.hard_lifetime && node->expired.insert(i.sa.inbound_spi).second) {
        Violation(node.get(),
                  absl::StrFormat("CHILD SA %08x/%08x installed for %s, past its "
                                  "hard lifetime of %s",
                                  i.sa.inbound_spi, i.sa.outbound_spi, absl::FormatDuration(age),
                                  absl::FormatDuration(options_.hard_lifetime)));
      }
    }
    if (options_.ike_hard_lifetime != absl::InfiniteDuration() ||
        options_.old_ike_sa_lifetime != absl::InfiniteDuration()) {
      CheckIkeSas(*node);
    }
  }
}

void SimNetwork::CheckIkeSas(Node& node) {
  const Engine::State state = node.engine->state();
  if (state != Engine::State::kEstablished && state != Engine::State::kDeleting) {
    node.current_ike_spi = 0;
    node.old_ike_since.clear();
    return;
  }
  const std::vector<uint64_t> spis = node.engine->local_spis();
  if (spis.empty()) return;
  if (spis[0] != node.current_ike_spi) {
    node.current_ike_spi = spis[0];
    node.current_ike_since = now();
  }
  const absl::Duration age = now() - node.current_ike_since;
  max_ike_sa_age_ = std::max(max_ike_sa_age_, age);
  if (age > options_.ike_hard_lifetime && node.ike_reported.insert(spis[0]).second) {
    Violation(&node, absl::StrFormat("IKE SA %016x current for %s, past its hard lifetime of %s",
                                     spis[0], absl::FormatDuration(age),
                                     absl::FormatDuration(options_.ike_hard_lifetime)));
  }
  // Forget the replaced SAs that are gone.
  for (auto it = node.old_ike_since.begin(); it != node.old_ike_since.end();) {
    if (std::find(spis.begin() + 1, spis.end(), it->first) == spis.end()) {
      it = node.old_ike_since.erase(it);
    } else {
      ++it;
    }
  }
  for (size_t k = 1; k < spis.size(); ++k) {
    const absl::Time since = node.old_ike_since.try_emplace(spis[k], now()).first->second;
    const absl::Duration kept = now() - since;
    max_old_ike_sa_age_ = std::max(max_old_ike_sa_age_, kept);
    if (kept > options_.old_ike_sa_lifetime && node.ike_reported.insert(spis[k]).second) {
      Violation(&node, absl::StrFormat("replaced IKE SA %016x kept for %s, longer than %s", spis[k],
                                       absl::FormatDuration(kept),
                                       absl::FormatDuration(options_.old_ike_sa_lifetime)));
    }
  }
}

bool SimNetwork::RunUntilOr(absl::Time until, const std::function<bool()>& done) {
  Flush();  // Whatever the engines did between runs (Initiate(), Delete()).
  while (!done || !done()) {
    std::optional<absl::Time> next = NextTime();
    if (!next.has_value() || *next > until) break;
    if (++steps_ > options_.max_steps) {
      Violation(nullptr, absl::StrCat("no progress after ", options_.max_steps, " steps"));
      return false;
    }
    if (*next > now()) clock_.Advance(*next - now());
    // Before the step: an SA that this step removes lived until now.
    CheckStep();
    Step();
  }
  if (done && done()) return true;
  if (until > now()) clock_.Advance(until - now());
  CheckStep();
  return true;
}

bool SimNetwork::RunUntil(absl::Time until) { return RunUntilOr(until, nullptr); }

const TimedEvent* SimNetwork::FindEvent(int node, EngineEvent::Kind kind) const {
  for (const TimedEvent& e : nodes_[node]->events) {
    if (e.event.kind == kind) return &e;
  }
  return nullptr;
}

void SimNetwork::Violation(const Node* node, const std::string& what) {
  violations_.push_back(absl::StrCat("at +", absl::FormatDuration(now() - start_), " ",
                                     node != nullptr ? node->name + ": " : "", what));
  Trace(absl::StrCat("VIOLATION ", violations_.back()));
}

std::vector<std::string> SimNetwork::violations() const {
  std::vector<std::string> all = violations_;
  for (const auto& node : nodes_) {
    for (const std::string& e : node->sink.errors()) all.push_back(node->name + ": " + e);
  }
  return all;
}

void SimNetwork::Trace(const std::string& line) {
  if (!options_.trace) return;
  absl::FPrintF(stderr, "[sim %d +%s] %s\n", seed_, absl::FormatDuration(clock_.Now() - start_),
                line);
}

}  // namespace strait::ike::sim
