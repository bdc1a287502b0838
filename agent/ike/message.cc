#include "agent/ike/message.h"

#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strait::ike {

std::string NotifyTypeName(uint16_t type) {
  switch (type) {
    case kNotifyUnsupportedCriticalPayload:
      return "UNSUPPORTED_CRITICAL_PAYLOAD";
    case kNotifyInvalidIkeSpi:
      return "INVALID_IKE_SPI";
    case kNotifyInvalidMajorVersion:
      return "INVALID_MAJOR_VERSION";
    case kNotifyInvalidSyntax:
      return "INVALID_SYNTAX";
    case kNotifyInvalidMessageId:
      return "INVALID_MESSAGE_ID";
    case kNotifyInvalidSpi:
      return "INVALID_SPI";
    case kNotifyNoProposalChosen:
      return "NO_PROPOSAL_CHOSEN";
    case kNotifyInvalidKePayload:
      return "INVALID_KE_PAYLOAD";
    case kNotifyAuthenticationFailed:
      return "AUTHENTICATION_FAILED";
    case kNotifyNoAdditionalSas:
      return "NO_ADDITIONAL_SAS";
    case kNotifyTsUnacceptable:
      return "TS_UNACCEPTABLE";
    case kNotifyTemporaryFailure:
      return "TEMPORARY_FAILURE";
    case kNotifyChildSaNotFound:
      return "CHILD_SA_NOT_FOUND";
    case kNotifyRekeySa:
      return "REKEY_SA";
    case kNotifyInitialContact:
      return "INITIAL_CONTACT";
    case kNotifyCookie:
      return "COOKIE";
    default:
      return absl::StrCat("notify ", type);
  }
}
namespace {

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

uint32_t Get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

uint64_t Get64(const uint8_t* p) { return static_cast<uint64_t>(Get32(p)) << 32 | Get32(p + 4); }

void Put8(Bytes* out, uint8_t v) { out->push_back(v); }

void Put16(Bytes* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

void Put32(Bytes* out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v >> 16));
  Put16(out, static_cast<uint16_t>(v));
}

void Put64(Bytes* out, uint64_t v) {
  Put32(out, static_cast<uint32_t>(v >> 32));
  Put32(out, static_cast<uint32_t>(v));
}

void Patch16(Bytes* out, size_t pos, size_t v) {
  (*out)[pos] = static_cast<uint8_t>(v >> 8);
  (*out)[pos + 1] = static_cast<uint8_t>(v);
}

void Append(Bytes* out, absl::Span<const uint8_t> data) {
  out->insert(out->end(), data.begin(), data.end());
}

Bytes ToBytes(absl::Span<const uint8_t> data) { return Bytes(data.begin(), data.end()); }

absl::Status Malformed(absl::string_view what) { return absl::InvalidArgumentError(what); }

// Checks the fixed part of a body; `name` and `min_length` describe the whole
// payload (generic header included), as the RFC does.
absl::Status CheckMinimum(absl::string_view name, absl::Span<const uint8_t> body,
                          size_t min_length) {
  if (body.size() + kGenericPayloadHeaderSize < min_length) {
    return Malformed(absl::StrCat(name, " payload: length ",
                                  body.size() + kGenericPayloadHeaderSize, " below minimum ",
                                  min_length));
  }
  return absl::OkStatus();
}

absl::Status ParseAttributes(absl::Span<const uint8_t> attrs, Transform* transform) {
  size_t off = 0;
  size_t count = 0;
  while (off < attrs.size()) {
    if (++count > kMaxAttributes) {
      return Malformed(
          absl::StrCat("SA payload: more than ", kMaxAttributes, " attributes in a transform"));
    }
    if (attrs.size() - off < 4) return Malformed("SA payload: transform attribute truncated");
    const uint8_t* a = attrs.data() + off;
    const uint16_t af_type = Get16(a);
    const bool tv = (af_type & 0x8000) != 0;
    const uint16_t type = af_type & 0x7fff;
    const size_t length = tv ? 4 : 4 + static_cast<size_t>(Get16(a + 2));
    if (length > attrs.size() - off) {
      return Malformed(
          absl::StrCat("SA payload: transform attribute length ", length, " exceeds transform"));
    }
    if (type == kAttributeKeyLength) {
      if (!tv) return Malformed("SA payload: Key Length attribute not in TV format");
      if (transform->key_length.has_value()) {
        return Malformed("SA payload: duplicate Key Length attribute");
      }
      transform->key_length = Get16(a + 2);
    } else {
      Append(&transform->other_attributes, attrs.subspan(off, length));
    }
    off += length;
  }
  return absl::OkStatus();
}

