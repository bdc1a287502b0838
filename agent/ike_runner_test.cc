#include "agent/ike_runner.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/applier_impl.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/message.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "agent/metrics.h"
#include "agent/test_util.h"
#include "common/clock.h"
#include "dataplane/fake_dataplane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace strait::agent {
namespace {

using dataplane::Direction;
using dataplane::FakeDataplane;
using dataplane::SaConfig;
using dataplane::SaId;
using strait::v1::NodeTunnel;
using strait::v1::TunnelEndStatus;
using strait::v1::TunnelPhase;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr char kNodeA[] = "node-a";
constexpr char kNodeB[] = "node-b";
constexpr char kPsk[] = "ike runner test key 0123456789";

ike::Bytes Ip(const std::string& text) { return *ike::ParseIpAddress(text); }

// A UDP socket bound to `address` (port 0 unless given); -1 when that fails.
int BindUdp(const std::string& address, uint16_t port = 0) {
  uint16_t bound = 0;
  absl::StatusOr<int> fd = ike::BindUdpSocket(ike::Endpoint{Ip(address), port}, &bound);
  return fd.ok() ? *fd : -1;
}

// A port that is free on every address the tests use (and not `other`).
uint16_t PickPort(uint16_t other = 0) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int probe = BindUdp("127.0.0.1");
    sockaddr_in sin{};
    socklen_t len = sizeof(sin);
    getsockname(probe, reinterpret_cast<sockaddr*>(&sin), &len);
    close(probe);
    const uint16_t port = ntohs(sin.sin_port);
    if (port == other) continue;
    bool free = true;
    for (const char* address : {"127.0.0.1", "127.0.0.2", "127.0.0.3"}) {
      const int fd = BindUdp(address, port);
      free = free && fd >= 0;
      if (fd >= 0) close(fd);
    }
    if (free) return port;
  }
  ADD_FAILURE() << "no free UDP port";
  return 0;
}

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return condition();
}

// A tunnel end. The node-to-node tunnel "name" between node-a at `a` and
// node-b at `b`, as `node` sees it.
struct TunnelOptions {
  std::string a = "127.0.0.1";
  std::string b = "127.0.0.2";
  std::string a_ts = "10.1.0.0/24";
  std::string b_ts = "10.2.0.0/24";
  std::string psk = kPsk;
  std::string ike = "aes256gcm16-prfsha384-ecp384";
  std::string esp = "aes256gcm16";
  absl::Duration ike_lifetime = absl::ZeroDuration();  // Unset when zero.
};

NodeTunnel Tunnel(const std::string& name, const std::string& node,
                  const TunnelOptions& o = TunnelOptions()) {
  const bool on_a = node == kNodeA;
  NodeTunnel t;
  t.set_name(name);
  t.set_generation(1);
  strait::v1::TunnelSpec* spec = t.mutable_spec();
  spec->set_node(node);
  spec->mutable_local()->set_address(on_a ? o.a : o.b);
  spec->mutable_local()->add_traffic_selectors(on_a ? o.a_ts : o.b_ts);
  spec->mutable_remote()->set_node(on_a ? kNodeB : kNodeA);
  spec->mutable_remote()->set_address(on_a ? o.b : o.a);
  spec->mutable_remote()->add_traffic_selectors(on_a ? o.b_ts : o.a_ts);
  spec->mutable_auth()->mutable_psk()->set_value(o.psk);
  spec->mutable_ike()->add_proposals(o.ike);
  spec->mutable_esp()->add_proposals(o.esp);
  if (o.ike_lifetime > absl::ZeroDuration()) {
    spec->mutable_ike()->mutable_lifetime()->set_seconds(absl::ToInt64Seconds(o.ike_lifetime));
  }
  return t;
}

class NoSink : public ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }
  absl::Status RemoveChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }
};

// One agent: applier, metrics, fake dataplane and runner.
class Agent {
 public:
  Agent(const std::string& node, const IkeRunnerOptions& options)
      : node_(node), applier_(node, RealClock::Get(), nullptr), metrics_(registry_) {
    absl::StatusOr<std::unique_ptr<IkeRunner>> runner =
        IkeRunner::Create(node, applier_, dataplane_, RealClock::Get(), metrics_, options);
    EXPECT_TRUE(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
    applier_.SetApplyHook([this](const strait::v1::Snapshot& s) { runner_->Reconcile(s); });
  }

  void Apply(std::vector<NodeTunnel> tunnels) {
    absl::Status applied = applier_.Apply(
        testing::MakeSnapshot(absl::StrCat(++version_, ".test"), std::move(tunnels)));
    ASSERT_TRUE(applied.ok()) << applied;
  }

  TunnelEndStatus Status(const std::string& tunnel) {
    const strait::v1::StatusReport report = applier_.BuildStatusReport();
    for (const auto& end : report.tunnels()) {
      if (end.name() == tunnel) return end.status();
    }
    return TunnelEndStatus();
  }
  bool WaitForPhase(const std::string& tunnel, TunnelPhase phase) {
    return WaitFor([&] { return Status(tunnel).phase() == phase; });
  }

  double Metric(const std::string& name, const std::map<std::string, std::string>& labels = {}) {
    return testing::MetricValue(registry_, name, labels);
  }

  // Gauges follow a tunnel's state at the end of the loop's iteration.
  ::testing::AssertionResult MetricBecomes(double value, const std::string& name,
                                           const std::map<std::string, std::string>& labels = {}) {
    if (WaitFor([&] { return Metric(name, labels) == value; })) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << name << " is " << Metric(name, labels) << ", not " << value;
  }

  FakeDataplane& dataplane() { return dataplane_; }
  IkeRunner& runner() { return *runner_; }

 private:
  const std::string node_;
  int version_ = 0;
  ApplierImpl applier_;
  prometheus::Registry registry_;
  IkeMetrics metrics_;
  FakeDataplane dataplane_;
  std::unique_ptr<IkeRunner> runner_;  // Last: stops before the rest goes.
};

std::string PhaseName(const TunnelEndStatus& s) {
  return absl::StrCat(strait::v1::TunnelPhase_Name(s.phase()), " ", s.reason(), ": ", s.message());
}

// The SPIs of what `dp` holds.
std::vector<uint32_t> Spis(const FakeDataplane& dp) {
  std::vector<uint32_t> out;
  for (const SaConfig& sa : dp.Sas()) out.push_back(sa.id.spi);
  return out;
}

uint32_t ParseSpi(const std::string& hex) {
  return static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
}

// Sends `payload` from a socket bound to `from` to `to`:`port`.
void SendFrom(const std::string& from, const std::string& to, uint16_t port,
              const std::vector<uint8_t>& payload) {
  const int fd = BindUdp(from);
  ASSERT_GE(fd, 0) << from;
  sockaddr_storage ss;
  const socklen_t len = ike::ToSockaddr(ike::Endpoint{Ip(to), port}, &ss);
  ASSERT_EQ(sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&ss), len),
            static_cast<ssize_t>(payload.size()));
  close(fd);
}

// An IKE header alone: an IKE_SA_INIT request (responder SPI 0), or with
// `spi_r` some later request.
std::vector<uint8_t> IkeHeader(uint64_t spi_i, uint64_t spi_r = 0, uint8_t exchange = 34) {
  std::vector<uint8_t> h(ike::kIkeHeaderSize, 0);
  for (int i = 0; i < 8; ++i) {
    h[i] = static_cast<uint8_t>(spi_i >> (56 - 8 * i));
    h[8 + i] = static_cast<uint8_t>(spi_r >> (56 - 8 * i));
  }
  h[17] = 0x20;  // IKEv2
  h[18] = exchange;
  h[19] = ike::kFlagInitiator;
  h[27] = static_cast<uint8_t>(ike::kIkeHeaderSize);
  return h;
}

