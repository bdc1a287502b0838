#ifndef STRAIT_CONTROLLER_STORE_H_
#define STRAIT_CONTROLLER_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/secret.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::controller {

// Durable intent storage. The controller core is its only writer and keeps
// everything in memory; the store exists so that nothing acknowledged is
// lost. Implementations: SQLite (embedded default). etcd comes later.
class Store {
 public:
  // Everything the controller needs at start-up.
  struct State {
    // Highest committed revision (0 for a new store).
    int64_t revision = 0;
    // Random identifier made when the store was created; part of snapshot
    // versions so that a wiped store never reuses an old version.
    std::string store_id;
    // Random key for PSK fingerprints, made when the store was created.
    Secret fingerprint_key;
    // Stored tunnels, with metadata (generation, revision, times) and
    // secrets (the PSK value).
    std::vector<strait::v1::Tunnel> tunnels;
    // Per node: the revision at which its share of the intent last changed.
    std::map<std::string, int64_t> node_share_revisions;
  };

  // One atomic change.
  struct Change {
    int64_t revision = 0;  // new store revision, > every earlier one
    std::vector<strait::v1::Tunnel> puts;
    std::vector<std::string> deletes;
    std::map<std::string, int64_t> node_share_revisions;  // upserts
  };

  virtual ~Store() = default;

  virtual absl::StatusOr<State> Load() = 0;

  // Applies `change` atomically. When it returns OK the change is durable
  // (it survives kill -9 and power loss); otherwise nothing was applied.
  virtual absl::Status Commit(const Change& change) = 0;
};

using StorePtr = std::unique_ptr<Store>;

// Opens (creating when missing) `<data_dir>/strait.db` in WAL mode with
// synchronous=FULL. The directory is made 0700 and the database files 0600,
// since they hold PSKs.
absl::StatusOr<StorePtr> OpenSqliteStore(const std::string& data_dir);

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_STORE_H_
