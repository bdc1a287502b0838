#ifndef STRAIT_AGENT_IKE_MESSAGE_H_
#define STRAIT_AGENT_IKE_MESSAGE_H_

// IKEv2 wire format (RFC 7296 section 3; RFC 7383 for SKF): the message
// header and payloads, their encoders and strict decoders.
//
// The codec knows bytes and bounds only: every malformed datagram yields
// InvalidArgument with a short reason and nothing is read past the end.
// Protocol limits (version, nonce sizes, SPI sizes, critical payloads) are
// checked by Verify(), which exchanges run on every decoded message.
// Encryption is not done here: an SK payload carries the raw
// IV || ciphertext || ICV, and DecodePayloadChain()/EncodePayloadChain()
// convert between a plaintext inner chain and payloads.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace strait::ike {

using Bytes = std::vector<uint8_t>;

// Limits the decoder enforces so that a datagram cannot make us allocate
// or loop without bound.
inline constexpr size_t kIkeHeaderSize = 28;
inline constexpr size_t kGenericPayloadHeaderSize = 4;
inline constexpr size_t kMaxPayloads = 64;          // Per chain (outer or inner).
inline constexpr size_t kMaxProposals = 64;         // Per SA payload.
inline constexpr size_t kMaxTransforms = 128;       // Per SA payload, all proposals.
inline constexpr size_t kMaxAttributes = 16;        // Per transform.
inline constexpr size_t kMaxTrafficSelectors = 64;  // Per TS payload.

// Payload types (IANA "IKEv2 Payload Types").
enum PayloadType : uint8_t {
  kPayloadNone = 0,
  kPayloadSa = 33,
  kPayloadKe = 34,
  kPayloadIdi = 35,
  kPayloadIdr = 36,
  kPayloadCert = 37,
  kPayloadCertReq = 38,
  kPayloadAuth = 39,
  kPayloadNonce = 40,
  kPayloadNotify = 41,
  kPayloadDelete = 42,
  kPayloadVendorId = 43,
  kPayloadTsi = 44,
  kPayloadTsr = 45,
  kPayloadSk = 46,
  kPayloadCp = 47,
  kPayloadEap = 48,
  kPayloadSkf = 53,
};

// True for the payload types this implementation understands (the ones
// above, including CP and EAP which are kept raw).
bool IsKnownPayloadType(uint8_t type);

enum ExchangeType : uint8_t {
  kExchangeIkeSaInit = 34,
  kExchangeIkeAuth = 35,
  kExchangeCreateChildSa = 36,
  kExchangeInformational = 37,
};

// Protocol IDs in SA proposals, Notify and Delete.
enum ProtocolId : uint8_t {
  kProtocolNone = 0,
  kProtocolIke = 1,
  kProtocolAh = 2,
  kProtocolEsp = 3,
};

enum TransformType : uint8_t {
  kTransformEncr = 1,
  kTransformPrf = 2,
  kTransformInteg = 3,
  kTransformDh = 4,
  kTransformEsn = 5,
};

inline constexpr uint16_t kAttributeKeyLength = 14;

enum TrafficSelectorType : uint8_t {
  kTsIpv4AddrRange = 7,
  kTsIpv6AddrRange = 8,
};

// Notify message types used by the codec and Verify().
enum NotifyType : uint16_t {
  kNotifyUnsupportedCriticalPayload = 1,
  kNotifyInvalidIkeSpi = 4,
  kNotifyInvalidMajorVersion = 5,
  kNotifyInvalidSyntax = 7,
  kNotifyInvalidMessageId = 9,
  kNotifyInvalidSpi = 11,
  kNotifyNoProposalChosen = 14,
  kNotifyInvalidKePayload = 17,
  kNotifyAuthenticationFailed = 24,
  kNotifyNoAdditionalSas = 35,
  kNotifyTsUnacceptable = 38,
  kNotifyTemporaryFailure = 43,
  kNotifyChildSaNotFound = 44,
  kNotifyInitialContact = 16384,
  kNotifyNatDetectionSourceIp = 16388,
  kNotifyNatDetectionDestinationIp = 16389,
  kNotifyCookie = 16390,
  kNotifyRekeySa = 16393,
  kNotifyFragmentationSupported = 16430,
  kNotifySignatureHashAlgorithms = 16431,
};

// Header flag bits.
// "NO_PROPOSAL_CHOSEN", ... for the types above; "notify <n>" otherwise.
std::string NotifyTypeName(uint16_t type);

