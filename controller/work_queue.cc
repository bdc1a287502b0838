#include "controller/work_queue.h"

#include <utility>

namespace strait::controller {

WorkQueue::WorkQueue(int threads) {
  if (threads < 1) {
    threads = 1;
  }
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { Run(); });
  }
}

WorkQueue::~WorkQueue() { Stop(); }

bool WorkQueue::Post(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return false;
  }
  tasks_.push_back(std::move(task));
  return true;
}

void WorkQueue::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  // Only the owner calls Stop(); threads_ never changes after construction.
  for (std::thread& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
}

bool WorkQueue::Ready() const { return stopping_ || !tasks_.empty(); }

void WorkQueue::Run() {
  for (;;) {
    absl::AnyInvocable<void() &&> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkQueue::Ready));
      if (tasks_.empty()) {
        return;  // stopping, and drained
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    std::move(task)();
  }
}

}  // namespace strait::controller
