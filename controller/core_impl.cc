#include "controller/core_impl.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/intent/node_share.h"
#include "common/intent/secrets.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "prometheus/registry.h"

namespace strait::controller {
namespace {

using google::protobuf::util::MessageDifferencer;
using strait::v1::WatchTunnelsEvent;

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t seconds = absl::ToUnixSeconds(t);
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return ts;
}

bool LabelsEqual(const strait::v1::ObjectMeta& a, const strait::v1::ObjectMeta& b) {
  if (a.labels_size() != b.labels_size()) {
    return false;
  }
  for (const auto& [key, value] : a.labels()) {
    auto it = b.labels().find(key);
    if (it == b.labels().end() || it->second != value) {
      return false;
    }
  }
  return true;
}

bool SameHalf(const std::optional<strait::v1::NodeTunnel>& a,
              const std::optional<strait::v1::NodeTunnel>& b) {
  if (a.has_value() != b.has_value()) {
    return false;
  }
  return !a.has_value() || MessageDifferencer::Equals(*a, *b);
}

}  // namespace

absl::StatusOr<CorePtr> CreateCore(StorePtr store, const CoreOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CoreImpl> core, CoreImpl::Create(std::move(store), options));
  return CorePtr(std::move(core));
}

std::string CoreImpl::PskFingerprint(const Secret& key, absl::string_view psk) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), key.view().data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(psk.data()), psk.size(), mac,
           &mac_len) == nullptr ||
      mac_len < 4) {
    return "";
  }
  return absl::StrCat("sha256:",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), 4)));
}

CoreImpl::CoreImpl(StorePtr store, const CoreOptions& options, const Store::State& state)
    : store_(std::move(store)),
      policy_(options.policy),
      clock_(options.clock),
      store_id_(state.store_id),
      fingerprint_key_(state.fingerprint_key) {}

absl::StatusOr<std::unique_ptr<CoreImpl>> CoreImpl::Create(StorePtr store,
                                                           const CoreOptions& options) {
  if (store == nullptr) {
    return absl::InvalidArgumentError("CreateCore: no store");
  }
  if (options.clock == nullptr) {
    return absl::InvalidArgumentError("CreateCore: no clock");
  }
  ASSIGN_OR_RETURN(Store::State state, store->Load());
  if (state.store_id.empty() || state.fingerprint_key.empty()) {
    return absl::FailedPreconditionError("store has no identity (store_id, fingerprint key)");
  }
  std::vector<strait::v1::Tunnel> tunnels = std::move(state.tunnels);
  std::map<std::string, int64_t> shares = std::move(state.node_share_revisions);
  const int64_t revision = state.revision;
  auto core = absl::WrapUnique(new CoreImpl(std::move(store), options, std::move(state)));
  core->InitMetrics(options.registry);

  absl::MutexLock lock(&core->mu_);
  core->revision_ = revision;
  for (const auto& [name, share_revision] : shares) {
    NodeState& node = core->GetNode(name);
    node.has_share_row = true;
    node.share_revision = share_revision;
  }
  for (strait::v1::Tunnel& tunnel : tunnels) {
    std::string name = tunnel.metadata().name();
    std::unique_ptr<TunnelEntry> entry = core->MakeEntry(std::move(tunnel));
    for (const std::string& node_name : entry->nodes) {
      NodeState& node = core->GetNode(node_name);
      if (!node.has_share_row) {
        // Every write that gives a node a tunnel end also writes its share
        // row; a missing row means the store was edited by hand.
        LOG_WARNING("node has tunnels but no share revision in the store")
            .With("node", node_name)
            .With("tunnel", name);
      }
      node.tunnels.insert(name);
    }
    core->tunnels_[name] = std::move(entry);
  }
  for (auto& [name, node] : core->nodes_) {
    core->RebuildSnapshot(name, node);
  }
  if (core->metrics_.store_revision != nullptr) {
    core->metrics_.store_revision->Set(static_cast<double>(revision));
    core->metrics_.tunnels->Set(static_cast<double>(core->tunnels_.size()));
  }
  LOG_INFO("controller state loaded")
      .With("store_id", core->store_id_)
      .With("revision", revision)
      .With("tunnels", static_cast<int64_t>(core->tunnels_.size()))
      .With("nodes", static_cast<int64_t>(core->nodes_.size()));
  return core;
}

