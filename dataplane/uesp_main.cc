// strait-uesp: one userspace ESP tunnel with static keys, for
// interoperability tests against other ESP implementations (the kernel's
// XFRM with `ip xfrm state ... encap espinudp`, strongSwan) and for
// debugging. Creates a TUN device with routes for the remote selectors,
// binds UDP 4500 (ESP-in-UDP, RFC 3948), installs one outbound and one
// inbound SA and their policies, forwards until --duration passes or a
// signal arrives, then prints the counters as one line of JSON.
//
// Test tool: keys on the command line are visible to other local users.
// The agent installs negotiated SAs through the Dataplane interface.

#include <arpa/inet.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"
#include "dataplane/tun_device.h"
#include "dataplane/udp_esp_socket.h"
#include "dataplane/userspace_dataplane.h"

ABSL_FLAG(std::string, local, "", "Required. Local outer address (IPv4 or IPv6).");
ABSL_FLAG(std::string, remote, "", "Required. The peer's outer address.");
ABSL_FLAG(int, port, 4500, "UDP port for ESP-in-UDP, local and remote.");
ABSL_FLAG(std::string, local_ts, "", "Required. Local traffic selectors, comma-separated CIDRs.");
ABSL_FLAG(std::string, remote_ts, "",
          "Required. Remote traffic selectors, comma-separated CIDRs (routed into the device).");
ABSL_FLAG(std::string, esp, "aes256gcm16",
          "Algorithm in strongSwan's keyword syntax: aes{128,192,256}gcm{8,12,16} or "
          "aes{128,192,256}-sha{256,384,512}.");
ABSL_FLAG(std::string, spi_out, "", "Required. SPI of the outbound SA, hex (0x...).");
ABSL_FLAG(std::string, spi_in, "", "Required. SPI of the inbound SA, hex.");
ABSL_FLAG(std::string, key_out, "",
          "Required. Outbound encryption key material, hex (AES-GCM: key then 4-byte salt).");
ABSL_FLAG(std::string, key_in, "", "Required. Inbound encryption key material, hex.");
ABSL_FLAG(std::string, integ_key_out, "", "Outbound HMAC key, hex (AES-CBC only).");
ABSL_FLAG(std::string, integ_key_in, "", "Inbound HMAC key, hex (AES-CBC only).");
ABSL_FLAG(bool, esn, false, "64-bit extended sequence numbers.");
ABSL_FLAG(int, replay_window, 64, "Anti-replay window in packets (0 disables it).");
ABSL_FLAG(std::string, tun_name, "strait%d", "TUN interface name.");
ABSL_FLAG(int, mtu, 1390, "TUN MTU (1390 fits every algorithm on a 1500-byte IPv6 path).");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "Run this long, then print the counters and exit; 0: until SIGINT/SIGTERM.");

