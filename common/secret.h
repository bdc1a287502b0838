#ifndef STRAIT_COMMON_SECRET_H_
#define STRAIT_COMMON_SECRET_H_

#include <openssl/crypto.h>

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace strait {

// Wipes a std::string's bytes (including spare capacity) before it is freed
// or reused.
inline void WipeString(std::string* s) {
  if (s == nullptr || s->capacity() == 0) return;
  s->resize(s->capacity());
  OPENSSL_cleanse(s->data(), s->size());
  s->clear();
}

// Holds key material or a pre-shared key. Wiped on destruction and on
// reassignment; it has no operator<< so it cannot end up in a log line.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  ~Secret() { WipeString(&value_); }

  Secret(const Secret& other) : value_(other.value_) {}
  Secret& operator=(const Secret& other) {
    if (this != &other) {
      WipeString(&value_);
      value_ = other.value_;
    }
    return *this;
  }
  Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { WipeString(&other.value_); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      WipeString(&value_);
      value_ = std::move(other.value_);
      WipeString(&other.value_);
    }
    return *this;
  }

  absl::string_view view() const { return value_; }
  bool empty() const { return value_.empty(); }
  size_t size() const { return value_.size(); }

 private:
  std::string value_;
};

}  // namespace strait

#endif  // STRAIT_COMMON_SECRET_H_
