#include "agent/ike/udp_io.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "agent/ike/cookie_impl.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/engine_proposal.h"
#include "common/clock.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

class RecordingSink : public ChildSaSink {
 public:
  absl::Status RemoveChildSa(const ChildSa&) override { return absl::OkStatus(); }
  absl::Status InstallChildSa(const ChildSa& sa) override {
    spis.push_back(sa.inbound_spi);
    return absl::OkStatus();
  }
  std::vector<uint32_t> spis;
};

TrafficSelectorRange Host(const Bytes& a) {
  TrafficSelectorRange r;
  r.start_address = a;
  r.end_address = a;
  return r;
}

EngineConfig Config(const Endpoint& local, const Endpoint& remote, const std::string& psk) {
  EngineConfig c;
  c.local = local;
  c.remote = remote;
  c.local_id = Identity{local.address.size() == 4 ? IdentityType::kIpv4 : IdentityType::kIpv6,
                        local.address};
  c.remote_id = Identity{remote.address.size() == 4 ? IdentityType::kIpv4 : IdentityType::kIpv6,
                         remote.address};
  c.psk = Secret(psk);
  c.ike_proposals =
      *ParseAlgorithmProposals("aes128gcm16-prfsha256-x25519", intent::ProposalKind::kIke);
  c.esp_proposals = *ParseAlgorithmProposals("aes128gcm16", intent::ProposalKind::kEsp);
  c.local_ts = {Host(local.address)};
  c.remote_ts = {Host(remote.address)};
  c.retransmit_timeouts = {absl::Milliseconds(200), absl::Milliseconds(400), absl::Seconds(1)};
  return c;
}

class UdpIoTest : public ::testing::TestWithParam<std::string> {};

TEST_P(UdpIoTest, TwoEnginesEstablishOverLoopback) {
  const Bytes loopback = *ParseIpAddress(GetParam());
  // The engines' config needs both ports, so bind both sockets first.
  auto io_a = UdpIo::Create(Endpoint{loopback, 0});
  auto io_b = UdpIo::Create(Endpoint{loopback, 0});
  ASSERT_TRUE(io_a.ok()) << io_a.status();
  ASSERT_TRUE(io_b.ok()) << io_b.status();
  // Both ends share the loopback address; the ports tell them apart.
  const Endpoint a{loopback, (*io_a)->port()};
  const Endpoint b{loopback, (*io_b)->port()};

  Clock& clock = RealClock::Get();
  RandomSourcePtr random_a = CreateOpenSslRandomSource();
  RandomSourcePtr random_b = CreateOpenSslRandomSource();
  RecordingSink sink_a, sink_b;
  auto engine_a = CreateEngine(Config(a, b, "secret"), clock, *random_a, sink_a);
  auto engine_b = CreateEngine(Config(b, a, "secret"), clock, *random_b, sink_b);
  ASSERT_TRUE(engine_a.ok()) << engine_a.status();
  ASSERT_TRUE(engine_b.ok()) << engine_b.status();

  const absl::Time until = clock.Now() + absl::Seconds(10);
  auto done = [](Engine& e) {
    return e.state() == Engine::State::kEstablished || e.state() == Engine::State::kFailed;
  };
  std::thread responder([&] {
    EXPECT_TRUE((*io_b)->Run(**engine_b, clock, until, [&] { return done(**engine_b); }).ok());
  });
  ASSERT_TRUE((*engine_a)->Initiate().ok());
  EXPECT_TRUE((*io_a)->Run(**engine_a, clock, until, [&] { return done(**engine_a); }).ok());
  responder.join();

  EXPECT_EQ((*engine_a)->state(), Engine::State::kEstablished);
  EXPECT_EQ((*engine_b)->state(), Engine::State::kEstablished);
  ASSERT_EQ(sink_a.spis.size(), 1u);
  ASSERT_EQ(sink_b.spis.size(), 1u);
  EXPECT_EQ((*io_a)->counters().sent, 2u);
  EXPECT_EQ((*io_b)->counters().sent, 2u);
}

TEST_P(UdpIoTest, ResponderWithCookiesMakesTheInitiatorRetryAndEstablishes) {
  const Bytes loopback = *ParseIpAddress(GetParam());
  auto io_a = UdpIo::Create(Endpoint{loopback, 0});
  auto io_b = UdpIo::Create(Endpoint{loopback, 0});
  ASSERT_TRUE(io_a.ok()) << io_a.status();
  ASSERT_TRUE(io_b.ok()) << io_b.status();
  const Endpoint a{loopback, (*io_a)->port()};
  const Endpoint b{loopback, (*io_b)->port()};
  Clock& clock = RealClock::Get();
  RandomSourcePtr random_a = CreateOpenSslRandomSource();
  RandomSourcePtr random_b = CreateOpenSslRandomSource();
  RecordingSink sink_a, sink_b;
  auto engine_a = CreateEngine(Config(a, b, "secret"), clock, *random_a, sink_a);
  auto engine_b = CreateEngine(Config(b, a, "secret"), clock, *random_b, sink_b);
  ASSERT_TRUE(engine_a.ok()) << engine_a.status();
  ASSERT_TRUE(engine_b.ok()) << engine_b.status();
  CookieGeneratorPtr cookies = CreateCookieGenerator(clock, *random_b);
  uint64_t cookies_sent = 0;
  (*io_b)->SetFilter(ResponderCookieFilter(*cookies, **engine_b, loopback, &cookies_sent));

  const absl::Time until = clock.Now() + absl::Seconds(10);
  auto done = [](Engine& e) {
    return e.state() == Engine::State::kEstablished || e.state() == Engine::State::kFailed;
  };
  std::thread responder([&] {
    EXPECT_TRUE((*io_b)->Run(**engine_b, clock, until, [&] { return done(**engine_b); }).ok());
  });
  ASSERT_TRUE((*engine_a)->Initiate().ok());
  EXPECT_TRUE((*io_a)->Run(**engine_a, clock, until, [&] { return done(**engine_a); }).ok());
  responder.join();

  EXPECT_EQ((*engine_a)->state(), Engine::State::kEstablished);
  EXPECT_EQ((*engine_b)->state(), Engine::State::kEstablished);
  EXPECT_EQ(cookies_sent, 1u);
  EXPECT_EQ((*io_b)->counters().filtered, 1u);
  // IKE_SA_INIT, again with the cookie, IKE_AUTH; and the answers.
  EXPECT_EQ((*io_a)->counters().sent, 3u);
  EXPECT_EQ((*io_b)->counters().sent, 3u);
}

