#include "agent/ike/fragmentation.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strait::ike {

namespace {

// The generic payload header and the Fragment Number / Total Fragments
// fields in front of an SKF payload's IV.
constexpr size_t kSkfHeaderSize = kGenericPayloadHeaderSize + 4;

absl::string_view View(absl::Span<const uint8_t> bytes) {
  return absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

size_t MaxFragmentMessageSize(size_t fragment_size, bool ipv6) {
  const size_t overhead = (ipv6 ? 40 : 20) + 8 + 4;
  return fragment_size > overhead ? fragment_size - overhead : 0;
}

absl::StatusOr<std::vector<Bytes>> FragmentMessage(const SkCipher& cipher,
                                                   absl::Span<const uint8_t> message,
                                                   size_t max_message_size) {
  if (message.size() <= max_message_size)
    return std::vector<Bytes>{Bytes(message.begin(), message.end())};
  ASSIGN_OR_RETURN(Message outer, DecodeMessage(message));
  if (outer.payloads.size() != 1 || outer.payloads[0].type != kPayloadSk) {
    return absl::InvalidArgumentError("only a message of one SK payload can be fragmented");
  }
  const auto& sk = std::get<SkPayload>(outer.payloads[0].body);
  const size_t aad_size = message.size() - sk.encrypted.size();
  ASSIGN_OR_RETURN(std::string inner,
                   cipher.Open(View(message.first(aad_size)), View(sk.encrypted)));

  // The largest plaintext chunk whose sealed fragment still fits.
  const size_t fixed = kIkeHeaderSize + kSkfHeaderSize;
  if (max_message_size <= fixed + cipher.iv_size() + cipher.icv_size() + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fragments of ", max_message_size, " bytes hold no data"));
  }
  const size_t room = max_message_size - fixed;
  size_t chunk = room - cipher.iv_size() - cipher.icv_size();
  while (chunk > 0 && cipher.SealedSize(chunk) > room) --chunk;
  if (chunk == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fragments of ", max_message_size, " bytes hold no data"));
  }
  const size_t count = (inner.size() + chunk - 1) / chunk;
  if (count > 0xffff) return absl::InvalidArgumentError("more than 65535 fragments");

  std::vector<Bytes> fragments;
  fragments.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const absl::string_view part = absl::string_view(inner).substr(i * chunk, chunk);
    const size_t sealed_size = cipher.SealedSize(part.size());
    Message m;
    m.header = outer.header;
    SkfPayload skf;
    skf.fragment_number = static_cast<uint16_t>(i + 1);
    skf.total_fragments = static_cast<uint16_t>(count);
    skf.inner_next_payload = i == 0 ? sk.inner_next_payload : kPayloadNone;
    skf.encrypted.resize(sealed_size);
    Payload p;
    p.type = kPayloadSkf;
    p.body = std::move(skf);
    m.payloads.push_back(std::move(p));
    Bytes bytes = EncodeMessage(m);
    const size_t fragment_aad = bytes.size() - sealed_size;
    ASSIGN_OR_RETURN(std::string sealed,
                     cipher.Seal(View(absl::MakeConstSpan(bytes).first(fragment_aad)), part));
    if (sealed.size() != sealed_size) return absl::InternalError("SKF size mismatch");
    std::memcpy(bytes.data() + fragment_aad, sealed.data(), sealed.size());
    fragments.push_back(std::move(bytes));
  }
  // The plaintext held the inner payloads; nothing secret, but no reason to
  // leave it around either.
  std::fill(inner.begin(), inner.end(), '\0');
  return fragments;
}

absl::StatusOr<std::string> OpenFragment(const SkCipher& cipher, absl::Span<const uint8_t> datagram,
                                         const SkfPayload& skf) {
  if (skf.encrypted.size() > datagram.size()) return absl::InvalidArgumentError("SKF size");
  const size_t aad_size = datagram.size() - skf.encrypted.size();
  return cipher.Open(View(datagram.first(aad_size)), View(skf.encrypted));
}

Reassembler::Result Reassembler::Add(uint32_t message_id, const SkfPayload& skf,
                                     std::string plaintext, absl::Span<const uint8_t> datagram,
                                     absl::Time now) {
  if (skf.total_fragments > limits_.max_fragments || skf.fragment_number == 0 ||
      skf.fragment_number > skf.total_fragments) {
    return Result::kTooMany;
  }
  if (message_id_.has_value() && *message_id_ != message_id) Clear();
  if (message_id_.has_value() && skf.total_fragments < total_) return Result::kSmallerTotal;
  if (!message_id_.has_value() || skf.total_fragments > total_) {
    // A new message, or RFC 7383 §2.6: more fragments than before means
    // the sender went to a smaller fragment size; start again.
    Clear();
    message_id_ = message_id;
    total_ = skf.total_fragments;
    fragments_.resize(total_);
    started_ = now;
  }
  std::optional<std::string>& slot = fragments_[skf.fragment_number - 1];
  if (slot.has_value()) return Result::kDuplicate;
  if (size_ + plaintext.size() > limits_.max_message_size) {
    Clear();
    return Result::kTooLarge;
  }
  size_ += plaintext.size();
  slot = std::move(plaintext);
  ++held_;
  if (skf.fragment_number == 1) {
    first_payload_ = skf.inner_next_payload;
    first_datagram_.assign(datagram.begin(), datagram.end());
  }
  return held_ == total_ ? Result::kComplete : Result::kStored;
}

Reassembler::Completed Reassembler::TakeMessage() {
  Completed done;
  done.message_id = message_id_.value_or(0);
  done.first_payload = first_payload_;
  done.inner.reserve(size_);
  for (std::optional<std::string>& f : fragments_) {
    if (f.has_value()) done.inner.insert(done.inner.end(), f->begin(), f->end());
  }
  done.first_datagram = std::move(first_datagram_);
  Clear();
  return done;
}

size_t Reassembler::Expire(absl::Time now) {
  if (!message_id_.has_value() || now < started_ + limits_.timeout) return 0;
  const size_t dropped = held_;
  Clear();
  return dropped;
}

void Reassembler::Clear() {
  message_id_.reset();
  total_ = 0;
  held_ = 0;
  size_ = 0;
  first_payload_ = kPayloadNone;
  fragments_.clear();
  first_datagram_.clear();
}

}  // namespace strait::ike
