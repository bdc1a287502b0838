#include "agent/ike_admission.h"

#include <utility>

namespace strait::agent {

IkeAdmission::IkeAdmission(ike::CookieGenerator& cookies, IkeMetrics& metrics,
                           IkeAdmissionOptions options)
    : cookies_(cookies), metrics_(metrics), options_(options) {}

IkeAdmission::Decision IkeAdmission::Check(absl::Span<const uint8_t> datagram,
                                           const ike::Endpoint& from, bool tunnel_full) {
  Decision d;
  PerSource source;
  if (auto it = by_source_.find(from.address); it != by_source_.end()) source = it->second;
  if (half_open_ >= options_.cookie_threshold || tunnel_full ||
      source.all >= options_.per_source_limit) {
    absl::StatusOr<ike::IkeSaInitRequest> request = ike::ParseIkeSaInitRequest(datagram);
    if (!request.ok()) {
      metrics_.Dropped(IkeMetrics::kMalformed);
      return d;
    }
    d.verified = request->cookie.has_value() &&
                 cookies_.Verify(*request->cookie, request->ni, from, request->spi_i);
    if (!d.verified) {
      // A stale cookie (made before the previous secret went) gets a fresh
      // one, as from an initiator that had none.
      if (request->cookie.has_value()) metrics_.CookieRejected();
      metrics_.CookieSent();
      d.verdict = Verdict::kCookie;
      d.reply = ike::BuildCookieResponse(request->spi_i,
                                         cookies_.Make(request->ni, from, request->spi_i));
      return d;
    }
    if (source.verified >= options_.per_source_limit) {
      metrics_.Dropped(IkeMetrics::kSourceLimit);
      return d;
    }
  }
  if (half_open_ >= options_.max_half_open) {
    metrics_.Dropped(IkeMetrics::kHalfOpenLimit);
    return d;
  }
  d.verdict = Verdict::kAdmit;
  return d;
}

void IkeAdmission::Opened(const ike::Bytes& source, bool verified) {
  ++half_open_;
  PerSource& s = by_source_[source];
  ++s.all;
  if (verified) ++s.verified;
}

void IkeAdmission::Closed(const ike::Bytes& source, bool verified) {
  if (half_open_ > 0) --half_open_;
  auto it = by_source_.find(source);
  if (it == by_source_.end()) return;
  if (it->second.all > 0) --it->second.all;
  if (verified && it->second.verified > 0) --it->second.verified;
  if (it->second.all == 0) by_source_.erase(it);
}

}  // namespace strait::agent
