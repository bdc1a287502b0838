// How much faster the XFRM backend installs policies than a shell script
// would: in a fresh network namespace (unshare, so root), installs
// --policies policies with AddPolicies (--batch per call), then with one
// AddPolicy call each, then with one `ip xfrm policy add` process each
// (fork/exec and wait, as a script does), and prints the three rates and
// the ratios. The kernel's tables are flushed between runs.
//
//   bazel build -c opt //dataplane:policy_install_bench
//   sudo bazel-bin/dataplane/policy_install_bench --policies=5000

#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "dataplane/xfrm_dataplane.h"

ABSL_FLAG(int, policies, 5000, "Policies to install in each run");
ABSL_FLAG(int, batch, 1000, "Policies per AddPolicies call");
ABSL_FLAG(std::string, ip, "", "The ip(8) binary (default: found in /usr/sbin, /sbin, /bin)");

extern char** environ;

namespace strait::dataplane {
namespace {

constexpr char kTunnelSource[] = "192.0.2.1";
constexpr char kTunnelDestination[] = "192.0.2.2";

std::string FindIp() {
  std::string flag = absl::GetFlag(FLAGS_ip);
  if (!flag.empty()) return flag;
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "ip";
}

// Policy i: 172.16.0.0/16 -> 10.x.y.z/32 (i spelled in the last three
// bytes), outbound, reqids cycling through Strait's range.
PolicyConfig MakePolicy(int i) {
  PolicyConfig p;
  p.selector.source = {172, 16, 0, 0};
  p.selector.source_prefix = 16;
  p.selector.destination = {10, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8),
                            static_cast<uint8_t>(i)};
  p.selector.destination_prefix = 32;
  p.direction = Direction::kOut;
  p.tunnel_source = {192, 0, 2, 1};
  p.tunnel_destination = {192, 0, 2, 2};
  p.reqid = kReqidFirst + static_cast<uint32_t>(i % 1000);
  return p;
}

// Runs argv, waits for it; its exit status, or -1.
int Run(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool Flush(const std::string& ip) { return Run({ip, "xfrm", "policy", "flush"}) == 0; }

// Counts Strait's policies, to check a run installed all of them.
bool ExpectInstalled(XfrmDataplane& dataplane, int n, const char* run) {
  absl::StatusOr<InstalledState> state = dataplane.List();
  if (!state.ok()) {
    std::fprintf(stderr, "%s: List: %s\n", run, state.status().ToString().c_str());
    return false;
  }
  if (static_cast<int>(state->policies.size()) != n) {
    std::fprintf(stderr, "%s: %zu policies installed, want %d\n", run, state->policies.size(), n);
    return false;
  }
  return true;
}

void Report(const char* run, int n, absl::Duration took) {
  std::printf("%-28s %6d policies in %9.1f ms  %10.0f policies/s\n", run, n,
              absl::ToDoubleMilliseconds(took), n / absl::ToDoubleSeconds(took));
}

int Main() {
  const int n = absl::GetFlag(FLAGS_policies);
  const int batch = std::max(1, absl::GetFlag(FLAGS_batch));
  if (n <= 0 || n >= (1 << 24)) {
    std::fprintf(stderr, "--policies must be in [1, 2^24)\n");
    return 2;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare(CLONE_NEWNET) (needs root)");
    return 1;
  }
  const std::string ip = FindIp();
  XfrmDataplaneOptions options;
  options.events = false;
  absl::StatusOr<XfrmDataplanePtr> dataplane = XfrmDataplane::Create(options);
  if (!dataplane.ok()) {
    std::fprintf(stderr, "%s\n", dataplane.status().ToString().c_str());
    return 1;
  }
  std::vector<PolicyConfig> policies;
  policies.reserve(n);
  for (int i = 0; i < n; ++i) policies.push_back(MakePolicy(i));

  // 1. AddPolicies, `batch` at a time.
  absl::Time start = absl::Now();
  for (int first = 0; first < n; first += batch) {
    std::vector<PolicyConfig> chunk(policies.begin() + first,
                                    policies.begin() + std::min(n, first + batch));
    absl::Status status = (*dataplane)->AddPolicies(chunk);
    if (!status.ok()) {
      std::fprintf(stderr, "AddPolicies: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  absl::Duration batched = absl::Now() - start;
  if (!ExpectInstalled(**dataplane, n, "AddPolicies") || !Flush(ip)) return 1;

  // 2. One AddPolicy (one netlink round trip) each.
  start = absl::Now();
  for (const PolicyConfig& p : policies) {
    absl::Status status = (*dataplane)->AddPolicy(p);
    if (!status.ok()) {
      std::fprintf(stderr, "AddPolicy: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  absl::Duration single = absl::Now() - start;
  if (!ExpectInstalled(**dataplane, n, "AddPolicy") || !Flush(ip)) return 1;

  // 3. One `ip xfrm policy add` process each, with the same priority the
  // backend would pick.
  std::vector<std::vector<std::string>> commands;
  commands.reserve(policies.size());
  for (const PolicyConfig& p : policies) {
    const Address& d = p.selector.destination;
    commands.push_back({ip,
                        "xfrm",
                        "policy",
                        "add",
                        "src",
                        "172.16.0.0/16",
                        "dst",
                        absl::StrFormat("%d.%d.%d.%d/32", d[0], d[1], d[2], d[3]),
                        "dir",
                        "out",
                        "priority",
                        absl::StrCat(xfrm::DefaultPriority(p.selector)),
                        "tmpl",
                        "src",
                        kTunnelSource,
                        "dst",
                        kTunnelDestination,
                        "proto",
                        "esp",
                        "reqid",
                        absl::StrCat(p.reqid),
                        "mode",
                        "tunnel"});
  }
  start = absl::Now();
  for (const auto& command : commands) {
    if (Run(command) != 0) {
      std::fprintf(stderr, "%s ... failed\n", command[0].c_str());
      return 1;
    }
  }
  absl::Duration forked = absl::Now() - start;
  if (!ExpectInstalled(**dataplane, n, "ip xfrm policy add")) return 1;

  std::printf("policy install, %d policies, fresh network namespace\n", n);
  Report(absl::StrFormat("AddPolicies (batch %d)", batch).c_str(), n, batched);
  Report("AddPolicy loop", n, single);
  Report("ip xfrm policy add loop", n, forked);
  std::printf("AddPolicies is %.1fx the ip loop (AddPolicy loop: %.1fx)\n",
              absl::FDivDuration(forked, batched), absl::FDivDuration(forked, single));
  return 0;
}

}  // namespace
}  // namespace strait::dataplane

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return strait::dataplane::Main();
}