void CoreImpl::InitMetrics(prometheus::Registry* registry) {
  if (registry == nullptr) {
    return;
  }
  metrics_.agents_connected =
      &prometheus::BuildGauge()
           .Name("strait_controller_agents_connected")
           .Help("Nodes whose agent has at least one session with this controller.")
           .Register(*registry)
           .Add({});
  metrics_.node_current_revision =
      &prometheus::BuildGauge()
           .Name("strait_controller_node_current_revision")
           .Help("Revision of the node's current intent snapshot (the number in its version).")
           .Register(*registry);
  metrics_.node_acked_revision =
      &prometheus::BuildGauge()
           .Name("strait_controller_node_acked_revision")
           .Help("Revision of the snapshot the node's agent last acknowledged (0 for none).")
           .Register(*registry);
  metrics_.nacks = &prometheus::BuildCounter()
                        .Name("strait_controller_nacks_total")
                        .Help("Snapshots an agent could not apply.")
                        .Register(*registry);
  metrics_.snapshot_pushes =
      &prometheus::BuildCounter()
           .Name("strait_controller_snapshot_pushes_total")
           .Help("Snapshots handed to agent sessions (on connect and on change).")
           .Register(*registry)
           .Add({});
  metrics_.store_revision = &prometheus::BuildGauge()
                                 .Name("strait_controller_store_revision")
                                 .Help("Highest committed store revision.")
                                 .Register(*registry)
                                 .Add({});
  metrics_.tunnels = &prometheus::BuildGauge()
                          .Name("strait_controller_tunnels")
                          .Help("Tunnels in the store.")
                          .Register(*registry)
                          .Add({});
  metrics_.store_commit_errors = &prometheus::BuildCounter()
                                      .Name("strait_controller_store_commit_errors_total")
                                      .Help("Store commits that failed (the change was refused).")
                                      .Register(*registry)
                                      .Add({});
}

std::unique_ptr<CoreImpl::TunnelEntry> CoreImpl::MakeEntry(strait::v1::Tunnel tunnel) const {
  auto entry = std::make_unique<TunnelEntry>();
  entry->tunnel = std::move(tunnel);
  entry->tunnel.clear_status();
  if (entry->tunnel.spec().auth().has_psk()) {
    entry->tunnel.mutable_spec()->mutable_auth()->mutable_psk()->clear_fingerprint();
    entry->fingerprint =
        PskFingerprint(fingerprint_key_, entry->tunnel.spec().auth().psk().value());
  }
  entry->nodes = intent::TunnelNodes(entry->tunnel.spec());
  return entry;
}

strait::v1::Tunnel CoreImpl::Redacted(const TunnelEntry& entry) const {
  strait::v1::Tunnel out = entry.tunnel;
  if (out.spec().auth().has_psk()) {
    intent::WipeSpecSecrets(out.mutable_spec());
    strait::v1::PreSharedKey* psk = out.mutable_spec()->mutable_auth()->mutable_psk();
    psk->clear_value();
    psk->set_fingerprint(entry.fingerprint);
  }
  for (const std::string& node : entry.nodes) {
    auto it = entry.ends.find(node);
    strait::v1::TunnelEndStatus* end = out.mutable_status()->add_ends();
    if (it != entry.ends.end()) {
      *end = it->second;
    } else {
      end->set_node(node);  // not reported yet: phase UNSPECIFIED
    }
  }
  return out;
}

std::string CoreImpl::Version(int64_t share_revision) const {
  return absl::StrCat(share_revision, ".", store_id_);
}

int64_t CoreImpl::VersionRevision(absl::string_view version) const {
  const size_t dot = version.find('.');
  if (dot == absl::string_view::npos || version.substr(dot + 1) != store_id_) {
    return 0;
  }
  int64_t revision = 0;
  if (!absl::SimpleAtoi(version.substr(0, dot), &revision)) {
    return 0;
  }
  return revision;
}

CoreImpl::NodeState& CoreImpl::GetNode(const std::string& name) {
  auto [it, inserted] = nodes_.try_emplace(name);
  NodeState& node = it->second;
  if (inserted) {
    auto snapshot = std::make_shared<strait::v1::Snapshot>();
    snapshot->set_version(Version(0));
    node.snapshot = std::move(snapshot);
    if (metrics_.node_current_revision != nullptr) {
      node.current_revision = &metrics_.node_current_revision->Add({{"node", name}});
      node.acked_revision = &metrics_.node_acked_revision->Add({{"node", name}});
      node.nacks = &metrics_.nacks->Add({{"node", name}});
    }
  }
  return node;
}

