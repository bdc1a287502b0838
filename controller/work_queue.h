#ifndef STRAIT_CONTROLLER_WORK_QUEUE_H_
#define STRAIT_CONTROLLER_WORK_QUEUE_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace strait::controller {

// A few threads of its own for work that must not run inside a gRPC
// reaction (the store's fsync). Tasks start in the order they were posted.
class WorkQueue {
 public:
  // `threads` >= 1.
  explicit WorkQueue(int threads);
  // Stop().
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`. Returns false, and drops `task` without running it, once
  // Stop() has begun; the caller then answers the request itself.
  bool Post(absl::AnyInvocable<void() &&> task);

  // Runs every task already queued, then joins the threads. Idempotent.
  void Stop();

 private:
  void Run();
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_WORK_QUEUE_H_
