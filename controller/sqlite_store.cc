// SQLite backend of Store: one file, `<data_dir>/strait.db`, in WAL mode with
// synchronous=FULL, so that a commit that returned OK survives kill -9 and
// power loss.
//
// Schema (version 1):
//   meta(key TEXT PRIMARY KEY, value BLOB)   schema_version, revision,
//                                            store_id, fingerprint_key
//   tunnels(name TEXT PRIMARY KEY, data BLOB) serialized strait.v1.Tunnel,
//                                            PSK included
//   node_shares(node TEXT PRIMARY KEY, revision INTEGER)

#include "controller/sqlite_store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"
#include "controller/store.h"

namespace strait::controller {
namespace {

constexpr int kSchemaVersion = 1;
constexpr char kDbFile[] = "strait.db";
constexpr char kLockFile[] = "strait.db.lock";

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Closes a file descriptor (and with it a flock) on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) {
        close(fd_);
      }
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// SQLite result codes onto canonical codes. Busy and I/O trouble are worth a
// retry (UNAVAILABLE); corruption is DATA_LOSS; a full disk is
// RESOURCE_EXHAUSTED.
absl::StatusCode SqliteCode(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view context) {
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int code = db != nullptr ? sqlite3_extended_errcode(db) : rc;
  return absl::Status(SqliteCode(rc),
                      absl::StrCat("sqlite: ", context, ": ", msg, " (code ", code, ")"));
}

// Resets a statement (and drops its bindings) when leaving a scope, so that
// a prepared statement is always ready for the next use and never keeps a
// read transaction or a pointer to a caller's buffer alive.
class StmtScope {
 public:
  explicit StmtScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtScope(const StmtScope&) = delete;
  StmtScope& operator=(const StmtScope&) = delete;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

absl::StatusOr<std::string> RandomBytes(int n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), n) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  return out;
}

// chmod that tolerates a missing file (the -wal and -shm files come and go).
absl::Status ChmodIfExists(const std::string& path, mode_t mode) {
  if (chmod(path.c_str(), mode) != 0 && errno != ENOENT) {
    return ErrnoToStatus(errno, absl::StrCat("chmod ", path));
  }
  return absl::OkStatus();
}