void CoreImpl::RebuildSnapshot(const std::string& name, NodeState& node) {
  auto snapshot = std::make_shared<strait::v1::Snapshot>();
  snapshot->set_version(Version(node.share_revision));
  for (const std::string& tunnel_name : node.tunnels) {
    auto it = tunnels_.find(tunnel_name);
    if (it == tunnels_.end()) {
      continue;
    }
    std::optional<strait::v1::NodeTunnel> half = intent::NodeHalf(it->second->tunnel, name);
    if (half.has_value()) {
      *snapshot->add_tunnels() = std::move(*half);
    }
  }
  node.snapshot = std::move(snapshot);
  if (node.current_revision != nullptr) {
    node.current_revision->Set(static_cast<double>(node.share_revision));
  }
}

void CoreImpl::UpdateConnectedGauge() {
  if (metrics_.agents_connected == nullptr) {
    return;
  }
  int64_t connected = 0;
  for (const auto& [name, node] : nodes_) {
    connected += node.sessions.empty() ? 0 : 1;
  }
  metrics_.agents_connected->Set(static_cast<double>(connected));
}

void CoreImpl::UpdateAckedGauge(NodeState& node) {
  if (node.acked_revision == nullptr) {
    return;
  }
  node.acked_revision->Set(static_cast<double>(VersionRevision(node.acked_version)));
}

CoreImpl::NodeState* CoreImpl::SessionNode(int64_t session_id, std::string* name) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) {
    return nullptr;
  }
  *name = it->second.node;
  auto node = nodes_.find(it->second.node);
  return node == nodes_.end() ? nullptr : &node->second;
}

// ---------------------------------------------------------------------------
// Core: admin API.

absl::StatusOr<strait::v1::Tunnel> CoreImpl::Prepare(const strait::v1::Tunnel& in) const {
  // Only what a user sets: output-only metadata and status are dropped.
  strait::v1::Tunnel candidate;
  candidate.set_kind(in.kind());
  candidate.mutable_metadata()->set_name(in.metadata().name());
  *candidate.mutable_metadata()->mutable_labels() = in.metadata().labels();
  *candidate.mutable_spec() = in.spec();

  if (candidate.spec().auth().has_psk()) {
    strait::v1::PreSharedKey* psk = candidate.mutable_spec()->mutable_auth()->mutable_psk();
    const std::string fingerprint = psk->fingerprint();
    psk->clear_fingerprint();
    if (psk->value().empty() && !fingerprint.empty()) {
      // A tunnel read back (fingerprint, no value) and applied again keeps
      // its key, but only the key the fingerprint names.
      auto it = tunnels_.find(candidate.metadata().name());
      if (it == tunnels_.end() || it->second->fingerprint.empty() ||
          it->second->fingerprint != fingerprint) {
        return intent::ViolationsToStatus(
            {{"spec.auth.psk",
              absl::StrCat("has only a fingerprint (", absl::CEscape(fingerprint),
                           ") that does not match the stored key; give the key itself")}});
      }
      psk->set_value(it->second->tunnel.spec().auth().psk().value());
    }
  }
  intent::ApplyDefaults(&candidate);
  return candidate;
}

absl::Status CoreImpl::CommitChange(const Store::Change& change) {
  absl::Status status = store_->Commit(change);
  if (status.ok()) {
    return status;
  }
  if (metrics_.store_commit_errors != nullptr) {
    metrics_.store_commit_errors->Increment();
  }
  LOG_ERROR("store commit failed")
      .With("revision", change.revision)
      .With("error", std::string(status.message()));
  return absl::Status(status.code(), absl::StrCat("store commit failed: ", status.message()));
}

