// strait-agent: the Strait node agent. Flags, signals and the metrics
// endpoint live here; the controller session in session_impl.cc, the
// applied intent in applier_impl.cc.

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
#include "absl/time/time.h"
#include "agent/applier_impl.h"
#include "agent/dataplane_factory.h"
#include "agent/ike_runner.h"
#include "agent/instrumented_dataplane.h"
#include "agent/intent_file.h"
#include "agent/metrics.h"
#include "agent/session_impl.h"
#include "agent/state_store_impl.h"
#include "common/clock.h"
#include "common/flags.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "dataplane/fake_dataplane.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

ABSL_FLAG(std::string, node_name, "",
          "Required. The name of this node (a DNS label, for example node-a): the agent asks "
          "the controller for this node's share of the intent and owns the tunnel ends whose "
          "spec.node (or remote.node) it is. In Kubernetes, the pod's spec.nodeName.");
ABSL_FLAG(std::string, controller, "127.0.0.1:7443",
          "Controller address: HOST:PORT, or unix:///ABSOLUTE/PATH for its Unix socket (agents "
          "in other network namespaces use the socket).");
ABSL_FLAG(bool, insecure, false,
          "Talk plaintext gRPC to the controller. Required for now, since TLS is not supported "
          "yet; not needed with --intent-file.");
ABSL_FLAG(std::string, state_dir, "/var/lib/strait/agent",
          "Directory where the last applied snapshot is kept (snapshot.pb, mode 0600: it holds "
          "pre-shared keys), so that after a restart the agent runs it even while the "
          "controller is away. Created with mode 0700 when missing. Unused with --intent-file.");
ABSL_FLAG(std::string, intent_file, "",
          "Standalone mode: read the tunnels from this YAML file (the format straitctl applies, "
          "several documents allowed) instead of a controller, and run those with an end on "
          "--node-name. Invalid intent stops the agent at start; SIGHUP reloads the file and "
          "keeps the running intent when the new one is invalid.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9444",
          "HOST:PORT of the Prometheus endpoint (/metrics). Empty disables it.");
ABSL_FLAG(absl::Duration, status_interval, absl::Seconds(30),
          "Longest time between two tunnel status reports to the controller (reports also go "
          "out after connecting, after each snapshot, and when a tunnel's state changes).");
ABSL_FLAG(bool, enable_ike, false,
          "Experimental: negotiate the applied tunnels with the built-in IKEv2 engine (PSK or "
          "certificates, CHILD SA rekeying, DPD, DELETE) and report their real state. Binds UDP "
          "ports 500 and 4500 on each "
          "local address, shared by its tunnels. CHILD SAs go to an in-memory dataplane for "
          "now: no kernel state is programmed yet. Without it every tunnel end is reported "
          "PENDING (AWAITING_IKE).");
ABSL_FLAG(std::string, dataplane, "auto",
          "Where CHILD SAs go (with --enable-ike): xfrm (the kernel's ESP, over netlink), "
          "userspace (Strait's own ESP over a TUN device, ESP in UDP on port 4500, for kernels "
          "without ESP), memory (nothing is programmed), or auto: xfrm when the kernel accepts "
          "an ESP SA, else userspace.");
ABSL_FLAG(std::string, tun_device, "strait%d",
          "Name of the userspace dataplane's TUN device (%d: the first free number).");
ABSL_FLAG(std::string, ike_certificate, "",
          "This node's IKE certificate (PEM, end entity first, then intermediates), for "
          "tunnels with certificate auth that name no certificateFile.");
ABSL_FLAG(std::string, ike_private_key, "",
          "The private key of --ike-certificate (PEM, mode 0600: the agent refuses a key file "
          "that group or others can read).");
ABSL_FLAG(int, ike_fragment_size, 1280,
          "IKE fragmentation (RFC 7383): encrypted IKE messages that would make an IP datagram "
          "larger than this many bytes (IP and UDP headers included) go out as fragments, with "
          "peers that support it. 0 turns fragmentation off (not offered to peers).");
ABSL_FLAG(int, ike_cookie_threshold, 30,
          "Half-open IKE SAs (responders between IKE_SA_INIT and IKE_AUTH, all tunnels) from "
          "which on a new IKE_SA_INIT must carry a COOKIE (RFC 7296 2.6): without one it gets a "
          "stateless N(COOKIE) answer. A tunnel whose half-open slots are all taken requires "
          "cookies too. 0: always.");
ABSL_FLAG(int, ike_half_open_per_source, 5,
          "Half-open IKE SAs one source address may have: beyond them its IKE_SA_INIT requests "
          "must carry a COOKIE, and once it has this many that came with a valid cookie, "
          "further ones are dropped (strait_agent_ike_dropped_total{reason=\"source_limit\"}).");
