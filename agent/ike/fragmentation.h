#ifndef STRAIT_AGENT_IKE_FRAGMENTATION_H_
#define STRAIT_AGENT_IKE_FRAGMENTATION_H_

// IKE message fragmentation (RFC 7383): splitting an SK-protected message
// into Encrypted Fragment (SKF) payloads, each sealed on its own, and
// reassembling the fragments a peer sends.
//
// Both halves are sans-IO: the engine negotiates fragmentation in
// IKE_SA_INIT (IKEV2_FRAGMENTATION_SUPPORTED), hands over what it is about
// to send and what it authenticated, and keeps the message ID logic.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/ike/crypto_sk.h"
#include "agent/ike/message.h"

namespace strait::ike {

// strongSwan's default (charon.fragment_size): the largest IP datagram a
// fragment may make, IP and UDP headers included.
inline constexpr size_t kDefaultFragmentSize = 1280;
// Below this an IKE_AUTH would need absurd numbers of fragments.
inline constexpr size_t kMinFragmentSize = 256;

// The largest IKE message (header included) that fits an IP datagram of
// `fragment_size` bytes: less the IPv4 (20) or IPv6 (40) header, UDP (8)
// and the non-ESP marker (4) that UDP 4500 adds, always reserved so that a
// float to 4500 needs no new size.
size_t MaxFragmentMessageSize(size_t fragment_size, bool ipv6);

// `message` is an encoded IKE message whose last payload is SK, sealed with
// `cipher` (as the engine's Encode() makes it). When it is no longer than
// `max_message_size` it comes back as is; otherwise its inner payloads are
// opened and sealed again as SKF fragments (RFC 7383 §2.5): the same header
// (Message ID included), Fragment Number 1..n, Total Fragments n, the first
// fragment naming the first inner payload and the others 0, each datagram
// at most `max_message_size` bytes. Errors: not an SK message, a cipher
// failure, more than 0xffff fragments, or a size too small for any data.
absl::StatusOr<std::vector<Bytes>> FragmentMessage(const SkCipher& cipher,
                                                   absl::Span<const uint8_t> message,
                                                   size_t max_message_size);

// Opens one SKF fragment: `datagram` is the whole IKE message (its header
// and the SKF generic header with the fragment fields are the AAD) and
// `skf` its decoded last payload. Returns the fragment's plaintext;
// InvalidArgument when it does not authenticate.
absl::StatusOr<std::string> OpenFragment(const SkCipher& cipher, absl::Span<const uint8_t> datagram,
                                         const SkfPayload& skf);

// Collects the authenticated fragments of one message at a time (window
// size 1: one per direction). RFC 7383 §2.6: duplicates are ignored; a
// fragment announcing more fragments than the ones held replaces them (the
// sender went to smaller fragments), one announcing fewer is ignored.
class Reassembler {
 public:
  struct Limits {
    size_t max_fragments = 64;
    size_t max_message_size = 64 * 1024;         // Sum of the fragments' plaintext.
    absl::Duration timeout = absl::Seconds(30);  // From the first fragment.
  };
  enum class Result {
    kStored,        // Kept; more to come.
    kComplete,      // Kept, and it was the last one missing: TakeMessage().
    kDuplicate,     // Already held: ignored.
    kSmallerTotal,  // Announces fewer fragments than the ones held: ignored.
    kTooMany,       // Total Fragments above the limit: ignored.
    kTooLarge,      // The message would pass the size limit: all dropped.
  };
  struct Completed {
    uint32_t message_id = 0;
    uint8_t first_payload = kPayloadNone;
    Bytes inner;  // The inner payload chain, all fragments in order.
    // The datagram of fragment 1 (a retransmitted request is recognised
    // by it).
    Bytes first_datagram;
  };

  Reassembler() = default;
  explicit Reassembler(Limits limits) : limits_(limits) {}

  // Adds an authenticated fragment of message `message_id` (its plaintext
  // from OpenFragment()). A fragment of another message ID drops what was
  // held (the engine only passes the message ID it expects next).
  Result Add(uint32_t message_id, const SkfPayload& skf, std::string plaintext,
             absl::Span<const uint8_t> datagram, absl::Time now);
  // After kComplete: the message, and the reassembler is empty again.
  Completed TakeMessage();
  // Drops a reassembly older than the timeout; returns how many fragments
  // it held (0 when nothing expired).
  size_t Expire(absl::Time now);
  // Drops everything held.
  void Clear();
  bool empty() const { return !message_id_.has_value(); }

 private:
  Limits limits_;
  std::optional<uint32_t> message_id_;
  uint16_t total_ = 0;
  size_t held_ = 0;
  size_t size_ = 0;
  uint8_t first_payload_ = kPayloadNone;
  absl::Time started_;
  std::vector<std::optional<std::string>> fragments_;  // [number - 1]
  Bytes first_datagram_;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_FRAGMENTATION_H_
