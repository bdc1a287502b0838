#include "dataplane/replay_window.h"

#include <random>
#include <set>

#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using Verdict = ReplayWindow::Verdict;

TEST(ReplayWindowTest, InOrderThenDuplicates) {
  ReplayWindow w(64, false);
  for (uint64_t seq = 1; seq <= 1000; ++seq) ASSERT_EQ(w.Update(seq), Verdict::kOk) << seq;
  EXPECT_EQ(w.highest(), 1000u);
  for (uint64_t seq = 937; seq <= 1000; ++seq) EXPECT_EQ(w.Check(seq), Verdict::kReplayed) << seq;
  EXPECT_EQ(w.Check(936), Verdict::kTooOld);
  EXPECT_EQ(w.Check(1), Verdict::kTooOld);
  EXPECT_EQ(w.Check(1001), Verdict::kOk);
}

TEST(ReplayWindowTest, OutOfOrderInsideTheWindow) {
  ReplayWindow w(64, false);
  EXPECT_EQ(w.Update(100), Verdict::kOk);
  EXPECT_EQ(w.Update(50), Verdict::kOk);
  EXPECT_EQ(w.Update(37), Verdict::kOk);  // 100 - 37 = 63: the oldest slot.
  EXPECT_EQ(w.Update(36), Verdict::kTooOld);
  EXPECT_EQ(w.Update(50), Verdict::kReplayed);
  EXPECT_EQ(w.Update(99), Verdict::kOk);
  EXPECT_EQ(w.Update(99), Verdict::kReplayed);
  EXPECT_EQ(w.Update(101), Verdict::kOk);
  EXPECT_EQ(w.Update(37), Verdict::kTooOld);  // Slid out.
}

TEST(ReplayWindowTest, CheckDoesNotRecord) {
  // Check before the ICV, Update after: a forged packet that fails the ICV
  // must not burn its sequence number.
  ReplayWindow w(32, false);
  EXPECT_EQ(w.Check(5), Verdict::kOk);
  EXPECT_EQ(w.Check(5), Verdict::kOk);
  EXPECT_EQ(w.highest(), 0u);
  EXPECT_EQ(w.Update(5), Verdict::kOk);
  EXPECT_EQ(w.Check(5), Verdict::kReplayed);
}

TEST(ReplayWindowTest, ZeroIsNeverValid) {
  ReplayWindow w(64, false);
  EXPECT_EQ(w.Check(0), Verdict::kTooOld);
  ReplayWindow off(0, false);
  EXPECT_EQ(off.Check(0), Verdict::kTooOld);
  ReplayWindow esn(64, true);
  EXPECT_EQ(esn.Check(0), Verdict::kTooOld);
}

TEST(ReplayWindowTest, DisabledWindowAcceptsRepeats) {
  ReplayWindow w(0, false);
  EXPECT_EQ(w.Update(10), Verdict::kOk);
  EXPECT_EQ(w.Update(10), Verdict::kOk);
  EXPECT_EQ(w.Update(1), Verdict::kOk);
  EXPECT_EQ(w.highest(), 10u);
}

TEST(ReplayWindowTest, WithoutEsnNumbersStayIn32Bits) {
  ReplayWindow w(64, false);
  EXPECT_EQ(w.Check(0xffffffffULL), Verdict::kOk);
  EXPECT_EQ(w.Check(0x100000000ULL), Verdict::kTooOld);
  EXPECT_EQ(w.Estimate(0xfffffff0u), 0xfffffff0u);
}

TEST(ReplayWindowTest, BigJumpsClearTheRing) {
  ReplayWindow w(128, false);
  ASSERT_EQ(w.Update(200), Verdict::kOk);
  // Jump exactly a ring's worth and more: stale bits must not survive.
  for (uint64_t jump : {64u, 128u, 192u, 256u, 257u, 1000u, 100000u}) {
    const uint64_t before = w.highest();
    const uint64_t top = before + jump;
    ASSERT_EQ(w.Update(top), Verdict::kOk);
    for (uint64_t seq = top - 127; seq < top; ++seq) {
      ASSERT_EQ(w.Check(seq), seq == before ? Verdict::kReplayed : Verdict::kOk)
          << "jump " << jump << " seq " << seq;
    }
    EXPECT_EQ(w.Check(top - 128), Verdict::kTooOld);
  }
}

TEST(ReplayWindowTest, SizeIsClamped) {
  ReplayWindow w(1 << 20, false);
  EXPECT_EQ(w.size(), ReplayWindow::kMaxSize);
}

// Every window size against a plain model: a set of what was seen.
class ReplayWindowSizeTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ReplayWindowSizeTest, AcceptsExactlyTheWindow) {
  const uint32_t size = GetParam();
  ReplayWindow w(size, false);
  const uint64_t top = 10000;
  ASSERT_EQ(w.Update(top), Verdict::kOk);
  for (uint64_t seq = top - size + 1; seq < top; ++seq) {
    ASSERT_EQ(w.Check(seq), Verdict::kOk) << seq;
  }
  EXPECT_EQ(w.Check(top - size), Verdict::kTooOld);
}

