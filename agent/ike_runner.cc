#include "agent/ike_runner.h"

#include <atomic>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "agent/snapshot_secrets.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "google/protobuf/util/message_differencer.h"

namespace strait::agent {
namespace {

using strait::v1::NodeTunnel;
using strait::v1::TunnelPhase;

// Records the CHILD SA instead of installing it: no dataplane yet.
class RecordingSink : public ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const ike::ChildSa&) override { return absl::OkStatus(); }
};

}  // namespace

struct IkeRunner::Worker {
  ~Worker() {
    WipeSpecSecrets(&raw_spec);
    WipeSpecSecrets(&spec);
  }
  std::string name;
  strait::v1::TunnelSpec raw_spec;  // As applied, to notice changes.
  strait::v1::TunnelSpec spec;      // After defaults.
  bool initiator = false;
  bool blocked = false;  // Its local address serves another tunnel.
  std::atomic<bool> stop{false};
  std::thread thread;
};

IkeRunner::IkeRunner(std::string node, ApplierImpl& applier, Clock& clock, IkeRunnerOptions options)
    : node_(std::move(node)), applier_(applier), clock_(clock), options_(options) {}

IkeRunner::~IkeRunner() { Stop(); }

void IkeRunner::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  for (auto& w : workers_) w->stop = true;
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  workers_.clear();
}

void IkeRunner::Report(const Worker& worker, TunnelPhase phase, const std::string& reason,
                       const std::string& message) {
  if (worker.stop) return;
  LOG_INFO("tunnel state")
      .With("node", node_)
      .With("tunnel", worker.name)
      .With("phase", strait::v1::TunnelPhase_Name(phase))
      .With("reason", reason)
      .With("message", message);
  applier_.SetEndStatus(worker.name, phase, reason, message);
}

void IkeRunner::Reconcile(const strait::v1::Snapshot& snapshot) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  absl::flat_hash_map<std::string, const NodeTunnel*> wanted;
  for (const NodeTunnel& t : snapshot.tunnels()) wanted[t.name()] = &t;

  // Stop what is gone or changed, and every blocked tunnel (re-examined below).
  std::vector<std::unique_ptr<Worker>> keep;
  std::vector<std::unique_ptr<Worker>> drop;
  for (auto& w : workers_) {
    auto it = wanted.find(w->name);
    const bool same =
        it != wanted.end() && !w->blocked &&
        google::protobuf::util::MessageDifferencer::Equals(w->raw_spec, it->second->spec());
    if (same) {
      keep.push_back(std::move(w));
    } else {
      w->stop = true;
      drop.push_back(std::move(w));
    }
  }
  for (auto& w : drop) {
    if (w->thread.joinable()) w->thread.join();
  }
  drop.clear();
  workers_ = std::move(keep);

  absl::flat_hash_set<std::string> running;
  absl::flat_hash_set<std::string> used_addresses;
  for (auto& w : workers_) {
    running.insert(w->name);
    used_addresses.insert(w->spec.local().address());
  }
  for (const NodeTunnel& t : snapshot.tunnels()) {
    if (running.contains(t.name())) continue;
    auto w = std::make_unique<Worker>();
    w->name = t.name();
    w->raw_spec = t.spec();
    strait::v1::Tunnel full;
    *full.mutable_spec() = t.spec();
    intent::ApplyDefaults(&full);
    w->spec = full.spec();
    WipeSpecSecrets(full.mutable_spec());
    const bool start = w->spec.start_action() != strait::v1::START_ACTION_ADD;
    w->initiator = start && (w->spec.remote().node().empty() || node_ < w->spec.remote().node());
    if (!used_addresses.insert(w->spec.local().address()).second) {
      w->blocked = true;
      Report(*w, strait::v1::TUNNEL_PHASE_ERROR, kLocalAddressInUseReason,
             "one tunnel per local address until SA dispatch lands");
    } else {
      Worker* raw = w.get();
      Report(*w, strait::v1::TUNNEL_PHASE_CONNECTING, w->initiator ? "INITIATING" : "AWAITING_PEER",
             w->initiator ? "initiating the IKE SA" : "waiting for the peer to initiate");
      w->thread = std::thread([this, raw] { RunWorker(raw); });
    }
    workers_.push_back(std::move(w));
  }
}

