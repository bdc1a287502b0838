#include "controller/listen_address.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::controller {
namespace {

using ::testing::HasSubstr;

TEST(ListenAddressTest, ParsesTcpAndUnixLists) {
  absl::StatusOr<std::vector<ListenAddress>> addresses =
      ParseListenAddresses("127.0.0.1:7443, unix:///run/strait/controller.sock,[::1]:0");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  ASSERT_EQ(addresses->size(), 3u);
  EXPECT_EQ((*addresses)[0].kind, ListenAddress::Kind::kTcp);
  EXPECT_EQ((*addresses)[0].host, "127.0.0.1");
  EXPECT_EQ((*addresses)[0].port, 7443);
  EXPECT_EQ((*addresses)[1].kind, ListenAddress::Kind::kUnix);
  EXPECT_EQ((*addresses)[1].uri, "unix:///run/strait/controller.sock");
  EXPECT_EQ((*addresses)[1].unix_path, "/run/strait/controller.sock");
  EXPECT_EQ((*addresses)[2].host, "::1");
  EXPECT_EQ((*addresses)[2].port, 0);
}

TEST(ListenAddressTest, UnixRelativePathAndAbstract) {
  auto addresses = ParseListenAddresses("unix:run/c.sock,unix-abstract:strait");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_EQ((*addresses)[0].unix_path, "run/c.sock");
  EXPECT_EQ((*addresses)[1].kind, ListenAddress::Kind::kUnix);
  EXPECT_EQ((*addresses)[1].unix_path, "");
}

TEST(ListenAddressTest, RejectsMalformedEntriesNamingThem) {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", "::1:7443", "[::1:7443",
                          "unix://relative.sock", "unix:", "http://127.0.0.1:80", ""}) {
    auto addresses = ParseListenAddresses(bad);
    EXPECT_FALSE(addresses.ok()) << bad;
    EXPECT_EQ(addresses.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(addresses.status().message(), HasSubstr("--listen")) << bad;
  }
}

TEST(ListenAddressTest, InsecureOnlyOnLoopbackAndUnixSockets) {
  for (const char* ok : {"127.0.0.1:7443", "127.1.2.3:1", "[::1]:7443", "localhost:7443",
                         "LOCALHOST:1", "unix:///run/s.sock", "unix-abstract:x"}) {
    auto addresses = ParseListenAddresses(ok);
    ASSERT_TRUE(addresses.ok()) << ok;
    EXPECT_TRUE(CheckInsecureListenAddresses(*addresses).ok()) << ok;
  }
  for (const char* bad : {"0.0.0.0:7443", "192.0.2.1:7443", "[::]:7443", ":7443",
                          "controller.example.com:7443", "[::ffff:10.0.0.1]:1"}) {
    auto addresses = ParseListenAddresses(absl::StrCat("127.0.0.1:1,", bad));
    ASSERT_TRUE(addresses.ok()) << bad;
    absl::Status status = CheckInsecureListenAddresses(*addresses);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(status.message(), HasSubstr(bad));
  }
}

}  // namespace
}  // namespace strait::controller
