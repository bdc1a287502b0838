// Two userspace ESP ends in two network namespaces joined by a veth pair:
// each with a real TUN device, its routes, and ESP-in-UDP on port 4500.
// ICMP (IPv4 and IPv6, small, full-size and fragmented) and a TCP stream
// cross the tunnel; counters and outer packet sizes are checked. Needs
// root, /dev/net/tun and iproute2; skipped otherwise.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "dataplane/testing/netns.h"
#include "dataplane/testing/packets.h"
#include "dataplane/tun_device.h"
#include "dataplane/udp_esp_socket.h"
#include "dataplane/userspace_dataplane.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using testing::Bytes;
using testing::Ip;
using testing::Netns;
using testing::Sel;

constexpr uint32_t kAtoB = 0xa0000001;
constexpr uint32_t kBtoA = 0xb0000002;
constexpr uint32_t kReqid = 1;
constexpr int kTunMtu = 1390;  // InnerMtuForPath(1500, true).

// Forwards to the real socket and remembers the largest datagram.
class MeasuringSocket : public DatagramSocket {
 public:
  void set_target(DatagramSocket* target) { target_ = target; }
  size_t largest() const { return largest_.load(); }
  uint64_t count() const { return count_.load(); }

  absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                    const UdpEndpoint& remote) override {
    size_t seen = largest_.load();
    while (payload.size() > seen && !largest_.compare_exchange_weak(seen, payload.size())) {
    }
    count_.fetch_add(1);
    return target_->Send(payload, local, remote);
  }

 private:
  DatagramSocket* target_ = nullptr;
  std::atomic<size_t> largest_{0};
  std::atomic<uint64_t> count_{0};
};

struct End {
  Netns ns;
  std::string outer;
  MeasuringSocket measuring;
  UdpEspSocketPtr socket;
  std::unique_ptr<UserspaceDataplane> dataplane;
  std::string tun_name;
};

SaConfig MakeSa(const std::string& source, const std::string& destination, uint32_t spi,
                uint8_t seed) {
  SaConfig sa;
  sa.source = Ip(source);
  sa.id.destination = Ip(destination);
  sa.id.spi = spi;
  sa.reqid = kReqid;
  sa.encr_id = kEncrAesGcm16;
  sa.key_bits = 256;
  std::string key(36, 0);
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<char>(seed * 13 + i);
  sa.encr_key = Secret(key);
  sa.replay_window = 128;
  sa.encapsulation = UdpEncapsulation{4500, 4500};
  return sa;
}

std::vector<PolicyConfig> Policies(const std::string& local_net, const std::string& remote_net,
                                   const std::string& local_outer,
                                   const std::string& remote_outer) {
  PolicyConfig out;
  out.selector = Sel(local_net, remote_net);
  out.direction = Direction::kOut;
  out.tunnel_source = Ip(local_outer);
  out.tunnel_destination = Ip(remote_outer);
  out.reqid = kReqid;
  PolicyConfig in;
  in.selector = Sel(remote_net, local_net);
  in.direction = Direction::kIn;
  in.tunnel_source = Ip(remote_outer);
  in.tunnel_destination = Ip(local_outer);
  in.reqid = kReqid;
  PolicyConfig fwd = in;
  fwd.direction = Direction::kFwd;
  return {out, in, fwd};
}

