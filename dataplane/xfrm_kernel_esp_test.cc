// The XFRM backend against a kernel that has ESP: SAs installed, read back,
// counted, expired and deleted for real, and traffic through the kernel's
// ESP between network namespaces.
//
// This machine's kernel has no ESP (xfrm_dataplane_test checks that it
// refuses SAs cleanly), so tests/vm/kernel_esp_test.sh runs this binary in
// a VM on Debian's own kernel (tools/vm/run_in_vm.sh) with
// STRAIT_KERNEL_HAS_ESP=1. Without that variable every test skips.
//
// Needs root. main() moves the process into a network namespace of its own
// (the SA tests run there); the tunnel tests build four more with `ip`:
//
//   host-a 10.1.0.2 ── 10.1.0.1 gw-a 192.0.2.1 ══ESP══ 192.0.2.2 gw-b 10.2.0.1 ── 10.2.0.2 host-b
//          2001:db8:1::2                                              2001:db8:2::2
//
// and one XfrmDataplane in each gateway (created from a thread that joined
// that namespace: the sockets stay there). The gateways get mirrored SAs and
// in/out/fwd policies for both LANs (IPv4 and IPv6 inside, IPv4 outside:
// the SAs are family-neutral), then ping, ping6 and a TCP transfer go from
// host to host, forwarded by the gateways through ESP (or ESP-in-UDP).

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dataplane/dataplane.h"
#include "dataplane/reconcile.h"
#include "dataplane/xfrm_dataplane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using ::testing::HasSubstr;

bool g_kernel_has_esp = false;  // STRAIT_KERNEL_HAS_ESP=1 and root: set by main().
bool g_private_netns = false;   // Set by main().

constexpr uint32_t kReqid = kReqidFirst + 0x100;

// --- small helpers ---

Address Ip(const char* text) {
  Address out(strchr(text, ':') ? 16 : 4);
  EXPECT_EQ(inet_pton(out.size() == 4 ? AF_INET : AF_INET6, text, out.data()), 1) << text;
  return out;
}

Secret Key(size_t size, uint8_t seed) {
  std::string key(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    key[i] = static_cast<char>(seed + i * 7);
  }
  return Secret(std::move(key));
}

// Runs a shell command; its output goes to the test log.
int Shell(const std::string& command) {
  int rc = system(command.c_str());
  if (rc != 0) {
    std::fprintf(stderr, "command failed (%d): %s\n", rc, command.c_str());
  }
  return rc;
}

std::string ShellOutput(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return out;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    out.append(buffer, n);
  }
  pclose(pipe);
  return out;
}

std::string IpTool() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(path, X_OK) == 0) {
      return path;
    }
  }
  return "ip";
}

// Runs `work` on a thread that joined network namespace `netns` (made with
// `ip netns add`). Sockets made there stay in it.
absl::Status RunInNetns(const std::string& netns, const std::function<void()>& work) {
  absl::Status status;
  std::thread thread([&] {
    std::string path = "/run/netns/" + netns;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      status = absl::NotFoundError(absl::StrCat("open ", path, ": ", strerror(errno)));
      return;
    }
    int rc = setns(fd, CLONE_NEWNET);
    int error = errno;
    close(fd);
    if (rc != 0) {
      status = absl::InternalError(absl::StrCat("setns ", netns, ": ", strerror(error)));
      return;
    }
    work();
  });
  thread.join();
  return status;
}

class EventCollector {
 public:
  void Add(const DataplaneEvent& e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  // Waits up to `timeout` for an event of `kind` about SA `id`.
  bool WaitFor(DataplaneEvent::Kind kind, const SaId& id, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto seen = [&] {
      for (const DataplaneEvent& e : events_) {
        if (e.kind == kind && e.sa == id) {
          return true;
        }
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  }
  std::vector<DataplaneEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<DataplaneEvent> events_ ABSL_GUARDED_BY(mu_);
};

// What `ip -s xfrm state` says about each SA: spi -> packets, and whether it
// is UDP-encapsulated.
struct IpXfrmState {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  bool espinudp = false;
};

std::map<uint32_t, IpXfrmState> ParseIpXfrmState(const std::string& text) {
  std::map<uint32_t, IpXfrmState> out;
  // One block per SA, each starting with "src ... dst ...".
  std::vector<std::string> blocks;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "src ")) {
      blocks.emplace_back();
    }
    if (!blocks.empty()) {
      absl::StrAppend(&blocks.back(), line, "\n");
    }
  }
  static const std::regex kSpi("spi 0x([0-9a-f]+)");
  static const std::regex kCurrent(
      "lifetime current:\\s*\\n\\s*(\\d+)\\(bytes\\), (\\d+)\\(packets\\)");
  for (const std::string& block : blocks) {
    std::smatch spi, current;
    if (!std::regex_search(block, spi, kSpi)) {
      continue;
    }
    IpXfrmState state;
    if (std::regex_search(block, current, kCurrent)) {
      state.bytes = std::stoull(current[1]);
      state.packets = std::stoull(current[2]);
    }
    state.espinudp = absl::StrContains(block, "encap type espinudp");
    out[static_cast<uint32_t>(std::stoul(spi[1], nullptr, 16))] = state;
  }
  return out;
}

