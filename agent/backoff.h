#ifndef STRAIT_AGENT_BACKOFF_H_
#define STRAIT_AGENT_BACKOFF_H_

#include "absl/random/bit_gen_ref.h"
#include "absl/time/time.h"

namespace strait::agent {

// Exponential backoff with full jitter: the n-th delay (from 0) is drawn
// uniformly from [0, min(max, initial * 2^n)], so that agents cut off
// together do not come back together.
class Backoff {
 public:
  Backoff(absl::Duration initial, absl::Duration max) : initial_(initial), max_(max) {}

  // The next delay; draws from `gen`.
  absl::Duration Next(absl::BitGenRef gen);

  // After a good session: the next delay starts from `initial` again.
  void Reset() { attempt_ = 0; }

  // The ceiling of the next delay.
  absl::Duration Ceiling() const;

 private:
  absl::Duration initial_;
  absl::Duration max_;
  int attempt_ = 0;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_BACKOFF_H_