absl::StatusOr<strait::v1::ApplyTunnelResponse> CoreImpl::Apply(
    const strait::v1::ApplyTunnelRequest& request) {
  const std::string& name = request.tunnel().metadata().name();
  absl::MutexLock write_lock(&write_mu_);

  strait::v1::ApplyTunnelResponse response;
  Mutation mutation;
  Store::Change change;
  bool created = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    absl::StatusOr<strait::v1::Tunnel> prepared = Prepare(request.tunnel());
    std::vector<intent::FieldViolation> violations;
    absl::Status status = prepared.status();
    if (status.ok()) {
      violations = intent::ValidateTunnel(*prepared, policy_);
      if (violations.empty()) {
        // Only tunnels sharing a node can overlap: the node index keeps this
        // proportional to the tunnels on those nodes, not to all tunnels.
        std::set<std::string> other_names;
        for (const std::string& node_name : intent::TunnelNodes(prepared->spec())) {
          auto node = nodes_.find(node_name);
          if (node == nodes_.end()) {
            continue;
          }
          other_names.insert(node->second.tunnels.begin(), node->second.tunnels.end());
        }
        other_names.erase(name);
        std::vector<const strait::v1::Tunnel*> others;
        others.reserve(other_names.size());
        for (const std::string& other : other_names) {
          others.push_back(&tunnels_.at(other)->tunnel);
        }
        violations = intent::CheckOverlaps(*prepared, others);
      }
      status = intent::ViolationsToStatus(violations);
    }
    if (!status.ok()) {
      // The admin service logs the rejection, with the client's address.
      if (prepared.ok()) {
        intent::WipeSpecSecrets(prepared->mutable_spec());
      }
      return status;
    }
    strait::v1::Tunnel candidate = *std::move(prepared);

    auto existing_it = tunnels_.find(name);
    const TunnelEntry* existing =
        existing_it == tunnels_.end() ? nullptr : existing_it->second.get();
    const bool spec_changed = existing == nullptr || !MessageDifferencer::Equals(
                                                         existing->tunnel.spec(), candidate.spec());
    if (!spec_changed && LabelsEqual(existing->tunnel.metadata(), candidate.metadata())) {
      intent::WipeSpecSecrets(candidate.mutable_spec());
      *response.mutable_tunnel() = Redacted(*existing);
      response.set_changed(false);
      response.set_revision(revision_);
      LOG_DEBUG("tunnel unchanged").With("tunnel", name).With("dry_run", request.dry_run());
      return response;
    }

    const absl::Time now = clock_->Now();
    const int64_t revision = revision_ + 1;
    strait::v1::ObjectMeta* meta = candidate.mutable_metadata();
    meta->set_generation(existing == nullptr
                             ? 1
                             : existing->tunnel.metadata().generation() + (spec_changed ? 1 : 0));
    meta->set_revision(revision);
    *meta->mutable_create_time() =
        existing == nullptr ? ToProto(now) : existing->tunnel.metadata().create_time();
    *meta->mutable_update_time() = ToProto(now);
    created = existing == nullptr;

    mutation.revision = revision;
    mutation.name = name;
    mutation.entry = MakeEntry(std::move(candidate));
    // A node's share changed when its half did; a labels-only change moves
    // no share, so it pushes nothing.
    std::set<std::string> nodes(mutation.entry->nodes.begin(), mutation.entry->nodes.end());
    if (existing != nullptr) {
      nodes.insert(existing->nodes.begin(), existing->nodes.end());
    }
    for (const std::string& node : nodes) {
      std::optional<strait::v1::NodeTunnel> before =
          existing == nullptr ? std::nullopt : intent::NodeHalf(existing->tunnel, node);
      std::optional<strait::v1::NodeTunnel> after = intent::NodeHalf(mutation.entry->tunnel, node);
      if (!SameHalf(before, after)) {
        mutation.changed_nodes.push_back(node);
      }
      if (before.has_value()) {
        intent::WipeSpecSecrets(before->mutable_spec());
      }
      if (after.has_value()) {
        intent::WipeSpecSecrets(after->mutable_spec());
      }
    }

    if (request.dry_run()) {
      TunnelEntry preview = std::move(*mutation.entry);
      if (existing != nullptr) {
        preview.ends = existing->ends;
      }
      *response.mutable_tunnel() = Redacted(preview);
      intent::WipeSpecSecrets(preview.tunnel.mutable_spec());
      response.set_changed(true);
      response.set_revision(revision_);
      LOG_DEBUG("tunnel dry run").With("tunnel", name).With("created", created);
      return response;
    }
    change.revision = revision;
    change.puts.push_back(mutation.entry->tunnel);
    for (const std::string& node : mutation.changed_nodes) {
      change.node_share_revisions[node] = revision;
    }
  }

  absl::Status status = CommitChange(change);
  for (strait::v1::Tunnel& put : change.puts) {
    intent::WipeSpecSecrets(put.mutable_spec());
  }
  if (!status.ok()) {
    return status;
  }

  const int64_t generation = mutation.entry->tunnel.metadata().generation();
  const std::string changed_nodes = absl::StrJoin(mutation.changed_nodes, ",");
  Deliveries deliveries;
  {
    absl::MutexLock watch_lock(&watch_mu_);
    {
      absl::MutexLock lock(&mu_);
      ApplyMutation(std::move(mutation),
                    created ? WatchTunnelsEvent::TYPE_ADDED : WatchTunnelsEvent::TYPE_MODIFIED,
                    &deliveries);
      *response.mutable_tunnel() = Redacted(*tunnels_.at(name));
      response.set_changed(true);
      response.set_revision(revision_);
    }
    for (const WatchTunnelsEvent& event : deliveries.events) {
      for (const auto& [id, fn] : watchers_) {
        fn(event);
      }
    }
  }
  Deliver(deliveries);
  LOG_INFO(created ? "tunnel created" : "tunnel updated")
      .With("tunnel", name)
      .With("revision", response.revision())
      .With("generation", generation)
      .With("nodes", changed_nodes);
  return response;
}