class IkeRunnerTest : public ::testing::Test {
 protected:
  IkeRunnerTest() {
    options_.ike_port = PickPort();
    options_.nat_t_port = PickPort(options_.ike_port);
    // Long enough that a busy machine causes no retransmission (the tests
    // count messages), short enough for the failure paths.
    options_.retransmit_timeouts = {absl::Seconds(2), absl::Seconds(2), absl::Seconds(2)};
    options_.initiator_backoff = absl::Milliseconds(100);
    options_.max_initiator_backoff = absl::Milliseconds(400);
    options_.bind_retry = absl::Milliseconds(200);
  }

  std::unique_ptr<Agent> NewAgent(const std::string& node) {
    return std::make_unique<Agent>(node, options_);
  }

  // Both ends of "ab" up.
  void Establish(Agent& a, Agent& b) {
    // The responder first, so that the first IKE_SA_INIT finds its socket.
    b.Apply({Tunnel("ab", kNodeB)});
    a.Apply({Tunnel("ab", kNodeA)});
    ASSERT_TRUE(a.WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED))
        << PhaseName(a.Status("ab"));
    ASSERT_TRUE(b.WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED))
        << PhaseName(b.Status("ab"));
  }

  IkeRunnerOptions options_;
};

TEST_F(IkeRunnerTest, EstablishesReportsAndInstallsMirroredSas) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);

  const TunnelEndStatus sa = a->Status("ab");
  const TunnelEndStatus sb = b->Status("ab");
  EXPECT_EQ(sa.reason(), "ESTABLISHED");
  EXPECT_THAT(sa.message(), ::testing::HasSubstr("(initiator)"));
  EXPECT_TRUE(sa.ike_sa().initiator());
  EXPECT_FALSE(sb.ike_sa().initiator());
  EXPECT_THAT(sa.ike_sa().initiator_spi(), SizeIs(16));
  EXPECT_THAT(sa.ike_sa().responder_spi(), SizeIs(16));
  EXPECT_EQ(sa.ike_sa().initiator_spi(), sb.ike_sa().initiator_spi());
  EXPECT_EQ(sa.ike_sa().responder_spi(), sb.ike_sa().responder_spi());
  EXPECT_EQ(sa.ike_sa().algorithms(), "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384");
  EXPECT_FALSE(sa.ike_sa().local_behind_nat());
  EXPECT_GT(sa.ike_sa().established_time().seconds(), 0);
  EXPECT_EQ(sa.ike_sa().remote_identity(), "127.0.0.2");  // The address: no id set.
  EXPECT_EQ(sb.ike_sa().remote_identity(), "127.0.0.1");
  EXPECT_EQ(sa.ike_sa().auth_method(), "psk");

  ASSERT_EQ(sa.child_sas_size(), 1);
  ASSERT_EQ(sb.child_sas_size(), 1);
  const strait::v1::ChildSaStatus& ca = sa.child_sas(0);
  const strait::v1::ChildSaStatus& cb = sb.child_sas(0);
  EXPECT_THAT(ca.inbound_spi(), SizeIs(8));
  EXPECT_EQ(ca.inbound_spi(), cb.outbound_spi());
  EXPECT_EQ(ca.outbound_spi(), cb.inbound_spi());
  EXPECT_EQ(ca.algorithms(), "AES_GCM_16-256");
  EXPECT_THAT(ca.local_traffic_selectors(), ElementsAre("10.1.0.0/24"));
  EXPECT_THAT(ca.remote_traffic_selectors(), ElementsAre("10.2.0.0/24"));
  EXPECT_THAT(cb.local_traffic_selectors(), ElementsAre("10.2.0.0/24"));
  EXPECT_GT(ca.installed_time().seconds(), 0);

  // Each end's inbound SA is the other end's outbound SA, keys included.
  const uint32_t a_in = ParseSpi(ca.inbound_spi());
  const uint32_t b_in = ParseSpi(cb.inbound_spi());
  for (const auto& [spi, address, receiver, sender] :
       {std::make_tuple(a_in, "127.0.0.1", a.get(), b.get()),
        std::make_tuple(b_in, "127.0.0.2", b.get(), a.get())}) {
    SCOPED_TRACE(address);
    std::optional<SaConfig> in = receiver->dataplane().GetSa(SaId{Ip(address), spi});
    std::optional<SaConfig> out = sender->dataplane().GetSa(SaId{Ip(address), spi});
    ASSERT_TRUE(in.has_value());
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(in->encr_key.view(), out->encr_key.view());
    EXPECT_EQ(in->encr_key.size(), 36u);  // AES-256 key and GCM salt.
    EXPECT_EQ(in->source, out->source);
    EXPECT_EQ(in->encr_id, 20);
    EXPECT_EQ(in->key_bits, 256);
    EXPECT_EQ(in->replay_window, 64u);
    EXPECT_EQ(in->hard.add_seconds, 3600u);
    EXPECT_EQ(in->soft.add_seconds, 3060u);
  }
  EXPECT_THAT(a->dataplane().Sas(), SizeIs(2));
  std::vector<std::string> policies;
  for (const dataplane::PolicyConfig& p : a->dataplane().Policies()) {
    policies.push_back(absl::StrCat(dataplane::DirectionName(p.direction), " ",
                                    dataplane::FormatSelector(p.selector), " ",
                                    dataplane::FormatAddress(p.tunnel_source), "->",
                                    dataplane::FormatAddress(p.tunnel_destination)));
  }
  EXPECT_THAT(policies, UnorderedElementsAre("out 10.1.0.0/24->10.2.0.0/24 127.0.0.1->127.0.0.2",
                                             "in 10.2.0.0/24->10.1.0.0/24 127.0.0.2->127.0.0.1",
                                             "fwd 10.2.0.0/24->10.1.0.0/24 127.0.0.2->127.0.0.1"));

  // Metrics.
  for (Agent* agent : {a.get(), b.get()}) {
    EXPECT_TRUE(agent->MetricBecomes(1, "strait_agent_ike_sas", {{"state", "established"}}));
    EXPECT_TRUE(agent->MetricBecomes(0, "strait_agent_ike_sas", {{"state", "connecting"}}));
    EXPECT_TRUE(agent->MetricBecomes(1, "strait_agent_child_sas"));
    EXPECT_EQ(agent->Metric("strait_agent_ike_dropped_total"), 0);
    EXPECT_EQ(agent->Metric("strait_agent_ike_retransmits_total"), 0);
    for (const char* exchange : {"IKE_SA_INIT", "IKE_AUTH"}) {
      for (const char* direction : {"in", "out"}) {
        EXPECT_EQ(agent->Metric("strait_agent_ike_messages_total",
                                {{"exchange", exchange}, {"direction", direction}}),
                  1)
            << exchange << " " << direction;
      }
    }
  }
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "success"}}),
            1);
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total", {{"role", "responder"}}), 0);
  EXPECT_EQ(b->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "responder"}, {"result", "success"}}),
            1);
  EXPECT_EQ(a->Metric("strait_agent_ike_handshake_duration_seconds", {{"role", "initiator"}}), 1);
  EXPECT_EQ(b->Metric("strait_agent_ike_handshake_duration_seconds", {{"role", "responder"}}), 1);
}

TEST_F(IkeRunnerTest, TunnelsShareTheSocketsOfTheirLocalAddress) {
  // node-a runs both tunnels on 127.0.0.1; node-b serves them on two
  // addresses from one runner.
  TunnelOptions second;
  second.b = "127.0.0.3";
  second.a_ts = "10.3.0.0/24";
  second.b_ts = "10.4.0.0/24";
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("first", kNodeB), Tunnel("second", kNodeB, second)});
  a->Apply({Tunnel("first", kNodeA), Tunnel("second", kNodeA, second)});
  for (Agent* agent : {a.get(), b.get()}) {
    for (const char* name : {"first", "second"}) {
      ASSERT_TRUE(agent->WaitForPhase(name, strait::v1::TUNNEL_PHASE_ESTABLISHED))
          << name << ": " << PhaseName(agent->Status(name));
    }
    EXPECT_TRUE(agent->MetricBecomes(2, "strait_agent_ike_sas", {{"state", "established"}}));
    EXPECT_TRUE(agent->MetricBecomes(2, "strait_agent_child_sas"));
    EXPECT_THAT(agent->dataplane().Sas(), SizeIs(4));
    EXPECT_THAT(agent->dataplane().Policies(), SizeIs(6));
  }
  // Each tunnel has its own reqid on both its SAs.
  std::map<uint32_t, int> by_reqid;
  for (const SaConfig& sa : a->dataplane().Sas()) ++by_reqid[sa.reqid];
  EXPECT_THAT(by_reqid, SizeIs(2));
  for (const auto& [reqid, count] : by_reqid) EXPECT_EQ(count, 2) << reqid;
}

