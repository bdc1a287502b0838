#include "agent/ike/cookie.h"

#include <utility>
#include <variant>

namespace strait::ike {

absl::StatusOr<IkeSaInitRequest> ParseIkeSaInitRequest(absl::Span<const uint8_t> datagram) {
  absl::StatusOr<Message> m = DecodeMessage(datagram);
  if (!m.ok()) return m.status();
  if (absl::Status s = Verify(*m); !s.ok()) return s;
  const IkeHeader& h = m->header;
  if (h.exchange_type != kExchangeIkeSaInit || h.response || !h.initiator || h.spi_r != 0 ||
      h.message_id != 0) {
    return absl::InvalidArgumentError("not an IKE_SA_INIT request");
  }
  IkeSaInitRequest out;
  out.spi_i = h.spi_i;
  bool nonce = false;
  for (size_t i = 0; i < m->payloads.size(); ++i) {
    Payload& p = m->payloads[i];
    if (p.type == kPayloadNonce) {
      if (auto* n = std::get_if<NoncePayload>(&p.body); n != nullptr && !nonce) {
        out.ni = std::move(n->data);
        nonce = true;
      }
    } else if (i == 0 && p.type == kPayloadNotify) {
      if (auto* n = std::get_if<NotifyPayload>(&p.body); n != nullptr && n->type == kNotifyCookie) {
        out.cookie = std::move(n->data);
      }
    }
  }
  if (!nonce) return absl::InvalidArgumentError("IKE_SA_INIT request without a nonce");
  return out;
}

Bytes BuildCookieResponse(uint64_t spi_i, const Bytes& cookie) {
  Message m;
  m.header.spi_i = spi_i;
  m.header.spi_r = 0;
  m.header.exchange_type = kExchangeIkeSaInit;
  m.header.response = true;
  m.header.message_id = 0;
  NotifyPayload n;
  n.type = kNotifyCookie;
  n.data = cookie;
  m.payloads.push_back(Payload{kPayloadNotify, false, std::move(n)});
  return EncodeMessage(m);
}

}  // namespace strait::ike
