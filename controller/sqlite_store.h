#ifndef STRAIT_CONTROLLER_SQLITE_STORE_H_
#define STRAIT_CONTROLLER_SQLITE_STORE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/store.h"

namespace strait::controller {

struct SqliteStoreOptions {
  // How long a commit waits for SQLite's write lock (held only by another
  // process opening the same file by hand, since the store also takes an
  // exclusive flock on `<data_dir>/strait.db.lock`).
  absl::Duration busy_timeout = absl::Seconds(5);
};

// OpenSqliteStore (declared in store.h) with options. Fails with
// FAILED_PRECONDITION when another store (in this or another process) has
// `data_dir` open.
absl::StatusOr<StorePtr> OpenSqliteStore(const std::string& data_dir,
                                         const SqliteStoreOptions& options);

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_SQLITE_STORE_H_
