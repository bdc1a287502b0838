#ifndef STRAIT_AGENT_IKE_ADMISSION_H_
#define STRAIT_AGENT_IKE_ADMISSION_H_

// What the IKE runner checks before a new IKE_SA_INIT request may create a
// responder (a Diffie-Hellman computation and state kept until IKE_AUTH or
// a timeout): strongSwan's DoS defences, in Strait's terms.
//
// - Cookies (RFC 7296 §2.6). With `cookie_threshold` or more half-open IKE
//   SAs in all, when the request's tunnel has no free half-open slot (a new
//   one would push out the oldest, which may be the real peer's), or when
//   the sender has its `per_source_limit` of half-open SAs, a request
//   without a valid COOKIE gets a bare N(COOKIE) answer and leaves nothing
//   behind. A sender that spoofs its address never sees the cookie, so it
//   cannot get past this.
// - A per-source limit: a sender that already has `per_source_limit`
//   half-open IKE SAs that came with a valid cookie is dropped (a real
//   address that does answer cookies). Only those count: otherwise
//   requests spoofed with the real peer's address, which got in before
//   cookies were required, would lock the real peer out.
// - A hard cap: at `max_half_open` half-open IKE SAs in all, new requests
//   are dropped.
//
// The runner reports each half-open SA's start (Opened) and end (Closed:
// authenticated, failed, timed out or replaced). Runs on the runner's
// thread only.

#include <cstddef>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "agent/ike/cookie.h"
#include "agent/ike/engine.h"
#include "agent/metrics.h"

namespace strait::agent {

struct IkeAdmissionOptions {
  // Half-open IKE SAs (all tunnels) from which on cookies are required
  // (strongSwan's charon.cookie_threshold). 0: always.
  size_t cookie_threshold = 30;
  // Half-open IKE SAs one source address may have (strongSwan's
  // charon.block_threshold).
  size_t per_source_limit = 5;
  // Half-open IKE SAs in all.
  size_t max_half_open = 1000;
};

class IkeAdmission {
 public:
  // `cookies` and `metrics` must outlive this object.
  IkeAdmission(ike::CookieGenerator& cookies, IkeMetrics& metrics, IkeAdmissionOptions options);
  IkeAdmission(const IkeAdmission&) = delete;
  IkeAdmission& operator=(const IkeAdmission&) = delete;

  enum class Verdict {
    kAdmit,   // Start a responder.
    kCookie,  // Send `reply` (N(COOKIE)) back to the sender; keep nothing.
    kDrop,    // Counted in the metrics already.
  };
  struct Decision {
    Verdict verdict = Verdict::kDrop;
    ike::Bytes reply;
    bool verified = false;  // kAdmit: it came with a valid cookie.
  };
  // For a new IKE_SA_INIT request (`datagram`, without a non-ESP marker)
  // from `from` to a tunnel whose half-open slots are all taken or not
  // (`tunnel_full`).
  Decision Check(absl::Span<const uint8_t> datagram, const ike::Endpoint& from, bool tunnel_full);

  // A responder started for an admitted request (`verified` as decided),
  // and its end.
  void Opened(const ike::Bytes& source, bool verified);
  void Closed(const ike::Bytes& source, bool verified);
  size_t half_open() const { return half_open_; }

 private:
  ike::CookieGenerator& cookies_;
  IkeMetrics& metrics_;
  const IkeAdmissionOptions options_;
  size_t half_open_ = 0;
  struct PerSource {
    size_t all = 0;
    size_t verified = 0;
  };
  absl::flat_hash_map<ike::Bytes, PerSource> by_source_;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_IKE_ADMISSION_H_