absl::StatusOr<strait::v1::DeleteTunnelResponse> CoreImpl::Delete(absl::string_view name_view) {
  const std::string name(name_view);
  absl::MutexLock write_lock(&write_mu_);
  Mutation mutation;
  Store::Change change;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = tunnels_.find(name);
    if (it == tunnels_.end()) {
      return absl::NotFoundError(absl::StrCat("tunnel \"", absl::CEscape(name), "\" not found"));
    }
    mutation.revision = revision_ + 1;
    mutation.name = name;
    mutation.changed_nodes = it->second->nodes;
    change.revision = mutation.revision;
    change.deletes.push_back(name);
    for (const std::string& node : mutation.changed_nodes) {
      change.node_share_revisions[node] = mutation.revision;
    }
  }
  RETURN_IF_ERROR(CommitChange(change));

  const std::string changed_nodes = absl::StrJoin(mutation.changed_nodes, ",");
  Deliveries deliveries;
  {
    absl::MutexLock watch_lock(&watch_mu_);
    {
      absl::MutexLock lock(&mu_);
      ApplyMutation(std::move(mutation), WatchTunnelsEvent::TYPE_DELETED, &deliveries);
    }
    for (const WatchTunnelsEvent& event : deliveries.events) {
      for (const auto& [id, fn] : watchers_) {
        fn(event);
      }
    }
  }
  Deliver(deliveries);
  LOG_INFO("tunnel deleted")
      .With("tunnel", name)
      .With("revision", change.revision)
      .With("nodes", changed_nodes);
  strait::v1::DeleteTunnelResponse response;
  response.set_revision(change.revision);
  return response;
}

void CoreImpl::ApplyMutation(Mutation&& mutation, WatchTunnelsEvent::Type type, Deliveries* out) {
  WatchTunnelsEvent event;
  event.set_type(type);
  event.set_revision(mutation.revision);

  std::vector<std::string> old_nodes;
  auto old_it = tunnels_.find(mutation.name);
  if (old_it != tunnels_.end()) {
    old_nodes = old_it->second->nodes;
  }
  std::vector<std::string> new_nodes;
  if (mutation.entry != nullptr) {
    new_nodes = mutation.entry->nodes;
    if (old_it != tunnels_.end()) {
      // Reports for ends that still exist stay; an end that moved away
      // takes its report with it.
      for (auto& [node, status] : old_it->second->ends) {
        if (std::binary_search(new_nodes.begin(), new_nodes.end(), node)) {
          mutation.entry->ends[node] = std::move(status);
        }
      }
      intent::WipeSpecSecrets(old_it->second->tunnel.mutable_spec());
    }
    tunnels_[mutation.name] = std::move(mutation.entry);
    *event.mutable_tunnel() = Redacted(*tunnels_.at(mutation.name));
  } else if (old_it != tunnels_.end()) {
    *event.mutable_tunnel() = Redacted(*old_it->second);
    event.mutable_tunnel()->clear_status();
    intent::WipeSpecSecrets(old_it->second->tunnel.mutable_spec());
    tunnels_.erase(old_it);
  }

  for (const std::string& node : old_nodes) {
    if (!std::binary_search(new_nodes.begin(), new_nodes.end(), node)) {
      GetNode(node).tunnels.erase(mutation.name);
    }
  }
  for (const std::string& node : new_nodes) {
    GetNode(node).tunnels.insert(mutation.name);
  }

  revision_ = mutation.revision;
  for (const std::string& node_name : mutation.changed_nodes) {
    NodeState& node = GetNode(node_name);
    node.has_share_row = true;
    node.share_revision = mutation.revision;
    RebuildSnapshot(node_name, node);
    for (int64_t session_id : node.sessions) {
      out->pushes.emplace_back(sessions_.at(session_id).sink, node.snapshot);
    }
  }
  out->events.push_back(std::move(event));
  if (metrics_.store_revision != nullptr) {
    metrics_.store_revision->Set(static_cast<double>(revision_));
    metrics_.tunnels->Set(static_cast<double>(tunnels_.size()));
    metrics_.snapshot_pushes->Increment(static_cast<double>(out->pushes.size()));
  }
}