absl::StatusOr<Proposal> ParseProposal(absl::Span<const uint8_t> prop, size_t* total_transforms) {
  // `prop` spans exactly the proposal's declared length (>= 8).
  Proposal proposal;
  proposal.number = prop[4];
  proposal.protocol_id = prop[5];
  const size_t spi_size = prop[6];
  const size_t num_transforms = prop[7];
  if (8 + spi_size > prop.size()) {
    return Malformed(absl::StrCat("SA payload: proposal SPI size ", spi_size,
                                  " exceeds proposal length ", prop.size()));
  }
  proposal.spi = ToBytes(prop.subspan(8, spi_size));
  size_t off = 8 + spi_size;
  for (size_t i = 0; i < num_transforms; ++i) {
    if (++*total_transforms > kMaxTransforms) {
      return Malformed(absl::StrCat("SA payload: more than ", kMaxTransforms, " transforms"));
    }
    if (prop.size() - off < 8) {
      return Malformed(absl::StrCat("SA payload: proposal declares ", num_transforms,
                                    " transforms but holds ", i));
    }
    const uint8_t* t = prop.data() + off;
    const size_t length = Get16(t + 2);
    if (length < 8) {
      return Malformed(absl::StrCat("SA payload: transform length ", length, " below minimum 8"));
    }
    if (length > prop.size() - off) {
      return Malformed(absl::StrCat("SA payload: transform length ", length, " exceeds proposal"));
    }
    const uint8_t expected_last = i + 1 == num_transforms ? 0 : 3;
    if (t[0] != expected_last) {
      return Malformed(absl::StrCat("SA payload: transform last-substructure ", t[0],
                                    " inconsistent with transform count"));
    }
    Transform transform;
    transform.type = t[4];
    transform.id = Get16(t + 6);
    RETURN_IF_ERROR(ParseAttributes(prop.subspan(off + 8, length - 8), &transform));
    proposal.transforms.push_back(std::move(transform));
    off += length;
  }
  if (off != prop.size()) {
    return Malformed(absl::StrCat("SA payload: ", prop.size() - off,
                                  " bytes after the declared transforms of a proposal"));
  }
  return proposal;
}

absl::Status VerifyError(uint16_t notify, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  const char bytes[2] = {static_cast<char>(notify >> 8), static_cast<char>(notify & 0xff)};
  status.SetPayload("type.strait/ike.notify", absl::Cord(absl::string_view(bytes, 2)));
  return status;
}

absl::Status SyntaxError(absl::string_view message) {
  return VerifyError(kNotifyInvalidSyntax, message);
}

// The body alternative each payload type uses.
size_t ExpectedBodyIndex(uint8_t type) {
  switch (type) {
    case kPayloadSa:
      return 0;
    case kPayloadKe:
      return 1;
    case kPayloadIdi:
    case kPayloadIdr:
      return 2;
    case kPayloadCert:
    case kPayloadCertReq:
      return 3;
    case kPayloadAuth:
      return 4;
    case kPayloadNonce:
      return 5;
    case kPayloadNotify:
      return 6;
    case kPayloadDelete:
      return 7;
    case kPayloadVendorId:
      return 8;
    case kPayloadTsi:
    case kPayloadTsr:
      return 9;
    case kPayloadSk:
      return 10;
    case kPayloadSkf:
      return 11;
    default:
      return 12;
  }
}

// The Next Payload value in a payload's own generic header when it is the
// last of its chain: SK and SKF point into their encrypted content.
uint8_t TerminalNextPayload(const Payload& payload) {
  if (const auto* sk = std::get_if<SkPayload>(&payload.body)) return sk->inner_next_payload;
  if (const auto* skf = std::get_if<SkfPayload>(&payload.body)) return skf->inner_next_payload;
  return kPayloadNone;
}

bool IsEncrypted(uint8_t type) { return type == kPayloadSk || type == kPayloadSkf; }