inline constexpr uint8_t kFlagInitiator = 0x08;
inline constexpr uint8_t kFlagVersion = 0x10;
inline constexpr uint8_t kFlagResponse = 0x20;

// The fixed IKE header. Next Payload and Length are derived from the payload
// chain on encode and are not stored. Flag bits other than I, V and R are
// ignored on receipt and never sent.
struct IkeHeader {
  uint64_t spi_i = 0;
  uint64_t spi_r = 0;
  uint8_t major_version = 2;
  uint8_t minor_version = 0;
  uint8_t exchange_type = 0;
  bool initiator = false;       // I
  bool higher_version = false;  // V
  bool response = false;        // R
  uint32_t message_id = 0;
};

struct Transform {
  uint8_t type = 0;
  uint16_t id = 0;
  // The Key Length attribute (TV format), when present.
  std::optional<uint16_t> key_length;
  // Any other attributes, in wire format, encoded after Key Length.
  Bytes other_attributes;
};

struct Proposal {
  uint8_t number = 0;
  uint8_t protocol_id = 0;
  Bytes spi;
  std::vector<Transform> transforms;
};

struct SaPayload {
  std::vector<Proposal> proposals;
};

struct KePayload {
  uint16_t dh_group = 0;
  Bytes data;
};

// IDi and IDr.
struct IdPayload {
  uint8_t id_type = 0;
  Bytes data;
};

// CERT and CERTREQ.
struct CertPayload {
  uint8_t encoding = 0;
  Bytes data;
};

struct AuthPayload {
  uint8_t method = 0;
  Bytes data;
};

// Ni and Nr.
struct NoncePayload {
  Bytes data;
};

struct NotifyPayload {
  uint8_t protocol_id = 0;
  Bytes spi;
  uint16_t type = 0;
  Bytes data;
};

struct DeletePayload {
  uint8_t protocol_id = 0;
  uint8_t spi_size = 0;
  std::vector<Bytes> spis;  // Each spi_size bytes.
};

struct VendorIdPayload {
  Bytes data;
};

struct TrafficSelector {
  uint8_t ts_type = 0;
  uint8_t ip_protocol = 0;  // 0: any.
  uint16_t start_port = 0;
  uint16_t end_port = 0;
  Bytes start_address;  // 4 bytes (type 7) or 16 bytes (type 8).
  Bytes end_address;
};

// TSi and TSr.
struct TsPayload {
  std::vector<TrafficSelector> selectors;
};

// Encrypted and Authenticated. Must be the last payload of a message.
struct SkPayload {
  uint8_t inner_next_payload = 0;  // Type of the first inner payload.
  Bytes encrypted;                 // IV || ciphertext || ICV.
};

// Encrypted and Authenticated Fragment (RFC 7383).
struct SkfPayload {
  uint16_t fragment_number = 0;
  uint16_t total_fragments = 0;
  uint8_t inner_next_payload = 0;  // Non-zero in fragment 1 only.
  Bytes encrypted;
};

// Unknown payload types, and CP/EAP: the body as received.
struct RawPayload {
  Bytes data;
};

using PayloadBody = std::variant<SaPayload, KePayload, IdPayload, CertPayload, AuthPayload,
                                 NoncePayload, NotifyPayload, DeletePayload, VendorIdPayload,
                                 TsPayload, SkPayload, SkfPayload, RawPayload>;

// A payload: its type selects the wire layout of `body` (IDi and IDr both
// use IdPayload, for example). Verify() rejects a body that does not match.
struct Payload {
  uint8_t type = kPayloadNone;
  bool critical = false;
  PayloadBody body;
};

struct Message {
  IkeHeader header;
  std::vector<Payload> payloads;
};

bool operator==(const IkeHeader& a, const IkeHeader& b);
bool operator==(const Transform& a, const Transform& b);
bool operator==(const Proposal& a, const Proposal& b);
bool operator==(const SaPayload& a, const SaPayload& b);
bool operator==(const KePayload& a, const KePayload& b);
bool operator==(const IdPayload& a, const IdPayload& b);
bool operator==(const CertPayload& a, const CertPayload& b);
bool operator==(const AuthPayload& a, const AuthPayload& b);
bool operator==(const NoncePayload& a, const NoncePayload& b);
bool operator==(const NotifyPayload& a, const NotifyPayload& b);
bool operator==(const DeletePayload& a, const DeletePayload& b);
bool operator==(const VendorIdPayload& a, const VendorIdPayload& b);
bool operator==(const TrafficSelector& a, const TrafficSelector& b);
bool operator==(const TsPayload& a, const TsPayload& b);
bool operator==(const SkPayload& a, const SkPayload& b);
bool operator==(const SkfPayload& a, const SkfPayload& b);
bool operator==(const RawPayload& a, const RawPayload& b);
bool operator==(const Payload& a, const Payload& b);
bool operator==(const Message& a, const Message& b);
inline bool operator!=(const Payload& a, const Payload& b) { return !(a == b); }
inline bool operator!=(const Message& a, const Message& b) { return !(a == b); }