TEST_F(IkeRunnerTest, DatagramsForNoTunnelAreDroppedAndCounted) {
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  EXPECT_EQ(b->Status("ab").reason(), "AWAITING_PEER");

  // A new IKE SA from an address no tunnel names.
  SendFrom("127.0.0.3", "127.0.0.2", options_.ike_port, IkeHeader(0x1111));
  ASSERT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}) == 1;
  }));
  // The right peer, but an IKE SA that does not exist.
  SendFrom("127.0.0.1", "127.0.0.2", options_.ike_port, IkeHeader(0x2222, 0x3333, 35));
  ASSERT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}) == 2;
  }));
  // On the NAT-T port, behind the non-ESP marker.
  std::vector<uint8_t> marked(4, 0);
  const std::vector<uint8_t> header = IkeHeader(0x4444);
  marked.insert(marked.end(), header.begin(), header.end());
  SendFrom("127.0.0.3", "127.0.0.2", options_.nat_t_port, marked);
  ASSERT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}) == 3;
  }));
  // Too short for an IKE header; a NAT keepalive (not counted).
  SendFrom("127.0.0.1", "127.0.0.2", options_.ike_port, {1, 2, 3});
  SendFrom("127.0.0.1", "127.0.0.2", options_.nat_t_port, {0xff});
  ASSERT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_dropped_total", {{"reason", "malformed"}}) == 1;
  }));
  EXPECT_EQ(b->Metric("strait_agent_ike_dropped_total"), 4);
  EXPECT_EQ(b->Metric("strait_agent_ike_messages_total",
                      {{"exchange", "IKE_SA_INIT"}, {"direction", "in"}}),
            2);
  EXPECT_EQ(
      b->Metric("strait_agent_ike_messages_total", {{"exchange", "IKE_AUTH"}, {"direction", "in"}}),
      1);
  EXPECT_EQ(b->Status("ab").phase(), strait::v1::TUNNEL_PHASE_CONNECTING);
  EXPECT_EQ(b->Metric("strait_agent_ike_sas", {{"state", "connecting"}}), 0);
}

TEST_F(IkeRunnerTest, HalfOpenSasPerTunnelAreBounded) {
  options_.max_half_open_per_tunnel = 3;
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  // Five initiators from node-a's address that never go on to IKE_AUTH.
  absl::StatusOr<ike::EngineConfig> config = ike::EngineConfigFromSpec(Tunnel("ab", kNodeA).spec());
  ASSERT_TRUE(config.ok()) << config.status();
  ike::RandomSourcePtr random = ike::CreateOpenSslRandomSource();
  NoSink sink;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<ike::EnginePtr> engine =
        ike::CreateEngine(*config, RealClock::Get(), *random, sink);
    ASSERT_TRUE(engine.ok());
    ASSERT_TRUE((*engine)->Initiate().ok());
    std::vector<ike::OutboundDatagram> out = (*engine)->TakeDatagrams();
    ASSERT_THAT(out, SizeIs(1));
    SendFrom("127.0.0.1", "127.0.0.2", options_.ike_port, out[0].data);
    ASSERT_TRUE(WaitFor([&] {
      return b->Metric("strait_agent_ike_messages_total",
                       {{"exchange", "IKE_SA_INIT"}, {"direction", "out"}}) == i + 1;
    }));
  }
  EXPECT_TRUE(b->MetricBecomes(3, "strait_agent_ike_sas", {{"state", "connecting"}}));
  EXPECT_EQ(b->Metric("strait_agent_ike_half_open_sas"), 3);
  // The tunnel's slots taken, the last two got a cookie instead of pushing
  // out an older one: a spoofed flood cannot evict the real peer's SA.
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_sent_total"), 2);
  EXPECT_EQ(b->Metric("strait_agent_ike_dropped_total"), 0);
  EXPECT_EQ(b->Status("ab").phase(), strait::v1::TUNNEL_PHASE_CONNECTING);
}

// A UDP socket of node-a's address that talks IKE to node-b by hand.
class RawPeer {
 public:
  RawPeer(const std::string& local, uint16_t peer_port)
      : fd_(BindUdp(local)), peer_port_(peer_port) {}
  ~RawPeer() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  void Send(const ike::Bytes& payload, const std::string& to = "127.0.0.2") {
    sockaddr_storage ss;
    const socklen_t len = ike::ToSockaddr(ike::Endpoint{Ip(to), peer_port_}, &ss);
    ASSERT_EQ(sendto(fd_, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&ss), len),
              static_cast<ssize_t>(payload.size()));
  }
  // The next datagram within `timeout`, if any.
  std::optional<ike::Bytes> Receive(absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time until = absl::Now() + timeout;
    ike::Bytes buffer(65536);
    while (absl::Now() < until) {
      const ssize_t n = recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n >= 0) {
        buffer.resize(static_cast<size_t>(n));
        return buffer;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return std::nullopt;
  }

 private:
  const int fd_;
  const uint16_t peer_port_;
};

// An initiator engine of node-a's end of "ab" (it never sees node-b's
// answers unless the test hands them over).
class HandInitiator {
 public:
  HandInitiator() : random_(ike::CreateOpenSslRandomSource()) {
    absl::StatusOr<ike::EngineConfig> config =
        ike::EngineConfigFromSpec(Tunnel("ab", kNodeA).spec());
    EXPECT_TRUE(config.ok()) << config.status();
    absl::StatusOr<ike::EnginePtr> engine =
        ike::CreateEngine(*config, RealClock::Get(), *random_, sink_);
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }
  // The first IKE_SA_INIT request.
  ike::Bytes Initiate() {
    EXPECT_TRUE(engine_->Initiate().ok());
    return Next();
  }
  // Hands node-b's answer to the engine; returns what it sends next.
  ike::Bytes Answer(const ike::Bytes& response) {
    engine_->HandleDatagram(response, ike::Endpoint{Ip("127.0.0.2"), 500});
    return Next();
  }

 private:
  ike::Bytes Next() {
    std::vector<ike::OutboundDatagram> out = engine_->TakeDatagrams();
    EXPECT_THAT(out, SizeIs(1));
    return out.empty() ? ike::Bytes() : out[0].data;
  }
  ike::RandomSourcePtr random_;
  NoSink sink_;
  ike::EnginePtr engine_;
};

// The COOKIE notify of a bare N(COOKIE) response, else nullopt.
std::optional<ike::Bytes> CookieOf(const ike::Bytes& datagram) {
  absl::StatusOr<ike::Message> m = ike::DecodeMessage(datagram);
  if (!m.ok() || !m->header.response || m->header.spi_r != 0 || m->payloads.size() != 1) {
    return std::nullopt;
  }
  const auto* n = std::get_if<ike::NotifyPayload>(&m->payloads[0].body);
  if (n == nullptr || n->type != ike::kNotifyCookie) return std::nullopt;
  return n->data;
}

// `request` with an N(COOKIE) of `cookie` in front.
ike::Bytes WithCookie(const ike::Bytes& request, const ike::Bytes& cookie) {
  absl::StatusOr<ike::Message> m = ike::DecodeMessage(request);
  EXPECT_TRUE(m.ok());
  ike::NotifyPayload n;
  n.type = ike::kNotifyCookie;
  n.data = cookie;
  m->payloads.insert(m->payloads.begin(), ike::Payload{ike::kPayloadNotify, false, n});
  return ike::EncodeMessage(*m);
}