namespace strait::dataplane {
namespace {

std::atomic<bool> g_stop{false};

absl::StatusOr<Address> ParseAddress(const std::string& text) {
  uint8_t buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return Address(buf, buf + 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return Address(buf, buf + 16);
  return absl::InvalidArgumentError(absl::StrCat("not an IP address: '", text, "'"));
}

absl::StatusOr<std::vector<std::pair<Address, uint8_t>>> ParseCidrs(const std::string& text) {
  std::vector<std::pair<Address, uint8_t>> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(item, '/');
    ASSIGN_OR_RETURN(Address address, ParseAddress(parts[0]));
    int length = static_cast<int>(address.size() * 8);
    if (parts.size() > 2 || (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &length)) ||
        length < 0 || length > static_cast<int>(address.size() * 8)) {
      return absl::InvalidArgumentError(absl::StrCat("bad CIDR '", item, "'"));
    }
    out.emplace_back(address, static_cast<uint8_t>(length));
  }
  if (out.empty()) return absl::InvalidArgumentError("no traffic selector");
  return out;
}

absl::StatusOr<uint32_t> ParseSpi(const std::string& text) {
  uint32_t spi = 0;
  if (!absl::SimpleHexAtoi(text, &spi) || spi == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad SPI '", text, "'"));
  }
  return spi;
}

Secret HexSecret(const std::string& hex) {
  std::string raw = absl::HexStringToBytes(hex);
  Secret s(raw);
  WipeString(&raw);
  return s;
}

// "aes256gcm16" or "aes128-sha256" into the SA's transform fields.
absl::Status ParseEsp(const std::string& keyword, SaConfig* sa) {
  int bits = 0;
  if (sscanf(keyword.c_str(), "aes%d", &bits) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("unknown ESP algorithm '", keyword, "'"));
  }
  sa->key_bits = bits;
  const std::string rest = keyword.substr(keyword.find_first_not_of("aes0123456789"));
  if (rest == "gcm16" || rest == "gcm") {
    sa->encr_id = kEncrAesGcm16;
  } else if (rest == "gcm12") {
    sa->encr_id = kEncrAesGcm12;
  } else if (rest == "gcm8") {
    sa->encr_id = kEncrAesGcm8;
  } else if (rest == "-sha256") {
    sa->encr_id = kEncrAesCbc;
    sa->integ_id = kIntegHmacSha256_128;
  } else if (rest == "-sha384") {
    sa->encr_id = kEncrAesCbc;
    sa->integ_id = kIntegHmacSha384_192;
  } else if (rest == "-sha512") {
    sa->encr_id = kEncrAesCbc;
    sa->integ_id = kIntegHmacSha512_256;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown ESP algorithm '", keyword, "'"));
  }
  return absl::OkStatus();
}

