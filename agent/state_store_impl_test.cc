#include "agent/state_store_impl.h"

#include <sys/stat.h>

#include <string>

#include "agent/test_util.h"
#include "common/file_util.h"
#include "gtest/gtest.h"

namespace strait::agent {
namespace {

using ::strait::agent::testing::GatewayTunnel;
using ::strait::agent::testing::MakeSnapshot;
using ::strait::agent::testing::NewTempDir;

int Mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

TEST(FileStateStoreTest, EmptyWhenNothingSaved) {
  auto store = FileStateStore::Create(NewTempDir() + "/state");
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<SnapshotPtr> loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, nullptr);
}

TEST(FileStateStoreTest, RoundTripWithPrivateModes) {
  const std::string dir = NewTempDir() + "/var/lib/strait/agent";
  auto store = FileStateStore::Create(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(Mode(dir), 0700);

  strait::v1::Snapshot first = MakeSnapshot(
      "5.abc", {GatewayTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16", 3)}, "n-1");
  ASSERT_TRUE((*store)->Save(first).ok());
  strait::v1::Snapshot second = MakeSnapshot("6.abc", {}, "n-2");
  ASSERT_TRUE((*store)->Save(second).ok());
  ASSERT_TRUE((*store)->Save(first).ok());

  EXPECT_EQ((*store)->path(), dir + "/snapshot.pb");
  EXPECT_EQ(Mode((*store)->path()), 0600);

  // A new store on the same directory, as after a restart.
  auto reopened = FileStateStore::Create(dir);
  ASSERT_TRUE(reopened.ok());
  absl::StatusOr<SnapshotPtr> loaded = (*reopened)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(*loaded, nullptr);
  EXPECT_EQ((*loaded)->SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ((*loaded)->tunnels(0).spec().auth().psk().value(), "test key 0123456789abcdef");
}

TEST(FileStateStoreTest, CorruptFileIsDataLoss) {
  const std::string dir = NewTempDir();
  auto store = FileStateStore::Create(dir);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(WriteFileAtomically((*store)->path(), "\xff\xff\xff garbage", 0600).ok());
  absl::StatusOr<SnapshotPtr> loaded = (*store)->Load();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("snapshot.pb"), absl::string_view::npos);

  // Something that parses but is no snapshot the agent wrote.
  ASSERT_TRUE(WriteFileAtomically((*store)->path(), "", 0600).ok());
  EXPECT_EQ((*store)->Load().status().code(), absl::StatusCode::kDataLoss);

  // The next save repairs it.
  ASSERT_TRUE((*store)->Save(MakeSnapshot("7.x", {})).ok());
  loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->version(), "7.x");
}

TEST(FileStateStoreTest, DirectoryThatIsAFileFails) {
  const std::string dir = NewTempDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/file", "x", 0600).ok());
  EXPECT_FALSE(FileStateStore::Create(dir + "/file").ok());
}

}  // namespace
}  // namespace strait::agent