absl::StatusOr<std::vector<Payload>> DecodeChain(uint8_t first, absl::Span<const uint8_t> data,
                                                 bool inner) {
  std::vector<Payload> payloads;
  size_t off = 0;
  uint8_t type = first;
  while (type != kPayloadNone) {
    if (payloads.size() == kMaxPayloads) {
      return Malformed(absl::StrCat("more than ", kMaxPayloads, " payloads"));
    }
    if (data.size() - off < kGenericPayloadHeaderSize) {
      return Malformed(
          absl::StrCat("payload type ", type, ": generic header truncated at offset ", off));
    }
    const uint8_t* p = data.data() + off;
    const uint8_t next = p[0];
    const bool critical = (p[1] & 0x80) != 0;
    const size_t length = Get16(p + 2);
    if (length < kGenericPayloadHeaderSize) {
      return Malformed(
          absl::StrCat("payload type ", type, ": length ", length, " below minimum 4"));
    }
    if (length > data.size() - off) {
      return Malformed(absl::StrCat("payload type ", type, ": length ", length, " exceeds the ",
                                    data.size() - off, " bytes left"));
    }
    ASSIGN_OR_RETURN(Payload payload,
                     DecodePayloadBody(type, critical, next, data.subspan(off + 4, length - 4)));
    payloads.push_back(std::move(payload));
    off += length;
    if (IsEncrypted(type)) {
      if (inner) return Malformed("encrypted payload inside an encrypted payload");
      if (off != data.size()) return Malformed("encrypted payload is not the last payload");
      return payloads;
    }
    type = next;
  }
  if (off != data.size()) {
    return Malformed(absl::StrCat(data.size() - off, " bytes after the last payload"));
  }
  return payloads;
}

void AppendChain(const std::vector<Payload>& payloads, Bytes* out) {
  for (size_t i = 0; i < payloads.size(); ++i) {
    const Payload& payload = payloads[i];
    const uint8_t next =
        i + 1 < payloads.size() ? payloads[i + 1].type : TerminalNextPayload(payload);
    const size_t start = out->size();
    Put8(out, next);
    Put8(out, payload.critical ? 0x80 : 0);
    Put16(out, 0);
    Append(out, EncodePayloadBody(payload));
    Patch16(out, start + 2, out->size() - start);
  }
}

absl::Status VerifySa(const SaPayload& sa) {
  if (sa.proposals.empty()) return SyntaxError("SA payload: no proposals");
  for (size_t i = 0; i < sa.proposals.size(); ++i) {
    const Proposal& p = sa.proposals[i];
    if (p.number == 0) return SyntaxError("SA payload: proposal number 0");
    if (sa.proposals.size() > 1 && p.number != i + 1) {
      return SyntaxError(absl::StrCat("SA payload: proposal ", i + 1, " numbered ", p.number));
    }
    switch (p.protocol_id) {
      case kProtocolIke:
        if (!p.spi.empty() && p.spi.size() != 8) {
          return SyntaxError(absl::StrCat("SA payload: IKE SPI size ", p.spi.size()));
        }
        break;
      case kProtocolAh:
      case kProtocolEsp:
        if (p.spi.size() != 4) {
          return SyntaxError(absl::StrCat("SA payload: AH/ESP SPI size ", p.spi.size()));
        }
        break;
      default:
        return SyntaxError(absl::StrCat("SA payload: protocol ID ", p.protocol_id));
    }
    if (p.transforms.empty()) {
      return SyntaxError(absl::StrCat("SA payload: proposal ", p.number, " has no transforms"));
    }
  }
  return absl::OkStatus();
}

absl::Status VerifyDelete(const DeletePayload& d) {
  switch (d.protocol_id) {
    case kProtocolIke:
      if (d.spi_size != 0 || !d.spis.empty()) {
        return SyntaxError("Delete payload: IKE SA delete carries SPIs");
      }
      return absl::OkStatus();
    case kProtocolAh:
    case kProtocolEsp:
      if (d.spi_size != 4) {
        return SyntaxError(absl::StrCat("Delete payload: AH/ESP SPI size ", d.spi_size));
      }
      if (d.spis.empty()) return SyntaxError("Delete payload: no SPIs");
      return absl::OkStatus();
    default:
      return SyntaxError(absl::StrCat("Delete payload: protocol ID ", d.protocol_id));
  }
}

absl::Status VerifyBody(const Payload& payload) {
  if (const auto* sa = std::get_if<SaPayload>(&payload.body)) return VerifySa(*sa);
  if (const auto* ke = std::get_if<KePayload>(&payload.body)) {
    if (ke->data.empty()) return SyntaxError("KE payload: no key exchange data");
  }
  if (const auto* id = std::get_if<IdPayload>(&payload.body)) {
    if (id->data.empty()) return SyntaxError("ID payload: no identification data");
  }
  if (const auto* auth = std::get_if<AuthPayload>(&payload.body)) {
    if (auth->data.empty()) return SyntaxError("AUTH payload: no authentication data");
  }
  if (const auto* nonce = std::get_if<NoncePayload>(&payload.body)) {
    if (nonce->data.size() < 16 || nonce->data.size() > 256) {
      return SyntaxError(
          absl::StrCat("Nonce payload: nonce of ", nonce->data.size(), " bytes outside 16..256"));
    }
  }
  if (const auto* d = std::get_if<DeletePayload>(&payload.body)) return VerifyDelete(*d);
  if (const auto* ts = std::get_if<TsPayload>(&payload.body)) {
    if (ts->selectors.empty()) return SyntaxError("TS payload: no traffic selectors");
  }
  if (const auto* skf = std::get_if<SkfPayload>(&payload.body)) {
    if (skf->fragment_number == 0 || skf->fragment_number > skf->total_fragments) {
      return SyntaxError(absl::StrCat("SKF payload: fragment ", skf->fragment_number, " of ",
                                      skf->total_fragments));
    }
    if (skf->fragment_number != 1 && skf->inner_next_payload != kPayloadNone) {
      return SyntaxError("SKF payload: next payload set in a fragment other than the first");
    }
  }
  return absl::OkStatus();
}