ABSL_FLAG(int, ike_max_half_open, 1000,
          "Half-open IKE SAs in all; further IKE_SA_INIT requests are dropped "
          "(strait_agent_ike_dropped_total{reason=\"half_open_limit\"}).");
ABSL_FLAG(std::string, log_level, "info", "Least severe log level: debug, info, warning, error.");

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr char kAgentVersion[] = "strait-agent (Strait) strait.v1";

constexpr char kUsage[] = R"(the Strait node agent.

Usage: strait-agent --node-name NAME --insecure [--controller ADDR] [flags]
       strait-agent --node-name NAME --intent-file FILE [flags]

Connects to the controller as --node-name, applies each snapshot of the
node's intent it pushes, ACKs or NACKs it, persists it under --state-dir, and
reports tunnel status. With --intent-file it runs standalone from a YAML file
instead (SIGHUP reloads it). Metrics on --metrics-listen. SIGTERM or SIGINT
stops it cleanly.

Flags may be written with dashes or underscores (--node-name, --node_name).)";

int UsageError(absl::string_view message) {
  std::cerr << "strait-agent: " << message << "\n(see strait-agent --help)\n";
  return kExitUsage;
}

// Blocked in every thread (threads inherit the mask, so this runs before
// any is started) and taken with sigwait by the main thread, which does
// nothing else once the agent runs: no work happens in a signal handler.
sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

// Waits for SIGTERM or SIGINT; SIGHUP calls `on_hangup`. Returns the signal.
template <typename F>
int WaitForStop(const sigset_t& signals, F on_hangup) {
  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      on_hangup();
      continue;
    }
    return signal_number;
  }
}

// A second stop signal while stopping means: stop now.
void ExitOnSecondSignal(const sigset_t& signals) {
  std::thread([signals] {
    int again = 0;
    while (sigwait(&signals, &again) == 0 && again == SIGHUP) {
    }
    LOG_ERROR("second signal during shutdown, exiting at once").With("signal", strsignal(again));
    _exit(kExitFailure);
  }).detach();
}

// Ends the process once the agent has stopped: the session is closed and
// the snapshot was persisted before its ACK, so nothing is left to save.
// The metrics server (civetweb) would take up to 2 s more to stop (it polls
// in 2 s quanta), which a SIGTERM budget cannot spare. Log lines are
// written unbuffered, so nothing is lost.
[[noreturn]] void ExitNow() { _exit(0); }

}  // namespace

