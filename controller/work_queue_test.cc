#include "controller/work_queue.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace strait::controller {
namespace {

TEST(WorkQueueTest, RunsTasksInOrderOnOneThread) {
  std::vector<int> order;
  {
    WorkQueue queue(1);
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(queue.Post([&order, i] { order.push_back(i); }));
    }
  }  // The destructor drains the queue.
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(order[i], i);
  }
}

TEST(WorkQueueTest, RefusesTasksAfterStop) {
  WorkQueue queue(2);
  std::atomic<int> ran{0};
  absl::Notification release;
  ASSERT_TRUE(queue.Post([&] {
    release.WaitForNotification();
    ++ran;
  }));
  ASSERT_TRUE(queue.Post([&] { ++ran; }));
  release.Notify();
  queue.Stop();
  EXPECT_EQ(ran.load(), 2);
  EXPECT_FALSE(queue.Post([&] { ++ran; }));
  queue.Stop();  // idempotent
  EXPECT_EQ(ran.load(), 2);
}

}  // namespace
}  // namespace strait::controller