absl::Status Run() {
  ASSIGN_OR_RETURN(Address local, ParseAddress(absl::GetFlag(FLAGS_local)));
  ASSIGN_OR_RETURN(Address remote, ParseAddress(absl::GetFlag(FLAGS_remote)));
  ASSIGN_OR_RETURN(auto local_ts, ParseCidrs(absl::GetFlag(FLAGS_local_ts)));
  ASSIGN_OR_RETURN(auto remote_ts, ParseCidrs(absl::GetFlag(FLAGS_remote_ts)));
  const uint16_t port = static_cast<uint16_t>(absl::GetFlag(FLAGS_port));

  SaConfig out;
  RETURN_IF_ERROR(ParseEsp(absl::GetFlag(FLAGS_esp), &out));
  out.reqid = 1;
  out.esn = absl::GetFlag(FLAGS_esn);
  out.replay_window = static_cast<uint32_t>(absl::GetFlag(FLAGS_replay_window));
  out.encapsulation = UdpEncapsulation{port, port};
  SaConfig in = out;
  out.source = local;
  out.id.destination = remote;
  in.source = remote;
  in.id.destination = local;
  ASSIGN_OR_RETURN(out.id.spi, ParseSpi(absl::GetFlag(FLAGS_spi_out)));
  ASSIGN_OR_RETURN(in.id.spi, ParseSpi(absl::GetFlag(FLAGS_spi_in)));
  out.encr_key = HexSecret(absl::GetFlag(FLAGS_key_out));
  in.encr_key = HexSecret(absl::GetFlag(FLAGS_key_in));
  out.integ_key = HexSecret(absl::GetFlag(FLAGS_integ_key_out));
  in.integ_key = HexSecret(absl::GetFlag(FLAGS_integ_key_in));

  TunOptions tun_options;
  tun_options.name = absl::GetFlag(FLAGS_tun_name);
  tun_options.mtu = absl::GetFlag(FLAGS_mtu);
  ASSIGN_OR_RETURN(TunDevicePtr tun, TunDevice::Create(tun_options));
  TunDevice* device = tun.get();
  ASSIGN_OR_RETURN(UdpEspSocketPtr socket, UdpEspSocket::Create(UdpEndpoint{local, port}));
  UserspaceDataplaneOptions options;
  options.routes = device;
  ASSIGN_OR_RETURN(auto dataplane,
                   UserspaceDataplane::Create(std::move(tun), *socket, std::move(options)));
  RETURN_IF_ERROR(dataplane->AddSa(out));
  RETURN_IF_ERROR(dataplane->AddSa(in));
  std::vector<PolicyConfig> policies;
  for (const auto& [lnet, llen] : local_ts) {
    for (const auto& [rnet, rlen] : remote_ts) {
      if (lnet.size() != rnet.size()) continue;
      PolicyConfig p;
      p.reqid = 1;
      p.selector.source = lnet;
      p.selector.source_prefix = llen;
      p.selector.destination = rnet;
      p.selector.destination_prefix = rlen;
      p.direction = Direction::kOut;
      p.tunnel_source = local;
      p.tunnel_destination = remote;
      policies.push_back(p);
      std::swap(p.selector.source, p.selector.destination);
      std::swap(p.selector.source_prefix, p.selector.destination_prefix);
      std::swap(p.tunnel_source, p.tunnel_destination);
      p.direction = Direction::kIn;
      policies.push_back(p);
      p.direction = Direction::kFwd;
      policies.push_back(p);
    }
  }
  RETURN_IF_ERROR(dataplane->AddPolicies(policies));
  UserspaceDataplane* dp = dataplane.get();
  socket->Start([dp](absl::Span<const uint8_t> payload, const UdpEndpoint& from,
                     const Address& to) { dp->HandleEspDatagram(payload, from, to); });
  dp->Start();
  LOG_INFO("userspace ESP tunnel up")
      .With("device", device->name())
      .With("mtu", device->mtu())
      .With("esp", absl::GetFlag(FLAGS_esp));

  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const absl::Time until =
      duration > absl::ZeroDuration() ? absl::Now() + duration : absl::InfiniteFuture();
  while (!g_stop.load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(100));
  socket->Stop();
  dp->Stop();

  ASSIGN_OR_RETURN(UserspaceSaStats o, dp->GetSaStats(out.id));
  ASSIGN_OR_RETURN(UserspaceSaStats i, dp->GetSaStats(in.id));
  const UserspaceDataplaneStats s = dp->stats();
  std::printf(
      "{\"out\":{\"packets\":%llu,\"bytes\":%llu},\"in\":{\"packets\":%llu,\"bytes\":%llu,"
      "\"integrity_failures\":%llu,\"replay_failures\":%llu,\"malformed\":%llu,"
      "\"selector_mismatches\":%llu},\"unknown_spi\":%llu,\"no_policy\":%llu,\"no_sa\":%llu,"
      "\"send_errors\":%llu}\n",
      static_cast<unsigned long long>(o.counters.packets),
      static_cast<unsigned long long>(o.counters.bytes),
      static_cast<unsigned long long>(i.counters.packets),
      static_cast<unsigned long long>(i.counters.bytes),
      static_cast<unsigned long long>(i.counters.integrity_failures),
      static_cast<unsigned long long>(i.counters.replay_failures),
      static_cast<unsigned long long>(i.malformed),
      static_cast<unsigned long long>(i.selector_mismatches),
      static_cast<unsigned long long>(s.unknown_spi), static_cast<unsigned long long>(s.no_policy),
      static_cast<unsigned long long>(s.no_sa), static_cast<unsigned long long>(s.send_errors));
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace strait::dataplane

int main(int argc, char** argv) {
  strait::FlagsSetup setup;
  setup.usage =
      "strait-uesp --local=A --remote=B --local-ts=CIDR --remote-ts=CIDR --spi-out=HEX "
      "--spi-in=HEX --key-out=HEX --key-in=HEX [--esp=aes256gcm16]";
  setup.help_paths = {"dataplane/"};
  setup.version = "strait-uesp";
  strait::ParsedFlags parsed = strait::ParseFlags(
      setup, strait::NormalizeFlagNames(std::vector<std::string>(argv, argv + argc)));
  if (parsed.exit_now) return 0;
  if (absl::Status s = strait::SetLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "strait-uesp: %s\n", s.ToString().c_str());
    return 2;
  }
  signal(SIGINT, [](int) { strait::dataplane::g_stop.store(true); });
  signal(SIGTERM, [](int) { strait::dataplane::g_stop.store(true); });
  absl::Status status = strait::dataplane::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "strait-uesp: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
