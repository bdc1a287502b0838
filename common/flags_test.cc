#include "common/flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_data_dir, "", "for the test");
ABSL_FLAG(bool, test_insecure, false, "for the test");

namespace strait {
namespace {

using ::testing::ElementsAre;

TEST(NormalizeFlagNamesTest, DashesInNamesOnly) {
  EXPECT_THAT(NormalizeFlagNames({"prog", "--data-dir=/a-b", "-x-y", "pos-arg", "--", "--a-b"}),
              ElementsAre("prog", "--data_dir=/a-b", "-x_y", "pos-arg", "--", "--a-b"));
}

TEST(ParseFlagsTest, ParsesFlagsAndKeepsPositionals) {
  ParsedFlags parsed = ParseFlags(
      {"usage", {"common/"}, "v1"},
      NormalizeFlagNames({"prog", "get", "--test-data-dir=/tmp/x", "--test_insecure", "tunnels"}));
  EXPECT_FALSE(parsed.exit_now);
  EXPECT_THAT(parsed.positional, ElementsAre("get", "tunnels"));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_data_dir), "/tmp/x");
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_insecure));
}

}  // namespace
}  // namespace strait
