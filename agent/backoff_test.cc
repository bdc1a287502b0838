#include "agent/backoff.h"

#include <algorithm>
#include <random>

#include "gtest/gtest.h"

namespace strait::agent {
namespace {

TEST(BackoffTest, CeilingDoublesUpToMaxAndResets) {
  Backoff backoff(absl::Milliseconds(500), absl::Seconds(30));
  std::mt19937 gen(42);
  const absl::Duration ceilings[] = {absl::Milliseconds(500), absl::Seconds(1), absl::Seconds(2),
                                     absl::Seconds(4),        absl::Seconds(8), absl::Seconds(16),
                                     absl::Seconds(30),       absl::Seconds(30)};
  for (absl::Duration ceiling : ceilings) {
    EXPECT_EQ(backoff.Ceiling(), ceiling);
    absl::Duration delay = backoff.Next(gen);
    EXPECT_GE(delay, absl::ZeroDuration());
    EXPECT_LE(delay, ceiling);
  }
  backoff.Reset();
  EXPECT_EQ(backoff.Ceiling(), absl::Milliseconds(500));
}

TEST(BackoffTest, DelaysAreJittered) {
  Backoff backoff(absl::Seconds(30), absl::Seconds(30));
  std::mt19937 gen(7);
  absl::Duration min = absl::InfiniteDuration(), max = absl::ZeroDuration();
  for (int i = 0; i < 200; ++i) {
    absl::Duration d = backoff.Next(gen);
    min = std::min(min, d);
    max = std::max(max, d);
  }
  EXPECT_LT(min, absl::Seconds(3));
  EXPECT_GT(max, absl::Seconds(27));
}

}  // namespace
}  // namespace strait::agent