TEST_P(ReplayWindowSizeTest, MatchesAModelUnderRandomTraffic) {
  const uint32_t size = GetParam();
  for (bool esn : {false, true}) {
    ReplayWindow w(size, esn);
    std::set<uint64_t> seen;
    uint64_t highest = 0;
    std::mt19937_64 rng(size * 31 + esn);
    uint64_t base = esn ? 0xffffff00ULL : 1;  // ESN: cross the 2^32 boundary.
    for (int i = 0; i < 20000; ++i) {
      // Mostly ahead, some reordering, some old, some repeats, rare jumps.
      uint64_t seq;
      switch (rng() % 10) {
        case 0:
          seq = highest > 3 * size ? highest - (rng() % (3 * size + 1)) : base + rng() % 8;
          break;
        case 1:
          seq = seen.empty() || *seen.rbegin() < 4 ? base : *seen.rbegin() - (rng() % 4);
          break;
        case 2:
          seq = highest + 1 + rng() % (8 * size + 1);
          break;
        default:
          seq = highest + 1 + rng() % 4;
          break;
      }
      if (seq == 0) seq = 1;
      Verdict want;
      if (seq > highest) {
        want = Verdict::kOk;
      } else if (highest - seq >= size) {
        want = Verdict::kTooOld;
      } else {
        want = seen.count(seq) ? Verdict::kReplayed : Verdict::kOk;
      }
      ASSERT_EQ(w.Update(seq), want) << "step " << i << " seq " << seq << " highest " << highest;
      if (want == Verdict::kOk) {
        seen.insert(seq);
        highest = std::max(highest, seq);
      }
      if (esn) {
        // Numbers near the top are estimated back to themselves.
        const uint64_t near = highest - std::min<uint64_t>(highest - 1, rng() % size);
        ASSERT_EQ(w.Estimate(static_cast<uint32_t>(near)), near);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, ReplayWindowSizeTest,
                         ::testing::Values(1u, 32u, 63u, 64u, 65u, 128u, 1000u, 4096u));

// RFC 4303 Appendix A.2.1.
TEST(ReplayWindowEsnTest, EstimateCaseAWindowInsideOneSubspace) {
  ReplayWindow w(64, true);
  const uint64_t top = (uint64_t{3} << 32) | 1000;
  ASSERT_EQ(w.Update(top), Verdict::kOk);
  EXPECT_EQ(w.Estimate(1000), top);
  EXPECT_EQ(w.Estimate(937), (uint64_t{3} << 32) | 937);    // Bottom of the window.
  EXPECT_EQ(w.Estimate(2000), (uint64_t{3} << 32) | 2000);  // Ahead, same subspace.
  EXPECT_EQ(w.Estimate(936), (uint64_t{4} << 32) | 936);    // Below: next subspace.
  EXPECT_EQ(w.Estimate(5), (uint64_t{4} << 32) | 5);
}

TEST(ReplayWindowEsnTest, EstimateCaseBWindowSpansTwoSubspaces) {
  ReplayWindow w(64, true);
  const uint64_t top = (uint64_t{3} << 32) | 10;
  ASSERT_EQ(w.Update(top), Verdict::kOk);
  EXPECT_EQ(w.Estimate(10), top);
  EXPECT_EQ(w.Estimate(11), (uint64_t{3} << 32) | 11);
  EXPECT_EQ(w.Estimate(0xfffffff0u), (uint64_t{2} << 32) | 0xfffffff0u);  // Previous subspace.
  EXPECT_EQ(w.Check(w.Estimate(0xfffffff0u)), Verdict::kOk);
  EXPECT_EQ(w.Estimate(0xffffffc0u), (uint64_t{3} << 32) | 0xffffffc0u);  // Far ahead instead.
}

TEST(ReplayWindowEsnTest, RollsOverTheLowHalf) {
  ReplayWindow w(64, true);
  for (uint64_t seq = 0xfffffff0ULL; seq <= 0x100000010ULL; ++seq) {
    const uint64_t estimate = w.Estimate(static_cast<uint32_t>(seq));
    ASSERT_EQ(estimate, seq);
    ASSERT_EQ(w.Update(estimate), Verdict::kOk);
  }
  // A late packet from before the rollover is still told apart.
  EXPECT_EQ(w.Estimate(0xfffffff5u), 0xfffffff5ULL);
  EXPECT_EQ(w.Check(0xfffffff5ULL), Verdict::kReplayed);
}

TEST(ReplayWindowEsnTest, FirstPacketsStartInSubspaceZero) {
  ReplayWindow w(64, true);
  EXPECT_EQ(w.Estimate(1), 1u);
  EXPECT_EQ(w.Estimate(0xffffffffu), 0xffffffffULL);
}

}  // namespace
}  // namespace strait::dataplane
