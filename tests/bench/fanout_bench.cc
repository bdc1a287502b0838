// fanout_bench: how fast the controller fans intent out to many agents.
//
// Starts the real controller (or uses a running one), opens --nodes agent
// sessions over --channels connections, applies --tunnels tunnels spread
// over the nodes, then measures the latency from an ApplyTunnel to the
// agent's ACK of the new snapshot, for a change on one node and for a change
// on every node, and the controller's memory. See tests/bench/README.md.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "proto/strait/v1/admin.grpc.pb.h"
#include "tests/bench/agent_fleet.h"
#include "tests/bench/apply_runner.h"
#include "tests/bench/bench_tunnels.h"
#include "tests/bench/controller_process.h"

ABSL_FLAG(std::string, controller_binary, "",
          "Path of strait-controller to start. Default: the one in this program's runfiles "
          "(//controller:strait-controller).");
ABSL_FLAG(std::string, controller_address, "",
          "Benchmark an already running controller at HOST:PORT (plaintext) instead of "
          "starting one. Its memory is then not reported.");
ABSL_FLAG(int, nodes, 1000, "Simulated agents, one session each (bench-node-0000, ...).");
ABSL_FLAG(int, tunnels, 10000, "Tunnels to apply, spread evenly over the nodes.");
ABSL_FLAG(int, channels, 8, "Separate HTTP/2 connections that carry the agent sessions.");
ABSL_FLAG(int, concurrency, 32, "ApplyTunnel calls in flight at most.");
ABSL_FLAG(int, rounds, 20, "Changes of one tunnel on one node (each on another node).");
ABSL_FLAG(int, all_rounds, 3, "Changes of one tunnel on every node.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(300),
          "Abort the whole run (with a message saying where) after this long.");
ABSL_FLAG(std::string, controller_log_level, "warning", "--log-level of the started controller.");