absl::Status VerifyChain(const std::vector<Payload>& payloads, bool inner) {
  if (payloads.size() > kMaxPayloads) {
    return SyntaxError(absl::StrCat("more than ", kMaxPayloads, " payloads"));
  }
  for (size_t i = 0; i < payloads.size(); ++i) {
    const Payload& payload = payloads[i];
    if (!IsKnownPayloadType(payload.type)) {
      if (payload.critical) {
        return VerifyError(
            kNotifyUnsupportedCriticalPayload,
            absl::StrCat("payload type ", payload.type, ": unsupported critical payload"));
      }
    }
    if (payload.body.index() != ExpectedBodyIndex(payload.type)) {
      return SyntaxError(absl::StrCat("payload type ", payload.type, ": body of the wrong kind"));
    }
    if (IsEncrypted(payload.type)) {
      if (inner) return SyntaxError("encrypted payload inside an encrypted payload");
      if (i + 1 != payloads.size()) return SyntaxError("encrypted payload is not the last");
    }
    // What we send must decode to itself: this catches sizes that do not fit
    // their length fields and inconsistent fields such as address lengths.
    const Bytes body = EncodePayloadBody(payload);
    if (body.size() + kGenericPayloadHeaderSize > 0xffff) {
      return SyntaxError(absl::StrCat("payload type ", payload.type, ": too large"));
    }
    absl::StatusOr<Payload> again =
        DecodePayloadBody(payload.type, payload.critical, TerminalNextPayload(payload), body);
    if (!again.ok()) return SyntaxError(again.status().message());
    if (*again != payload) {
      return SyntaxError(absl::StrCat("payload type ", payload.type, ": does not encode"));
    }
    RETURN_IF_ERROR(VerifyBody(payload));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsKnownPayloadType(uint8_t type) {
  return (type >= kPayloadSa && type <= kPayloadEap) || type == kPayloadSkf;
}

// Equality.

bool operator==(const IkeHeader& a, const IkeHeader& b) {
  return std::tie(a.spi_i, a.spi_r, a.major_version, a.minor_version, a.exchange_type, a.initiator,
                  a.higher_version, a.response, a.message_id) ==
         std::tie(b.spi_i, b.spi_r, b.major_version, b.minor_version, b.exchange_type, b.initiator,
                  b.higher_version, b.response, b.message_id);
}
bool operator==(const Transform& a, const Transform& b) {
  return std::tie(a.type, a.id, a.key_length, a.other_attributes) ==
         std::tie(b.type, b.id, b.key_length, b.other_attributes);
}
bool operator==(const Proposal& a, const Proposal& b) {
  return std::tie(a.number, a.protocol_id, a.spi, a.transforms) ==
         std::tie(b.number, b.protocol_id, b.spi, b.transforms);
}
bool operator==(const SaPayload& a, const SaPayload& b) { return a.proposals == b.proposals; }
bool operator==(const KePayload& a, const KePayload& b) {
  return a.dh_group == b.dh_group && a.data == b.data;
}
bool operator==(const IdPayload& a, const IdPayload& b) {
  return a.id_type == b.id_type && a.data == b.data;
}
bool operator==(const CertPayload& a, const CertPayload& b) {
  return a.encoding == b.encoding && a.data == b.data;
}
bool operator==(const AuthPayload& a, const AuthPayload& b) {
  return a.method == b.method && a.data == b.data;
}
bool operator==(const NoncePayload& a, const NoncePayload& b) { return a.data == b.data; }
bool operator==(const NotifyPayload& a, const NotifyPayload& b) {
  return std::tie(a.protocol_id, a.spi, a.type, a.data) ==
         std::tie(b.protocol_id, b.spi, b.type, b.data);
}
bool operator==(const DeletePayload& a, const DeletePayload& b) {
  return std::tie(a.protocol_id, a.spi_size, a.spis) == std::tie(b.protocol_id, b.spi_size, b.spis);
}
bool operator==(const VendorIdPayload& a, const VendorIdPayload& b) { return a.data == b.data; }
bool operator==(const TrafficSelector& a, const TrafficSelector& b) {
  return std::tie(a.ts_type, a.ip_protocol, a.start_port, a.end_port, a.start_address,
                  a.end_address) == std::tie(b.ts_type, b.ip_protocol, b.start_port, b.end_port,
                                             b.start_address, b.end_address);
}
bool operator==(const TsPayload& a, const TsPayload& b) { return a.selectors == b.selectors; }
bool operator==(const SkPayload& a, const SkPayload& b) {
  return a.inner_next_payload == b.inner_next_payload && a.encrypted == b.encrypted;
}
bool operator==(const SkfPayload& a, const SkfPayload& b) {
  return std::tie(a.fragment_number, a.total_fragments, a.inner_next_payload, a.encrypted) ==
         std::tie(b.fragment_number, b.total_fragments, b.inner_next_payload, b.encrypted);
}
bool operator==(const RawPayload& a, const RawPayload& b) { return a.data == b.data; }
bool operator==(const Payload& a, const Payload& b) {
  return a.type == b.type && a.critical == b.critical && a.body == b.body;
}
bool operator==(const Message& a, const Message& b) {
  return a.header == b.header && a.payloads == b.payloads;
}

// Payload decoders.

absl::StatusOr<SaPayload> DecodeSaPayload(absl::Span<const uint8_t> body) {
  SaPayload sa;
  size_t off = 0;
  size_t total_transforms = 0;
  while (off < body.size()) {
    if (sa.proposals.size() == kMaxProposals) {
      return Malformed(absl::StrCat("SA payload: more than ", kMaxProposals, " proposals"));
    }
    if (body.size() - off < 8) return Malformed("SA payload: proposal header truncated");
    const uint8_t* p = body.data() + off;
    const size_t length = Get16(p + 2);
    if (length < 8) {
      return Malformed(absl::StrCat("SA payload: proposal length ", length, " below minimum 8"));
    }
    if (length > body.size() - off) {
      return Malformed(absl::StrCat("SA payload: proposal length ", length, " exceeds payload"));
    }
    ASSIGN_OR_RETURN(Proposal proposal,
                     ParseProposal(body.subspan(off, length), &total_transforms));
    sa.proposals.push_back(std::move(proposal));
    off += length;
    const uint8_t expected_last = off == body.size() ? 0 : 2;
    if (p[0] != expected_last) {
      return Malformed(absl::StrCat("SA payload: proposal last-substructure ", p[0],
                                    " inconsistent with its position"));
    }
  }
  return sa;
}

absl::StatusOr<KePayload> DecodeKePayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("KE", body, 8));
  return KePayload{Get16(body.data()), ToBytes(body.subspan(4))};
}

