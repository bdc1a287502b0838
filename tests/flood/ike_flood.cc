// ike_flood: sends well-formed IKE_SA_INIT requests from spoofed IPv4
// source addresses, for the flood test (flood_test.sh). Never for use
// outside a network namespace the caller owns.
//
// Each request is a real initiator engine's first message (SA with the
// given proposals, a KE payload with a valid public value, a nonce), so a
// responder without cookies would have to do Diffie-Hellman for it. The
// requests go out through a raw socket (IPPROTO_RAW: the IP header is
// ours) with random initiator SPIs, from a random source address in
// --spoof-net or, for a --peer-share of them, from --peer (a flood that
// claims to be the real peer, which is what reaches a tunnel). Bounded by
// --count, --duration and --max-rate; SIGTERM ends it early. Prints one line of JSON: packets
// sent, seconds, packets per second.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/tunnel_config.h"
#include "common/clock.h"
#include "common/intent/proposal.h"

ABSL_FLAG(std::string, target, "127.0.0.1", "The responder's IPv4 address.");
ABSL_FLAG(int, port, 500, "The responder's IKE port.");
ABSL_FLAG(std::string, peer, "127.0.0.2",
          "The real peer's IPv4 address, which --peer-share of the requests claim to come from.");
ABSL_FLAG(double, peer_share, 0.5, "Share of requests from --peer (the rest: --spoof-net).");
ABSL_FLAG(std::string, spoof_net, "127.0.0.0/8",
          "IPv4 prefix the other source addresses are from.");
ABSL_FLAG(std::string, ike_proposals, "aes256gcm16-prfsha384-ecp384",
          "The initiators' IKE proposals (strongSwan syntax).");
ABSL_FLAG(int64_t, count, 1000000, "Stop after this many requests.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Stop after this long.");
ABSL_FLAG(int64_t, max_rate, 0, "Requests per second at most; 0: as fast as possible.");
ABSL_FLAG(int, templates, 32, "Distinct requests (engines, key pairs) to draw from.");

namespace {

// A ChildSaSink that is never used: the engines only build a first message.
class NoSink : public strait::ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const strait::ike::ChildSa&) override { return absl::OkStatus(); }
  absl::Status RemoveChildSa(const strait::ike::ChildSa&) override { return absl::OkStatus(); }
};

std::atomic<bool> g_stop{false};
void OnStop(int) { g_stop.store(true); }