namespace strait::bench {
namespace {

// What the run is doing, for the watchdog's message.
std::atomic<const char*> g_phase{"starting"};
std::atomic<pid_t> g_controller_pid{0};

void Report(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string Ms(absl::Duration d) {
  const double ms = absl::ToDoubleMilliseconds(d);
  return ms < 10 ? absl::StrFormat("%.2f ms", ms) : absl::StrFormat("%.1f ms", ms);
}

std::string Rounds(int n) { return absl::StrCat(n, n == 1 ? " round" : " rounds"); }

// Nearest-rank percentile of a sorted, non-empty vector.
absl::Duration Percentile(const std::vector<absl::Duration>& sorted, double p) {
  size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::string MemoryLine(const absl::StatusOr<MemoryUsage>& after_setup,
                       const absl::StatusOr<MemoryUsage>& at_end) {
  if (!after_setup.ok()) {
    return absl::StrCat("controller RSS: ", after_setup.status().message());
  }
  if (!at_end.ok()) {
    return absl::StrCat("controller RSS: ", at_end.status().message());
  }
  return absl::StrFormat("controller RSS: %.1f MiB after setup, %.1f MiB at end (peak %.1f MiB)",
                         after_setup->rss_mib, at_end->rss_mib, at_end->peak_mib);
}

// Kills the run when --timeout passes, whatever it is blocked on. The
// phases' own waits use the same deadline and normally report first.
class Watchdog {
 public:
  Watchdog(absl::Duration timeout, absl::Time deadline)
      : thread_([this, timeout, deadline] {
          if (done_.WaitForNotificationWithDeadline(deadline + absl::Seconds(10))) {
            return;
          }
          std::fprintf(stderr,
                       "fanout_bench: FAILED: --timeout=%s exceeded while %s; aborting "
                       "(raise --timeout for larger runs)\n",
                       absl::FormatDuration(timeout).c_str(), g_phase.load());
          const pid_t pid = g_controller_pid.load();
          if (pid > 0) {
            kill(pid, SIGKILL);
          }
          _exit(2);
        }) {}
  ~Watchdog() {
    done_.Notify();
    thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

struct Config {
  int nodes;
  int tunnels;
  int channels;
  int concurrency;
  int rounds;
  int all_rounds;
  absl::Duration timeout;
};

absl::Status WithPhase(absl::Status status, absl::string_view phase) {
  if (status.ok()) {
    return status;
  }
  return absl::Status(status.code(), absl::StrCat(phase, ": ", status.message()));
}

// Waits until the controller lists every bench node as connected, so that
// setup measures fan-out rather than session start. Best effort: returns
// how many were listed.
int AwaitConnected(strait::v1::AdminService::Stub& admin, int nodes, absl::Time deadline) {
  int connected = 0;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    strait::v1::ListNodesResponse response;
    if (admin.ListNodes(&context, strait::v1::ListNodesRequest(), &response).ok()) {
      connected = 0;
      for (const strait::v1::Node& node : response.nodes()) {
        if (node.connected() && absl::StartsWith(node.name(), "bench-node-")) {
          ++connected;
        }
      }
      if (connected >= nodes) {
        break;
      }
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return connected;
}

class FanoutBench {
 public:
  FanoutBench(Config config, absl::Time deadline) : config_(config), deadline_(deadline) {}

  // Runs every phase against the controller at `address`; `pid` (0 when
  // external) is the controller process to measure.
  absl::Status Run(const std::string& address, pid_t pid) {
    pid_ = pid;
    absl::Status status = RunPhases(address);
    if (fleet_ != nullptr) {
      // Before the controller is stopped, so that it has no session to wait for.
      g_phase = "closing the agent sessions";
      absl::Status closed = fleet_->Shutdown(deadline_);
      if (status.ok()) {
        status = std::move(closed);
      }
    }
    if (status.ok() && unrelated_pushes_ != 0) {
      status = absl::InternalError(absl::StrCat(
          unrelated_pushes_, " snapshots were pushed to nodes whose share did not change"));
    }
    return status;
  }

 private:
  absl::Status RunPhases(const std::string& address) {
    g_phase = "connecting to the controller";
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(absl::ToChronoTime(deadline_))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to the controller at ", address));
    }
    admin_ = strait::v1::AdminService::NewStub(channel);

    std::vector<std::string> names;
    names.reserve(config_.nodes);
    for (int i = 0; i < config_.nodes; ++i) {
      names.push_back(BenchNodeName(i));
    }
    ASSIGN_OR_RETURN(fleet_, CreateAgentFleet(address, std::move(names), config_.channels));
    change_counts_.assign(config_.tunnels, 0);

    RETURN_IF_ERROR(WithPhase(OpenSessions(), "opening sessions"));
    RETURN_IF_ERROR(WithPhase(Setup(), "setup"));
    const absl::StatusOr<MemoryUsage> after_setup = Memory();
    RETURN_IF_ERROR(WithPhase(OneNodeChanges(), "one-node changes"));
    RETURN_IF_ERROR(WithPhase(AllNodeChanges(), "all-node changes"));
    const absl::StatusOr<MemoryUsage> at_end = Memory();
    if (pid_ > 0) {
      Report(MemoryLine(after_setup, at_end));
      Report(CpuLine());
    }
    return absl::OkStatus();
  }

  // The controller's CPU time so far (zero when it is not ours to watch).
  absl::Duration Cpu() const {
    if (pid_ <= 0) {
      return absl::ZeroDuration();
    }
    absl::StatusOr<absl::Duration> cpu = ReadCpuTime(pid_);
    return cpu.ok() ? *cpu : absl::ZeroDuration();
  }

  // Where the controller spent its CPU: CPU time per Apply (and its pushes)
  // next to the wall time shows whether it waits (fsync) or computes.
  std::string CpuLine() const {
    std::string line =
        absl::StrFormat("controller CPU: %.1f s in setup (%s/apply)",
                        absl::ToDoubleSeconds(setup_cpu_), Ms(setup_cpu_ / config_.tunnels));
    if (config_.all_rounds > 0) {
      absl::StrAppend(&line,
                      absl::StrFormat(", %.1f s in all-node changes (%s/apply)",
                                      absl::ToDoubleSeconds(all_nodes_cpu_),
                                      Ms(all_nodes_cpu_ / (config_.all_rounds * config_.nodes))));
    }
    return line;
  }

  absl::StatusOr<MemoryUsage> Memory() const {
    if (pid_ <= 0) {
      return absl::UnavailableError("external controller");
    }
    return ReadMemoryUsage(pid_);
  }

  absl::Status OpenSessions() {
    g_phase = "opening the agent sessions";
    const absl::Time start = absl::Now();
    fleet_->Start();
    // The controller may not list nodes before they own tunnels; do not
    // wait long for it.
    const int connected =
        AwaitConnected(*admin_, config_.nodes, std::min(deadline_, start + absl::Seconds(20)));
    Report(
        absl::StrFormat("sessions: %d opened over %d channels; controller lists %d connected "
                        "after %s",
                        config_.nodes, config_.channels, connected, Ms(absl::Now() - start)));
    return absl::OkStatus();
  }

  absl::Status Setup() {
    g_phase = "applying the tunnels (setup)";
    std::vector<strait::v1::Tunnel> tunnels;
    tunnels.reserve(config_.tunnels);
    for (int i = 0; i < config_.tunnels; ++i) {
      tunnels.push_back(MakeBenchTunnel(i, config_.nodes, EspLifetimeAfter(0)));
    }
    std::vector<std::pair<int, Expectation>> expectations;
    expectations.reserve(config_.nodes);
    for (int node = 0; node < config_.nodes; ++node) {
      Expectation want;
      want.min_tunnels = TunnelsOnNode(node, config_.nodes, config_.tunnels);
      // And its last tunnel as applied now: tells the setup snapshot from
      // one that a previous run left in an external controller.
      const int last = TunnelOfNode(node, want.min_tunnels - 1, config_.nodes);
      want.tunnel = BenchTunnelName(last);
      want.esp_lifetime_seconds = EspLifetimeAfter(0);
      expectations.emplace_back(node, std::move(want));
    }
    const int64_t pushes_before = fleet_->TotalPushes();
    fleet_->Expect(expectations);
    ApplyOptions options;
    options.concurrency = config_.concurrency;
    options.deadline = deadline_;
    const absl::Duration cpu_before = Cpu();
    ASSIGN_OR_RETURN(ApplyTimes times, ApplyTunnels(*admin_, tunnels, options));
    g_phase = "waiting for every node to ACK its whole share (setup)";
    RETURN_IF_ERROR(fleet_->AwaitExpectations(deadline_));
    setup_cpu_ = Cpu() - cpu_before;
    absl::Time last_ack = times.first_sent;
    for (int node = 0; node < config_.nodes; ++node) {
      last_ack = std::max(last_ack, fleet_->MetAt(node));
    }
    const absl::Duration total = last_ack - times.first_sent;
    const absl::Duration applies = times.last_done - times.first_sent;
    Report(absl::StrFormat(
        "setup: %d applies + %d initial snapshots acked in %.1f s (applies done in %.1f s, "
        "%.0f applies/s; %d pushes)",
        config_.tunnels, config_.nodes, absl::ToDoubleSeconds(total),
        absl::ToDoubleSeconds(applies), config_.tunnels / absl::ToDoubleSeconds(applies),
        fleet_->TotalPushes() - pushes_before));
    return absl::OkStatus();
  }

  // The next spec of the k-th tunnel of `node`, and what its ACK must show.
  std::pair<strait::v1::Tunnel, Expectation> Change(int node, int k) {
    const int index = TunnelOfNode(node, k, config_.nodes);
    const int64_t lifetime = EspLifetimeAfter(++change_counts_[index]);
    Expectation want;
    want.min_tunnels = TunnelsOnNode(node, config_.nodes, config_.tunnels);
    want.tunnel = BenchTunnelName(index);
    want.esp_lifetime_seconds = lifetime;
    return {MakeBenchTunnel(index, config_.nodes, lifetime), std::move(want)};
  }

  absl::Status OneNodeChanges() {
    g_phase = "changing one node at a time";
    if (config_.rounds <= 0) {
      return absl::OkStatus();
    }
    // Spread the rounds over the nodes.
    const int stride = std::max(1, config_.nodes / config_.rounds);
    std::vector<absl::Duration> latencies;
    int64_t target_pushes = 0;
    const int64_t total_before = fleet_->TotalPushes();
    for (int round = 0; round < config_.rounds; ++round) {
      const int node = (round * stride + round / config_.nodes) % config_.nodes;
      auto [tunnel, want] =
          Change(node, round % TunnelsOnNode(node, config_.nodes, config_.tunnels));
      const int64_t node_before = fleet_->Pushes(node);
      fleet_->Expect({{node, std::move(want)}});
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(deadline_));
      strait::v1::ApplyTunnelRequest request;
      *request.mutable_tunnel() = std::move(tunnel);
      strait::v1::ApplyTunnelResponse response;
      const absl::Time sent = absl::Now();
      const grpc::Status status = admin_->ApplyTunnel(&context, request, &response);
      if (!status.ok()) {
        return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                            absl::StrCat("ApplyTunnel ", request.tunnel().metadata().name(), ": ",
                                         status.error_message()));
      }
      if (!response.changed()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "ApplyTunnel ", request.tunnel().metadata().name(), ": changed=false for a new spec"));
      }
      RETURN_IF_ERROR(fleet_->AwaitExpectations(deadline_));
      latencies.push_back(fleet_->MetAt(node) - sent);
      target_pushes += fleet_->Pushes(node) - node_before;
    }
    // A push to another node would leave with the target's; give stragglers
    // a moment before counting.
    absl::SleepFor(absl::Milliseconds(200));
    const int64_t others = fleet_->TotalPushes() - total_before - target_pushes;
    unrelated_pushes_ += others;
    std::sort(latencies.begin(), latencies.end());
    std::string line =
        absl::StrFormat("one-node change -> last ACK: median %s, p90 %s (%s); unrelated pushes: %d",
                        Ms(Percentile(latencies, 0.5)), Ms(Percentile(latencies, 0.9)),
                        Rounds(config_.rounds), others);
    if (target_pushes != config_.rounds) {
      absl::StrAppend(&line, " (changed nodes got ", target_pushes, " pushes for ", config_.rounds,
                      " changes)");
    }
    Report(line);
    return absl::OkStatus();
  }

  absl::Status AllNodeChanges() {
    g_phase = "changing every node at once";
    if (config_.all_rounds <= 0) {
      return absl::OkStatus();
    }
    std::vector<absl::Duration> totals;
    const absl::Duration cpu_before = Cpu();
    for (int round = 0; round < config_.all_rounds; ++round) {
      std::vector<strait::v1::Tunnel> tunnels;
      std::vector<std::pair<int, Expectation>> expectations;
      tunnels.reserve(config_.nodes);
      expectations.reserve(config_.nodes);
      for (int node = 0; node < config_.nodes; ++node) {
        // A different tunnel of the node each round, when it has several.
        auto [tunnel, want] =
            Change(node, (round + 1) % TunnelsOnNode(node, config_.nodes, config_.tunnels));
        tunnels.push_back(std::move(tunnel));
        expectations.emplace_back(node, std::move(want));
      }
      const int64_t pushes_before = fleet_->TotalPushes();
      fleet_->Expect(expectations);
      ApplyOptions options;
      options.concurrency = config_.concurrency;
      options.require_changed = true;
      options.deadline = deadline_;
      ASSIGN_OR_RETURN(ApplyTimes times, ApplyTunnels(*admin_, tunnels, options));
      RETURN_IF_ERROR(fleet_->AwaitExpectations(deadline_));
      absl::Time last_ack = times.first_sent;
      for (int node = 0; node < config_.nodes; ++node) {
        last_ack = std::max(last_ack, fleet_->MetAt(node));
      }
      totals.push_back(last_ack - times.first_sent);
      Report(absl::StrFormat(
          "all-node change round %d: %d applies done in %s, last ACK after %s (%d pushes)",
          round + 1, config_.nodes, Ms(times.last_done - times.first_sent), Ms(totals.back()),
          fleet_->TotalPushes() - pushes_before));
    }
    all_nodes_cpu_ = Cpu() - cpu_before;
    std::sort(totals.begin(), totals.end());
    const absl::Duration median = Percentile(totals, 0.5);
    Report(absl::StrFormat("all-node change (%d applies) -> last ACK: median %s (%s), %s/node",
                           config_.nodes, Ms(median), Rounds(config_.all_rounds),
                           Ms(median / config_.nodes)));
    return absl::OkStatus();
  }

  const Config config_;
  const absl::Time deadline_;
  pid_t pid_ = 0;
  std::unique_ptr<strait::v1::AdminService::Stub> admin_;
  AgentFleetPtr fleet_;
  std::vector<int> change_counts_;
  int64_t unrelated_pushes_ = 0;
  absl::Duration setup_cpu_;
  absl::Duration all_nodes_cpu_;
};

// A fresh directory under $TEST_TMPDIR or /tmp, removed on destruction.
class TempDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempDir>> Create() {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/fanout_bench.XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
    }
    return std::unique_ptr<TempDir>(new TempDir(std::move(pattern)));
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

absl::Status Main(const char* argv0) {
  Config config;
  config.nodes = absl::GetFlag(FLAGS_nodes);
  config.tunnels = absl::GetFlag(FLAGS_tunnels);
  config.channels = absl::GetFlag(FLAGS_channels);
  config.concurrency = absl::GetFlag(FLAGS_concurrency);
  config.rounds = absl::GetFlag(FLAGS_rounds);
  config.all_rounds = absl::GetFlag(FLAGS_all_rounds);
  config.timeout = absl::GetFlag(FLAGS_timeout);
  RETURN_IF_ERROR(CheckLayout(config.nodes, config.tunnels));
  if (config.channels <= 0) {
    return absl::InvalidArgumentError("--channels must be positive");
  }
  if (config.concurrency <= 0) {
    return absl::InvalidArgumentError("--concurrency must be positive");
  }
  if (config.rounds < 0 || config.all_rounds < 0) {
    return absl::InvalidArgumentError("--rounds and --all_rounds must not be negative");
  }
  if (config.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  const std::string external = absl::GetFlag(FLAGS_controller_address);
  if (!external.empty() && !absl::GetFlag(FLAGS_controller_binary).empty()) {
    return absl::InvalidArgumentError(
        "--controller_address and --controller_binary exclude each other");
  }

  const absl::Time deadline = absl::Now() + config.timeout;
  Watchdog watchdog(config.timeout, deadline);
  Report(absl::StrFormat("fanout_bench: nodes=%d tunnels=%d channels=%d concurrency=%d",
                         config.nodes, config.tunnels, config.channels, config.concurrency));

  FanoutBench bench(config, deadline);
  if (!external.empty()) {
    Report(absl::StrCat("controller: external, at ", external));
    return bench.Run(external, 0);
  }

  std::string binary = absl::GetFlag(FLAGS_controller_binary);
  if (binary.empty()) {
    ASSIGN_OR_RETURN(binary, FindControllerInRunfiles(argv0));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TempDir> work_dir, TempDir::Create());
  ControllerProcess::Options options;
  options.binary = binary;
  options.work_dir = work_dir->path();
  options.log_level = absl::GetFlag(FLAGS_controller_log_level);
  g_phase = "starting the controller";
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(ControllerProcessPtr controller, ControllerProcess::Start(options, deadline));
  g_controller_pid = controller->pid();
  Report(absl::StrFormat("controller: pid %d at %s, port file after %s", controller->pid(),
                         controller->address(), Ms(absl::Now() - start)));

  absl::Status status = bench.Run(controller->address(), controller->pid());
  if (!status.ok()) {
    const std::string tail = controller->LogTail(20);
    if (!tail.empty()) {
      status = absl::Status(
          status.code(), absl::StrCat(status.message(), "\ncontroller log (last lines):\n", tail));
    }
  }
  g_phase = "stopping the controller";
  const absl::Status stopped = controller->Stop(absl::Seconds(10));
  g_controller_pid = 0;
  if (!stopped.ok()) {
    std::fprintf(stderr, "fanout_bench: warning: %s\n", std::string(stopped.message()).c_str());
  }
  return status;
}

}  // namespace
}  // namespace strait::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks the Strait controller's fan-out: starts //controller:strait-controller (or "
      "uses --controller_address), opens --nodes simulated agent sessions, applies --tunnels "
      "tunnels, and reports the latency from ApplyTunnel to the agents' ACKs for a change on "
      "one node and on every node, and the controller's memory.\n\n"
      "  bazel run -c opt //tests/bench:fanout_bench -- [--nodes=1000 --tunnels=10000 ...]");
  absl::ParseCommandLine(argc, argv);
  // A controller that dies mid-run must not kill the benchmark with it.
  signal(SIGPIPE, SIG_IGN);
  absl::Status status = strait::bench::Main(argv[0]);
  if (absl::IsDeadlineExceeded(status)) {
    status = absl::DeadlineExceededError(
        absl::StrCat("--timeout=", absl::FormatDuration(absl::GetFlag(FLAGS_timeout)),
                     " exceeded (raise it for larger runs): ", status.message()));
  }
  if (!status.ok()) {
    std::fprintf(stderr, "fanout_bench: FAILED: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
