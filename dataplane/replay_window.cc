#include "dataplane/replay_window.h"

#include <algorithm>

namespace strait::dataplane {
namespace {

constexpr uint64_t kBitsPerWord = 64;

uint32_t ClampSize(uint32_t size) { return std::min(size, ReplayWindow::kMaxSize); }

}  // namespace

ReplayWindow::ReplayWindow(uint32_t size, bool esn) : size_(ClampSize(size)), esn_(esn) {
  if (size_ == 0) return;
  // One word more than the window needs: the newest word is only partly
  // inside it.
  size_t words = 1;
  while (words < (size_ + kBitsPerWord - 1) / kBitsPerWord + 1) words *= 2;
  words_.assign(words, 0);
  word_mask_ = words - 1;
}

uint64_t ReplayWindow::Estimate(uint32_t seq_lo) const {
  if (!esn_) return seq_lo;
  // RFC 4303 Appendix A.2.1 with T = highest_, W = the window. Without a
  // window, half the 32-bit space stands in for it: the closest guess.
  const uint64_t window = size_ != 0 ? size_ : (uint64_t{1} << 31);
  const uint32_t top_lo = static_cast<uint32_t>(highest_);
  const uint32_t top_hi = static_cast<uint32_t>(highest_ >> 32);
  // The lowest low half inside the window, modulo 2^32.
  const uint32_t bottom_lo = static_cast<uint32_t>(top_lo - window + 1);
  uint32_t seq_hi = top_hi;
  if (top_lo >= window - 1) {
    // Case A: the window lies within one subspace; a number below it comes
    // from the next one.
    if (seq_lo < bottom_lo) seq_hi = top_hi + 1;
  } else {
    // Case B: the window spans two subspaces; a number at or above its
    // bottom (mod 2^32) belongs to the previous one.
    if (seq_lo >= bottom_lo && top_hi > 0) seq_hi = top_hi - 1;
  }
  return (uint64_t{seq_hi} << 32) | seq_lo;
}

bool ReplayWindow::Seen(uint64_t seq) const {
  const uint64_t word = words_[(seq / kBitsPerWord) & word_mask_];
  return (word >> (seq % kBitsPerWord)) & 1;
}

ReplayWindow::Verdict ReplayWindow::Check(uint64_t seq) const {
  if (seq == 0) return Verdict::kTooOld;  // Senders start at 1.
  if (!esn_ && seq > 0xffffffffULL) return Verdict::kTooOld;
  if (size_ == 0 || seq > highest_) return Verdict::kOk;
  if (highest_ - seq >= size_) return Verdict::kTooOld;
  return Seen(seq) ? Verdict::kReplayed : Verdict::kOk;
}

ReplayWindow::Verdict ReplayWindow::Update(uint64_t seq) {
  const Verdict verdict = Check(seq);
  if (verdict != Verdict::kOk) return verdict;
  if (size_ == 0) {
    highest_ = std::max(highest_, seq);
    return verdict;
  }
  if (seq > highest_) {
    // Clear the words the window slides over; all of them when it jumps
    // further than the ring.
    const uint64_t old_word = highest_ / kBitsPerWord;
    const uint64_t new_word = seq / kBitsPerWord;
    const uint64_t advance = std::min<uint64_t>(new_word - old_word, words_.size());
    for (uint64_t i = 1; i <= advance; ++i) words_[(old_word + i) & word_mask_] = 0;
    highest_ = seq;
  }
  words_[(seq / kBitsPerWord) & word_mask_] |= uint64_t{1} << (seq % kBitsPerWord);
  return verdict;
}

}  // namespace strait::dataplane