TEST_F(IkeRunnerTest, AboveTheCookieThresholdAnInitWithoutCookieGetsOnlyACookie) {
  options_.admission.cookie_threshold = 0;  // Always.
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  RawPeer peer("127.0.0.1", options_.ike_port);
  ASSERT_TRUE(peer.ok());
  HandInitiator initiator;
  const ike::Bytes request = initiator.Initiate();
  peer.Send(request);
  std::optional<ike::Bytes> answer = peer.Receive();
  ASSERT_TRUE(answer.has_value());
  std::optional<ike::Bytes> cookie = CookieOf(*answer);
  ASSERT_TRUE(cookie.has_value()) << "not a bare N(COOKIE)";
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_sent_total"), 1);
  // No state: nothing half-open, no responder.
  EXPECT_EQ(b->Metric("strait_agent_ike_half_open_sas"), 0);
  EXPECT_EQ(b->Metric("strait_agent_ike_sas", {{"state", "connecting"}}), 0);

  // A forged cookie, and the real one for another SPI: refused, answered
  // with a fresh cookie, still no state.
  peer.Send(WithCookie(request, ike::Bytes(cookie->size(), 0x42)));
  std::optional<ike::Bytes> again = peer.Receive();
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(CookieOf(*again).has_value());
  HandInitiator other;
  peer.Send(WithCookie(other.Initiate(), *cookie));
  ASSERT_TRUE(peer.Receive().has_value());
  EXPECT_TRUE(b->MetricBecomes(2, "strait_agent_ike_cookies_rejected_total"));
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_sent_total"), 3);
  EXPECT_EQ(b->Metric("strait_agent_ike_half_open_sas"), 0);

  // The engine retries with the cookie in front: now node-b does DH.
  const ike::Bytes retry = initiator.Answer(*answer);
  peer.Send(retry);
  std::optional<ike::Bytes> real = peer.Receive();
  ASSERT_TRUE(real.has_value());
  EXPECT_FALSE(CookieOf(*real).has_value());
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_ike_half_open_sas"));
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_ike_sas", {{"state", "connecting"}}));
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_sent_total"), 3);
}

TEST_F(IkeRunnerTest, InitiatorRetriesWithTheCookieAndEstablishes) {
  options_.admission.cookie_threshold = 0;
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  EXPECT_GE(b->Metric("strait_agent_ike_cookies_sent_total"), 1);
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_rejected_total"), 0);
  // Authenticated: no longer half-open.
  EXPECT_TRUE(b->MetricBecomes(0, "strait_agent_ike_half_open_sas"));
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_ike_sas", {{"state", "established"}}));
}

TEST_F(IkeRunnerTest, PerSourceLimitAsksForCookiesThenDrops) {
  options_.admission.per_source_limit = 2;
  options_.admission.max_half_open = 5;
  auto b = NewAgent(kNodeB);
  // Two tunnels to node-b from two addresses of node-a.
  TunnelOptions second;
  second.a = "127.0.0.3";
  second.a_ts = "10.3.0.0/24";
  b->Apply({Tunnel("ab", kNodeB), Tunnel("cb", kNodeB, second)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  RawPeer from_a("127.0.0.1", options_.ike_port);
  // Two get in without a cookie (they might be spoofed)...
  std::vector<std::unique_ptr<HandInitiator>> initiators;
  for (int i = 0; i < 2; ++i) {
    initiators.push_back(std::make_unique<HandInitiator>());
    from_a.Send(initiators.back()->Initiate());
    std::optional<ike::Bytes> answer = from_a.Receive();
    ASSERT_TRUE(answer.has_value());
    EXPECT_FALSE(CookieOf(*answer).has_value());
  }
  EXPECT_TRUE(b->MetricBecomes(2, "strait_agent_ike_half_open_sas"));
  // ...then the source is at its limit: a cookie first, and with it two
  // more get in (these count against the source)...
  for (int i = 0; i < 2; ++i) {
    initiators.push_back(std::make_unique<HandInitiator>());
    from_a.Send(initiators.back()->Initiate());
    std::optional<ike::Bytes> cookie = from_a.Receive();
    ASSERT_TRUE(cookie.has_value() && CookieOf(*cookie).has_value());
    from_a.Send(initiators.back()->Answer(*cookie));
    std::optional<ike::Bytes> answer = from_a.Receive();
    ASSERT_TRUE(answer.has_value());
    EXPECT_FALSE(CookieOf(*answer).has_value());
  }
  EXPECT_TRUE(b->MetricBecomes(4, "strait_agent_ike_half_open_sas"));
  EXPECT_EQ(b->Metric("strait_agent_ike_cookies_sent_total"), 2);
  // ...and a fifth, even with a valid cookie, is dropped.
  HandInitiator fifth;
  from_a.Send(fifth.Initiate());
  std::optional<ike::Bytes> cookie = from_a.Receive();
  ASSERT_TRUE(cookie.has_value() && CookieOf(*cookie).has_value());
  from_a.Send(fifth.Answer(*cookie));
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_ike_dropped_total", {{"reason", "source_limit"}}));
  EXPECT_FALSE(from_a.Receive(absl::Milliseconds(300)).has_value());
  EXPECT_EQ(b->Metric("strait_agent_ike_half_open_sas"), 4);

  // 127.0.0.3 has its own share, until all five slots are taken.
  RawPeer from_c("127.0.0.3", options_.ike_port);
  absl::StatusOr<ike::EngineConfig> config =
      ike::EngineConfigFromSpec(Tunnel("cb", kNodeA, second).spec());
  ASSERT_TRUE(config.ok()) << config.status();
  ike::RandomSourcePtr random = ike::CreateOpenSslRandomSource();
  NoSink sink;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ike::EnginePtr> engine =
        ike::CreateEngine(*config, RealClock::Get(), *random, sink);
    ASSERT_TRUE(engine.ok());
    ASSERT_TRUE((*engine)->Initiate().ok());
    from_c.Send((*engine)->TakeDatagrams()[0].data);
  }
  EXPECT_TRUE(
      b->MetricBecomes(1, "strait_agent_ike_dropped_total", {{"reason", "half_open_limit"}}));
  EXPECT_TRUE(b->MetricBecomes(5, "strait_agent_ike_half_open_sas"));
  // They time out (the sum of the retransmit timeouts, and a second).
  EXPECT_TRUE(b->MetricBecomes(0, "strait_agent_ike_half_open_sas"));
}

TEST_F(IkeRunnerTest, AFullTunnelTakesTheRealPeerWithACookieOverSpoofedRequests) {
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  // Four requests "from node-a" that never go on (spoofed) fill the slots.
  RawPeer spoofed("127.0.0.1", options_.ike_port);
  for (int i = 0; i < 4; ++i) {
    HandInitiator initiator;
    spoofed.Send(initiator.Initiate());
    ASSERT_TRUE(spoofed.Receive().has_value());
  }
  EXPECT_TRUE(b->MetricBecomes(4, "strait_agent_ike_half_open_sas"));
  // The real node-a connects: a cookie, then it replaces a spoofed one and
  // establishes.
  auto a = NewAgent(kNodeA);
  a->Apply({Tunnel("ab", kNodeA)});
  ASSERT_TRUE(a->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED))
      << PhaseName(a->Status("ab"));
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED))
      << PhaseName(b->Status("ab"));
  EXPECT_GE(b->Metric("strait_agent_ike_cookies_sent_total"), 1);
  EXPECT_TRUE(b->MetricBecomes(3, "strait_agent_ike_half_open_sas"));
}

TEST_F(IkeRunnerTest, WrongPskFailsBothEndsWithAuthenticationFailed) {
  TunnelOptions other;
  other.psk = "another ike runner test key 987";
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB, other)});
  a->Apply({Tunnel("ab", kNodeA)});
  for (Agent* agent : {a.get(), b.get()}) {
    ASSERT_TRUE(agent->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_FAILED))
        << PhaseName(agent->Status("ab"));
    EXPECT_EQ(agent->Status("ab").reason(), "AUTHENTICATION_FAILED");
    EXPECT_FALSE(agent->Status("ab").has_ike_sa());
    EXPECT_GE(agent->Metric("strait_agent_ike_auth_failures_total",
                            {{"reason", "AUTHENTICATION_FAILED"}}),
              1);
    EXPECT_THAT(agent->dataplane().Sas(), IsEmpty());
    EXPECT_THAT(agent->dataplane().Calls(), IsEmpty());
  }
  EXPECT_GE(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "AUTHENTICATION_FAILED"}}),
            1);
  EXPECT_GE(b->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "responder"}, {"result", "AUTHENTICATION_FAILED"}}),
            1);
  // The initiator keeps trying, with backoff, and stays FAILED meanwhile.
  ASSERT_TRUE(WaitFor([&] {
    return a->Metric("strait_agent_ike_handshakes_total", {{"role", "initiator"}}) >= 3;
  }));
  EXPECT_EQ(a->Status("ab").phase(), strait::v1::TUNNEL_PHASE_FAILED);
}

