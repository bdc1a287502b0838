#ifndef STRAIT_AGENT_STATE_STORE_IMPL_H_
#define STRAIT_AGENT_STATE_STORE_IMPL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/state_store.h"

namespace strait::agent {

// The snapshot as a binary protobuf in `<dir>/snapshot.pb`, mode 0600 (it
// holds pre-shared keys), in a directory created with mode 0700.
class FileStateStore : public StateStore {
 public:
  static constexpr char kFileName[] = "snapshot.pb";

  // Creates `dir` (and its parents) when missing. A directory that others
  // can read is used, with a warning.
  static absl::StatusOr<std::unique_ptr<FileStateStore>> Create(const std::string& dir);

  const std::string& path() const { return path_; }

  // StateStore
  absl::StatusOr<SnapshotPtr> Load() override;
  absl::Status Save(const strait::v1::Snapshot& snapshot) override;

 private:
  explicit FileStateStore(std::string path) : path_(std::move(path)) {}

  const std::string path_;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_STATE_STORE_IMPL_H_
