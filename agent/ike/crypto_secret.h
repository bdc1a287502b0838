#ifndef STRAIT_AGENT_IKE_CRYPTO_SECRET_H_
#define STRAIT_AGENT_IKE_CRYPTO_SECRET_H_

#include <openssl/crypto.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "common/secret.h"

namespace strait::ike {

// A growable byte buffer for key material while it is being computed (PRF
// output, prf+ streams, DH shared secrets). Wiped on destruction and whenever
// it reallocates, so no copy of the bytes is left on the heap; Release()
// hands the bytes to a Secret without copying them. No operator<<.
class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(size_t size) : bytes_(size, '\0') {}
  ~SecretBuffer() { WipeString(&bytes_); }

  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;
  SecretBuffer(SecretBuffer&& other) noexcept : bytes_(std::move(other.bytes_)) {
    WipeString(&other.bytes_);
  }
  SecretBuffer& operator=(SecretBuffer&& other) noexcept {
    if (this != &other) {
      WipeString(&bytes_);
      bytes_ = std::move(other.bytes_);
      WipeString(&other.bytes_);
    }
    return *this;
  }

  uint8_t* data() { return reinterpret_cast<uint8_t*>(bytes_.data()); }
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(bytes_.data()); }
  size_t size() const { return bytes_.size(); }
  absl::string_view view() const { return bytes_; }

  // Grows (zero-filled) or shrinks; the dropped tail is wiped.
  void Resize(size_t size) {
    if (size < bytes_.size()) {
      OPENSSL_cleanse(&bytes_[size], bytes_.size() - size);
      bytes_.resize(size);
      return;
    }
    Reserve(size);
    bytes_.resize(size, '\0');
  }

  void Append(absl::string_view more) {
    Reserve(bytes_.size() + more.size());
    bytes_.append(more.data(), more.size());
  }

  // Moves the bytes into a Secret; this buffer is left empty and wiped.
  Secret Release() && {
    Secret out(std::move(bytes_));
    WipeString(&bytes_);
    return out;
  }

 private:
  // Reallocates through a fresh string so that the old storage is wiped
  // before it is freed (std::string would free it as is).
  void Reserve(size_t capacity) {
    if (capacity <= bytes_.capacity()) return;
    std::string bigger;
    bigger.reserve(std::max(capacity, 2 * bytes_.capacity()));
    bigger.assign(bytes_);
    WipeString(&bytes_);
    bytes_.swap(bigger);
  }

  std::string bytes_;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CRYPTO_SECRET_H_