// --- algorithms ---

struct Algorithm {
  const char* label;
  uint16_t encr_id;
  int key_bits;
  uint16_t integ_id;
  size_t encr_key_bytes;  // With the 4-byte salt for GCM.
  size_t integ_key_bytes;
};

constexpr Algorithm kGcm128{"Gcm128", 20, 128, 0, 20, 0};
constexpr Algorithm kGcm256{"Gcm256", 20, 256, 0, 36, 0};
constexpr Algorithm kCbc128Sha384{"Cbc128Sha384", 12, 128, 13, 16, 48};
constexpr Algorithm kCbc256Sha256{"Cbc256Sha256", 12, 256, 12, 32, 32};
constexpr Algorithm kCbc256Sha512{"Cbc256Sha512", 12, 256, 14, 32, 64};

void SetAlgorithm(const Algorithm& a, uint8_t seed, SaConfig& sa) {
  sa.encr_id = a.encr_id;
  sa.key_bits = a.key_bits;
  sa.integ_id = a.integ_id;
  sa.encr_key = Key(a.encr_key_bytes, seed);
  sa.integ_key = a.integ_key_bytes ? Key(a.integ_key_bytes, seed + 0x40) : Secret();
}

class KernelEspTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_kernel_has_esp) {
      GTEST_SKIP() << "needs a kernel with ESP, as root: STRAIT_KERNEL_HAS_ESP=1 "
                      "(tests/vm/kernel_esp_test.sh runs this in a VM)";
    }
    ASSERT_TRUE(g_private_netns);
    absl::StatusOr<XfrmDataplanePtr> dataplane = XfrmDataplane::Create();
    ASSERT_TRUE(dataplane.ok()) << dataplane.status();
    dataplane_ = *std::move(dataplane);
    // Whatever an earlier failed test left (every test here tags its state).
    absl::StatusOr<ReconcileResult> cleaned = Reconcile(*dataplane_, {});
    ASSERT_TRUE(cleaned.ok()) << cleaned.status();
  }

  const SaConfig* Listed(const SaId& id, InstalledState& storage) {
    absl::StatusOr<InstalledState> state = dataplane_->List();
    EXPECT_TRUE(state.ok()) << state.status();
    if (!state.ok()) {
      return nullptr;
    }
    storage = *std::move(state);
    for (const SaConfig& sa : storage.sas) {
      if (sa.id == id) {
        return &sa;
      }
    }
    return nullptr;
  }

  XfrmDataplanePtr dataplane_;
};

// --- SAs: install, read back, update, delete ---

struct SaCase {
  const char* label;
  Algorithm algorithm;
  bool ipv6 = false;
  std::optional<UdpEncapsulation> encapsulation;
  bool esn = false;
  uint32_t replay_window = 32;
  Lifetime soft;
  Lifetime hard;
  uint32_t mark = 0;
  uint32_t mark_mask = 0;
  uint32_t if_id = 0;
};

const SaCase kSaCases[] = {
    {"Gcm128Plain", kGcm128},
    {"Gcm256EncapEsnLifetimesMark", kGcm256, false, UdpEncapsulation{4500, 4500}, true, 128,
     Lifetime{1 << 20, 1000, 3000}, Lifetime{2 << 20, 2000, 3600}, 0x42, 0xff},
    {"Cbc256Sha256Ipv6Window64", kCbc256Sha256, true, std::nullopt, false, 64, Lifetime{0, 0, 600},
     Lifetime{0, 0, 900}},
    {"Cbc128Sha384EncapNoReplay", kCbc128Sha384, false, UdpEncapsulation{4500, 40123}, false, 0},
    {"Cbc256Sha512Ipv6EncapEsnIfId", kCbc256Sha512, true, UdpEncapsulation{4500, 4500}, true, 1024,
     Lifetime{0, 5000, 0}, Lifetime{0, 10000, 0}, 0, 0, 9},
};