absl::StatusOr<IdPayload> DecodeIdPayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("ID", body, 8));
  return IdPayload{body[0], ToBytes(body.subspan(4))};
}

absl::StatusOr<CertPayload> DecodeCertPayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("CERT", body, 5));
  return CertPayload{body[0], ToBytes(body.subspan(1))};
}

absl::StatusOr<AuthPayload> DecodeAuthPayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("AUTH", body, 8));
  return AuthPayload{body[0], ToBytes(body.subspan(4))};
}

absl::StatusOr<NoncePayload> DecodeNoncePayload(absl::Span<const uint8_t> body) {
  return NoncePayload{ToBytes(body)};
}

absl::StatusOr<NotifyPayload> DecodeNotifyPayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("Notify", body, 8));
  const size_t spi_size = body[1];
  if (4 + spi_size > body.size()) {
    return Malformed(absl::StrCat("Notify payload: SPI size ", spi_size, " exceeds payload"));
  }
  NotifyPayload notify;
  notify.protocol_id = body[0];
  notify.type = Get16(body.data() + 2);
  notify.spi = ToBytes(body.subspan(4, spi_size));
  notify.data = ToBytes(body.subspan(4 + spi_size));
  return notify;
}

absl::StatusOr<DeletePayload> DecodeDeletePayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("Delete", body, 8));
  DeletePayload d;
  d.protocol_id = body[0];
  d.spi_size = body[1];
  const size_t count = Get16(body.data() + 2);
  if (d.spi_size == 0) {
    if (count != 0) {
      return Malformed(absl::StrCat("Delete payload: ", count, " SPIs of size 0"));
    }
  } else if (count * d.spi_size != body.size() - 4) {
    return Malformed(absl::StrCat("Delete payload: ", count, " SPIs of size ", d.spi_size,
                                  " do not fill ", body.size() - 4, " bytes"));
  }
  if (d.spi_size == 0 && body.size() != 4) {
    return Malformed(absl::StrCat("Delete payload: ", body.size() - 4, " bytes after no SPIs"));
  }
  for (size_t i = 0; i < count; ++i) {
    d.spis.push_back(ToBytes(body.subspan(4 + i * d.spi_size, d.spi_size)));
  }
  return d;
}