class SqliteStore : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& data_dir,
                                                           const SqliteStoreOptions& options);

  // Store
  absl::StatusOr<State> Load() override;
  absl::Status Commit(const Change& change) override;

 private:
  SqliteStore(std::string path, DbPtr db, UniqueFd lock)
      : path_(std::move(path)), lock_(std::move(lock)), db_(std::move(db)) {}

  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StmtPtr> Prepare(const char* sql);
  absl::Status PrepareAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Initialize() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InitializeInTransaction() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FixFileModes();

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT; on any error the
  // transaction is rolled back and the error returned.
  template <typename Fn>
  absl::Status InTransaction(const char* begin, Fn body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<std::string> GetMeta(absl::string_view key, bool* found)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutMeta(absl::string_view key, absl::string_view value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> GetRevision() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplyChange(const Change& change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StepDone(sqlite3_stmt* stmt, absl::string_view context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  // Held (flock) for the store's lifetime: one controller per data dir.
  // Declared before db_ so that it is released after the database closed.
  UniqueFd lock_;
  DbPtr db_ ABSL_GUARDED_BY(mu_);

  StmtPtr get_meta_ ABSL_GUARDED_BY(mu_);
  StmtPtr put_meta_ ABSL_GUARDED_BY(mu_);
  StmtPtr put_tunnel_ ABSL_GUARDED_BY(mu_);
  StmtPtr delete_tunnel_ ABSL_GUARDED_BY(mu_);
  StmtPtr put_share_ ABSL_GUARDED_BY(mu_);
  StmtPtr list_tunnels_ ABSL_GUARDED_BY(mu_);
  StmtPtr list_shares_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& data_dir,
                                                               const SqliteStoreOptions& options) {
  RETURN_IF_ERROR(MakeDirs(data_dir, 0700));
  // MakeDirs leaves an existing directory alone; it must not be readable by
  // others since the database holds PSKs.
  if (chmod(data_dir.c_str(), 0700) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("chmod ", data_dir));
  }

  const std::string lock_path = absl::StrCat(data_dir, "/", kLockFile);
  UniqueFd lock(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (lock.get() < 0) {
    return ErrnoToStatus(errno, absl::StrCat("open ", lock_path));
  }
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat(data_dir, " is in use by another controller (", lock_path, " is locked)"));
    }
    return ErrnoToStatus(errno, absl::StrCat("flock ", lock_path));
  }

  // Create the database file ourselves with 0600: SQLite gives the -wal and
  // -shm files the mode of the database file.
  const std::string path = absl::StrCat(data_dir, "/", kDbFile);
  {
    UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (fd.get() < 0) {
      return ErrnoToStatus(errno, absl::StrCat("open ", path));
    }
    if (fchmod(fd.get(), 0600) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("chmod ", path));
    }
  }

  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return SqliteError(raw, rc, absl::StrCat("open ", path));
  }
  rc = sqlite3_busy_timeout(db.get(),
                            static_cast<int>(absl::ToInt64Milliseconds(options.busy_timeout)));
  if (rc != SQLITE_OK) {
    return SqliteError(db.get(), rc, "busy_timeout");
  }

  auto store = absl::WrapUnique(new SqliteStore(path, std::move(db), std::move(lock)));
  {
    absl::MutexLock l(&store->mu_);
    RETURN_IF_ERROR(store->Initialize());
  }
  RETURN_IF_ERROR(store->FixFileModes());
  return store;
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return absl::Status(SqliteCode(rc), absl::StrCat("sqlite: ", sql, ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<StmtPtr> SqliteStore::Prepare(const char* sql) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  StmtPtr out(stmt);
  if (rc != SQLITE_OK) {
    return SqliteError(db_.get(), rc, absl::StrCat("prepare ", sql));
  }
  return out;
}

absl::Status SqliteStore::Initialize() {
  // WAL gives crash-safe commits with one fsync each; synchronous=FULL
  // makes that fsync happen at every commit (NORMAL would lose the last
  // commits on power loss). secure_delete overwrites the pages of deleted
  // rows so an old PSK does not linger in free pages.
  {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_.get(), "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) {
      return SqliteError(db_.get(), rc, "journal_mode");
    }
    rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) {
      return SqliteError(db_.get(), rc, "journal_mode");
    }
    const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
    std::string got = text != nullptr ? reinterpret_cast<const char*>(text) : "";
    if (got != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("sqlite: cannot enable WAL mode on ", path_, " (journal_mode=", got, ")"));
    }
  }
  RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(Exec("PRAGMA secure_delete=ON"));
  RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=OFF"));

  RETURN_IF_ERROR(InTransaction("BEGIN IMMEDIATE", [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return InitializeInTransaction();
  }));
  return absl::OkStatus();
}

absl::Status SqliteStore::InitializeInTransaction() {
  RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
           "CREATE TABLE IF NOT EXISTS tunnels (name TEXT PRIMARY KEY, data BLOB NOT NULL);"
           "CREATE TABLE IF NOT EXISTS node_shares (node TEXT PRIMARY KEY, "
           "revision INTEGER NOT NULL);"));
  RETURN_IF_ERROR(PrepareAll());

  bool found = false;
  ASSIGN_OR_RETURN(std::string schema, GetMeta("schema_version", &found));
  if (found) {
    int version = 0;
    if (!absl::SimpleAtoi(schema, &version) || version != kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(path_, " has schema version ", schema,
                                                        "; this controller knows version ",
                                                        kSchemaVersion));
    }
    return absl::OkStatus();
  }
  // A new store: identity and fingerprint key are made once, here.
  ASSIGN_OR_RETURN(std::string id_bytes, RandomBytes(8));
  ASSIGN_OR_RETURN(std::string key_bytes, RandomBytes(32));
  Secret key(std::move(key_bytes));
  RETURN_IF_ERROR(PutMeta("schema_version", absl::StrCat(kSchemaVersion)));
  RETURN_IF_ERROR(PutMeta("revision", "0"));
  RETURN_IF_ERROR(PutMeta("store_id", absl::BytesToHexString(id_bytes)));
  RETURN_IF_ERROR(PutMeta("fingerprint_key", key.view()));
  LOG_INFO("store created").With("path", path_).With("store_id", absl::BytesToHexString(id_bytes));
  return absl::OkStatus();
}