SaConfig MakeSa(const SaCase& c) {
  SaConfig sa;
  sa.id.destination = c.ipv6 ? Ip("2001:db8::2") : Ip("192.0.2.2");
  sa.id.spi = 0xc0015a01;
  sa.source = c.ipv6 ? Ip("2001:db8::1") : Ip("192.0.2.1");
  sa.reqid = kReqid;
  SetAlgorithm(c.algorithm, 0x11, sa);
  sa.encapsulation = c.encapsulation;
  sa.esn = c.esn;
  sa.replay_window = c.replay_window;
  sa.soft = c.soft;
  sa.hard = c.hard;
  sa.mark = c.mark;
  sa.mark_mask = c.mark_mask;
  sa.if_id = c.if_id;
  return sa;
}

void ExpectSameSa(const SaConfig& got, const SaConfig& want) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.source, want.source);
  EXPECT_EQ(got.reqid, want.reqid);
  EXPECT_EQ(got.encr_id, want.encr_id);
  EXPECT_EQ(got.key_bits, want.key_bits);
  EXPECT_EQ(got.integ_id, want.integ_id);
  EXPECT_TRUE(got.encr_key.empty());
  EXPECT_TRUE(got.integ_key.empty());
  EXPECT_EQ(got.replay_window, want.replay_window);
  EXPECT_EQ(got.esn, want.esn);
  ASSERT_EQ(got.encapsulation.has_value(), want.encapsulation.has_value());
  if (want.encapsulation) {
    EXPECT_EQ(got.encapsulation->source_port, want.encapsulation->source_port);
    EXPECT_EQ(got.encapsulation->destination_port, want.encapsulation->destination_port);
  }
  EXPECT_EQ(got.soft.bytes, want.soft.bytes);
  EXPECT_EQ(got.soft.packets, want.soft.packets);
  EXPECT_EQ(got.soft.add_seconds, want.soft.add_seconds);
  EXPECT_EQ(got.hard.bytes, want.hard.bytes);
  EXPECT_EQ(got.hard.packets, want.hard.packets);
  EXPECT_EQ(got.hard.add_seconds, want.hard.add_seconds);
  EXPECT_EQ(got.mark, want.mark);
  EXPECT_EQ(got.mark_mask, want.mark_mask);
  EXPECT_EQ(got.if_id, want.if_id);
}

class KernelEspSaTest : public KernelEspTest, public ::testing::WithParamInterface<SaCase> {};

TEST_P(KernelEspSaTest, AddListCountUpdateDelete) {
  SaConfig sa = MakeSa(GetParam());
  ASSERT_TRUE(dataplane_->AddSa(sa).ok()) << dataplane_->AddSa(sa);

  InstalledState state;
  const SaConfig* listed = Listed(sa.id, state);
  ASSERT_NE(listed, nullptr);
  EXPECT_EQ(state.sas.size(), 1u);
  ExpectSameSa(*listed, sa);

  absl::StatusOr<SaCounters> counters = dataplane_->GetCounters(sa.id);
  ASSERT_TRUE(counters.ok()) << counters.status();
  EXPECT_EQ(counters->packets, 0u);
  EXPECT_EQ(counters->bytes, 0u);
  EXPECT_EQ(counters->integrity_failures, 0u);

  absl::Status again = dataplane_->AddSa(sa);
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;

  // `ip xfrm state` agrees on what the kernel holds.
  std::string shown = ShellOutput(IpTool() + " xfrm state list");
  EXPECT_THAT(shown,
              HasSubstr(absl::StrFormat("spi 0x%08x reqid %u mode tunnel", sa.id.spi, sa.reqid)));
  EXPECT_THAT(shown, HasSubstr(sa.encr_id == 20 ? "rfc4106(gcm(aes))" : "cbc(aes)"));
  if (sa.encapsulation) {
    EXPECT_THAT(shown, HasSubstr("encap type espinudp"));
  }

  // New lifetimes and encapsulation ports.
  SaConfig updated = sa;
  updated.soft = {0, 0, 1200};
  updated.hard = {0, 0, 2400};
  if (updated.encapsulation) {
    updated.encapsulation->destination_port = 41000;
  }
  absl::Status update = dataplane_->UpdateSa(updated);
  ASSERT_TRUE(update.ok()) << update;
  listed = Listed(sa.id, state);
  ASSERT_NE(listed, nullptr);
  ExpectSameSa(*listed, updated);

  ASSERT_TRUE(dataplane_->DeleteSa(sa.id).ok());
  listed = Listed(sa.id, state);
  EXPECT_EQ(listed, nullptr);
  EXPECT_TRUE(state.sas.empty());
  EXPECT_TRUE(absl::IsNotFound(dataplane_->GetCounters(sa.id).status()));
  EXPECT_TRUE(absl::IsNotFound(dataplane_->DeleteSa(sa.id)));
}

INSTANTIATE_TEST_SUITE_P(Kernel, KernelEspSaTest, ::testing::ValuesIn(kSaCases),
                         [](const ::testing::TestParamInfo<SaCase>& info) {
                           return std::string(info.param.label);
                         });

