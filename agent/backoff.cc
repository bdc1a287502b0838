#include "agent/backoff.h"

#include <algorithm>

#include "absl/random/distributions.h"

namespace strait::agent {

absl::Duration Backoff::Ceiling() const {
  absl::Duration ceiling = initial_;
  for (int i = 0; i < attempt_ && ceiling < max_; ++i) ceiling *= 2;
  return std::min(ceiling, max_);
}

absl::Duration Backoff::Next(absl::BitGenRef gen) {
  const absl::Duration ceiling = Ceiling();
  if (ceiling < max_) ++attempt_;
  if (ceiling <= absl::ZeroDuration()) return absl::ZeroDuration();
  const double fraction = absl::Uniform(absl::IntervalClosedClosed, gen, 0.0, 1.0);
  return ceiling * fraction;
}

}  // namespace strait::agent