// Whole messages. DecodeMessage requires the header length to equal the
// datagram length. EncodeMessage computes every length and next-payload
// field; a message that passes Verify() always encodes correctly.
absl::StatusOr<Message> DecodeMessage(absl::Span<const uint8_t> datagram);
Bytes EncodeMessage(const Message& message);

// Decodes only the 28-byte header (for example to find the IKE SA before
// decoding the rest); does not check the length field.
absl::StatusOr<IkeHeader> DecodeHeader(absl::Span<const uint8_t> datagram);

// The plaintext of an SK payload: a chain of payloads starting with
// `first_payload_type`, as it is before padding is added (the caller strips
// padding and the Pad Length byte after decryption).
absl::StatusOr<std::vector<Payload>> DecodePayloadChain(uint8_t first_payload_type,
                                                        absl::Span<const uint8_t> plaintext);
Bytes EncodePayloadChain(const std::vector<Payload>& payloads);
// The value for SkPayload::inner_next_payload given an inner chain.
uint8_t FirstPayloadType(const std::vector<Payload>& payloads);

// Payload bodies, without the 4-byte generic payload header.
absl::StatusOr<Payload> DecodePayloadBody(uint8_t type, bool critical, uint8_t next_payload,
                                          absl::Span<const uint8_t> body);
Bytes EncodePayloadBody(const Payload& payload);

absl::StatusOr<SaPayload> DecodeSaPayload(absl::Span<const uint8_t> body);
absl::StatusOr<KePayload> DecodeKePayload(absl::Span<const uint8_t> body);
absl::StatusOr<IdPayload> DecodeIdPayload(absl::Span<const uint8_t> body);
absl::StatusOr<CertPayload> DecodeCertPayload(absl::Span<const uint8_t> body);
absl::StatusOr<AuthPayload> DecodeAuthPayload(absl::Span<const uint8_t> body);
absl::StatusOr<NoncePayload> DecodeNoncePayload(absl::Span<const uint8_t> body);
absl::StatusOr<NotifyPayload> DecodeNotifyPayload(absl::Span<const uint8_t> body);
absl::StatusOr<DeletePayload> DecodeDeletePayload(absl::Span<const uint8_t> body);
absl::StatusOr<VendorIdPayload> DecodeVendorIdPayload(absl::Span<const uint8_t> body);
absl::StatusOr<TsPayload> DecodeTsPayload(absl::Span<const uint8_t> body);
absl::StatusOr<SkfPayload> DecodeSkfPayload(uint8_t next_payload, absl::Span<const uint8_t> body);

void EncodeSaPayload(const SaPayload& p, Bytes* out);
void EncodeKePayload(const KePayload& p, Bytes* out);
void EncodeIdPayload(const IdPayload& p, Bytes* out);
void EncodeCertPayload(const CertPayload& p, Bytes* out);
void EncodeAuthPayload(const AuthPayload& p, Bytes* out);
void EncodeNoncePayload(const NoncePayload& p, Bytes* out);
void EncodeNotifyPayload(const NotifyPayload& p, Bytes* out);
void EncodeDeletePayload(const DeletePayload& p, Bytes* out);
void EncodeVendorIdPayload(const VendorIdPayload& p, Bytes* out);
void EncodeTsPayload(const TsPayload& p, Bytes* out);

// RFC 7296 limits on a decoded message, or on one we are about to encode.
// On failure returns InvalidArgument; NotifyTypeOf() then gives the error
// notification to answer with (INVALID_MAJOR_VERSION,
// UNSUPPORTED_CRITICAL_PAYLOAD, INVALID_SYNTAX).
absl::Status Verify(const Message& message);
// The same checks for an inner (decrypted) payload chain.
absl::Status VerifyPayloads(const std::vector<Payload>& payloads);
std::optional<uint16_t> NotifyTypeOf(const absl::Status& status);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_MESSAGE_H_