absl::StatusOr<VendorIdPayload> DecodeVendorIdPayload(absl::Span<const uint8_t> body) {
  return VendorIdPayload{ToBytes(body)};
}

absl::StatusOr<TsPayload> DecodeTsPayload(absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("TS", body, 8));
  const size_t count = body[0];
  if (count > kMaxTrafficSelectors) {
    return Malformed(
        absl::StrCat("TS payload: more than ", kMaxTrafficSelectors, " traffic selectors"));
  }
  TsPayload ts;
  size_t off = 4;
  for (size_t i = 0; i < count; ++i) {
    if (body.size() - off < 8) {
      return Malformed(
          absl::StrCat("TS payload: declares ", count, " traffic selectors but holds ", i));
    }
    const uint8_t* s = body.data() + off;
    TrafficSelector selector;
    selector.ts_type = s[0];
    selector.ip_protocol = s[1];
    const size_t length = Get16(s + 2);
    size_t address_size = 0;
    if (selector.ts_type == kTsIpv4AddrRange) {
      address_size = 4;
    } else if (selector.ts_type == kTsIpv6AddrRange) {
      address_size = 16;
    } else {
      return Malformed(
          absl::StrCat("TS payload: unsupported traffic selector type ", selector.ts_type));
    }
    if (length != 8 + 2 * address_size) {
      return Malformed(absl::StrCat("TS payload: traffic selector length ", length, " for type ",
                                    selector.ts_type));
    }
    if (length > body.size() - off) {
      return Malformed(
          absl::StrCat("TS payload: traffic selector length ", length, " exceeds payload"));
    }
    selector.start_port = Get16(s + 4);
    selector.end_port = Get16(s + 6);
    selector.start_address = ToBytes(body.subspan(off + 8, address_size));
    selector.end_address = ToBytes(body.subspan(off + 8 + address_size, address_size));
    ts.selectors.push_back(std::move(selector));
    off += length;
  }
  if (off != body.size()) {
    return Malformed(absl::StrCat("TS payload: ", body.size() - off,
                                  " bytes after the declared traffic selectors"));
  }
  return ts;
}

absl::StatusOr<SkfPayload> DecodeSkfPayload(uint8_t next_payload, absl::Span<const uint8_t> body) {
  RETURN_IF_ERROR(CheckMinimum("SKF", body, 8));
  return SkfPayload{Get16(body.data()), Get16(body.data() + 2), next_payload,
                    ToBytes(body.subspan(4))};
}

absl::StatusOr<Payload> DecodePayloadBody(uint8_t type, bool critical, uint8_t next_payload,
                                          absl::Span<const uint8_t> body) {
  Payload payload;
  payload.type = type;
  payload.critical = critical;
  switch (type) {
    case kPayloadSa: {
      ASSIGN_OR_RETURN(payload.body, DecodeSaPayload(body));
      break;
    }
    case kPayloadKe: {
      ASSIGN_OR_RETURN(payload.body, DecodeKePayload(body));
      break;
    }
    case kPayloadIdi:
    case kPayloadIdr: {
      ASSIGN_OR_RETURN(payload.body, DecodeIdPayload(body));
      break;
    }
    case kPayloadCert:
    case kPayloadCertReq: {
      ASSIGN_OR_RETURN(payload.body, DecodeCertPayload(body));
      break;
    }
    case kPayloadAuth: {
      ASSIGN_OR_RETURN(payload.body, DecodeAuthPayload(body));
      break;
    }
    case kPayloadNonce: {
      ASSIGN_OR_RETURN(payload.body, DecodeNoncePayload(body));
      break;
    }
    case kPayloadNotify: {
      ASSIGN_OR_RETURN(payload.body, DecodeNotifyPayload(body));
      break;
    }
    case kPayloadDelete: {
      ASSIGN_OR_RETURN(payload.body, DecodeDeletePayload(body));
      break;
    }
    case kPayloadVendorId: {
      ASSIGN_OR_RETURN(payload.body, DecodeVendorIdPayload(body));
      break;
    }
    case kPayloadTsi:
    case kPayloadTsr: {
      ASSIGN_OR_RETURN(payload.body, DecodeTsPayload(body));
      break;
    }
    case kPayloadSk:
      payload.body = SkPayload{next_payload, ToBytes(body)};
      break;
    case kPayloadSkf: {
      ASSIGN_OR_RETURN(payload.body, DecodeSkfPayload(next_payload, body));
      break;
    }
    default:
      payload.body = RawPayload{ToBytes(body)};
      break;
  }
  return payload;
}