int Fail(const std::string& message) {
  std::cerr << "ike_flood: " << message << std::endl;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // SIGTERM/SIGINT end the flood early; the summary is still printed.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnStop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  in_addr target{}, peer{}, net{};
  const std::string spoof = absl::GetFlag(FLAGS_spoof_net);
  const size_t slash = spoof.find('/');
  if (inet_pton(AF_INET, absl::GetFlag(FLAGS_target).c_str(), &target) != 1 ||
      inet_pton(AF_INET, absl::GetFlag(FLAGS_peer).c_str(), &peer) != 1 ||
      slash == std::string::npos || inet_pton(AF_INET, spoof.substr(0, slash).c_str(), &net) != 1) {
    return Fail("--target, --peer and --spoof-net must be IPv4 (--spoof-net as A.B.C.D/N)");
  }
  const int prefix = std::stoi(spoof.substr(slash + 1));
  if (prefix < 1 || prefix > 32) return Fail("--spoof-net prefix length out of range");
  const uint32_t host_mask = prefix == 32 ? 0 : (0xffffffffu >> prefix);

  // The requests, built by real initiator engines.
  strait::ike::EngineConfig config;
  config.local = {std::vector<uint8_t>(4), 500};
  std::memcpy(config.local.address.data(), &peer, 4);
  config.remote = {std::vector<uint8_t>(4), static_cast<uint16_t>(absl::GetFlag(FLAGS_port))};
  std::memcpy(config.remote.address.data(), &target, 4);
  auto ike = strait::ike::ParseProposals(absl::GetFlag(FLAGS_ike_proposals),
                                         strait::intent::ProposalKind::kIke);
  auto esp = strait::ike::ParseProposals("aes256gcm16", strait::intent::ProposalKind::kEsp);
  auto ts = strait::ike::ParseSelectors("10.99.0.0/24");
  if (!ike.ok() || !esp.ok() || !ts.ok()) return Fail("bad --ike-proposals");
  config.ike_proposals = *ike;
  config.esp_proposals = *esp;
  config.local_ts = *ts;
  config.remote_ts = *ts;
  config.local_id = *strait::ike::ParseIdentity("flood.invalid");
  config.remote_id = *strait::ike::ParseIdentity("target.invalid");
  config.psk = strait::Secret("flood, not a secret");
  strait::ike::RandomSourcePtr random = strait::ike::CreateOpenSslRandomSource();
  NoSink sink;
  std::vector<std::vector<uint8_t>> templates;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_templates)); ++i) {
    auto engine = strait::ike::CreateEngine(config, strait::RealClock::Get(), *random, sink);
    if (!engine.ok()) return Fail(std::string(engine.status().message()));
    if (!(*engine)->Initiate().ok()) return Fail("cannot build an IKE_SA_INIT request");
    std::vector<strait::ike::OutboundDatagram> out = (*engine)->TakeDatagrams();
    if (out.size() != 1) return Fail("no IKE_SA_INIT request");
    templates.push_back(out[0].data);
  }

  const int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);  // IP_HDRINCL implied.
  if (fd < 0) return Fail(absl::StrFormat("raw socket: %s (needs root)", strerror(errno)));

  absl::BitGen bitgen;
  const double peer_share = absl::GetFlag(FLAGS_peer_share);
  const int64_t count = absl::GetFlag(FLAGS_count);
  const int64_t max_rate = absl::GetFlag(FLAGS_max_rate);
  const absl::Time start = absl::Now();
  const absl::Time until = start + absl::GetFlag(FLAGS_duration);
  std::vector<uint8_t> packet(65536);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = target;
  int64_t sent = 0, errors = 0, from_peer = 0;
  while (sent < count && !g_stop.load()) {
    if ((sent & 63) == 0) {
      const absl::Time now = absl::Now();
      if (now >= until) break;
      if (max_rate > 0) {
        const absl::Time due = start + absl::Seconds(static_cast<double>(sent) / max_rate);
        if (due > now) absl::SleepFor(due - now);
      }
    }
    const std::vector<uint8_t>& ike_msg =
        templates[absl::Uniform<size_t>(bitgen, 0, templates.size())];
    const size_t ike_len = ike_msg.size();
    auto* ip = reinterpret_cast<iphdr*>(packet.data());
    auto* udp = reinterpret_cast<udphdr*>(packet.data() + sizeof(iphdr));
    uint8_t* payload = packet.data() + sizeof(iphdr) + sizeof(udphdr);
    std::memset(packet.data(), 0, sizeof(iphdr) + sizeof(udphdr));
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(static_cast<uint16_t>(sizeof(iphdr) + sizeof(udphdr) + ike_len));
    ip->daddr = target.s_addr;
    const bool as_peer = absl::Bernoulli(bitgen, peer_share);
    if (as_peer) {
      ip->saddr = peer.s_addr;
      ++from_peer;
    } else {
      const uint32_t host = absl::Uniform<uint32_t>(bitgen) & host_mask;
      ip->saddr = htonl((ntohl(net.s_addr) & ~host_mask) | host);
    }
    // The kernel fills in the IP checksum (and id); UDP checksum 0: none.
    udp->source = htons(as_peer ? 500 : absl::Uniform<uint16_t>(bitgen, 1024, 65535));
    udp->dest = htons(static_cast<uint16_t>(absl::GetFlag(FLAGS_port)));
    udp->len = htons(static_cast<uint16_t>(sizeof(udphdr) + ike_len));
    std::memcpy(payload, ike_msg.data(), ike_len);
    // A fresh initiator SPI for every request: each looks like a new SA.
    const uint64_t spi = absl::Uniform<uint64_t>(bitgen) | 1;
    for (int i = 0; i < 8; ++i) payload[i] = static_cast<uint8_t>(spi >> (56 - 8 * i));
    const size_t len = sizeof(iphdr) + sizeof(udphdr) + ike_len;
    if (sendto(fd, packet.data(), len, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) < 0) {
      ++errors;
      if (errno == ENOBUFS || errno == EAGAIN) absl::SleepFor(absl::Microseconds(50));
      if (errors > 1000000) break;
      continue;
    }
    ++sent;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  close(fd);
  std::cout << absl::StrFormat(
                   "{\"sent\": %d, \"as_peer\": %d, \"send_errors\": %d, \"seconds\": %.3f, "
                   "\"pps\": %.0f, \"bytes_per_request\": %d}",
                   sent, from_peer, errors, seconds, seconds > 0 ? sent / seconds : 0.0,
                   static_cast<int>(templates[0].size()))
            << std::endl;
  return 0;
}