TEST_F(IkeRunnerTest, DisjointProposalsFailWithNoProposalChosen) {
  TunnelOptions other;
  other.ike = "aes128gcm16-prfsha256-x25519";
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB, other)});
  a->Apply({Tunnel("ab", kNodeA)});
  for (Agent* agent : {a.get(), b.get()}) {
    ASSERT_TRUE(agent->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_FAILED))
        << PhaseName(agent->Status("ab"));
    EXPECT_EQ(agent->Status("ab").reason(), "NO_PROPOSAL_CHOSEN");
    EXPECT_EQ(agent->Metric("strait_agent_ike_auth_failures_total"), 0);
  }
  EXPECT_GE(b->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "responder"}, {"result", "NO_PROPOSAL_CHOSEN"}}),
            1);
  // Stateless refusals leave no half-open SA behind.
  EXPECT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_sas", {{"state", "connecting"}}) == 0;
  }));
}

TEST_F(IkeRunnerTest, RemovingATunnelRemovesItsSasAndPolicies) {
  TunnelOptions second;
  second.b = "127.0.0.3";
  second.a_ts = "10.3.0.0/24";
  second.b_ts = "10.4.0.0/24";
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("first", kNodeB), Tunnel("second", kNodeB, second)});
  a->Apply({Tunnel("first", kNodeA), Tunnel("second", kNodeA, second)});
  for (const char* name : {"first", "second"}) {
    ASSERT_TRUE(a->WaitForPhase(name, strait::v1::TUNNEL_PHASE_ESTABLISHED)) << name;
  }
  const uint32_t second_in = ParseSpi(a->Status("second").child_sas(0).inbound_spi());
  const uint32_t second_out = ParseSpi(a->Status("second").child_sas(0).outbound_spi());

  a->Apply({Tunnel("second", kNodeA, second)});  // Returns once "first" is gone.
  EXPECT_THAT(Spis(a->dataplane()), UnorderedElementsAre(second_in, second_out));
  for (const dataplane::PolicyConfig& p : a->dataplane().Policies()) {
    EXPECT_EQ(dataplane::FormatAddress(p.direction == Direction::kOut ? p.selector.source
                                                                      : p.selector.destination),
              "10.3.0.0");
  }
  EXPECT_THAT(a->dataplane().Policies(), SizeIs(3));
  EXPECT_EQ(a->Metric("strait_agent_child_sas"), 1);
  EXPECT_EQ(a->Metric("strait_agent_ike_sas", {{"state", "established"}}), 1);
  EXPECT_EQ(a->Status("second").phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);

  a->Apply({});
  EXPECT_THAT(a->dataplane().Sas(), IsEmpty());
  EXPECT_THAT(a->dataplane().Policies(), IsEmpty());
  EXPECT_EQ(a->Metric("strait_agent_child_sas"), 0);
}

TEST_F(IkeRunnerTest, StoppingTakesEverythingOutOfTheDataplane) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  b->runner().Stop();
  EXPECT_THAT(b->dataplane().Sas(), IsEmpty());
  EXPECT_THAT(b->dataplane().Policies(), IsEmpty());
  b->runner().Stop();  // Idempotent.
  b->Apply({});        // Reconcile after Stop does nothing.
}

TEST_F(IkeRunnerTest, PeerRestartReplacesTheOldSa) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  const std::string old_spi = b->Status("ab").ike_sa().responder_spi();
  const std::vector<uint32_t> old_spis = Spis(b->dataplane());

  // node-a restarts: its new IKE_SA_INIT reaches node-b's established tunnel.
  a.reset();
  a = NewAgent(kNodeA);
  a->Apply({Tunnel("ab", kNodeA)});
  ASSERT_TRUE(a->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED));
  ASSERT_TRUE(WaitFor([&] { return b->Status("ab").ike_sa().responder_spi() != old_spi; }));
  EXPECT_EQ(b->Status("ab").phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  EXPECT_EQ(b->Status("ab").ike_sa().initiator_spi(), a->Status("ab").ike_sa().initiator_spi());
  EXPECT_EQ(b->Status("ab").child_sas(0).inbound_spi(),
            a->Status("ab").child_sas(0).outbound_spi());

  // Only the new CHILD SA is left; the policies stayed in place.
  const std::vector<uint32_t> new_spis = Spis(b->dataplane());
  EXPECT_THAT(new_spis, SizeIs(2));
  for (uint32_t spi : old_spis) EXPECT_THAT(new_spis, Not(::testing::Contains(spi)));
  EXPECT_THAT(b->dataplane().Policies(), SizeIs(3));
  for (const std::string& call : b->dataplane().Calls()) {
    EXPECT_THAT(call, Not(::testing::StartsWith("DeletePolicy")));
  }
  EXPECT_EQ(b->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "responder"}, {"result", "success"}}),
            2);
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_ike_sas", {{"state", "established"}}));
  EXPECT_TRUE(b->MetricBecomes(1, "strait_agent_child_sas"));
}

TEST_F(IkeRunnerTest, DataplaneErrorFailsTheAttemptAndTheInitiatorRetries) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  a->dataplane().FailNext("AddSa", absl::UnavailableError("netlink busy"));
  Establish(*a, *b);
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "INTERNAL_ERROR"}}),
            1);
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "success"}}),
            1);
  // node-b established the first attempt too; the retry replaced it.
  ASSERT_TRUE(WaitFor([&] {
    return b->Status("ab").ike_sa().initiator_spi() == a->Status("ab").ike_sa().initiator_spi();
  }));
  EXPECT_THAT(b->dataplane().Sas(), SizeIs(2));
  EXPECT_THAT(a->dataplane().Sas(), SizeIs(2));
}

TEST_F(IkeRunnerTest, SoftExpiryRekeysTheChildSaFromEitherEnd) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  for (Agent* expiring : {a.get(), b.get()}) {
    const TunnelEndStatus before = expiring->Status("ab");
    const std::string local = expiring == a.get() ? "127.0.0.1" : "127.0.0.2";
    dataplane::DataplaneEvent soft;
    soft.kind = dataplane::DataplaneEvent::Kind::kSoftExpire;
    soft.sa = SaId{Ip(local), ParseSpi(before.child_sas(0).inbound_spi())};
    expiring->dataplane().Emit(soft);
    expiring->dataplane().Emit(soft);  // Once is enough.

    // A new CHILD SA under the same IKE SA, mirrored at both ends, and the
    // old one gone from both dataplanes (make before break).
    ASSERT_TRUE(WaitFor([&] {
      const TunnelEndStatus sa = a->Status("ab");
      const TunnelEndStatus sb = b->Status("ab");
      return sa.child_sas_size() == 1 && sb.child_sas_size() == 1 &&
             expiring->Status("ab").child_sas(0).inbound_spi() !=
                 before.child_sas(0).inbound_spi() &&
             sa.child_sas(0).inbound_spi() == sb.child_sas(0).outbound_spi() &&
             sa.child_sas(0).outbound_spi() == sb.child_sas(0).inbound_spi() &&
             a->dataplane().Sas().size() == 2 && b->dataplane().Sas().size() == 2;
    }));
    EXPECT_EQ(expiring->Status("ab").ike_sa().initiator_spi(), before.ike_sa().initiator_spi());
    EXPECT_EQ(expiring->Status("ab").phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
    for (Agent* agent : {a.get(), b.get()}) {
      EXPECT_THAT(agent->dataplane().Policies(), SizeIs(3));
    }
  }
  // No new IKE SA was negotiated.
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "success"}}),
            1);
}