uint16_t Checksum(const uint8_t* data, size_t size) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < size; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (size % 2) sum += data[size - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Sends `count` ICMP echo requests of `size` data bytes from the namespace
// to `destination` and counts the replies that come back intact.
int Ping(const Netns& ns, const std::string& destination, size_t size, int count) {
  const Address to = Ip(destination);
  const bool v6 = to.size() == 16;
  int fd = -1;
  ns.Run([&] {
    fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC,
                v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
  });
  if (fd < 0) return -1;
  sockaddr_storage storage{};
  socklen_t storage_size;
  if (v6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&storage);
    sin6->sin6_family = AF_INET6;
    std::memcpy(&sin6->sin6_addr, to.data(), 16);
    storage_size = sizeof(sockaddr_in6);
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&storage);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, to.data(), 4);
    storage_size = sizeof(sockaddr_in);
  }
  const uint16_t id = static_cast<uint16_t>(getpid() ^ size);
  int replies = 0;
  std::vector<uint8_t> buffer(70000);
  for (int seq = 1; seq <= count; ++seq) {
    Bytes request = {static_cast<uint8_t>(v6 ? 128 : 8),
                     0,
                     0,
                     0,
                     static_cast<uint8_t>(id >> 8),
                     static_cast<uint8_t>(id),
                     0,
                     static_cast<uint8_t>(seq)};
    for (size_t i = 0; i < size; ++i) request.push_back(static_cast<uint8_t>(i * seq));
    if (!v6) {  // The kernel fills in the ICMPv6 checksum itself.
      const uint16_t sum = Checksum(request.data(), request.size());
      request[2] = static_cast<uint8_t>(sum >> 8);
      request[3] = static_cast<uint8_t>(sum);
    }
    if (sendto(fd, request.data(), request.size(), 0, reinterpret_cast<sockaddr*>(&storage),
               storage_size) < 0) {
      continue;
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(3);
    while (absl::Now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) continue;
      const size_t header = v6 ? 0 : (buffer[0] & 0x0f) * 4;  // IPv4 raw sockets see the IP header.
      if (static_cast<size_t>(n) < header + 8) continue;
      const uint8_t* icmp = buffer.data() + header;
      const bool echo_reply = icmp[0] == (v6 ? 129 : 0);
      if (!echo_reply || icmp[4] != (id >> 8) || icmp[5] != (id & 0xff) || icmp[7] != seq) {
        continue;
      }
      if (static_cast<size_t>(n) - header == request.size() &&
          std::memcmp(icmp + 8, request.data() + 8, size) == 0) {
        ++replies;
      }
      break;
    }
  }
  close(fd);
  return replies;
}

class UserspaceNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/net/tun";
    }
    if (!a_.ns.valid() || !b_.ns.valid()) GTEST_SKIP() << "cannot create network namespaces";
    if (a_.ns.Shell("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs iproute2";
    a_.outer = "192.0.2.1";
    b_.outer = "192.0.2.2";
    ASSERT_EQ(
        a_.ns.Shell("ip link set lo up && ip addr add 10.1.0.1/32 dev lo && "
                    "ip -6 addr add fd00:1::1/128 dev lo && "
                    "ip link add va type veth peer name vb netns " +
                    b_.ns.path() + " && ip addr add 192.0.2.1/24 dev va && ip link set va up"),
        0);
    ASSERT_EQ(b_.ns.Shell("ip link set lo up && ip addr add 10.2.0.1/32 dev lo && "
                          "ip -6 addr add fd00:2::1/128 dev lo && "
                          "ip addr add 192.0.2.2/24 dev vb && ip link set vb up"),
              0);
    for (End* end : {&a_, &b_}) {
      end->tun_name = end == &a_ ? "strait-a" : "strait-b";
      end->ns.Run([&] {
        TunOptions options;
        options.name = end->tun_name;
        options.mtu = kTunMtu;
        auto tun = TunDevice::Create(options);
        ASSERT_TRUE(tun.ok()) << tun.status();
        auto socket = UdpEspSocket::Create(UdpEndpoint{Ip(end->outer), 4500});
        ASSERT_TRUE(socket.ok()) << socket.status();
        end->socket = std::move(*socket);
        end->measuring.set_target(end->socket.get());
        UserspaceDataplaneOptions dp_options;
        dp_options.routes = tun->get();
        auto dataplane =
            UserspaceDataplane::Create(std::move(*tun), end->measuring, std::move(dp_options));
        ASSERT_TRUE(dataplane.ok()) << dataplane.status();
        end->dataplane = std::move(*dataplane);
      });
      ASSERT_NE(end->dataplane, nullptr);
    }
    for (End* end : {&a_, &b_}) {
      ASSERT_TRUE(end->dataplane->AddSa(MakeSa("192.0.2.1", "192.0.2.2", kAtoB, 1)).ok());
      ASSERT_TRUE(end->dataplane->AddSa(MakeSa("192.0.2.2", "192.0.2.1", kBtoA, 2)).ok());
    }
    for (bool a : {true, false}) {
      End& end = a ? a_ : b_;
      const std::string local4 = a ? "10.1.0.0/24" : "10.2.0.0/24";
      const std::string remote4 = a ? "10.2.0.0/24" : "10.1.0.0/24";
      const std::string local6 = a ? "fd00:1::/64" : "fd00:2::/64";
      const std::string remote6 = a ? "fd00:2::/64" : "fd00:1::/64";
      const std::string me = a ? "192.0.2.1" : "192.0.2.2";
      const std::string peer = a ? "192.0.2.2" : "192.0.2.1";
      auto policies = Policies(local4, remote4, me, peer);
      auto v6 = Policies(local6, remote6, me, peer);
      policies.insert(policies.end(), v6.begin(), v6.end());
      ASSERT_TRUE(end.dataplane->AddPolicies(policies).ok());
    }
    for (End* end : {&a_, &b_}) {
      UserspaceDataplane* dp = end->dataplane.get();
      end->socket->Start(
          [dp](absl::Span<const uint8_t> payload, const UdpEndpoint& from, const Address& local) {
            dp->HandleEspDatagram(payload, from, local);
          });
      dp->Start();
    }
  }

  void TearDown() override {
    for (End* end : {&a_, &b_}) {
      if (end->socket) end->socket->Stop();
      if (end->dataplane) end->dataplane->Stop();
    }
  }

  SaId AtoB() const { return SaId{Ip("192.0.2.2"), kAtoB}; }
  SaId BtoA() const { return SaId{Ip("192.0.2.1"), kBtoA}; }

  End a_;
  End b_;
};