// Payload encoders. Sizes that do not fit their fields are truncated here
// and caught by Verify().

void EncodeSaPayload(const SaPayload& p, Bytes* out) {
  for (size_t i = 0; i < p.proposals.size(); ++i) {
    const Proposal& proposal = p.proposals[i];
    const size_t start = out->size();
    Put8(out, i + 1 == p.proposals.size() ? 0 : 2);
    Put8(out, 0);
    Put16(out, 0);
    Put8(out, proposal.number);
    Put8(out, proposal.protocol_id);
    Put8(out, static_cast<uint8_t>(proposal.spi.size()));
    Put8(out, static_cast<uint8_t>(proposal.transforms.size()));
    Append(out, proposal.spi);
    for (size_t j = 0; j < proposal.transforms.size(); ++j) {
      const Transform& t = proposal.transforms[j];
      const size_t tstart = out->size();
      Put8(out, j + 1 == proposal.transforms.size() ? 0 : 3);
      Put8(out, 0);
      Put16(out, 0);
      Put8(out, t.type);
      Put8(out, 0);
      Put16(out, t.id);
      if (t.key_length.has_value()) {
        Put16(out, 0x8000 | kAttributeKeyLength);
        Put16(out, *t.key_length);
      }
      Append(out, t.other_attributes);
      Patch16(out, tstart + 2, out->size() - tstart);
    }
    Patch16(out, start + 2, out->size() - start);
  }
}

void EncodeKePayload(const KePayload& p, Bytes* out) {
  Put16(out, p.dh_group);
  Put16(out, 0);
  Append(out, p.data);
}

void EncodeIdPayload(const IdPayload& p, Bytes* out) {
  Put8(out, p.id_type);
  Put8(out, 0);
  Put16(out, 0);
  Append(out, p.data);
}

void EncodeCertPayload(const CertPayload& p, Bytes* out) {
  Put8(out, p.encoding);
  Append(out, p.data);
}

void EncodeAuthPayload(const AuthPayload& p, Bytes* out) {
  Put8(out, p.method);
  Put8(out, 0);
  Put16(out, 0);
  Append(out, p.data);
}

void EncodeNoncePayload(const NoncePayload& p, Bytes* out) { Append(out, p.data); }

void EncodeNotifyPayload(const NotifyPayload& p, Bytes* out) {
  Put8(out, p.protocol_id);
  Put8(out, static_cast<uint8_t>(p.spi.size()));
  Put16(out, p.type);
  Append(out, p.spi);
  Append(out, p.data);
}

void EncodeDeletePayload(const DeletePayload& p, Bytes* out) {
  Put8(out, p.protocol_id);
  Put8(out, p.spi_size);
  Put16(out, static_cast<uint16_t>(p.spis.size()));
  for (const Bytes& spi : p.spis) Append(out, spi);
}

void EncodeVendorIdPayload(const VendorIdPayload& p, Bytes* out) { Append(out, p.data); }

void EncodeTsPayload(const TsPayload& p, Bytes* out) {
  Put8(out, static_cast<uint8_t>(p.selectors.size()));
  Put8(out, 0);
  Put16(out, 0);
  for (const TrafficSelector& s : p.selectors) {
    Put8(out, s.ts_type);
    Put8(out, s.ip_protocol);
    Put16(out, static_cast<uint16_t>(8 + s.start_address.size() + s.end_address.size()));
    Put16(out, s.start_port);
    Put16(out, s.end_port);
    Append(out, s.start_address);
    Append(out, s.end_address);
  }
}

Bytes EncodePayloadBody(const Payload& payload) {
  Bytes out;
  std::visit(
      [&out](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, SaPayload>) {
          EncodeSaPayload(body, &out);
        } else if constexpr (std::is_same_v<T, KePayload>) {
          EncodeKePayload(body, &out);
        } else if constexpr (std::is_same_v<T, IdPayload>) {
          EncodeIdPayload(body, &out);
        } else if constexpr (std::is_same_v<T, CertPayload>) {
          EncodeCertPayload(body, &out);
        } else if constexpr (std::is_same_v<T, AuthPayload>) {
          EncodeAuthPayload(body, &out);
        } else if constexpr (std::is_same_v<T, NoncePayload>) {
          EncodeNoncePayload(body, &out);
        } else if constexpr (std::is_same_v<T, NotifyPayload>) {
          EncodeNotifyPayload(body, &out);
        } else if constexpr (std::is_same_v<T, DeletePayload>) {
          EncodeDeletePayload(body, &out);
        } else if constexpr (std::is_same_v<T, VendorIdPayload>) {
          EncodeVendorIdPayload(body, &out);
        } else if constexpr (std::is_same_v<T, TsPayload>) {
          EncodeTsPayload(body, &out);
        } else if constexpr (std::is_same_v<T, SkPayload>) {
          Append(&out, body.encrypted);
        } else if constexpr (std::is_same_v<T, SkfPayload>) {
          Put16(&out, body.fragment_number);
          Put16(&out, body.total_fragments);
          Append(&out, body.encrypted);
        } else {
          static_assert(std::is_same_v<T, RawPayload>);
          Append(&out, body.data);
        }
      },
      payload.body);
  return out;
}