// RFC 7296 §2.8: the end that answers a CHILD SA rekey installs the new
// inbound SA and the policies at once, and the new outbound SA only when
// the initiator's DELETE of the old SA shows that it has the new one; the
// initiator sends on the new SA at once.
TEST_F(IkeRunnerTest, RekeyResponderAddsTheOutboundSaOnTheDelete) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  const TunnelEndStatus before = b->Status("ab");
  dataplane::DataplaneEvent soft;
  soft.kind = dataplane::DataplaneEvent::Kind::kSoftExpire;
  soft.sa = SaId{Ip("127.0.0.1"), ParseSpi(a->Status("ab").child_sas(0).inbound_spi())};
  a->dataplane().Emit(soft);
  ASSERT_TRUE(WaitFor([&] {
    return b->dataplane().Sas().size() == 2 && a->dataplane().Sas().size() == 2 &&
           b->Status("ab").child_sas_size() == 1 &&
           b->Status("ab").child_sas(0).inbound_spi() != before.child_sas(0).inbound_spi();
  }));
  const TunnelEndStatus after = b->Status("ab");
  auto add = [](const std::string& address, const std::string& spi) {
    return absl::StrCat("AddSa ", address, "/0x", spi);
  };
  const std::vector<std::string> calls = b->dataplane().Calls();
  auto index = [&calls](const std::string& call) {
    return std::find(calls.begin(), calls.end(), call) - calls.begin();
  };
  const auto new_in = index(add("127.0.0.2", after.child_sas(0).inbound_spi()));
  const auto new_out = index(add("127.0.0.1", after.child_sas(0).outbound_spi()));
  const auto old_out =
      index(absl::StrCat("DeleteSa 127.0.0.1/0x", before.child_sas(0).outbound_spi()));
  ASSERT_LT(new_in, static_cast<ptrdiff_t>(calls.size()));
  ASSERT_LT(new_out, static_cast<ptrdiff_t>(calls.size()));
  ASSERT_LT(old_out, static_cast<ptrdiff_t>(calls.size()));
  // Inbound SA, policies (the old outbound SA keeps the traffic), then with
  // the DELETE the new outbound SA, then the old SAs go.
  EXPECT_LT(new_in, new_out);
  EXPECT_THAT(std::vector<std::string>(calls.begin() + new_in + 1, calls.begin() + new_out),
              ::testing::Contains(::testing::StartsWith("AddPolicy out")));
  EXPECT_LT(new_out, old_out);
  for (auto i = new_out + 1; i < old_out; ++i) {
    EXPECT_THAT(calls[i], ::testing::StartsWith("GetCounters"));
  }
  // The initiator: both new SAs at once.
  const TunnelEndStatus a_after = a->Status("ab");
  const std::vector<std::string> a_calls = a->dataplane().Calls();
  auto a_in = std::find(a_calls.begin(), a_calls.end(),
                        add("127.0.0.1", a_after.child_sas(0).inbound_spi()));
  ASSERT_NE(a_in, a_calls.end());
  ASSERT_NE(a_in + 1, a_calls.end());
  EXPECT_EQ(*(a_in + 1), add("127.0.0.2", a_after.child_sas(0).outbound_spi()));
  EXPECT_THAT(b->dataplane().Policies(), SizeIs(3));
}

// spec.ike.lifetime rekeys the IKE SA (CREATE_CHILD_SA): both ends move to
// the new SPIs (datagrams for them reach the engine), report them, count
// the rekey, and keep the CHILD SA as it was; a CHILD SA rekey then runs
// over the new IKE SA.
TEST_F(IkeRunnerTest, IkeLifetimeRekeysTheIkeSaAndKeepsTheChildSa) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  TunnelOptions o;
  o.ike_lifetime = absl::Seconds(4);  // Rekeyed after 3.4 to 3.6 s.
  b->Apply({Tunnel("ab", kNodeB, o)});
  a->Apply({Tunnel("ab", kNodeA, o)});
  ASSERT_TRUE(a->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED));
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED));
  const TunnelEndStatus before = a->Status("ab");
  ASSERT_EQ(before.child_sas_size(), 1);
  auto rekeys = [](Agent& agent, const char* role) {
    return agent.Metric("strait_agent_ike_rekeys_total",
                        {{"kind", "ike"}, {"role", role}, {"result", "success"}});
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        const TunnelEndStatus sa = a->Status("ab");
        const TunnelEndStatus sb = b->Status("ab");
        return sa.ike_sa().initiator_spi() != before.ike_sa().initiator_spi() &&
               sa.ike_sa().initiator_spi() == sb.ike_sa().initiator_spi() &&
               sa.ike_sa().responder_spi() == sb.ike_sa().responder_spi() &&
               rekeys(*a, "initiator") + rekeys(*b, "initiator") >= 1 &&
               rekeys(*a, "responder") + rekeys(*b, "responder") >= 1;
      },
      absl::Seconds(30)))
      << PhaseName(a->Status("ab")) << " / " << PhaseName(b->Status("ab"));
  const TunnelEndStatus after = a->Status("ab");
  EXPECT_EQ(after.phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  EXPECT_NE(after.ike_sa().responder_spi(), before.ike_sa().responder_spi());
  EXPECT_THAT(after.message(), ::testing::HasSubstr(after.ike_sa().initiator_spi()));
  // The CHILD SA is the one from IKE_AUTH, still in the dataplane.
  ASSERT_EQ(after.child_sas_size(), 1);
  EXPECT_EQ(after.child_sas(0).inbound_spi(), before.child_sas(0).inbound_spi());
  EXPECT_EQ(after.child_sas(0).outbound_spi(), before.child_sas(0).outbound_spi());
  EXPECT_THAT(a->dataplane().Sas(), SizeIs(2));
  EXPECT_THAT(a->dataplane().Policies(), SizeIs(3));
  // No new IKE SA was negotiated, and nothing was dropped.
  EXPECT_EQ(a->Metric("strait_agent_ike_handshakes_total",
                      {{"role", "initiator"}, {"result", "success"}}),
            1);
  EXPECT_EQ(a->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}), 0);
  EXPECT_EQ(b->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}), 0);
  // A CHILD SA rekey over the new IKE SA.
  dataplane::DataplaneEvent soft;
  soft.kind = dataplane::DataplaneEvent::Kind::kSoftExpire;
  soft.sa = SaId{Ip("127.0.0.1"), ParseSpi(after.child_sas(0).inbound_spi())};
  a->dataplane().Emit(soft);
  ASSERT_TRUE(WaitFor([&] {
    const TunnelEndStatus sa = a->Status("ab");
    const TunnelEndStatus sb = b->Status("ab");
    return sa.child_sas_size() == 1 && sb.child_sas_size() == 1 &&
           sa.child_sas(0).inbound_spi() != before.child_sas(0).inbound_spi() &&
           sa.child_sas(0).inbound_spi() == sb.child_sas(0).outbound_spi() &&
           a->dataplane().Sas().size() == 2 && b->dataplane().Sas().size() == 2;
  }));
  EXPECT_EQ(a->Status("ab").phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
}

