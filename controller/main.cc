// strait-controller: the Strait controller daemon. Flags, signals and the
// metrics endpoint live here; the server itself in controller_server.cc.

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "controller/controller_server.h"
#include "controller/listen_address.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7443",
          "Comma-separated gRPC listening addresses: HOST:PORT ([::1]:PORT for IPv6) or "
          "unix:///ABSOLUTE/PATH, for example 127.0.0.1:7443,unix:///run/strait/controller.sock "
          "(agents in other network namespaces reach the controller over the Unix socket, "
          "whose directory is created when missing). Port 0 picks a free port (see "
          "--port-file).");
ABSL_FLAG(std::string, data_dir, "/var/lib/strait/controller",
          "Directory of the SQLite intent store (strait.db, WAL, fsync on every commit). "
          "Created with mode 0700 when missing: it holds pre-shared keys.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9443",
          "HOST:PORT of the Prometheus endpoint (/metrics). Empty disables it.");
ABSL_FLAG(bool, insecure, false,
          "Serve plaintext gRPC. Required for now, since TLS is not supported yet; only "
          "loopback TCP addresses (127.0.0.0/8, [::1], localhost) and unix: sockets are then "
          "accepted in --listen.");
ABSL_FLAG(absl::Duration, max_ike_lifetime, absl::Hours(8),
          "Longest IKE SA lifetime a tunnel may ask for (spec.ike.lifetime).");
ABSL_FLAG(absl::Duration, max_child_lifetime, absl::Hours(1),
          "Longest child SA lifetime a tunnel may ask for (spec.esp.lifetime).");
ABSL_FLAG(std::string, log_level, "info", "Least severe log level: debug, info, warning, error.");
ABSL_FLAG(std::string, port_file, "",
          "When set, the port of the first TCP --listen address, as bound, is written to this "
          "file once the controller serves (useful with port 0).");

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] = R"(the Strait controller: tunnel intent, agent sessions, admin API.

Usage: strait-controller --insecure [flags]

Serves strait.v1.AdminService (straitctl) and strait.v1.AgentService (agents)
over gRPC, with grpc.health.v1 health checking and server reflection, stores
intent in SQLite under --data-dir, and exports Prometheus metrics on
--metrics-listen. SIGTERM or SIGINT shuts it down cleanly.

Flags may be written with dashes or underscores (--data-dir, --data_dir).)";

int UsageError(absl::string_view message) {
  std::cerr << "strait-controller: " << message << "\n(see strait-controller --help)\n";
  return kExitUsage;
}

// The signals that stop the controller are blocked in every thread (threads
// inherit the mask, so this runs before any is started) and taken with
// sigwait: no work happens in a signal handler.
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  strait::ParsedFlags flags = strait::ParseFlags(
      {kUsage, {"controller/", "common/"}, "strait-controller (Strait) strait.v1"},
      strait::NormalizeFlagNames(std::vector<std::string>(argv, argv + argc)));
  if (flags.exit_now) {
    return 0;
  }
  if (!flags.positional.empty()) {
    return UsageError(absl::StrCat("unexpected argument \"", flags.positional[0], "\""));
  }

  if (absl::Status s = strait::SetLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    return UsageError(s.message());
  }

  if (!absl::GetFlag(FLAGS_insecure)) {
    return UsageError(
        "TLS is not supported yet: pass --insecure to serve plaintext gRPC, which is then "
        "accepted on loopback TCP addresses and unix: sockets only");
  }
  absl::StatusOr<std::vector<strait::controller::ListenAddress>> listen =
      strait::controller::ParseListenAddresses(absl::GetFlag(FLAGS_listen));
  if (!listen.ok()) {
    return UsageError(listen.status().message());
  }
  if (absl::Status s = strait::controller::CheckInsecureListenAddresses(*listen); !s.ok()) {
    return UsageError(s.message());
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    bool has_tcp = false;
    for (const auto& address : *listen) {
      has_tcp |= address.kind == strait::controller::ListenAddress::Kind::kTcp;
    }
    if (!has_tcp) {
      return UsageError("--port-file needs a TCP address in --listen");
    }
  }
  strait::intent::ValidationPolicy policy;
  policy.max_ike_lifetime = absl::GetFlag(FLAGS_max_ike_lifetime);
  policy.max_child_lifetime = absl::GetFlag(FLAGS_max_child_lifetime);
  if (policy.max_ike_lifetime <= absl::ZeroDuration() ||
      policy.max_child_lifetime <= absl::ZeroDuration()) {
    return UsageError("--max-ike-lifetime and --max-child-lifetime must be positive");
  }
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) {
    return UsageError("--data-dir is empty");
  }

  sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A write to a closed socket is an error return, not a reason to die.
  signal(SIGPIPE, SIG_IGN);

  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address = "off";
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    // prometheus-cpp reports a failed bind with an exception.
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_listen, /*num_threads=*/2);
    } catch (const std::exception& e) {
      LOG_ERROR("cannot serve metrics").With("metrics", metrics_listen).With("error", e.what());
      return kExitFailure;
    }
    exposer->RegisterCollectable(registry);
    metrics_address = metrics_listen;
    std::vector<int> ports = exposer->GetListeningPorts();
    if (!ports.empty()) {
      size_t colon = metrics_listen.rfind(':');
      metrics_address = absl::StrCat(metrics_listen.substr(0, colon), ":", ports[0]);
    }
  }

  strait::controller::ControllerServerOptions options;
  options.listen = *listen;
  options.data_dir = data_dir;
  options.policy = policy;
  options.registry = registry.get();
  absl::StatusOr<std::unique_ptr<strait::controller::ControllerServer>> server =
      strait::controller::ControllerServer::Start(options);
  if (!server.ok()) {
    LOG_ERROR("controller failed to start")
        .With("error", server.status().ToString())
        .With("listen", absl::GetFlag(FLAGS_listen))
        .With("data_dir", data_dir);
    return kExitFailure;
  }
  if (!port_file.empty()) {
    absl::Status s =
        strait::WriteFileAtomically(port_file, absl::StrCat((*server)->tcp_port(), "\n"), 0644);
    if (!s.ok()) {
      LOG_ERROR("cannot write the port file").With("error", s.ToString());
      return kExitFailure;
    }
  }
  LOG_INFO("controller serving")
      .With("listen", absl::StrJoin((*server)->bound_addresses(), ","))
      .With("metrics", metrics_address)
      .With("data_dir", data_dir)
      .With("insecure", true);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LOG_INFO("controller stopping").With("signal", strsignal(signal_number));
  // A second signal while shutting down means: stop now.
  std::thread([stop_signals] {
    int again = 0;
    sigwait(&stop_signals, &again);
    LOG_ERROR("second signal during shutdown, exiting at once").With("signal", strsignal(again));
    _exit(kExitFailure);
  }).detach();

  // civetweb takes up to 2 s to notice it should stop: let it do so while
  // the gRPC server shuts down.
  std::thread stop_metrics([&exposer] { exposer.reset(); });
  (*server)->Shutdown(strait::controller::ControllerServer::kDefaultGrace);
  server->reset();
  stop_metrics.join();
  LOG_INFO("controller stopped");
  return 0;
}