void IkeRunner::RunWorker(Worker* w) {
  auto sleep_for = [&](absl::Duration d) {
    const absl::Time until = clock_.Now() + d;
    while (!w->stop && clock_.Now() < until) absl::SleepFor(absl::Milliseconds(100));
  };
  const absl::Duration backoff =
      w->initiator ? options_.initiator_backoff : options_.responder_backoff;
  ike::RandomSourcePtr random = ike::CreateOpenSslRandomSource();
  RecordingSink sink;
  ike::UdpIoPtr io;
  while (!w->stop) {
    absl::StatusOr<ike::EngineConfig> config = ike::EngineConfigFromSpec(w->spec);
    if (!config.ok()) {
      Report(*w, strait::v1::TUNNEL_PHASE_ERROR, "INVALID_CONFIG",
             std::string(config.status().message()));
      sleep_for(absl::InfiniteDuration());
      break;
    }
    config->local.port = options_.port;
    config->remote.port = options_.port;
    if (io == nullptr) {
      absl::StatusOr<ike::UdpIoPtr> created = ike::UdpIo::Create(config->local);
      if (!created.ok()) {
        Report(*w, strait::v1::TUNNEL_PHASE_ERROR, "SOCKET_ERROR",
               std::string(created.status().message()));
        sleep_for(options_.initiator_backoff);
        continue;
      }
      io = *std::move(created);
    }
    absl::StatusOr<ike::EnginePtr> engine =
        ike::CreateEngine(*std::move(config), clock_, *random, sink);
    if (!engine.ok()) {
      Report(*w, strait::v1::TUNNEL_PHASE_ERROR, "INVALID_CONFIG",
             std::string(engine.status().message()));
      sleep_for(absl::InfiniteDuration());
      break;
    }
    std::optional<ike::EngineEvent> failure;
    std::optional<ike::EngineEvent> ike_sa;
    auto absorb = [&] {
      for (ike::EngineEvent& e : (*engine)->TakeEvents()) {
        switch (e.kind) {
          case ike::EngineEvent::Kind::kIkeSaEstablished:
            ike_sa = e;
            break;
          case ike::EngineEvent::Kind::kChildSaEstablished: {
            std::string message;
            if (ike_sa.has_value()) {
              message = absl::StrFormat("IKE %s, SPIs %016x_i %016x_r; ",
                                        ike::SuiteName(ike_sa->algorithms, true), ike_sa->ike_spi_i,
                                        ike_sa->ike_spi_r);
            }
            absl::StrAppend(&message, absl::StrFormat("ESP %s, SPIs %08x_i %08x_o (%s)",
                                                      ike::SuiteName(e.algorithms, false),
                                                      e.child_inbound_spi, e.child_outbound_spi,
                                                      e.initiator ? "initiator" : "responder"));
            Report(*w, strait::v1::TUNNEL_PHASE_ESTABLISHED, "ESTABLISHED", message);
            break;
          }
          case ike::EngineEvent::Kind::kFailed:
            failure = std::move(e);
            break;
        }
      }
    };
    if (w->initiator) {
      Report(*w, strait::v1::TUNNEL_PHASE_CONNECTING, "INITIATING", "initiating the IKE SA");
      if (absl::Status s = (*engine)->Initiate(); !s.ok()) {
        absorb();
        if (!failure.has_value()) {
          failure = ike::EngineEvent{};
          failure->reason = ike::FailureReason::kInternalError;
          failure->detail = std::string(s.message());
        }
      }
    } else {
      Report(*w, strait::v1::TUNNEL_PHASE_CONNECTING, "AWAITING_PEER",
             "waiting for the peer to initiate");
    }
    if (!failure.has_value()) {
      absl::Status run = io->Run(**engine, clock_, absl::InfiniteFuture(), [&] {
        absorb();
        return failure.has_value() || w->stop.load();
      });
      if (!run.ok() && !failure.has_value()) {
        failure = ike::EngineEvent{};
        failure->reason = ike::FailureReason::kInternalError;
        failure->detail = run.ToString();
      }
    }
    if (w->stop) break;
    if (failure.has_value()) {
      Report(*w, strait::v1::TUNNEL_PHASE_FAILED, ike::FailureReasonName(failure->reason),
             failure->detail);
      sleep_for(backoff);
    }
  }
}

}  // namespace strait::agent