// The agent reads SA counters every 2 s; what an SA carried after the last
// read must still reach the tunnel's totals when a rekey removes it (with
// rekeys every few seconds under a TCP stream, a third of the bytes went
// missing from strait_agent_tunnel_esp_bytes_total).
TEST_F(IkeRunnerTest, RekeyedSaCountersReachTheTunnelTotals) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  const TunnelEndStatus before = a->Status("ab");
  const SaId inbound{Ip("127.0.0.1"), ParseSpi(before.child_sas(0).inbound_spi())};
  const SaId outbound{Ip("127.0.0.2"), ParseSpi(before.child_sas(0).outbound_spi())};
  dataplane::SaCounters in;
  in.bytes = 123456;
  in.packets = 100;
  dataplane::SaCounters out;
  out.bytes = 654321;
  out.packets = 500;
  a->dataplane().SetCounters(inbound, in);
  a->dataplane().SetCounters(outbound, out);
  dataplane::DataplaneEvent soft;
  soft.kind = dataplane::DataplaneEvent::Kind::kSoftExpire;
  soft.sa = inbound;
  a->dataplane().Emit(soft);
  // The old SA leaves A's dataplane; no poll can read it after that.
  ASSERT_TRUE(WaitFor([&] {
    const std::vector<uint32_t> spis = Spis(a->dataplane());
    return spis.size() == 2 && std::find(spis.begin(), spis.end(), inbound.spi) == spis.end();
  }));
  EXPECT_TRUE(a->MetricBecomes(123456, "strait_agent_tunnel_esp_bytes_total",
                               {{"tunnel", "ab"}, {"direction", "in"}}));
  EXPECT_TRUE(a->MetricBecomes(654321, "strait_agent_tunnel_esp_bytes_total",
                               {{"tunnel", "ab"}, {"direction", "out"}}));
  EXPECT_TRUE(a->MetricBecomes(500, "strait_agent_tunnel_esp_packets_total",
                               {{"tunnel", "ab"}, {"direction", "out"}}));
}

TEST_F(IkeRunnerTest, HardExpiryKeepsThePoliciesAndReconnects) {
  auto a = NewAgent(kNodeA);
  auto b = NewAgent(kNodeB);
  Establish(*a, *b);
  const TunnelEndStatus before = a->Status("ab");
  dataplane::DataplaneEvent hard;
  hard.kind = dataplane::DataplaneEvent::Kind::kHardExpire;
  hard.sa = SaId{Ip("127.0.0.2"), ParseSpi(before.child_sas(0).outbound_spi())};
  a->dataplane().Emit(hard);
  ASSERT_TRUE(WaitFor([&] {
    const TunnelEndStatus now = a->Status("ab");
    return now.phase() == strait::v1::TUNNEL_PHASE_ESTABLISHED &&
           now.ike_sa().initiator_spi() != before.ike_sa().initiator_spi();
  }));
  for (const std::string& call : a->dataplane().Calls()) {
    EXPECT_THAT(call, Not(::testing::StartsWith("DeletePolicy")));
  }
  EXPECT_THAT(a->dataplane().Sas(), SizeIs(2));
}

TEST_F(IkeRunnerTest, UnusableLocalConfigurationIsAnError) {
  auto a = NewAgent(kNodeA);
  TunnelOptions absent;
  absent.a = "192.0.2.1";  // Not an address of this host.
  TunnelOptions unsupported;
  unsupported.a_ts = "10.5.0.0/24";
  unsupported.b_ts = "10.6.0.0/24";
  unsupported.esp = "chacha20poly1305";  // Valid intent, not in the engine.
  a->Apply({Tunnel("absent", kNodeA, absent), Tunnel("unsupported", kNodeA, unsupported)});
  ASSERT_TRUE(a->WaitForPhase("absent", strait::v1::TUNNEL_PHASE_ERROR));
  EXPECT_EQ(a->Status("absent").reason(), kSocketErrorReason);
  EXPECT_THAT(a->Status("absent").message(), ::testing::HasSubstr("192.0.2.1"));
  ASSERT_TRUE(a->WaitForPhase("unsupported", strait::v1::TUNNEL_PHASE_ERROR));
  EXPECT_EQ(a->Status("unsupported").reason(), kInvalidConfigReason);
}

TEST_F(IkeRunnerTest, OnePeerAddressPairPerTunnel) {
  TunnelOptions again;
  again.a_ts = "10.7.0.0/24";
  again.b_ts = "10.8.0.0/24";
  auto a = NewAgent(kNodeA);
  a->Apply({Tunnel("ab", kNodeA), Tunnel("ab-again", kNodeA, again)});
  ASSERT_TRUE(a->WaitForPhase("ab-again", strait::v1::TUNNEL_PHASE_ERROR));
  EXPECT_EQ(a->Status("ab-again").reason(), kPeerAddressInUseReason);
  EXPECT_EQ(a->Status("ab").phase(), strait::v1::TUNNEL_PHASE_CONNECTING);

  a->Apply({Tunnel("ab-again", kNodeA, again)});
  EXPECT_EQ(a->Status("ab-again").phase(), strait::v1::TUNNEL_PHASE_CONNECTING);
}

TEST_F(IkeRunnerTest, Ipv6SocketsReceiveAndDispatch) {
  const int probe = BindUdp("::1", options_.ike_port);
  if (probe < 0) GTEST_SKIP() << "no IPv6 loopback";
  close(probe);
  TunnelOptions v6;
  v6.a = "2001:db8::1";
  v6.b = "::1";
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB, v6)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING))
      << PhaseName(b->Status("ab"));
  SendFrom("::1", "::1", options_.ike_port, IkeHeader(0x5555));
  ASSERT_TRUE(WaitFor([&] {
    return b->Metric("strait_agent_ike_dropped_total", {{"reason", "no_tunnel"}}) == 1;
  }));
  EXPECT_EQ(b->Metric("strait_agent_ike_messages_total",
                      {{"exchange", "IKE_SA_INIT"}, {"direction", "in"}}),
            1);
}

// Records the CHILD SA the engine installs.
class LastChildSink : public ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const ike::ChildSa& sa) override {
    child = sa;
    return absl::OkStatus();
  }
  absl::Status RemoveChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }
  std::optional<ike::ChildSa> child;
};

// node-a's end of "ab" as an initiator engine driven by hand over one of
// the test's sockets, so that the test can change the source port or
// address under it, as a NAT would. node-b sees it behind a NAT (forced
// encapsulation); a DPD probe every second gives it something to send.
class HandDrivenPeer {
 public:
  static absl::StatusOr<std::unique_ptr<HandDrivenPeer>> Create(const IkeRunnerOptions& options) {
    absl::StatusOr<ike::EngineConfig> config =
        ike::EngineConfigFromSpec(Tunnel("ab", kNodeA).spec());
    if (!config.ok()) return config.status();
    config->local.port = 0;
    config->remote.port = options.ike_port;
    config->nat_t_port = options.nat_t_port;
    config->force_encapsulation = true;
    config->dpd_interval = absl::Seconds(1);
    auto peer = absl::WrapUnique(new HandDrivenPeer(options.nat_t_port));
    absl::StatusOr<ike::EnginePtr> engine =
        ike::CreateEngine(*config, RealClock::Get(), *peer->random_, peer->sink_);
    if (!engine.ok()) return engine.status();
    peer->engine_ = *std::move(engine);
    return peer;
  }

  ike::Engine& engine() { return *engine_; }
  // The newest CHILD SA the engine installed.
  const std::optional<ike::ChildSa>& child() const { return sink_.child; }

