#include "common/logging.h"

#include "gtest/gtest.h"

namespace strait {
namespace {

TEST(LogfmtValueTest, PlainValuesStayBare) { EXPECT_EQ(LogfmtValue("node-a"), "node-a"); }

TEST(LogfmtValueTest, QuotesSpacesAndEscapes) {
  EXPECT_EQ(LogfmtValue("a b"), "\"a b\"");
  EXPECT_EQ(LogfmtValue("x=\"y\""), "\"x=\\\"y\\\"\"");
  EXPECT_EQ(LogfmtValue("line\nbreak"), "\"line\\nbreak\"");
  EXPECT_EQ(LogfmtValue(""), "\"\"");
}

TEST(LogLevelTest, ParsesNamesAndFiltersBelowLevel) {
  LogLevel level;
  ASSERT_TRUE(ParseLogLevel("WARN", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
  SetLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(LogLevel::kInfo);
}

}  // namespace
}  // namespace strait