// Time lifetimes: the kernel's own timers send the soft expire (rekey now)
// and then the hard one (the SA is gone), and both reach the subscriber.
TEST_F(KernelEspTest, TimeLifetimesExpireThroughSubscribe) {
  SaConfig sa = MakeSa(kSaCases[0]);
  // The kernel stamps an SA's add time before it sets up the SA's crypto,
  // and checks lifetimes first a second after the SA is in. The first SA
  // of an algorithm builds its crypto transforms (and asks for modules):
  // seconds in emulation, enough to pass the hard limit before the first
  // check, which then reports the hard expire alone. Warm up first.
  ASSERT_TRUE(dataplane_->AddSa(sa).ok());
  ASSERT_TRUE(dataplane_->DeleteSa(sa.id).ok());

  // Shared with the callback, which may run on the event thread after the
  // test body ends.
  auto events = std::make_shared<EventCollector>();
  dataplane_->Subscribe([events](const DataplaneEvent& e) { events->Add(e); });
  sa.soft.add_seconds = 1;
  sa.hard.add_seconds = 3;
  absl::Time added = absl::Now();
  ASSERT_TRUE(dataplane_->AddSa(sa).ok());

  ASSERT_TRUE(events->WaitFor(DataplaneEvent::Kind::kSoftExpire, sa.id, absl::Seconds(10)));
  absl::Duration soft_after = absl::Now() - added;
  ASSERT_TRUE(events->WaitFor(DataplaneEvent::Kind::kHardExpire, sa.id, absl::Seconds(10)));
  absl::Duration hard_after = absl::Now() - added;
  std::printf("soft expire after %s, hard after %s\n", absl::FormatDuration(soft_after).c_str(),
              absl::FormatDuration(hard_after).c_str());
  // The kernel counts whole seconds from a truncated add time.
  EXPECT_GE(soft_after, absl::Milliseconds(500));
  EXPECT_GE(hard_after, absl::Milliseconds(1500));
  EXPECT_LT(soft_after, hard_after);
  std::vector<DataplaneEvent> seen = events->events();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front().kind, DataplaneEvent::Kind::kSoftExpire);
  EXPECT_EQ(seen.front().reqid, kReqid);

  InstalledState state;
  EXPECT_EQ(Listed(sa.id, state), nullptr);
  EXPECT_TRUE(absl::IsNotFound(dataplane_->DeleteSa(sa.id)));
}

// --- traffic through the kernel's ESP between namespaces ---

// The namespaces and links of the picture at the top, built once.
class Topology {
 public:
  static constexpr const char* kHostA = "strait-esp-host-a";
  static constexpr const char* kGwA = "strait-esp-gw-a";
  static constexpr const char* kGwB = "strait-esp-gw-b";
  static constexpr const char* kHostB = "strait-esp-host-b";