  // Sends the engine's output from `fd` and feeds it what `fd` receives,
  // until `done` or `timeout`.
  bool Pump(int fd, const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until) {
      engine_->Tick(absl::Now());
      for (const ike::OutboundDatagram& d : engine_->TakeDatagrams()) {
        std::vector<uint8_t> out;
        if (d.to.port == nat_t_ && !d.keepalive) out.assign(4, 0);  // Non-ESP marker.
        out.insert(out.end(), d.data.begin(), d.data.end());
        sockaddr_storage ss;
        const socklen_t len = ike::ToSockaddr(d.to, &ss);
        sendto(fd, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
      }
      if (done()) return true;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      std::vector<uint8_t> in(65536);
      sockaddr_storage from{};
      socklen_t from_len = sizeof(from);
      const ssize_t n =
          recvfrom(fd, in.data(), in.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
      ike::Endpoint e;
      if (n <= 0 || !ike::FromSockaddr(from, &e)) continue;
      in.resize(static_cast<size_t>(n));
      if (e.port == nat_t_ && in.size() >= 4) in.erase(in.begin(), in.begin() + 4);
      engine_->HandleDatagram(in, e);
    }
    return done();
  }

 private:
  explicit HandDrivenPeer(uint16_t nat_t_port)
      : random_(ike::CreateOpenSslRandomSource()), nat_t_(nat_t_port) {}

  ike::RandomSourcePtr random_;
  LastChildSink sink_;
  ike::EnginePtr engine_;  // After the sink, which it uses.
  const uint16_t nat_t_;
};

// RFC 7296 §2.23: a peer behind a NAT whose mapping moves (here its port)
// keeps its tunnel: the next authenticated message from the new port moves
// the installed SAs' UDP encapsulation there, in place.
TEST_F(IkeRunnerTest, InstalledSasFollowThePeersNatMapping) {
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  absl::StatusOr<std::unique_ptr<HandDrivenPeer>> created = HandDrivenPeer::Create(options_);
  ASSERT_TRUE(created.ok()) << created.status();
  HandDrivenPeer& peer = **created;
  ike::Engine& engine = peer.engine();

  uint16_t first_port = 0, second_port = 0;
  const int first = *ike::BindUdpSocket(ike::Endpoint{Ip("127.0.0.1"), 0}, &first_port);
  const int second = *ike::BindUdpSocket(ike::Endpoint{Ip("127.0.0.1"), 0}, &second_port);
  ASSERT_TRUE(engine.Initiate().ok());
  ASSERT_TRUE(peer.Pump(first, [&] { return peer.child().has_value(); }));
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED));
  const SaId outbound{Ip("127.0.0.1"), peer.child()->inbound_spi};
  const SaId inbound{Ip("127.0.0.2"), peer.child()->outbound_spi};
  std::optional<SaConfig> out = b->dataplane().GetSa(outbound);
  ASSERT_TRUE(out.has_value());
  ASSERT_TRUE(out->encapsulation.has_value());
  EXPECT_EQ(out->encapsulation->destination_port, first_port);
  EXPECT_EQ(b->Metric("strait_agent_ike_nat_mapping_changes_total"), 0);

  // The NAT rebinds: the next DPD probe comes from another port.
  ASSERT_TRUE(peer.Pump(second, [&] {
    return b->Metric("strait_agent_ike_nat_mapping_changes_total") == 1 &&
           engine.counters().dpd_probes_sent > 0;
  }));
  out = b->dataplane().GetSa(outbound);
  ASSERT_TRUE(out.has_value());  // The same SA, moved.
  EXPECT_EQ(out->encapsulation->destination_port, second_port);
  std::optional<SaConfig> in = b->dataplane().GetSa(inbound);
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->encapsulation.has_value());
  EXPECT_EQ(in->encapsulation->source_port, second_port);
  EXPECT_THAT(b->dataplane().Sas(), SizeIs(2));
  EXPECT_EQ(b->Status("ab").phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  close(first);
  close(second);
}

// The NAT in front of node-a changes its public address: the SAs move to
// it, and a CHILD SA made later (a rekey) goes there too, not to the
// tunnel's configured address.
TEST_F(IkeRunnerTest, SasFollowThePeersNewAddressAcrossARekey) {
  auto b = NewAgent(kNodeB);
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING));
  absl::StatusOr<std::unique_ptr<HandDrivenPeer>> created = HandDrivenPeer::Create(options_);
  ASSERT_TRUE(created.ok()) << created.status();
  HandDrivenPeer& peer = **created;
  ike::Engine& engine = peer.engine();
  uint16_t port = 0;
  const int first = *ike::BindUdpSocket(ike::Endpoint{Ip("127.0.0.1"), 0}, &port);
  const int moved = *ike::BindUdpSocket(ike::Endpoint{Ip("127.0.0.3"), 0}, &port);
  ASSERT_TRUE(engine.Initiate().ok());
  ASSERT_TRUE(peer.Pump(first, [&] { return peer.child().has_value(); }));
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_ESTABLISHED));
  const uint32_t first_spi = peer.child()->inbound_spi;
  ASSERT_TRUE(b->dataplane().GetSa(SaId{Ip("127.0.0.1"), first_spi}).has_value());

  // A DPD probe from the new address moves the SA there.
  ASSERT_TRUE(peer.Pump(
      moved, [&] { return b->Metric("strait_agent_ike_nat_mapping_changes_total") == 1; }));
  EXPECT_FALSE(b->dataplane().GetSa(SaId{Ip("127.0.0.1"), first_spi}).has_value());
  ASSERT_TRUE(b->dataplane().GetSa(SaId{Ip("127.0.0.3"), first_spi}).has_value());

  // node-a rekeys: the new outbound SA goes to the new address.
  ASSERT_TRUE(engine.RekeyChild().ok());
  ASSERT_TRUE(peer.Pump(moved, [&] {
    return peer.child()->inbound_spi != first_spi &&
           b->dataplane().GetSa(SaId{Ip("127.0.0.3"), peer.child()->inbound_spi}).has_value();
  })) << "no outbound SA to 127.0.0.3 for the rekeyed CHILD SA";
  EXPECT_FALSE(b->dataplane().GetSa(SaId{Ip("127.0.0.1"), peer.child()->inbound_spi}).has_value());
  close(first);
  close(moved);
}

// ESP in UDP arrives on the runner's thread. While the handler is busy
// (decrypting, or descheduled on a busy machine) the NAT-T socket must hold
// a burst: with the default receive buffer (rmem_default, about 200 KiB, or
// some 90 full-size datagrams) a single TCP stream through the userspace
// dataplane lost tens of thousands of datagrams in a few seconds.
TEST_F(IkeRunnerTest, NatTSocketHoldsAnEspBurstWhileTheHandlerIsBusy) {
  // The runner asks for 4 MiB; this test needs what 600 datagrams take.
  constexpr int kDatagrams = 600;
  constexpr size_t kSize = 1400;
  {
    const int probe = BindUdp("127.0.0.1");
    ASSERT_GE(probe, 0);
    const int want = 4 << 20;
    if (setsockopt(probe, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) != 0) {
      setsockopt(probe, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    }
    int got = 0;
    socklen_t len = sizeof(got);
    getsockopt(probe, SOL_SOCKET, SO_RCVBUF, &got, &len);
    close(probe);
    if (got < (3 << 20)) GTEST_SKIP() << "no CAP_NET_ADMIN and net.core.rmem_max is " << got / 2;
  }
  absl::Notification first_seen;
  absl::Notification release;
  std::atomic<int> received{0};
  options_.esp_handler = [&](absl::Span<const uint8_t>, const ike::Endpoint&, const ike::Bytes&) {
    if (received.fetch_add(1) == 0) {
      first_seen.Notify();
      release.WaitForNotification();
    }
  };
  auto b = NewAgent(kNodeB);
  // Whatever fails below, the loop thread gets out of the handler before
  // the runner stops.
  struct Release {
    absl::Notification& n;
    ~Release() {
      if (!n.HasBeenNotified()) n.Notify();
    }
  } release_on_exit{release};
  b->Apply({Tunnel("ab", kNodeB)});
  ASSERT_TRUE(b->WaitForPhase("ab", strait::v1::TUNNEL_PHASE_CONNECTING))
      << PhaseName(b->Status("ab"));

  const int fd = BindUdp("127.0.0.1");
  ASSERT_GE(fd, 0);
  sockaddr_storage ss;
  const socklen_t len = ike::ToSockaddr(ike::Endpoint{Ip("127.0.0.2"), options_.nat_t_port}, &ss);
  std::vector<uint8_t> esp(kSize, 0xab);  // A non-zero SPI: ESP, not IKE.
  auto send = [&] {
    return sendto(fd, esp.data(), esp.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) ==
           static_cast<ssize_t>(esp.size());
  };
  ASSERT_TRUE(send());
  ASSERT_TRUE(first_seen.WaitForNotificationWithTimeout(absl::Seconds(20)));
  // The loop thread is now held in the handler: everything else waits in
  // the socket.
  int sent = 1;
  while (sent < kDatagrams && send()) ++sent;
  release.Notify();
  close(fd);
  ASSERT_EQ(sent, kDatagrams);
  EXPECT_TRUE(WaitFor([&] { return received.load() == kDatagrams; }, absl::Seconds(10)))
      << received.load() << " of " << kDatagrams << " datagrams reached the handler";
}

}  // namespace
}  // namespace strait::agent