TEST_F(UserspaceNetnsTest, RoutesCarryALocalSource) {
  EXPECT_EQ(a_.ns.Shell("ip route show proto 211 | grep -q '10.2.0.0/24 dev strait-a scope link "
                        "src 10.1.0.1'"),
            0);
  EXPECT_EQ(b_.ns.Shell("ip -6 route show proto 211 | grep -q 'fd00:1::/64 dev strait-b.*src "
                        "fd00:2::1'"),
            0);
}

TEST_F(UserspaceNetnsTest, PingAcrossIpv4AndIpv6) {
  EXPECT_EQ(Ping(a_.ns, "10.2.0.1", 56, 3), 3);
  EXPECT_EQ(Ping(b_.ns, "10.1.0.1", 56, 3), 3);
  EXPECT_EQ(Ping(a_.ns, "fd00:2::1", 56, 3), 3);
  // Full-size (IPv4 header 20 + ICMP 8 + data = the device MTU) and
  // fragmented by the host before the device.
  EXPECT_EQ(Ping(a_.ns, "10.2.0.1", kTunMtu - 28, 2), 2);
  EXPECT_EQ(Ping(a_.ns, "10.2.0.1", 4000, 2), 2);
  EXPECT_EQ(Ping(a_.ns, "fd00:2::1", 3000, 2), 2);

  auto out = a_.dataplane->GetSaStats(AtoB());
  auto in = b_.dataplane->GetSaStats(AtoB());
  ASSERT_TRUE(out.ok() && in.ok());
  EXPECT_GE(out->counters.packets, 3u + 3u + 2u + 2u * 3u + 2u * 3u);
  EXPECT_EQ(in->counters.packets, out->counters.packets);
  EXPECT_EQ(in->counters.bytes, out->counters.bytes);
  EXPECT_EQ(in->counters.integrity_failures, 0u);
  EXPECT_EQ(in->counters.replay_failures, 0u);
  EXPECT_EQ(in->selector_mismatches, 0u);
  auto back = a_.dataplane->GetCounters(BtoA());
  ASSERT_TRUE(back.ok());
  EXPECT_GE(back->packets, out->counters.packets);  // Every request answered.
  // No outer datagram exceeds a 1500-byte IPv4 path.
  EXPECT_LE(a_.measuring.largest() + 20 + 8, 1500u);
  EXPECT_LE(b_.measuring.largest() + 20 + 8, 1500u);
  EXPECT_EQ(a_.socket->counters().send_errors, 0u);
}