void CoreImpl::Deliver(const Deliveries& deliveries) {
  for (const auto& [sink, snapshot] : deliveries.pushes) {
    absl::MutexLock lock(&sink->mu);
    if (sink->listener != nullptr) {
      sink->listener->OnSnapshot(snapshot);
    }
  }
}

absl::StatusOr<strait::v1::Tunnel> CoreImpl::Get(absl::string_view name) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = tunnels_.find(std::string(name));
  if (it == tunnels_.end()) {
    return absl::NotFoundError(absl::StrCat("tunnel \"", absl::CEscape(name), "\" not found"));
  }
  return Redacted(*it->second);
}

strait::v1::ListTunnelsResponse CoreImpl::List(const strait::v1::ListTunnelsRequest& request) {
  strait::v1::ListTunnelsResponse response;
  absl::ReaderMutexLock lock(&mu_);
  response.set_revision(revision_);
  if (request.node().empty()) {
    response.mutable_tunnels()->Reserve(static_cast<int>(tunnels_.size()));
    for (const auto& [name, entry] : tunnels_) {
      *response.add_tunnels() = Redacted(*entry);
    }
    return response;
  }
  auto node = nodes_.find(request.node());
  if (node == nodes_.end()) {
    return response;
  }
  for (const std::string& name : node->second.tunnels) {
    *response.add_tunnels() = Redacted(*tunnels_.at(name));
  }
  return response;
}

strait::v1::ListNodesResponse CoreImpl::ListNodes() {
  strait::v1::ListNodesResponse response;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [name, node] : nodes_) {
    if (!node.has_share_row && node.sessions.empty()) {
      continue;
    }
    strait::v1::Node* out = response.add_nodes();
    out->set_name(name);
    out->set_connected(!node.sessions.empty());
    out->set_current_version(node.snapshot->version());
    out->set_acked_version(node.acked_version);
    out->set_last_error(node.last_error);
    out->set_tunnel_count(static_cast<int32_t>(node.tunnels.size()));
    if (node.last_seen != absl::InfinitePast()) {
      *out->mutable_last_seen() = ToProto(node.last_seen);
    }
    out->set_peer(node.peer);
  }
  return response;
}

// ---------------------------------------------------------------------------
// Core: watches.

int64_t CoreImpl::AddWatcher(WatchFn fn, std::vector<strait::v1::WatchTunnelsEvent>* initial) {
  // watch_mu_ keeps writers between their memory update and their
  // notifications out: the list below and the events after it meet exactly.
  absl::MutexLock watch_lock(&watch_mu_);
  const int64_t id = next_watcher_id_++;
  if (initial != nullptr) {
    absl::ReaderMutexLock lock(&mu_);
    initial->reserve(initial->size() + tunnels_.size());
    for (const auto& [name, entry] : tunnels_) {
      WatchTunnelsEvent event;
      event.set_type(WatchTunnelsEvent::TYPE_ADDED);
      event.set_revision(revision_);
      *event.mutable_tunnel() = Redacted(*entry);
      initial->push_back(std::move(event));
    }
  }
  watchers_.emplace(id, std::move(fn));
  return id;
}

void CoreImpl::RemoveWatcher(int64_t id) {
  // Taking watch_mu_ also waits for a notification in progress, so `fn` is
  // not called after this returns.
  absl::MutexLock watch_lock(&watch_mu_);
  watchers_.erase(id);
}

// ---------------------------------------------------------------------------
// Core: agent sessions.