int main(int argc, char** argv) {
  strait::ParsedFlags flags =
      strait::ParseFlags({kUsage, {"agent/", "common/"}, kAgentVersion},
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

  const std::string node = absl::GetFlag(FLAGS_node_name);
  if (node.empty()) {
    return UsageError("--node-name is required: the name of this node, for example node-a");
  }
  if (!strait::intent::IsDnsLabel(node)) {
    return UsageError(absl::StrCat("--node-name: \"", node,
                                   "\" is not a DNS label (1 to 63 lowercase letters, digits and "
                                   "'-', starting and ending with a letter or digit)"));
  }
  const absl::Duration status_interval = absl::GetFlag(FLAGS_status_interval);
  if (status_interval <= absl::ZeroDuration()) {
    return UsageError("--status-interval must be positive");
  }
  const std::string intent_file = absl::GetFlag(FLAGS_intent_file);
  const bool standalone = !intent_file.empty();
  const std::string controller = absl::GetFlag(FLAGS_controller);
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  if (!standalone) {
    if (controller.empty()) return UsageError("--controller is empty");
    if (state_dir.empty()) return UsageError("--state-dir is empty");
    if (!absl::GetFlag(FLAGS_insecure)) {
      return UsageError(absl::StrCat(
          "TLS is not supported yet: pass --insecure to talk plaintext gRPC to the controller at ",
          controller, " (or run standalone with --intent-file)"));
    }
  }

  const sigset_t signals = HandledSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A write to a closed socket is an error return, not a reason to die.
  signal(SIGPIPE, SIG_IGN);

  auto registry = std::make_shared<prometheus::Registry>();
  strait::agent::AgentMetrics metrics(*registry);
  metrics.SetSessionState(standalone ? strait::agent::SessionState::kStandalone
                                     : strait::agent::SessionState::kDisconnected);
  strait::agent::ApplierImpl applier(node, strait::RealClock::Get(), &metrics);
  strait::agent::IkeMetrics ike_metrics(*registry);
  absl::StatusOr<strait::agent::DataplaneKind> dataplane_kind =
      strait::agent::ParseDataplaneKind(absl::GetFlag(FLAGS_dataplane));
  if (!dataplane_kind.ok())
    return UsageError(absl::StrCat("--dataplane: ", dataplane_kind.status().message()));
  strait::agent::EspSocketBridge esp_bridge;
  strait::agent::DataplaneSetup dataplane_setup;
  std::unique_ptr<strait::dataplane::PeerRouteTable> peer_routes;
  std::unique_ptr<strait::agent::InstrumentedDataplane> counted_dataplane;
  std::unique_ptr<strait::agent::IkeRunner> ike_runner;
  if (absl::GetFlag(FLAGS_enable_ike)) {
    absl::StatusOr<strait::agent::DataplaneSetup> setup = strait::agent::CreateDataplane(
        *dataplane_kind, absl::GetFlag(FLAGS_tun_device), esp_bridge);
    if (!setup.ok()) {
      LOG_ERROR("cannot set up the dataplane")
          .With("node", node)
          .With("dataplane", absl::GetFlag(FLAGS_dataplane))
          .With("error", setup.status().ToString());
      return kExitFailure;
    }
    dataplane_setup = *std::move(setup);
    strait::LogLine(dataplane_setup.kind == strait::agent::DataplaneKind::kXfrm
                        ? strait::LogLevel::kInfo
                        : strait::LogLevel::kWarning,
                    dataplane_setup.kind == strait::agent::DataplaneKind::kUserspace
                        ? "dataplane: userspace ESP (the kernel's ESP is not used)"
                    : dataplane_setup.kind == strait::agent::DataplaneKind::kMemory
                        ? "dataplane: memory, no traffic is protected"
                        : "dataplane: kernel XFRM")
        .With("node", node)
        .With("dataplane", strait::agent::DataplaneKindName(dataplane_setup.kind))
        .With("detail", dataplane_setup.detail);
    metrics.SetDataplane(strait::agent::DataplaneKindName(dataplane_setup.kind));
    if (dataplane_setup.kind == strait::agent::DataplaneKind::kXfrm) {
      absl::StatusOr<std::unique_ptr<strait::dataplane::PeerRouteTable>> routes =
          strait::dataplane::PeerRouteTable::Create();
      if (!routes.ok()) {
        LOG_ERROR("cannot open rtnetlink for routes").With("error", routes.status().ToString());
        return kExitFailure;
      }
      peer_routes = *std::move(routes);
      // Routes an earlier run left (it was killed): their policies are gone
      // (cleaned up above), so they would carry traffic unprotected.
      if (absl::StatusOr<int> removed = peer_routes->RemoveAll(); !removed.ok()) {
        LOG_WARNING("cannot remove earlier routes to remote selectors")
            .With("error", removed.status().ToString());
      } else if (*removed > 0) {
        LOG_INFO("removed routes an earlier run left").With("count", *removed);
      }
    }
    counted_dataplane = std::make_unique<strait::agent::InstrumentedDataplane>(
        *dataplane_setup.dataplane, *registry, peer_routes.get());
    strait::agent::IkeRunnerOptions ike_options;
    if (dataplane_setup.kind == strait::agent::DataplaneKind::kUserspace) {
      ike_options.force_encapsulation = true;
      ike_options.esp_handler = [input = dataplane_setup.esp_input](
                                    absl::Span<const uint8_t> payload,
                                    const strait::ike::Endpoint& from,
                                    const strait::ike::Bytes& local) {
        input(payload, strait::dataplane::UdpEndpoint{from.address, from.port}, local);
      };
    }
    ike_options.kernel_udp_encapsulation =
        dataplane_setup.kind == strait::agent::DataplaneKind::kXfrm;
    ike_options.certificates.certificate_file = absl::GetFlag(FLAGS_ike_certificate);
    ike_options.certificates.private_key_file = absl::GetFlag(FLAGS_ike_private_key);
    const int fragment_size = absl::GetFlag(FLAGS_ike_fragment_size);
    if (fragment_size != 0 && (fragment_size < 256 || fragment_size > 65535)) {
      LOG_ERROR("--ike-fragment-size must be 0 or 256..65535").With("value", fragment_size);
      return kExitFailure;
    }
    ike_options.fragment_size = static_cast<size_t>(fragment_size);
    ike_options.admission.cookie_threshold =
        static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_ike_cookie_threshold)));
    ike_options.admission.per_source_limit =
        static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_ike_half_open_per_source)));
    ike_options.admission.max_half_open =
        static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_ike_max_half_open)));
    absl::StatusOr<std::unique_ptr<strait::agent::IkeRunner>> runner =
        strait::agent::IkeRunner::Create(node, applier, *counted_dataplane,
                                         strait::RealClock::Get(), ike_metrics, ike_options);
    if (!runner.ok()) {
      LOG_ERROR("cannot start IKE").With("node", node).With("error", runner.status().ToString());
      return kExitFailure;
    }
    ike_runner = *std::move(runner);
    esp_bridge.Connect([runner = ike_runner.get()](absl::Span<const uint8_t> payload,
                                                   const strait::dataplane::UdpEndpoint& local,
                                                   const strait::dataplane::UdpEndpoint& remote) {
      return runner->SendEsp(payload, strait::ike::Endpoint{local.address, local.port},
                             strait::ike::Endpoint{remote.address, remote.port});
    });
    applier.SetApplyHook(
        [runner = ike_runner.get()](const strait::v1::Snapshot& s) { runner->Reconcile(s); });
  }

  std::unique_ptr<prometheus::Exposer> exposer;
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    // prometheus-cpp reports a failed bind with an exception.
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_listen, /*num_threads=*/2);
    } catch (const std::exception& e) {
      LOG_ERROR("cannot serve metrics")
          .With("node", node)
          .With("metrics", metrics_listen)
          .With("error", e.what());
      return kExitFailure;
    }
    exposer->RegisterCollectable(registry);
  }

  if (standalone) {
    absl::Status loaded = strait::agent::ApplyIntentFile(intent_file, node, applier, &metrics);
    if (!loaded.ok()) {
      LOG_ERROR("invalid intent file; not starting")
          .With("node", node)
          .With("intent_file", intent_file)
          .With("error", loaded.message());
      return kExitFailure;
    }
    LOG_INFO("agent running standalone")
        .With("node", node)
        .With("intent_file", intent_file)
        .With("version", applier.AppliedVersion())
        .With("metrics", metrics_listen.empty() ? std::string("off") : metrics_listen);
    int stop = WaitForStop(signals, [&] {
      LOG_INFO("reloading the intent file").With("node", node).With("intent_file", intent_file);
      absl::Status reloaded = strait::agent::ApplyIntentFile(intent_file, node, applier, &metrics);
      if (!reloaded.ok()) {
        LOG_ERROR("intent file not reloaded; the running intent stays")
            .With("node", node)
            .With("version", applier.AppliedVersion())
            .With("error", reloaded.message());
      }
    });
    LOG_INFO("agent stopping").With("node", node).With("signal", strsignal(stop));
    ExitOnSecondSignal(signals);
    if (ike_runner != nullptr) {
      ike_runner->Stop();
      esp_bridge.Disconnect();
    }
    LOG_INFO("agent stopped").With("node", node);
    ExitNow();
  }

  absl::StatusOr<std::unique_ptr<strait::agent::FileStateStore>> store =
      strait::agent::FileStateStore::Create(state_dir);
  if (!store.ok()) {
    LOG_ERROR("cannot use the state directory")
        .With("node", node)
        .With("dir", state_dir)
        .With("error", store.status().ToString());
    return kExitFailure;
  }
  // A snapshot that cannot be read or no longer validates is dropped: the
  // controller pushes the current one on connect.
  absl::StatusOr<strait::agent::SnapshotPtr> persisted = (*store)->Load();
  if (!persisted.ok()) {
    LOG_ERROR("persisted snapshot unreadable; starting without intent")
        .With("node", node)
        .With("file", (*store)->path())
        .With("error", persisted.status().ToString());
  } else if (*persisted != nullptr) {
    absl::Status restored = applier.Apply(**persisted);
    if (restored.ok()) {
      LOG_INFO("resumed persisted snapshot")
          .With("node", node)
          .With("version", (*persisted)->version())
          .With("tunnels", (*persisted)->tunnels_size());
    } else {
      LOG_ERROR("persisted snapshot not valid for this node; starting without intent")
          .With("node", node)
          .With("file", (*store)->path())
          .With("version", (*persisted)->version())
          .With("error", restored.message());
    }
  }
  if (persisted.ok()) persisted->reset();  // wipes the copy

  strait::agent::SessionOptions options;
  options.node_name = node;
  options.agent_version = kAgentVersion;
  options.controller = controller;
  options.status_interval = status_interval;
  auto channel_factory = [controller] {
    return strait::agent::CreateControllerChannel(controller, grpc::InsecureChannelCredentials());
  };
  auto session = std::make_unique<strait::agent::SessionImpl>(channel_factory, options, applier,
                                                              **store, &metrics);
  session->Start();
  LOG_INFO("agent running")
      .With("node", node)
      .With("controller", controller)
      .With("insecure", true)
      .With("state_dir", state_dir)
      .With("metrics", metrics_listen.empty() ? std::string("off") : metrics_listen);

  int stop = WaitForStop(signals, [&] {
    LOG_INFO("SIGHUP ignored: nothing to reload without --intent-file").With("node", node);
  });
  LOG_INFO("agent stopping").With("node", node).With("signal", strsignal(stop));
  ExitOnSecondSignal(signals);
  if (ike_runner != nullptr) {
    ike_runner->Stop();
    esp_bridge.Disconnect();
  }
  session->Shutdown();
  session.reset();
  LOG_INFO("agent stopped").With("node", node);
  ExitNow();
}
