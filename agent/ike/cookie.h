#ifndef STRAIT_AGENT_IKE_COOKIE_H_
#define STRAIT_AGENT_IKE_COOKIE_H_

// Stateless responder cookies (RFC 7296 §2.6).
//
// Under load a responder answers an IKE_SA_INIT request that carries no
// valid COOKIE with a bare N(COOKIE) and keeps nothing; only an initiator
// that receives at its source address can send the request again with the
// cookie in front, and only then does the responder do Diffie-Hellman and
// keep state. The cookie is
//
//   <version (4 bytes)> | SHA-256(version | Ni | IPi | port | SPIi | secret)
//
// where the secret is random, replaced every `rotation` (and after
// `max_cookies_per_secret` cookies), and the previous secret is still
// accepted for one more period so that a cookie made just before a rotation
// keeps working. Variable-length fields are hashed with their lengths, so
// that no two inputs hash alike by shifting bytes between fields. The
// initiator's port is bound too: the cookie proves that one endpoint
// receives, and a retry comes from the same socket.

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agent/ike/engine.h"
#include "agent/ike/message.h"

namespace strait::ike {

// The cookie is 4 + 32 bytes; RFC 7296 allows 1 to 64.
inline constexpr size_t kCookieSize = 36;

class CookieGenerator {
 public:
  virtual ~CookieGenerator() = default;

  // The cookie for an IKE_SA_INIT request with nonce `ni` and initiator
  // SPI `spi_i` from `from`.
  virtual Bytes Make(absl::Span<const uint8_t> ni, const Endpoint& from, uint64_t spi_i) = 0;
  // Whether `cookie` is what Make() gave for these values with the current
  // secret or, within one period of its replacement, the previous one.
  // Constant time in the cookie's contents.
  virtual bool Verify(absl::Span<const uint8_t> cookie, absl::Span<const uint8_t> ni,
                      const Endpoint& from, uint64_t spi_i) = 0;
};
using CookieGeneratorPtr = std::unique_ptr<CookieGenerator>;

// What a cookie check needs from an IKE_SA_INIT request, read from the
// datagram without any crypto.
struct IkeSaInitRequest {
  uint64_t spi_i = 0;
  Bytes ni;
  // The data of an N(COOKIE) that is the request's first payload (RFC 7296
  // §2.6: it MUST be first), if any.
  std::optional<Bytes> cookie;
};
// InvalidArgument when `datagram` is not a well-formed IKE_SA_INIT request
// with a nonce.
absl::StatusOr<IkeSaInitRequest> ParseIkeSaInitRequest(absl::Span<const uint8_t> datagram);

// The stateless answer: an IKE_SA_INIT response (responder SPI 0) with only
// N(COOKIE).
Bytes BuildCookieResponse(uint64_t spi_i, const Bytes& cookie);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_COOKIE_H_