// Messages and chains.

absl::StatusOr<IkeHeader> DecodeHeader(absl::Span<const uint8_t> datagram) {
  if (datagram.size() < kIkeHeaderSize) {
    return Malformed(
        absl::StrCat("message of ", datagram.size(), " bytes shorter than the IKE header"));
  }
  const uint8_t* p = datagram.data();
  IkeHeader header;
  header.spi_i = Get64(p);
  header.spi_r = Get64(p + 8);
  header.major_version = p[17] >> 4;
  header.minor_version = p[17] & 0x0f;
  header.exchange_type = p[18];
  header.initiator = (p[19] & kFlagInitiator) != 0;
  header.higher_version = (p[19] & kFlagVersion) != 0;
  header.response = (p[19] & kFlagResponse) != 0;
  header.message_id = Get32(p + 20);
  return header;
}

absl::StatusOr<Message> DecodeMessage(absl::Span<const uint8_t> datagram) {
  Message message;
  ASSIGN_OR_RETURN(message.header, DecodeHeader(datagram));
  const uint32_t length = Get32(datagram.data() + 24);
  if (length != datagram.size()) {
    return Malformed(
        absl::StrCat("header length ", length, " differs from datagram length ", datagram.size()));
  }
  ASSIGN_OR_RETURN(message.payloads,
                   DecodeChain(datagram[16], datagram.subspan(kIkeHeaderSize), /*inner=*/false));
  return message;
}

Bytes EncodeMessage(const Message& message) {
  const IkeHeader& h = message.header;
  Bytes out;
  Put64(&out, h.spi_i);
  Put64(&out, h.spi_r);
  Put8(&out, FirstPayloadType(message.payloads));
  Put8(&out, static_cast<uint8_t>(h.major_version << 4 | (h.minor_version & 0x0f)));
  Put8(&out, h.exchange_type);
  Put8(&out, (h.initiator ? kFlagInitiator : 0) | (h.higher_version ? kFlagVersion : 0) |
                 (h.response ? kFlagResponse : 0));
  Put32(&out, h.message_id);
  Put32(&out, 0);
  AppendChain(message.payloads, &out);
  const size_t size = out.size();
  out[24] = static_cast<uint8_t>(size >> 24);
  out[25] = static_cast<uint8_t>(size >> 16);
  Patch16(&out, 26, size);
  return out;
}

absl::StatusOr<std::vector<Payload>> DecodePayloadChain(uint8_t first_payload_type,
                                                        absl::Span<const uint8_t> plaintext) {
  return DecodeChain(first_payload_type, plaintext, /*inner=*/true);
}

Bytes EncodePayloadChain(const std::vector<Payload>& payloads) {
  Bytes out;
  AppendChain(payloads, &out);
  return out;
}

uint8_t FirstPayloadType(const std::vector<Payload>& payloads) {
  return payloads.empty() ? uint8_t{kPayloadNone} : payloads.front().type;
}

// Verification.

absl::Status Verify(const Message& message) {
  if (message.header.major_version != 2) {
    return VerifyError(kNotifyInvalidMajorVersion,
                       absl::StrCat("IKE major version ", message.header.major_version));
  }
  return VerifyChain(message.payloads, /*inner=*/false);
}

absl::Status VerifyPayloads(const std::vector<Payload>& payloads) {
  return VerifyChain(payloads, /*inner=*/true);
}

std::optional<uint16_t> NotifyTypeOf(const absl::Status& status) {
  auto payload = status.GetPayload("type.strait/ike.notify");
  if (!payload.has_value() || payload->size() != 2) return std::nullopt;
  const std::string bytes(*payload);
  return static_cast<uint16_t>(static_cast<uint8_t>(bytes[0]) << 8 |
                               static_cast<uint8_t>(bytes[1]));
}

}  // namespace strait::ike
