#ifndef STRAIT_AGENT_IKE_COOKIE_IMPL_H_
#define STRAIT_AGENT_IKE_COOKIE_IMPL_H_

#include <array>
#include <cstdint>

#include "absl/time/time.h"
#include "agent/ike/cookie.h"
#include "common/clock.h"

namespace strait::ike {

struct CookieOptions {
  // How long a secret makes cookies; the previous one is accepted this long
  // after it was replaced.
  absl::Duration rotation = absl::Seconds(120);
  // A secret is also replaced after this many cookies.
  uint64_t max_cookies_per_secret = 1 << 20;
};

// `clock` and `random` must outlive the generator. Not thread-safe.
CookieGeneratorPtr CreateCookieGenerator(Clock& clock, RandomSource& random,
                                         CookieOptions options = {});

class CookieGeneratorImpl : public CookieGenerator {
 public:
  CookieGeneratorImpl(Clock& clock, RandomSource& random, CookieOptions options);
  ~CookieGeneratorImpl() override;
  CookieGeneratorImpl(const CookieGeneratorImpl&) = delete;
  CookieGeneratorImpl& operator=(const CookieGeneratorImpl&) = delete;

  // CookieGenerator
  Bytes Make(absl::Span<const uint8_t> ni, const Endpoint& from, uint64_t spi_i) override;
  bool Verify(absl::Span<const uint8_t> cookie, absl::Span<const uint8_t> ni, const Endpoint& from,
              uint64_t spi_i) override;

 private:
  struct Key {
    uint32_t version = 0;
    std::array<uint8_t, 32> secret{};
    absl::Time retired = absl::InfiniteFuture();  // When the next replaced it.
    bool valid = false;
  };

  // Replaces the current secret when its time or its count is up.
  void MaybeRotate(absl::Time now);
  void Rotate(absl::Time now);
  static std::array<uint8_t, 32> Digest(const Key& key, absl::Span<const uint8_t> ni,
                                        const Endpoint& from, uint64_t spi_i);

  Clock& clock_;
  RandomSource& random_;
  const CookieOptions options_;
  Key current_;
  Key previous_;
  absl::Time current_since_;
  uint64_t made_with_current_ = 0;
};

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_COOKIE_IMPL_H_