TEST_F(UserspaceNetnsTest, FullSizeTcpStream) {
  int listener = -1;
  int client = -1;
  b_.ns.Run([&] { listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
  a_.ns.Run([&] { client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
  ASSERT_GE(listener, 0);
  ASSERT_GE(client, 0);
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(5001);
  inet_pton(AF_INET, "10.2.0.1", &server.sin_addr);
  const int on = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&server), sizeof(server)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  timeval timeout{20, 0};
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));

  constexpr size_t kTotal = 8 << 20;
  std::atomic<size_t> received{0};
  std::atomic<uint64_t> received_hash{0};
  std::thread reader([&] {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 20000) <= 0) return;
    const int conn = accept(listener, nullptr, nullptr);
    if (conn < 0) return;
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    std::vector<uint8_t> buffer(65536);
    uint64_t hash = 1469598103934665603ULL;
    size_t total = 0;
    while (true) {
      const ssize_t n = recv(conn, buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) hash = (hash ^ buffer[i]) * 1099511628211ULL;
      total += n;
    }
    received_hash.store(hash);
    received.store(total);
    close(conn);
  });

  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&server), sizeof(server)), 0)
      << std::strerror(errno);
  // The host derives the MSS from the device MTU: segments fit the tunnel.
  int mss = 0;
  socklen_t mss_size = sizeof(mss);
  ASSERT_EQ(getsockopt(client, IPPROTO_TCP, TCP_MAXSEG, &mss, &mss_size), 0);
  EXPECT_LE(mss, kTunMtu - 40);
  EXPECT_GT(mss, 1200);
  // The route's preferred source put the connection inside the selector.
  sockaddr_in me{};
  socklen_t me_size = sizeof(me);
  getsockname(client, reinterpret_cast<sockaddr*>(&me), &me_size);
  char text[INET_ADDRSTRLEN];
  EXPECT_STREQ(inet_ntop(AF_INET, &me.sin_addr, text, sizeof(text)), "10.1.0.1");

  std::vector<uint8_t> chunk(64 * 1024);
  uint64_t hash = 1469598103934665603ULL;
  const absl::Time start = absl::Now();
  size_t sent = 0;
  while (sent < kTotal) {
    for (size_t i = 0; i < chunk.size(); ++i)
      chunk[i] = static_cast<uint8_t>((sent + i) * 2654435761u >> 13);
    const ssize_t n = send(client, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    for (ssize_t i = 0; i < n; ++i) hash = (hash ^ chunk[i]) * 1099511628211ULL;
    sent += n;  // Content is a function of the offset: partial sends are fine.
  }
  shutdown(client, SHUT_WR);
  reader.join();
  const absl::Duration took = absl::Now() - start;
  close(client);
  close(listener);
  EXPECT_EQ(received.load(), sent);
  EXPECT_EQ(received_hash.load(), hash);
  std::cerr << "TCP through userspace ESP: " << sent / (1 << 20) << " MiB in " << took << " ("
            << static_cast<int>(sent / absl::ToDoubleSeconds(took) / (1 << 20)) << " MiB/s)\n";

  auto in = b_.dataplane->GetSaStats(AtoB());
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->counters.integrity_failures, 0u);
  EXPECT_EQ(in->selector_mismatches, 0u);
  EXPECT_GT(in->counters.bytes, kTotal);
  // Full-size segments, and still no outer datagram above the path MTU.
  EXPECT_GE(a_.measuring.largest() + 28, 1400u);
  EXPECT_LE(a_.measuring.largest() + 28, 1500u);
}

}  // namespace
}  // namespace strait::dataplane
