// Userspace ESP throughput, in process, per algorithm: the codec alone
// (encapsulate, decapsulate) and the whole backend path (policy lookup,
// encapsulation, ESP-in-UDP hand-over, SA lookup, replay window,
// decapsulation, selector check) between two UserspaceDataplanes, one
// thread. Throughput counts inner packet bytes.
//
//   bazel run -c opt //dataplane:esp_bench -- [--seconds=1] [--size=1400]

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "dataplane/esp_codec.h"
#include "dataplane/userspace_dataplane.h"

namespace strait::dataplane {
namespace {

struct Algorithm {
  const char* name;
  uint16_t encr_id;
  int key_bits;
  uint16_t integ_id;
};

constexpr Algorithm kAlgorithms[] = {
    {"aes128gcm16", kEncrAesGcm16, 128, kIntegNone},
    {"aes256gcm16", kEncrAesGcm16, 256, kIntegNone},
    {"aes128-sha256", kEncrAesCbc, 128, kIntegHmacSha256_128},
    {"aes256-sha256", kEncrAesCbc, 256, kIntegHmacSha256_128},
    {"aes256-sha512", kEncrAesCbc, 256, kIntegHmacSha512_256},
};

std::string Key(size_t n, int seed) {
  std::string k(n, 0);
  for (size_t i = 0; i < n; ++i) k[i] = static_cast<char>(seed + 7 * i);
  return k;
}

SaConfig MakeSa(const Algorithm& a, const Address& source, const Address& destination,
                uint32_t spi) {
  SaConfig sa;
  sa.source = source;
  sa.id.destination = destination;
  sa.id.spi = spi;
  sa.reqid = 1;
  sa.encr_id = a.encr_id;
  sa.key_bits = a.key_bits;
  sa.integ_id = a.integ_id;
  const bool gcm = a.encr_id != kEncrAesCbc;
  sa.encr_key = Secret(Key(a.key_bits / 8 + (gcm ? 4 : 0), 1));
  if (!gcm) {
    sa.integ_key = Secret(Key(a.integ_id == kIntegHmacSha256_128   ? 32
                              : a.integ_id == kIntegHmacSha384_192 ? 48
                                                                   : 64,
                              2));
  }
  sa.esn = true;  // No 2^32 limit on a long run.
  sa.replay_window = 1024;
  sa.encapsulation = UdpEncapsulation{};
  return sa;
}

// An IPv4/UDP packet from 10.1.0.1 to 10.2.0.1 of `size` bytes.
std::vector<uint8_t> InnerPacket(size_t size) {
  std::vector<uint8_t> p(size, 0xab);
  p[0] = 0x45;
  p[2] = static_cast<uint8_t>(size >> 8);
  p[3] = static_cast<uint8_t>(size);
  p[8] = 64;
  p[9] = 17;
  const uint8_t src[] = {10, 1, 0, 1};
  const uint8_t dst[] = {10, 2, 0, 1};
  std::copy(src, src + 4, p.begin() + 12);
  std::copy(dst, dst + 4, p.begin() + 16);
  p[20] = 0x13;
  p[21] = 0x88;
  p[22] = 0x13;
  p[23] = 0x89;
  return p;
}

class NullDevice : public PacketDevice {
 public:
  absl::StatusOr<size_t> Read(absl::Span<uint8_t>, absl::Duration) override { return 0; }
  absl::Status Write(absl::Span<const uint8_t> packet) override {
    ++written;
    bytes += packet.size();
    return absl::OkStatus();
  }
  uint64_t written = 0;
  uint64_t bytes = 0;
};

// Hands every datagram straight to the receiving dataplane.
class Wire : public DatagramSocket {
 public:
  absl::Status Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                    const UdpEndpoint& remote) override {
    receiver->HandleEspDatagram(payload, local, remote.address);
    return absl::OkStatus();
  }
  UserspaceDataplane* receiver = nullptr;
};

void Report(const char* algorithm, const char* what, uint64_t packets, size_t size,
            absl::Duration took) {
  const double seconds = absl::ToDoubleSeconds(took);
  std::printf("%-14s %-22s %9.0f MB/s %10.0f pkt/s\n", algorithm, what,
              packets * static_cast<double>(size) / seconds / 1e6, packets / seconds);
}

int Run(absl::Duration duration, size_t size) {
  const std::vector<uint8_t> inner = InnerPacket(size);
  const Address left = {192, 0, 2, 1};
  const Address right = {192, 0, 2, 2};
  std::printf("inner packet %zu bytes, %s per case, one thread\n", size,
              absl::FormatDuration(duration).c_str());
  for (const Algorithm& a : kAlgorithms) {
    const SaConfig sa = MakeSa(a, left, right, 0x1000);
    EspTransform t{sa.encr_id, sa.key_bits, sa.integ_id, sa.encr_key, sa.integ_key};
    auto codec = EspCodec::Create(sa.id.spi, t, true);
    if (!codec.ok()) {
      std::fprintf(stderr, "%s\n", codec.status().ToString().c_str());
      return 1;
    }
    // Encapsulation.
    std::vector<uint8_t> packet;
    std::vector<uint8_t> plain;
    uint64_t seq = 0;
    absl::Time start = absl::Now();
    absl::Time end = start + duration;
    while (absl::Now() < end) {
      for (int i = 0; i < 256; ++i) {
        if (!(*codec)->Encapsulate(++seq, inner, kNextHeaderIpv4, &packet).ok()) return 1;
      }
    }
    Report(a.name, "encapsulate", seq, size, absl::Now() - start);
    // Decapsulation of one packet over and over (no replay window here).
    uint64_t count = 0;
    start = absl::Now();
    end = start + duration;
    while (absl::Now() < end) {
      for (int i = 0; i < 256; ++i) {
        if (!(*codec)->Decapsulate(packet, static_cast<uint32_t>(seq >> 32), &plain).ok()) {
          return 1;
        }
        ++count;
      }
    }
    Report(a.name, "decapsulate", count, size, absl::Now() - start);

    // The whole backend, both ends in this thread.
    Wire wire;
    Wire unused;
    auto device = std::make_unique<NullDevice>();
    NullDevice* sink = device.get();
    auto sender = UserspaceDataplane::Create(std::make_unique<NullDevice>(), wire);
    auto receiver = UserspaceDataplane::Create(std::move(device), unused);
    if (!sender.ok() || !receiver.ok()) return 1;
    wire.receiver = receiver->get();
    PolicyConfig out;
    out.selector.source = {10, 1, 0, 0};
    out.selector.source_prefix = 24;
    out.selector.destination = {10, 2, 0, 0};
    out.selector.destination_prefix = 24;
    out.tunnel_source = left;
    out.tunnel_destination = right;
    out.reqid = 1;
    PolicyConfig in = out;  // The same packets and tunnel, seen arriving.
    in.direction = Direction::kIn;
    if (!(*sender)->AddSa(sa).ok() || !(*receiver)->AddSa(sa).ok() ||
        !(*sender)->AddPolicy(out).ok() || !(*receiver)->AddPolicy(in).ok()) {
      std::fprintf(stderr, "setup failed\n");
      return 1;
    }
    start = absl::Now();
    end = start + duration;
    while (absl::Now() < end) {
      for (int i = 0; i < 256; ++i) (*sender)->HandleInnerPacket(inner);
    }
    const absl::Duration took = absl::Now() - start;
    Report(a.name, "dataplane out+in", sink->written, size, took);
    auto stats = (*receiver)->GetSaStats(sa.id);
    if (!stats.ok() || stats->counters.packets != sink->written) {
      std::fprintf(stderr, "lost packets on the way\n");
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace strait::dataplane

int main(int argc, char** argv) {
  absl::Duration duration = absl::Seconds(1);
  size_t size = 1400;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    double seconds;
    if (absl::StartsWith(arg, "--seconds=") && absl::SimpleAtod(arg.substr(10), &seconds)) {
      duration = absl::Seconds(seconds);
    } else if (absl::StartsWith(arg, "--size=") && absl::SimpleAtoi(arg.substr(7), &size) &&
               size >= 28 && size <= 65535) {
    } else {
      std::fprintf(stderr, "usage: esp_bench [--seconds=1] [--size=28..65535]\n");
      return 2;
    }
  }
  return strait::dataplane::Run(duration, size);
}