TEST_P(UdpIoTest, GarbageIsDroppedAndTheLoopCarriesOn) {
  const Bytes loopback = *ParseIpAddress(GetParam());
  auto io = UdpIo::Create(Endpoint{loopback, 0});
  ASSERT_TRUE(io.ok()) << io.status();
  const Endpoint local{loopback, (*io)->port()};
  Clock& clock = RealClock::Get();
  RandomSourcePtr random = CreateOpenSslRandomSource();
  RecordingSink sink;
  auto engine = CreateEngine(Config(local, Endpoint{loopback, 9}, "secret"), clock, *random, sink);
  ASSERT_TRUE(engine.ok()) << engine.status();

  const int family = loopback.size() == 4 ? AF_INET : AF_INET6;
  const int fd = socket(family, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(local.port);
    memcpy(&sin->sin_addr, loopback.data(), 4);
    len = sizeof(*sin);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(local.port);
    memcpy(&sin6->sin6_addr, loopback.data(), 16);
    len = sizeof(*sin6);
  }
  const std::vector<std::string> junk = {"", "x", std::string(28, '\0'), std::string(9000, 'A')};
  for (const std::string& j : junk) {
    ASSERT_EQ(sendto(fd, j.data(), j.size(), 0, reinterpret_cast<sockaddr*>(&ss), len),
              static_cast<ssize_t>(j.size()));
  }
  close(fd);
  const absl::Time until = clock.Now() + absl::Milliseconds(300);
  EXPECT_TRUE((*io)->Run(**engine, clock, until, [] { return false; }).ok());
  EXPECT_EQ((*io)->counters().received, junk.size());
  EXPECT_EQ((*engine)->counters().datagrams_received, junk.size());
  EXPECT_EQ((*engine)->state(), Engine::State::kIdle);
}

TEST(UdpIoCreateTest, BindErrorsAreStatuses) {
  // 192.0.2.1 (TEST-NET-1) is not an address of this host.
  auto io = UdpIo::Create(Endpoint{*ParseIpAddress("192.0.2.1"), 0});
  EXPECT_FALSE(io.ok());
  EXPECT_FALSE(UdpIo::Create(Endpoint{Bytes{1, 2, 3}, 0}).ok());
  EXPECT_FALSE(ParseIpAddress("not-an-ip").ok());
  EXPECT_EQ(FormatIpAddress(*ParseIpAddress("2001:db8::1")), "2001:db8::1");
}

// A peer that floated to the NAT-T port gets its responses there (RFC 7296
// §2.11), although the responder's config names port 500.
TEST(EngineReplyTest, ResponsesGoToTheRequestSource) {
  const Bytes a_addr = *ParseIpAddress("192.0.2.2");
  const Bytes b_addr = *ParseIpAddress("192.0.2.1");
  FakeClock clock;
  RandomSourcePtr random_a = CreateOpenSslRandomSource();
  RandomSourcePtr random_b = CreateOpenSslRandomSource();
  RecordingSink sink_a, sink_b;
  auto a = CreateEngine(Config({a_addr, 500}, {b_addr, 500}, "k"), clock, *random_a, sink_a);
  auto b = CreateEngine(Config({b_addr, 500}, {a_addr, 500}, "k"), clock, *random_b, sink_b);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Initiate().ok());
  for (int round = 0; round < 2; ++round) {
    std::vector<OutboundDatagram> requests = (*a)->TakeDatagrams();
    ASSERT_EQ(requests.size(), 1u);
    // Delivered as if sent from the initiator's NAT-T port.
    (*b)->HandleDatagram(requests[0].data, Endpoint{a_addr, 4500});
    std::vector<OutboundDatagram> responses = (*b)->TakeDatagrams();
    ASSERT_EQ(responses.size(), 1u);
    EXPECT_EQ(responses[0].to.port, 4500);
    (*a)->HandleDatagram(responses[0].data, Endpoint{b_addr, 500});
  }
  EXPECT_EQ((*a)->state(), Engine::State::kEstablished);
  EXPECT_EQ((*b)->state(), Engine::State::kEstablished);
}

INSTANTIATE_TEST_SUITE_P(Families, UdpIoTest, ::testing::Values("127.0.0.1", "::1"));

}  // namespace
}  // namespace strait::ike
