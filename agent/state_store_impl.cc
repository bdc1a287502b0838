#include "agent/state_store_impl.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace strait::agent {
namespace {

constexpr int kDirMode = 0700;
constexpr int kFileMode = 0600;

// Wipes a buffer that held a serialized snapshot when it goes away.
class WipedString {
 public:
  explicit WipedString(std::string s) : s_(std::move(s)) {}
  WipedString() = default;
  ~WipedString() { WipeString(&s_); }
  WipedString(const WipedString&) = delete;
  WipedString& operator=(const WipedString&) = delete;
  std::string* get() { return &s_; }

 private:
  std::string s_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileStateStore>> FileStateStore::Create(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("state directory: empty path");
  RETURN_IF_ERROR(MakeDirs(dir, kDirMode));
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    // Not repaired: the directory might be shared (a misconfigured /tmp).
    // The snapshot file itself is 0600 either way.
    LOG_WARNING("state directory is accessible to other users; use mode 0700")
        .With("dir", dir)
        .With("mode", absl::StrFormat("%04o", st.st_mode & 0777));
  }
  std::string path = absl::StrCat(dir, dir.back() == '/' ? "" : "/", kFileName);
  return std::unique_ptr<FileStateStore>(new FileStateStore(std::move(path)));
}

absl::StatusOr<SnapshotPtr> FileStateStore::Load() {
  absl::StatusOr<std::string> read = ReadFile(path_);
  if (absl::IsNotFound(read.status())) return SnapshotPtr();
  if (!read.ok()) return read.status();
  WipedString contents(std::move(*read));
  SnapshotPtr snapshot(new strait::v1::Snapshot());
  // Every applied snapshot has a version, so an empty one means garbage
  // that happened to parse.
  if (!snapshot->ParseFromString(*contents.get()) || snapshot->version().empty()) {
    return absl::DataLossError(
        absl::StrCat(path_, ": not a valid snapshot (", contents.get()->size(), " bytes)"));
  }
  return snapshot;
}

absl::Status FileStateStore::Save(const strait::v1::Snapshot& snapshot) {
  WipedString contents;
  if (!snapshot.SerializeToString(contents.get())) {
    return absl::InternalError("cannot serialize the snapshot");
  }
  return WriteFileAtomically(path_, *contents.get(), kFileMode);
}

}  // namespace strait::agent