std::shared_ptr<const strait::v1::Snapshot> CoreImpl::Connect(
    absl::string_view node_view, absl::string_view last_applied_version, absl::string_view peer,
    SnapshotListener* listener, int64_t* session_id) {
  const std::string node_name(node_view);
  auto sink = std::make_shared<Sink>();
  {
    absl::MutexLock sink_lock(&sink->mu);
    sink->listener = listener;
  }
  absl::MutexLock lock(&mu_);
  const int64_t id = next_session_id_++;
  if (session_id != nullptr) {
    *session_id = id;
  }
  NodeState& node = GetNode(node_name);
  sessions_[id] = Session{node_name, std::string(peer), std::move(sink)};
  node.sessions.insert(id);
  node.peer = std::string(peer);
  node.last_seen = clock_->Now();
  node.acked_version = std::string(last_applied_version);
  UpdateAckedGauge(node);
  UpdateConnectedGauge();

  const bool resumed = last_applied_version == node.snapshot->version();
  LOG_INFO("agent connected")
      .With("node", node_name)
      .With("peer", peer)
      .With("session", id)
      .With("last_applied_version", last_applied_version)
      .With("current_version", node.snapshot->version())
      .With("resumed", resumed);
  if (resumed) {
    return nullptr;
  }
  if (metrics_.snapshot_pushes != nullptr) {
    metrics_.snapshot_pushes->Increment();
  }
  return node.snapshot;
}

void CoreImpl::Disconnect(int64_t session_id) {
  std::shared_ptr<Sink> sink;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) {
      return;
    }
    sink = std::move(it->second.sink);
    const std::string node_name = it->second.node;
    sessions_.erase(it);
    NodeState& node = GetNode(node_name);
    node.sessions.erase(session_id);
    node.last_seen = clock_->Now();
    UpdateConnectedGauge();
    LOG_INFO("agent disconnected")
        .With("node", node_name)
        .With("session", session_id)
        .With("sessions_left", static_cast<int64_t>(node.sessions.size()));
  }
  // Waits for a delivery in progress; later ones see no listener.
  absl::MutexLock sink_lock(&sink->mu);
  sink->listener = nullptr;
}

void CoreImpl::OnAck(int64_t session_id, const strait::v1::Ack& ack) {
  absl::MutexLock lock(&mu_);
  std::string node_name;
  NodeState* node = SessionNode(session_id, &node_name);
  if (node == nullptr) {
    return;
  }
  node->acked_version = ack.version();
  node->last_error.clear();
  node->last_seen = clock_->Now();
  UpdateAckedGauge(*node);
  LOG_DEBUG("snapshot acked")
      .With("node", node_name)
      .With("version", ack.version())
      .With("current_version", node->snapshot->version());
}

void CoreImpl::OnNack(int64_t session_id, const strait::v1::Nack& nack) {
  absl::MutexLock lock(&mu_);
  std::string node_name;
  NodeState* node = SessionNode(session_id, &node_name);
  if (node == nullptr) {
    return;
  }
  node->last_error = nack.error();
  node->last_seen = clock_->Now();
  if (node->nacks != nullptr) {
    node->nacks->Increment();
  }
  LOG_WARNING("snapshot rejected by agent")
      .With("node", node_name)
      .With("version", nack.version())
      .With("error", nack.error());
}

void CoreImpl::OnStatus(int64_t session_id, const strait::v1::StatusReport& report) {
  absl::MutexLock lock(&mu_);
  std::string node_name;
  NodeState* node = SessionNode(session_id, &node_name);
  if (node == nullptr) {
    return;
  }
  const absl::Time now = clock_->Now();
  node->last_seen = now;
  int64_t ignored = 0;
  for (const strait::v1::TunnelEndReport& end : report.tunnels()) {
    auto it = tunnels_.find(end.name());
    // An agent speaks for its own ends only; reports for deleted tunnels
    // (or ones it no longer owns) arrive until it applied the change.
    if (it == tunnels_.end() ||
        !std::binary_search(it->second->nodes.begin(), it->second->nodes.end(), node_name)) {
      ++ignored;
      continue;
    }
    strait::v1::TunnelEndStatus status = end.status();
    status.set_node(node_name);
    if (!status.has_report_time()) {
      *status.mutable_report_time() = ToProto(now);
    }
    it->second->ends[node_name] = std::move(status);
  }
  if (ignored > 0) {
    LOG_DEBUG("status for tunnels the node has no end of ignored")
        .With("node", node_name)
        .With("count", ignored);
  }
}

}  // namespace strait::controller