  static bool Build() {
    Remove();
    std::string ip = IpTool();
    std::string script = absl::StrCat(
        "set -e\n",                                                                      //
        ip, " netns add ", kHostA, "\n",                                                 //
        ip, " netns add ", kGwA, "\n",                                                   //
        ip, " netns add ", kGwB, "\n",                                                   //
        ip, " netns add ", kHostB, "\n",                                                 //
        ip, " -n ", kHostA, " link add lan type veth peer name lan netns ", kGwA, "\n",  //
        ip, " -n ", kGwA, " link add wan type veth peer name wan netns ", kGwB, "\n",    //
        ip, " -n ", kHostB, " link add lan type veth peer name lan netns ", kGwB, "\n",  //
        ip, " -n ", kHostA, " -b - <<'EOF'\n",                                           //
        "link set lo up\n"
        "link set lan up\n"
        "addr add 10.1.0.2/24 dev lan\n"
        "addr add 2001:db8:1::2/64 dev lan nodad\n"
        "route add default via 10.1.0.1\n"
        "route add ::/0 via 2001:db8:1::1\n"
        "EOF\n",
        ip, " -n ", kGwA, " -b - <<'EOF'\n",  //
        "link set lo up\n"
        "link set lan up\n"
        "link set wan up\n"
        "addr add 10.1.0.1/24 dev lan\n"
        "addr add 2001:db8:1::1/64 dev lan nodad\n"
        "addr add 192.0.2.1/24 dev wan\n"
        "route add 10.2.0.0/24 via 192.0.2.2\n"
        "route add 2001:db8:2::/64 dev wan\n"
        "EOF\n",
        ip, " -n ", kGwB, " -b - <<'EOF'\n",  //
        "link set lo up\n"
        "link set lan up\n"
        "link set wan up\n"
        "addr add 10.2.0.1/24 dev lan\n"
        "addr add 2001:db8:2::1/64 dev lan nodad\n"
        "addr add 192.0.2.2/24 dev wan\n"
        "route add 10.1.0.0/24 via 192.0.2.1\n"
        "route add 2001:db8:1::/64 dev wan\n"
        "EOF\n",
        ip, " -n ", kHostB, " -b - <<'EOF'\n",  //
        "link set lo up\n"
        "link set lan up\n"
        "addr add 10.2.0.2/24 dev lan\n"
        "addr add 2001:db8:2::2/64 dev lan nodad\n"
        "route add default via 10.2.0.1\n"
        "route add ::/0 via 2001:db8:2::1\n"
        "EOF\n");
    if (Shell(script) != 0) {
      return false;
    }
    for (const char* gw : {kGwA, kGwB}) {
      absl::Status forwarding = RunInNetns(gw, [] {
        for (const char* path :
             {"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}) {
          int fd = open(path, O_WRONLY | O_CLOEXEC);
          if (fd >= 0) {
            if (write(fd, "1", 1) != 1) {
              std::perror(path);
            }
            close(fd);
          }
        }
      });
      if (!forwarding.ok()) {
        std::fprintf(stderr, "%s\n", forwarding.ToString().c_str());
        return false;
      }
    }
    return true;
  }

  static void Remove() {
    for (const char* ns : {kHostA, kGwA, kGwB, kHostB}) {
      system(absl::StrCat(IpTool(), " netns del ", ns, " 2>/dev/null").c_str());
    }
  }
};

absl::StatusOr<XfrmDataplanePtr> DataplaneIn(const std::string& netns) {
  absl::StatusOr<XfrmDataplanePtr> dataplane = absl::InternalError("not created");
  absl::Status joined = RunInNetns(netns, [&] { dataplane = XfrmDataplane::Create(); });
  if (!joined.ok()) {
    return joined;
  }
  return dataplane;
}

// A file read from a thread in `netns` (/proc/thread-self/net/... shows
// that namespace).
std::string ReadIn(const std::string& netns, const char* path) {
  std::string out;
  absl::Status joined = RunInNetns(netns, [&] {
    FILE* file = fopen(path, "re");
    if (file == nullptr) {
      return;
    }
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), file)) > 0) {
      out.append(buffer, n);
    }
    fclose(file);
  });
  EXPECT_TRUE(joined.ok()) << joined;
  return out;
}

// A socket made in `netns`; -1 on failure.
int SocketIn(const std::string& netns, int domain, int type) {
  int fd = -1;
  absl::Status joined = RunInNetns(netns, [&] { fd = socket(domain, type | SOCK_CLOEXEC, 0); });
  EXPECT_TRUE(joined.ok()) << joined;
  return fd;
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) {
      close(fd);
    }
  }
};