absl::Status SqliteStore::PrepareAll() {
  ASSIGN_OR_RETURN(get_meta_, Prepare("SELECT value FROM meta WHERE key = ?1"));
  ASSIGN_OR_RETURN(put_meta_, Prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  ASSIGN_OR_RETURN(put_tunnel_, Prepare("INSERT INTO tunnels (name, data) VALUES (?1, ?2) "
                                        "ON CONFLICT (name) DO UPDATE SET data = excluded.data"));
  ASSIGN_OR_RETURN(delete_tunnel_, Prepare("DELETE FROM tunnels WHERE name = ?1"));
  ASSIGN_OR_RETURN(put_share_,
                   Prepare("INSERT INTO node_shares (node, revision) VALUES (?1, ?2) "
                           "ON CONFLICT (node) DO UPDATE SET revision = excluded.revision"));
  ASSIGN_OR_RETURN(list_tunnels_, Prepare("SELECT name, data FROM tunnels ORDER BY name"));
  ASSIGN_OR_RETURN(list_shares_, Prepare("SELECT node, revision FROM node_shares ORDER BY node"));
  return absl::OkStatus();
}

absl::Status SqliteStore::FixFileModes() {
  // For databases made by older builds or by hand: nothing but the owner
  // may read PSKs.
  RETURN_IF_ERROR(ChmodIfExists(path_, 0600));
  RETURN_IF_ERROR(ChmodIfExists(path_ + "-wal", 0600));
  RETURN_IF_ERROR(ChmodIfExists(path_ + "-shm", 0600));
  return absl::OkStatus();
}

template <typename Fn>
absl::Status SqliteStore::InTransaction(const char* begin, Fn body) {
  RETURN_IF_ERROR(Exec(begin));
  absl::Status status = body();
  if (status.ok()) {
    status = Exec("COMMIT");
  }
  if (!status.ok()) {
    // After some errors (a full disk, an I/O error) SQLite has already rolled
    // back; sqlite3_get_autocommit says whether a transaction is still open.
    if (sqlite3_get_autocommit(db_.get()) == 0) {
      absl::Status rollback = Exec("ROLLBACK");
      if (!rollback.ok()) {
        LOG_ERROR("store rollback failed").With("path", path_).With("error", rollback.ToString());
      }
    }
  }
  return status;
}

absl::Status SqliteStore::StepDone(sqlite3_stmt* stmt, absl::string_view context) {
  int rc = sqlite3_step(stmt);
  if (rc != SQLITE_DONE) {
    return SqliteError(db_.get(), rc, context);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteStore::GetMeta(absl::string_view key, bool* found) {
  StmtScope scope(get_meta_.get());
  sqlite3_bind_text(scope.get(), 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(scope.get());
  if (rc == SQLITE_DONE) {
    *found = false;
    return std::string();
  }
  if (rc != SQLITE_ROW) {
    return SqliteError(db_.get(), rc, absl::StrCat("read meta ", key));
  }
  *found = true;
  const void* blob = sqlite3_column_blob(scope.get(), 0);
  int size = sqlite3_column_bytes(scope.get(), 0);
  return std::string(static_cast<const char*>(blob), size);
}

absl::Status SqliteStore::PutMeta(absl::string_view key, absl::string_view value) {
  StmtScope scope(put_meta_.get());
  sqlite3_bind_text(scope.get(), 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  sqlite3_bind_blob(scope.get(), 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
  return StepDone(scope.get(), absl::StrCat("write meta ", key));
}

absl::StatusOr<int64_t> SqliteStore::GetRevision() {
  bool found = false;
  ASSIGN_OR_RETURN(std::string text, GetMeta("revision", &found));
  int64_t revision = 0;
  if (!found || !absl::SimpleAtoi(text, &revision)) {
    return absl::DataLossError(absl::StrCat(path_, ": meta.revision is missing or malformed"));
  }
  return revision;
}

absl::StatusOr<Store::State> SqliteStore::Load() {
  absl::MutexLock l(&mu_);
  State state;
  // A read transaction, so that meta, tunnels and shares are one snapshot.
  absl::Status status = InTransaction("BEGIN", [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    ASSIGN_OR_RETURN(state.revision, GetRevision());
    bool found = false;
    ASSIGN_OR_RETURN(state.store_id, GetMeta("store_id", &found));
    if (!found || state.store_id.empty()) {
      return absl::DataLossError(absl::StrCat(path_, ": meta.store_id is missing"));
    }
    ASSIGN_OR_RETURN(std::string key, GetMeta("fingerprint_key", &found));
    state.fingerprint_key = Secret(std::move(key));
    if (!found || state.fingerprint_key.size() < 16) {
      return absl::DataLossError(absl::StrCat(path_, ": meta.fingerprint_key is missing"));
    }

    {
      StmtScope scope(list_tunnels_.get());
      int rc;
      while ((rc = sqlite3_step(scope.get())) == SQLITE_ROW) {
        const unsigned char* name_text = sqlite3_column_text(scope.get(), 0);
        std::string name = name_text != nullptr ? reinterpret_cast<const char*>(name_text) : "";
        const void* blob = sqlite3_column_blob(scope.get(), 1);
        int size = sqlite3_column_bytes(scope.get(), 1);
        strait::v1::Tunnel tunnel;
        if (!tunnel.ParseFromArray(blob, size) || tunnel.metadata().name() != name) {
          return absl::DataLossError(
              absl::StrCat(path_, ": tunnel row \"", name, "\" does not hold that tunnel"));
        }
        state.tunnels.push_back(std::move(tunnel));
      }
      if (rc != SQLITE_DONE) {
        return SqliteError(db_.get(), rc, "read tunnels");
      }
    }
    {
      StmtScope scope(list_shares_.get());
      int rc;
      while ((rc = sqlite3_step(scope.get())) == SQLITE_ROW) {
        const unsigned char* node = sqlite3_column_text(scope.get(), 0);
        state.node_share_revisions[node != nullptr ? reinterpret_cast<const char*>(node) : ""] =
            sqlite3_column_int64(scope.get(), 1);
      }
      if (rc != SQLITE_DONE) {
        return SqliteError(db_.get(), rc, "read node shares");
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    return status;
  }
  return state;
}

absl::Status SqliteStore::ApplyChange(const Change& change) {
  ASSIGN_OR_RETURN(int64_t current, GetRevision());
  if (change.revision <= current) {
    return absl::FailedPreconditionError(absl::StrCat("store revision ", change.revision,
                                                      " is not above the stored revision ", current,
                                                      " (another writer?)"));
  }
  for (const strait::v1::Tunnel& tunnel : change.puts) {
    const std::string& name = tunnel.metadata().name();
    if (name.empty()) {
      return absl::InvalidArgumentError("store: tunnel without a name");
    }
    std::string data;
    if (!tunnel.SerializeToString(&data)) {
      return absl::InternalError(absl::StrCat("store: cannot serialize tunnel ", name));
    }
    absl::Status status;
    {
      StmtScope scope(put_tunnel_.get());
      sqlite3_bind_text(scope.get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
      sqlite3_bind_blob(scope.get(), 2, data.data(), static_cast<int>(data.size()), SQLITE_STATIC);
      status = StepDone(scope.get(), absl::StrCat("write tunnel ", name));
    }
    // The serialized tunnel holds the PSK.
    WipeString(&data);
    RETURN_IF_ERROR(status);
  }
  for (const std::string& name : change.deletes) {
    StmtScope scope(delete_tunnel_.get());
    sqlite3_bind_text(scope.get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
    RETURN_IF_ERROR(StepDone(scope.get(), absl::StrCat("delete tunnel ", name)));
  }
  for (const auto& [node, revision] : change.node_share_revisions) {
    StmtScope scope(put_share_.get());
    sqlite3_bind_text(scope.get(), 1, node.data(), static_cast<int>(node.size()), SQLITE_STATIC);
    sqlite3_bind_int64(scope.get(), 2, revision);
    RETURN_IF_ERROR(StepDone(scope.get(), absl::StrCat("write node share ", node)));
  }
  return PutMeta("revision", absl::StrCat(change.revision));
}

absl::Status SqliteStore::Commit(const Change& change) {
  absl::MutexLock l(&mu_);
  return InTransaction("BEGIN IMMEDIATE",
                       [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return ApplyChange(change); });
}

}  // namespace

absl::StatusOr<StorePtr> OpenSqliteStore(const std::string& data_dir,
                                         const SqliteStoreOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::Open(data_dir, options));
  return StorePtr(std::move(store));
}

absl::StatusOr<StorePtr> OpenSqliteStore(const std::string& data_dir) {
  return OpenSqliteStore(data_dir, SqliteStoreOptions());
}

}  // namespace strait::controller
