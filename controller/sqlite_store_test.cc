#include "controller/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "controller/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::string TestDir(absl::string_view name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "-", getpid());
}

strait::v1::Tunnel MakeTunnel(const std::string& name, const std::string& psk) {
  strait::v1::Tunnel t;
  t.set_kind("Tunnel");
  t.mutable_metadata()->set_name(name);
  t.mutable_metadata()->set_generation(1);
  t.mutable_spec()->set_node("node-a");
  t.mutable_spec()->mutable_auth()->mutable_psk()->set_value(psk);
  return t;
}

int FileMode(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return -1;
  }
  return st.st_mode & 07777;
}

TEST(SqliteStoreTest, NewStoreHasIdentityAndNothingElse) {
  const std::string dir = TestDir("new");
  auto store = OpenSqliteStore(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->revision, 0);
  EXPECT_EQ(state->store_id.size(), 16u);
  EXPECT_EQ(state->store_id.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(state->fingerprint_key.size(), 32u);
  EXPECT_TRUE(state->tunnels.empty());
  EXPECT_TRUE(state->node_share_revisions.empty());
}

TEST(SqliteStoreTest, RoundTripAndReopen) {
  const std::string dir = TestDir("roundtrip");
  std::string store_id;
  std::string key;
  {
    auto store = OpenSqliteStore(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    Store::Change change;
    change.revision = 1;
    change.puts = {MakeTunnel("t1", "secret one 0123456789"),
                   MakeTunnel("t2", "secret two 0123456789")};
    change.node_share_revisions = {{"node-a", 1}};
    ASSERT_TRUE((*store)->Commit(change).ok());

    Store::Change change2;
    change2.revision = 2;
    change2.puts = {MakeTunnel("t3", "secret three 0123456789")};
    change2.deletes = {"t1"};
    change2.node_share_revisions = {{"node-a", 2}, {"node-b", 2}};
    ASSERT_TRUE((*store)->Commit(change2).ok());

    auto state = (*store)->Load();
    ASSERT_TRUE(state.ok()) << state.status();
    store_id = state->store_id;
    key = std::string(state->fingerprint_key.view());
  }
  auto store = OpenSqliteStore(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->revision, 2);
  EXPECT_EQ(state->store_id, store_id);
  EXPECT_EQ(state->fingerprint_key.view(), key);
  ASSERT_EQ(state->tunnels.size(), 2u);
  EXPECT_EQ(state->tunnels[0].metadata().name(), "t2");
  EXPECT_EQ(state->tunnels[0].spec().auth().psk().value(), "secret two 0123456789");
  EXPECT_EQ(state->tunnels[1].metadata().name(), "t3");
  EXPECT_THAT(state->node_share_revisions, ElementsAre(Pair("node-a", 2), Pair("node-b", 2)));
}

TEST(SqliteStoreTest, FailedCommitAppliesNothing) {
  const std::string dir = TestDir("atomic");
  auto store = OpenSqliteStore(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  Store::Change change;
  change.revision = 1;
  change.puts = {MakeTunnel("t1", "secret one 0123456789")};
  change.node_share_revisions = {{"node-a", 1}};
  ASSERT_TRUE((*store)->Commit(change).ok());

  // The first put is written inside the transaction before the second one
  // fails: the rollback must undo it, the delete and the share upsert.
  Store::Change bad;
  bad.revision = 2;
  bad.puts = {MakeTunnel("t2", "secret two 0123456789"), MakeTunnel("", "x")};
  bad.deletes = {"t1"};
  bad.node_share_revisions = {{"node-a", 2}};
  EXPECT_FALSE((*store)->Commit(bad).ok());

  // A revision that does not move forward is refused.
  Store::Change stale;
  stale.revision = 1;
  stale.deletes = {"t1"};
  absl::Status status = (*store)->Commit(stale);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;

  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->revision, 1);
  ASSERT_EQ(state->tunnels.size(), 1u);
  EXPECT_EQ(state->tunnels[0].metadata().name(), "t1");
  EXPECT_THAT(state->node_share_revisions, ElementsAre(Pair("node-a", 1)));

  // And the store still works afterwards.
  Store::Change next;
  next.revision = 2;
  next.deletes = {"t1"};
  EXPECT_TRUE((*store)->Commit(next).ok());
}

TEST(SqliteStoreTest, BusyDatabaseFailsCleanly) {
  const std::string dir = TestDir("busy");
  SqliteStoreOptions options;
  options.busy_timeout = absl::Milliseconds(50);
  auto store = OpenSqliteStore(dir, options);
  ASSERT_TRUE(store.ok()) << store.status();

  // Someone else holds SQLite's write lock.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(absl::StrCat(dir, "/strait.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  Store::Change change;
  change.revision = 1;
  change.puts = {MakeTunnel("t1", "secret one 0123456789")};
  absl::Status status = (*store)->Commit(change);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("locked"));

  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE((*store)->Commit(change).ok());
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->revision, 1);
}

TEST(SqliteStoreTest, OneStorePerDirectory) {
  const std::string dir = TestDir("exclusive");
  auto first = OpenSqliteStore(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = OpenSqliteStore(dir);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  first->reset();
  auto third = OpenSqliteStore(dir);
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST(SqliteStoreTest, FileModesKeepPsksPrivate) {
  const std::string dir = TestDir("modes");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  auto store = OpenSqliteStore(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  Store::Change change;
  change.revision = 1;
  change.puts = {MakeTunnel("t1", "secret one 0123456789")};
  ASSERT_TRUE((*store)->Commit(change).ok());

  EXPECT_EQ(FileMode(dir), 0700);
  EXPECT_EQ(FileMode(dir + "/strait.db"), 0600);
  EXPECT_EQ(FileMode(dir + "/strait.db-wal"), 0600);
  EXPECT_EQ(FileMode(dir + "/strait.db-shm"), 0600);
}

TEST(SqliteStoreTest, UsesWalAndFullSync) {
  const std::string dir = TestDir("pragmas");
  auto store = OpenSqliteStore(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(absl::StrCat(dir, "/strait.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

}  // namespace
}  // namespace strait::controller
