#include "agent/applier_impl.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/message_differencer.h"

namespace strait::agent {
namespace {

using strait::v1::NodeTunnel;
using strait::v1::Snapshot;
using strait::v1::Tunnel;

// A NACK names this many problems at most; the rest are counted.
constexpr size_t kMaxReportedProblems = 20;

// The agent checks structure only: lifetimes are the controller's policy.
intent::ValidationPolicy PermissivePolicy() {
  intent::ValidationPolicy policy;
  policy.max_ike_lifetime = absl::InfiniteDuration();
  policy.max_child_lifetime = absl::InfiniteDuration();
  return policy;
}

std::string TunnelLabel(const NodeTunnel& tunnel, int index) {
  if (tunnel.name().empty()) return absl::StrCat("tunnels[", index, "]");
  return absl::StrCat("tunnel \"", absl::CHexEscape(tunnel.name()), "\"");
}

// Wipes its tunnels' keys when it goes away.
class TunnelList {
 public:
  ~TunnelList() {
    for (Tunnel& t : tunnels_) WipeSpecSecrets(t.mutable_spec());
  }
  std::vector<Tunnel>& tunnels() { return tunnels_; }

 private:
  std::vector<Tunnel> tunnels_;
};

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t nanos = absl::ToUnixNanos(t);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

}  // namespace

absl::Status ValidateSnapshot(const Snapshot& snapshot, absl::string_view node) {
  std::vector<std::string> problems;
  if (snapshot.version().empty()) problems.push_back("snapshot.version: is required");

  const intent::ValidationPolicy policy = PermissivePolicy();
  absl::flat_hash_set<std::string> names;
  TunnelList valid;
  valid.tunnels().reserve(snapshot.tunnels_size());
  for (int i = 0; i < snapshot.tunnels_size(); ++i) {
    const NodeTunnel& half = snapshot.tunnels(i);
    const std::string label = TunnelLabel(half, i);
    size_t before = problems.size();
    if (!half.name().empty() && !names.insert(half.name()).second) {
      problems.push_back(absl::StrCat(label, ": appears more than once in the snapshot"));
    }
    if (half.spec().node() != node) {
      problems.push_back(absl::StrCat(label, ": spec.node: is \"",
                                      absl::CHexEscape(half.spec().node()),
                                      "\", not this agent's node \"", node, "\""));
    }
    Tunnel tunnel;
    tunnel.mutable_metadata()->set_name(half.name());
    tunnel.mutable_metadata()->set_generation(half.generation());
    *tunnel.mutable_spec() = half.spec();
    intent::ApplyDefaults(&tunnel);
    for (const intent::FieldViolation& v : intent::ValidateTunnel(tunnel, policy)) {
      problems.push_back(absl::StrCat(label, ": ", v.field, ": ", v.reason));
    }
    if (problems.size() == before) {
      // Overlaps are checked on this node only: the peer node of a
      // node-to-node tunnel checks its own half.
      tunnel.mutable_spec()->mutable_remote()->clear_node();
      valid.tunnels().push_back(std::move(tunnel));
    } else {
      WipeSpecSecrets(tunnel.mutable_spec());
    }
  }

  // Each pair once: every tunnel against the ones before it.
  std::vector<const Tunnel*> earlier;
  for (const Tunnel& tunnel : valid.tunnels()) {
    for (const intent::FieldViolation& v : intent::CheckOverlaps(tunnel, earlier)) {
      problems.push_back(
          absl::StrCat("tunnel \"", tunnel.metadata().name(), "\": ", v.field, ": ", v.reason));
    }
    earlier.push_back(&tunnel);
  }

  if (problems.empty()) return absl::OkStatus();
  const size_t total = problems.size();
  if (total > kMaxReportedProblems) {
    problems.resize(kMaxReportedProblems);
    problems.push_back(absl::StrCat("and ", total - kMaxReportedProblems, " more problems"));
  }
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

ApplierImpl::ApplierImpl(std::string node, Clock& clock, AgentMetrics* metrics)
    : node_(std::move(node)), clock_(clock), metrics_(metrics) {
  if (metrics_ != nullptr) {
    metrics_->SetAppliedVersion("");
    metrics_->SetTunnelPhases({});
  }
}

absl::Status ApplierImpl::Apply(const Snapshot& snapshot) {
  if (absl::Status status = ValidateSnapshot(snapshot, node_); !status.ok()) return status;
  SnapshotPtr next = CopySnapshot(snapshot);
  // Nonces belong to one push; the applied state is the content.
  next->clear_nonce();
  SnapshotPtr previous;
  {
    absl::MutexLock lock(&mu_);
    LogChanges(applied_.get(), *next);
    previous = std::move(applied_);
    applied_ = std::move(next);
    absl::flat_hash_set<std::string> names;
    for (const NodeTunnel& t : applied_->tunnels()) names.insert(t.name());
    for (auto it = end_status_.begin(); it != end_status_.end();) {
      if (names.contains(it->first)) {
        ++it;
      } else {
        end_status_.erase(it++);
      }
    }
    if (metrics_ != nullptr) {
      metrics_->SetAppliedVersion(applied_->version());
      UpdatePhaseMetrics();
    }
  }
  if (apply_hook_) {
    SnapshotPtr copy;
    {
      absl::MutexLock lock(&mu_);
      copy = CopySnapshot(*applied_);
    }
    apply_hook_(*copy);
  }
  std::function<void()> listener;
  {
    absl::MutexLock lock(&mu_);
    listener = listener_;
  }
  if (listener) listener();
  return absl::OkStatus();
}

void ApplierImpl::UpdatePhaseMetrics() {
  if (metrics_ == nullptr || applied_ == nullptr) return;
  absl::flat_hash_map<strait::v1::TunnelPhase, int64_t> counts;
  for (const NodeTunnel& t : applied_->tunnels()) {
    auto it = end_status_.find(t.name());
    ++counts[it == end_status_.end() ? strait::v1::TUNNEL_PHASE_PENDING : it->second.phase()];
  }
  if (counts.empty()) counts[strait::v1::TUNNEL_PHASE_PENDING] = 0;
  metrics_->SetTunnelPhases(counts);
}

void ApplierImpl::SetEndStatus(const std::string& name, strait::v1::TunnelPhase phase,
                               const std::string& reason, const std::string& message) {
  strait::v1::TunnelEndStatus status;
  status.set_phase(phase);
  status.set_reason(reason);
  status.set_message(message);
  SetEndStatus(name, status);
}

void ApplierImpl::SetEndStatus(const std::string& name, const strait::v1::TunnelEndStatus& status) {
  strait::v1::TunnelEndStatus kept;
  kept.set_phase(status.phase());
  kept.set_reason(status.reason());
  kept.set_message(status.message());
  if (status.has_ike_sa()) *kept.mutable_ike_sa() = status.ike_sa();
  *kept.mutable_child_sas() = status.child_sas();
  kept.set_dataplane(status.dataplane());
  std::function<void()> listener;
  {
    absl::MutexLock lock(&mu_);
    if (applied_ == nullptr) return;
    bool known = false;
    for (const NodeTunnel& t : applied_->tunnels()) known = known || t.name() == name;
    if (!known) return;
    strait::v1::TunnelEndStatus& end = end_status_[name];
    if (google::protobuf::util::MessageDifferencer::Equals(end, kept)) return;
    end = std::move(kept);
    UpdatePhaseMetrics();
    // Called from the IKE runner's thread, maybe while the session sets it.
    listener = listener_;
  }
  if (listener) listener();
}

std::string ApplierImpl::AppliedVersion() {
  absl::MutexLock lock(&mu_);
  return applied_ == nullptr ? std::string() : applied_->version();
}

strait::v1::StatusReport ApplierImpl::BuildStatusReport() {
  strait::v1::StatusReport report;
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  if (applied_ == nullptr) return report;
  for (const NodeTunnel& tunnel : applied_->tunnels()) {
    strait::v1::TunnelEndReport* end = report.add_tunnels();
    end->set_name(tunnel.name());
    strait::v1::TunnelEndStatus* status = end->mutable_status();
    status->set_node(node_);
    if (auto it = end_status_.find(tunnel.name()); it != end_status_.end()) {
      status->MergeFrom(it->second);
    } else {
      status->set_phase(strait::v1::TUNNEL_PHASE_PENDING);
      status->set_reason(kAwaitingIkeReason);
      status->set_message(kAwaitingIkeMessage);
    }
    status->set_observed_generation(tunnel.generation());
    SetTimestamp(now, status->mutable_report_time());
  }
  return report;
}

void ApplierImpl::SetStatusListener(std::function<void()> listener) {
  absl::MutexLock lock(&mu_);
  listener_ = std::move(listener);
}

void ApplierImpl::LogChanges(const Snapshot* before, const Snapshot& after) {
  absl::flat_hash_map<std::string, const NodeTunnel*> old_tunnels;
  if (before != nullptr) {
    for (const NodeTunnel& t : before->tunnels()) old_tunnels[t.name()] = &t;
  }
  for (const NodeTunnel& t : after.tunnels()) {
    auto it = old_tunnels.find(t.name());
    if (it == old_tunnels.end()) {
      LOG_INFO("tunnel added")
          .With("node", node_)
          .With("tunnel", t.name())
          .With("generation", t.generation())
          .With("remote", t.spec().remote().address());
      continue;
    }
    // Specs are compared too: tunnels from --intent-file keep generation 1.
    if (it->second->generation() != t.generation() ||
        !google::protobuf::util::MessageDifferencer::Equals(it->second->spec(), t.spec())) {
      LOG_INFO("tunnel updated")
          .With("node", node_)
          .With("tunnel", t.name())
          .With("generation", t.generation());
    }
    old_tunnels.erase(it);
  }
  for (const auto& [name, tunnel] : old_tunnels) {
    LOG_INFO("tunnel removed").With("node", node_).With("tunnel", name);
  }
  LOG_INFO("snapshot applied")
      .With("node", node_)
      .With("version", after.version())
      .With("previous_version", before == nullptr ? std::string() : before->version())
      .With("tunnels", after.tunnels_size());
}

}  // namespace strait::agent
