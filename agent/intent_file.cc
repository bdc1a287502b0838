#include "agent/intent_file.h"

#include <openssl/evp.h>

#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/intent/node_share.h"
#include "common/intent/validation.h"
#include "common/intent/yaml_codec.h"
#include "common/logging.h"
#include "common/secret.h"

namespace strait::agent {
namespace {

using strait::v1::Tunnel;

// Hex digits of the SHA-256 that name a file's content in its version.
constexpr size_t kVersionHexDigits = 12;

// Parsed tunnels, wiped when they go away.
class Tunnels {
 public:
  explicit Tunnels(std::vector<Tunnel> tunnels) : tunnels_(std::move(tunnels)) {}
  ~Tunnels() {
    for (Tunnel& t : tunnels_) WipeSpecSecrets(t.mutable_spec());
  }
  Tunnels(const Tunnels&) = delete;
  Tunnels& operator=(const Tunnels&) = delete;
  std::vector<Tunnel>& get() { return tunnels_; }

 private:
  std::vector<Tunnel> tunnels_;
};

std::string TunnelLabel(const Tunnel& tunnel, size_t index) {
  if (tunnel.metadata().name().empty()) return absl::StrCat("document ", index + 1);
  return absl::StrCat("tunnel \"", absl::CHexEscape(tunnel.metadata().name()), "\"");
}

}  // namespace

std::string IntentFileVersion(absl::string_view contents) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // SHA-256 of memory cannot fail short of a broken OpenSSL.
  if (EVP_Digest(contents.data(), contents.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return "file:unknown";
  }
  std::string hex =
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
  return absl::StrCat("file:", hex.substr(0, kVersionHexDigits));
}

absl::StatusOr<SnapshotPtr> SnapshotFromIntent(absl::string_view contents, absl::string_view node) {
  absl::StatusOr<std::vector<Tunnel>> parsed = intent::ParseTunnelsYaml(contents);
  if (!parsed.ok()) return parsed.status();
  Tunnels tunnels(std::move(*parsed));

  std::vector<std::string> problems;
  absl::flat_hash_set<std::string> names;
  const intent::ValidationPolicy policy;  // the controller's defaults
  std::vector<const Tunnel*> valid;
  for (size_t i = 0; i < tunnels.get().size(); ++i) {
    Tunnel& tunnel = tunnels.get()[i];
    // Generations are the controller's; a file's tunnels are at their first.
    tunnel.mutable_metadata()->set_generation(1);
    intent::ApplyDefaults(&tunnel);
    const std::string label = TunnelLabel(tunnel, i);
    const size_t before = problems.size();
    if (!tunnel.metadata().name().empty() && !names.insert(tunnel.metadata().name()).second) {
      problems.push_back(absl::StrCat(label, ": defined more than once"));
    }
    for (const intent::FieldViolation& v : intent::ValidateTunnel(tunnel, policy)) {
      problems.push_back(absl::StrCat(label, ": ", v.field, ": ", v.reason));
    }
    if (problems.size() == before) valid.push_back(&tunnel);
  }
  // Each pair once, on every node the two share (not only this one: the
  // file is one intent for all its nodes, as the controller would hold it).
  std::vector<const Tunnel*> earlier;
  for (const Tunnel* tunnel : valid) {
    for (const intent::FieldViolation& v : intent::CheckOverlaps(*tunnel, earlier)) {
      problems.push_back(
          absl::StrCat("tunnel \"", tunnel->metadata().name(), "\": ", v.field, ": ", v.reason));
    }
    earlier.push_back(tunnel);
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));

  SnapshotPtr snapshot(new strait::v1::Snapshot());
  snapshot->set_version(IntentFileVersion(contents));
  for (const Tunnel& tunnel : tunnels.get()) {
    std::optional<strait::v1::NodeTunnel> half = intent::NodeHalf(tunnel, node);
    if (!half) continue;
    *snapshot->add_tunnels() = *half;
    WipeSpecSecrets(half->mutable_spec());
  }
  return snapshot;
}

absl::StatusOr<SnapshotPtr> LoadIntentFile(const std::string& path, absl::string_view node) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<SnapshotPtr> snapshot = SnapshotFromIntent(*contents, node);
  WipeString(&*contents);
  if (!snapshot.ok()) {
    return absl::Status(snapshot.status().code(),
                        absl::StrCat(path, ": ", snapshot.status().message()));
  }
  return snapshot;
}

absl::Status ApplyIntentFile(const std::string& path, absl::string_view node, Applier& applier,
                             AgentMetrics* metrics) {
  absl::StatusOr<SnapshotPtr> snapshot = LoadIntentFile(path, node);
  absl::Status status = snapshot.status();
  if (status.ok()) status = applier.Apply(**snapshot);
  if (metrics != nullptr) {
    if (status.ok()) {
      metrics->SnapshotApplied();
    } else {
      metrics->SnapshotRejected();
    }
  }
  if (status.ok() && (*snapshot)->tunnels_size() == 0) {
    LOG_WARNING("intent file has no tunnel with an end on this node")
        .With("node", node)
        .With("file", path);
  }
  return status;
}

}  // namespace strait::agent