// What the kernel needs to take ESP-in-UDP off the wire: a UDP socket on
// port 4500 marked UDP_ENCAP_ESPINUDP (an IKE daemon's NAT-T socket).
int EncapSocketIn(const std::string& netns) {
  int fd = SocketIn(netns, AF_INET, SOCK_DGRAM);
  if (fd < 0) {
    return -1;
  }
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(4500);
  int encap = UDP_ENCAP_ESPINUDP;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      setsockopt(fd, IPPROTO_UDP, UDP_ENCAP, &encap, sizeof(encap)) != 0) {
    std::perror("encap socket");
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `size` bytes over TCP from host A to host B and returns how many
// arrived (within 20 s).
size_t TcpTransfer(size_t size) {
  FdCloser server{SocketIn(Topology::kHostB, AF_INET, SOCK_STREAM)};
  FdCloser client{SocketIn(Topology::kHostA, AF_INET, SOCK_STREAM)};
  if (server.fd < 0 || client.fd < 0) {
    return 0;
  }
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  inet_pton(AF_INET, "10.2.0.2", &address.sin_addr);
  socklen_t length = sizeof(address);
  if (bind(server.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(server.fd, 1) != 0 ||
      getsockname(server.fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("tcp server");
    return 0;
  }
  timeval timeout = {20, 0};
  setsockopt(client.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  size_t received = 0;
  std::thread reader([&] {
    pollfd p = {server.fd, POLLIN, 0};
    if (poll(&p, 1, 20000) != 1) {
      return;
    }
    FdCloser connection{accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC)};
    if (connection.fd < 0) {
      return;
    }
    setsockopt(connection.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char buffer[16384];
    ssize_t n;
    while ((n = read(connection.fd, buffer, sizeof(buffer))) > 0) {
      received += n;
    }
  });
  if (connect(client.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    std::string data(size, 'x');
    size_t sent = 0;
    while (sent < size) {
      ssize_t n = write(client.fd, data.data() + sent, size - sent);
      if (n <= 0) {
        break;
      }
      sent += n;
    }
    shutdown(client.fd, SHUT_WR);
  } else {
    std::perror("tcp connect");
    shutdown(server.fd, SHUT_RDWR);
  }
  reader.join();
  return received;
}

struct TunnelCase {
  const char* label;
  Algorithm algorithm;
  bool udp_encapsulation;
};

const TunnelCase kTunnelCases[] = {
    {"Gcm256", kGcm256, false},
    {"Gcm128EspInUdp", kGcm128, true},
    {"Cbc256Sha256", kCbc256Sha256, false},
    {"Cbc256Sha512EspInUdp", kCbc256Sha512, true},
};

class KernelEspTunnelTest : public ::testing::TestWithParam<TunnelCase> {
 protected:
  static void SetUpTestSuite() {
    if (!g_kernel_has_esp) {
      return;
    }
    topology_ok_ = Topology::Build();
    if (!topology_ok_) {
      return;
    }
    absl::StatusOr<XfrmDataplanePtr> a = DataplaneIn(Topology::kGwA);
    absl::StatusOr<XfrmDataplanePtr> b = DataplaneIn(Topology::kGwB);
    if (!a.ok() || !b.ok()) {
      std::fprintf(stderr, "dataplanes: %s / %s\n", a.status().ToString().c_str(),
                   b.status().ToString().c_str());
      topology_ok_ = false;
      return;
    }
    gw_a_ = a->release();
    gw_b_ = b->release();
  }
  static void TearDownTestSuite() {
    delete gw_a_;
    delete gw_b_;
    gw_a_ = gw_b_ = nullptr;
    if (g_kernel_has_esp) {
      Topology::Remove();
    }
  }

  void SetUp() override {
    if (!g_kernel_has_esp) {
      GTEST_SKIP() << "needs a kernel with ESP, as root: STRAIT_KERNEL_HAS_ESP=1 "
                      "(tests/vm/kernel_esp_test.sh runs this in a VM)";
    }
    ASSERT_TRUE(topology_ok_) << "could not build the namespaces (see above)";
  }

  static std::string IpIn(const char* netns) { return absl::StrCat(IpTool(), " -n ", netns); }
  static std::string ExecIn(const char* netns) {
    return absl::StrCat(IpTool(), " netns exec ", netns);
  }

  static bool topology_ok_;
  static XfrmDataplane* gw_a_;
  static XfrmDataplane* gw_b_;
};

bool KernelEspTunnelTest::topology_ok_ = false;
XfrmDataplane* KernelEspTunnelTest::gw_a_ = nullptr;
XfrmDataplane* KernelEspTunnelTest::gw_b_ = nullptr;

Selector Net(const char* source, uint8_t source_prefix, const char* destination,
             uint8_t destination_prefix) {
  Selector s;
  s.source = Ip(source);
  s.source_prefix = source_prefix;
  s.destination = Ip(destination);
  s.destination_prefix = destination_prefix;
  return s;
}

// The policies of one gateway: out from its LANs to the other's, in and fwd
// the other way, for IPv4 and IPv6 inside, through the IPv4 tunnel.
std::vector<PolicyConfig> GatewayPolicies(bool a_side, uint32_t out_reqid, uint32_t in_reqid) {
  const char* self = a_side ? "192.0.2.1" : "192.0.2.2";
  const char* peer = a_side ? "192.0.2.2" : "192.0.2.1";
  std::vector<std::pair<Selector, Selector>> lans = {
      {Net(a_side ? "10.1.0.0" : "10.2.0.0", 24, a_side ? "10.2.0.0" : "10.1.0.0", 24),
       Net(a_side ? "10.2.0.0" : "10.1.0.0", 24, a_side ? "10.1.0.0" : "10.2.0.0", 24)},
      {Net(a_side ? "2001:db8:1::" : "2001:db8:2::", 64,
           a_side ? "2001:db8:2::" : "2001:db8:1::", 64),
       Net(a_side ? "2001:db8:2::" : "2001:db8:1::", 64,
           a_side ? "2001:db8:1::" : "2001:db8:2::", 64)},
  };
  std::vector<PolicyConfig> policies;
  for (const auto& [outbound, inbound] : lans) {
    PolicyConfig out;
    out.selector = outbound;
    out.direction = Direction::kOut;
    out.tunnel_source = Ip(self);
    out.tunnel_destination = Ip(peer);
    out.reqid = out_reqid;
    policies.push_back(out);
    for (Direction d : {Direction::kIn, Direction::kFwd}) {
      PolicyConfig in;
      in.selector = inbound;
      in.direction = d;
      in.tunnel_source = Ip(peer);
      in.tunnel_destination = Ip(self);
      in.reqid = in_reqid;
      policies.push_back(in);
    }
  }
  return policies;
}

TEST_P(KernelEspTunnelTest, PingPing6AndTcpGoThroughEsp) {
  const TunnelCase& c = GetParam();
  for (XfrmDataplane* gw : {gw_a_, gw_b_}) {
    absl::StatusOr<ReconcileResult> cleaned = Reconcile(*gw, {});
    ASSERT_TRUE(cleaned.ok()) << cleaned.status();
  }
  FdCloser encap_a{-1}, encap_b{-1};
  if (c.udp_encapsulation) {
    encap_a.fd = EncapSocketIn(Topology::kGwA);
    encap_b.fd = EncapSocketIn(Topology::kGwB);
    ASSERT_GE(encap_a.fd, 0);
    ASSERT_GE(encap_b.fd, 0);
  }

  // One SA each way, the same keys at both ends.
  const uint32_t a_to_b_reqid = kReqid + 1, b_to_a_reqid = kReqid + 2;
  SaConfig a_to_b;
  a_to_b.id = {Ip("192.0.2.2"), 0xa0b00001};
  a_to_b.source = Ip("192.0.2.1");
  a_to_b.reqid = a_to_b_reqid;
  SetAlgorithm(c.algorithm, 0x21, a_to_b);
  a_to_b.esn = true;
  a_to_b.replay_window = 128;
  SaConfig b_to_a;
  b_to_a.id = {Ip("192.0.2.1"), 0xb0a00001};
  b_to_a.source = Ip("192.0.2.2");
  b_to_a.reqid = b_to_a_reqid;
  SetAlgorithm(c.algorithm, 0x61, b_to_a);
  if (c.udp_encapsulation) {
    a_to_b.encapsulation = UdpEncapsulation{4500, 4500};
    b_to_a.encapsulation = UdpEncapsulation{4500, 4500};
  }
  // A soft byte limit that the traffic below crosses: gateway A must be
  // told to rekey.
  SaConfig a_to_b_at_a = a_to_b;
  a_to_b_at_a.soft.bytes = 4096;

  auto events_a = std::make_shared<EventCollector>();
  gw_a_->Subscribe([events_a](const DataplaneEvent& e) { events_a->Add(e); });

  ASSERT_TRUE(gw_a_->AddSa(a_to_b_at_a).ok());
  ASSERT_TRUE(gw_a_->AddSa(b_to_a).ok());
  ASSERT_TRUE(gw_b_->AddSa(a_to_b).ok());
  ASSERT_TRUE(gw_b_->AddSa(b_to_a).ok());
  absl::Status policies_a = gw_a_->AddPolicies(GatewayPolicies(true, a_to_b_reqid, b_to_a_reqid));
  ASSERT_TRUE(policies_a.ok()) << policies_a;
  absl::Status policies_b = gw_b_->AddPolicies(GatewayPolicies(false, b_to_a_reqid, a_to_b_reqid));
  ASSERT_TRUE(policies_b.ok()) << policies_b;

  // Host to host, forwarded by both gateways through the tunnel.
  EXPECT_EQ(Shell(ExecIn(Topology::kHostA) + " ping -c 3 -i 0.2 -W 5 -q 10.2.0.2"), 0);
  EXPECT_EQ(Shell(ExecIn(Topology::kHostA) + " ping -6 -c 2 -i 0.2 -W 5 -q 2001:db8:2::2"), 0);
  // Larger than the path MTU less ESP's overhead: PMTU discovery through
  // the tunnel must work too.
  constexpr size_t kTcpBytes = size_t{256} * 1024;
  EXPECT_EQ(TcpTransfer(kTcpBytes), kTcpBytes);

  // Counted by the kernel's ESP at both ends, in both directions.
  for (const auto& [dataplane, id, label] :
       {std::make_tuple(gw_a_, a_to_b.id, "gw-a out"), std::make_tuple(gw_a_, b_to_a.id, "gw-a in"),
        std::make_tuple(gw_b_, a_to_b.id, "gw-b in"),
        std::make_tuple(gw_b_, b_to_a.id, "gw-b out")}) {
    absl::StatusOr<SaCounters> counters = dataplane->GetCounters(id);
    ASSERT_TRUE(counters.ok()) << label << ": " << counters.status();
    std::printf("%s spi 0x%08x: %llu packets, %llu bytes\n", label, id.spi,
                static_cast<unsigned long long>(counters->packets),
                static_cast<unsigned long long>(counters->bytes));
    EXPECT_GE(counters->packets, 5u) << label;  // 3 pings + 2 ping6 at least.
    EXPECT_GT(counters->bytes, 0u) << label;
    EXPECT_EQ(counters->integrity_failures, 0u) << label;
    EXPECT_EQ(counters->replay_failures, 0u) << label;
  }
  absl::StatusOr<SaCounters> sent = gw_a_->GetCounters(a_to_b.id);
  absl::StatusOr<SaCounters> received = gw_b_->GetCounters(a_to_b.id);
  ASSERT_TRUE(sent.ok() && received.ok());
  EXPECT_GE(sent->bytes, kTcpBytes);
  // What gw-b decrypted gw-a sent. A few may be lost between the veths: an
  // emulated VM on a busy host falls behind TCP's bursts (the TCP transfer
  // above recovered them), but not more than a tenth.
  EXPECT_LE(received->packets, sent->packets);
  EXPECT_GE(received->packets * 10, sent->packets * 9)
      << "sent " << sent->packets << ", received " << received->packets;

  // And `ip -s xfrm state` says the same.
  for (const char* gw : {Topology::kGwA, Topology::kGwB}) {
    std::string shown = ShellOutput(IpIn(gw) + " -s xfrm state");
    std::map<uint32_t, IpXfrmState> states = ParseIpXfrmState(shown);
    ASSERT_EQ(states.size(), 2u) << shown;
    for (uint32_t spi : {a_to_b.id.spi, b_to_a.id.spi}) {
      ASSERT_TRUE(states.count(spi)) << shown;
      EXPECT_GE(states[spi].packets, 5u) << gw << " spi " << spi << "\n" << shown;
      EXPECT_EQ(states[spi].espinudp, c.udp_encapsulation) << shown;
    }
    // No drops for want of a policy, state or a valid ICV.
    std::string stats = ReadIn(gw, "/proc/thread-self/net/xfrm_stat");
    for (const char* counter : {"XfrmInNoPols", "XfrmInNoStates", "XfrmInStateProtoError",
                                "XfrmInStateMismatch", "XfrmFwdHdrError", "XfrmOutNoStates"}) {
      std::smatch value;
      std::regex re(absl::StrCat(counter, "\\s+(\\d+)"));
      ASSERT_TRUE(std::regex_search(stats, value, re)) << stats;
      EXPECT_EQ(value[1], "0") << gw << " " << counter;
    }
  }

  // The soft byte limit passed at gateway A: a soft expire for that SA.
  EXPECT_TRUE(events_a->WaitFor(DataplaneEvent::Kind::kSoftExpire, a_to_b.id, absl::Seconds(5)));
  for (const DataplaneEvent& e : events_a->events()) {
    EXPECT_EQ(e.kind, DataplaneEvent::Kind::kSoftExpire);
    EXPECT_EQ(e.sa, a_to_b.id);
    EXPECT_EQ(e.reqid, a_to_b_reqid);
  }
  gw_a_->Subscribe(nullptr);

  // Policies gone, the tunnel drops traffic: nothing leaks in the clear.
  for (auto [dataplane, a_side] : {std::make_pair(gw_a_, true), std::make_pair(gw_b_, false)}) {
    for (const PolicyConfig& p : GatewayPolicies(a_side, a_side ? a_to_b_reqid : b_to_a_reqid,
                                                 a_side ? b_to_a_reqid : a_to_b_reqid)) {
      ASSERT_TRUE(dataplane->DeletePolicy(p.selector, p.direction).ok());
    }
    ASSERT_TRUE(dataplane->DeleteSa(a_to_b.id).ok());
    ASSERT_TRUE(dataplane->DeleteSa(b_to_a.id).ok());
    absl::StatusOr<InstalledState> left = dataplane->List();
    ASSERT_TRUE(left.ok()) << left.status();
    EXPECT_TRUE(left->sas.empty());
    EXPECT_TRUE(left->policies.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Kernel, KernelEspTunnelTest, ::testing::ValuesIn(kTunnelCases),
                         [](const ::testing::TestParamInfo<TunnelCase>& info) {
                           return std::string(info.param.label);
                         });

}  // namespace
}  // namespace strait::dataplane

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* has_esp = getenv("STRAIT_KERNEL_HAS_ESP");
  if (has_esp != nullptr && std::string(has_esp) == "1") {
    if (geteuid() != 0) {
      std::fprintf(stderr, "STRAIT_KERNEL_HAS_ESP=1 needs root\n");
      return 1;
    }
    // Before any thread exists: every thread and child made later inherits
    // the namespace.
    if (unshare(CLONE_NEWNET) != 0) {
      std::perror("unshare(CLONE_NEWNET)");
      return 1;
    }
    strait::dataplane::g_private_netns = true;
    strait::dataplane::g_kernel_has_esp = true;
  }
  return RUN_ALL_TESTS();
}
