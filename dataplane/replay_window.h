#ifndef STRAIT_DATAPLANE_REPLAY_WINDOW_H_
#define STRAIT_DATAPLANE_REPLAY_WINDOW_H_

// The receiver's anti-replay window of RFC 4303 §3.4.3 (and Appendix A for
// extended sequence numbers), as a ring of 64-bit words in the manner of
// RFC 6479 so that advancing costs at most one word per 64 packets.
//
// Use per packet, under the SA's lock:
//   seq = window.Estimate(seq_lo);       // 64-bit number (ESN) or seq_lo.
//   if (window.Check(seq) != kOk) drop;  // Before the ICV: cheap rejection.
//   ... verify the ICV with seq's high half ...
//   window.Update(seq);                  // Only after the ICV verified.
// Not thread-safe.

#include <cstdint>
#include <vector>

namespace strait::dataplane {

class ReplayWindow {
 public:
  // The largest window, in packets (the kernel's XFRMA_REPLAY_ESN_MAX).
  static constexpr uint32_t kMaxSize = 4096;

  enum class Verdict {
    kOk,        // New: inside the window and unseen, or ahead of it.
    kReplayed,  // Inside the window and seen before.
    kTooOld,    // Behind the window (or 0, which no sender uses).
  };

  // `size` packets, at most kMaxSize (larger values are clamped; callers
  // validate). 0 disables the replay check; the highest number is still
  // tracked so that ESN estimates work.
  ReplayWindow(uint32_t size, bool esn);

  // The full sequence number a packet carrying `seq_lo` most likely has:
  // seq_lo itself without ESN, otherwise the high half per RFC 4303
  // Appendix A.2.1, relative to the highest number seen.
  uint64_t Estimate(uint32_t seq_lo) const;

  Verdict Check(uint64_t seq) const;
  // Records `seq` as received; returns Check()'s verdict from just before
  // and records nothing unless it was kOk.
  Verdict Update(uint64_t seq);

  uint64_t highest() const { return highest_; }
  uint32_t size() const { return size_; }

 private:
  bool Seen(uint64_t seq) const;

  const uint32_t size_;
  const bool esn_;
  uint64_t highest_ = 0;  // 0: nothing received yet.
  std::vector<uint64_t> words_;
  uint64_t word_mask_ = 0;  // words_.size() - 1 (a power of two).
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_REPLAY_WINDOW_H_
