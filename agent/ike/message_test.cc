#include "agent/ike/message.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

using ::testing::HasSubstr;

Bytes Fill(size_t n, uint8_t value) { return Bytes(n, value); }

void Add(Bytes* out, std::initializer_list<int> bytes) {
  for (int b : bytes) out->push_back(static_cast<uint8_t>(b));
}

void AddFill(Bytes* out, size_t n, uint8_t value) { out->insert(out->end(), n, value); }

// An IKE_SA_INIT request as a peer would send it, written out byte by byte:
// SA (one IKE proposal: AES-GCM-16/256, PRF-HMAC-SHA2-256, DH 19, DH 31),
// KE (group 19), Ni (32 bytes), NAT_DETECTION_SOURCE_IP and
// NAT_DETECTION_DESTINATION_IP.
Bytes SaInitRequestBytes() {
  Bytes b;
  Add(&b, {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08});  // SPIi
  Add(&b, {0, 0, 0, 0, 0, 0, 0, 0});                          // SPIr
  Add(&b, {33, 0x20, 34, 0x08});  // next SA, version 2.0, IKE_SA_INIT, I
  Add(&b, {0, 0, 0, 0});          // message ID
  Add(&b, {0, 0, 0, 240});        // length
  // [28] SA
  Add(&b, {34, 0, 0, 48});
  Add(&b, {0, 0, 0, 44, 1, 1, 0, 4});                   // [32] proposal 1, IKE, no SPI, 4
  Add(&b, {3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0});  // [40] ENCR AES-GCM-16, 256
  Add(&b, {3, 0, 0, 8, 2, 0, 0, 5});                    // [52] PRF HMAC-SHA2-256
  Add(&b, {3, 0, 0, 8, 4, 0, 0, 19});                   // [60] DH 19
  Add(&b, {0, 0, 0, 8, 4, 0, 0, 31});                   // [68] DH 31
  // [76] KE
  Add(&b, {40, 0, 0, 72, 0, 19, 0, 0});
  AddFill(&b, 64, 0xab);
  // [148] Ni
  Add(&b, {41, 0, 0, 36});
  AddFill(&b, 32, 0xcd);
  // [184] N(NAT_DETECTION_SOURCE_IP)
  Add(&b, {41, 0, 0, 28, 0, 0, 0x40, 0x04});
  AddFill(&b, 20, 0x11);
  // [212] N(NAT_DETECTION_DESTINATION_IP)
  Add(&b, {0, 0, 0, 28, 0, 0, 0x40, 0x05});
  AddFill(&b, 20, 0x22);
  return b;
}

// Offsets of every length field in SaInitRequestBytes(), and their widths.
const std::vector<std::pair<size_t, int>>& SaInitLengthFields() {
  static const auto* fields = new std::vector<std::pair<size_t, int>>{
      {24, 4}, {30, 2}, {34, 2},  {42, 2},  {54, 2}, {62, 2},
      {70, 2}, {78, 2}, {150, 2}, {186, 2}, {214, 2}};
  return *fields;
}

Payload Make(uint8_t type, PayloadBody body, bool critical = false) {
  Payload p;
  p.type = type;
  p.critical = critical;
  p.body = std::move(body);
  return p;
}

SaPayload SampleSa() {
  SaPayload sa;
  Proposal ike;
  ike.number = 1;
  ike.protocol_id = kProtocolIke;
  ike.transforms = {{kTransformEncr, 20, 256, {}},
                    {kTransformPrf, 5, std::nullopt, {}},
                    {kTransformDh, 31, std::nullopt, {}}};
  Proposal esp;
  esp.number = 2;
  esp.protocol_id = kProtocolEsp;
  esp.spi = {0xc0, 0xff, 0xee, 0x01};
  // A TLV attribute of an unknown type is kept raw.
  esp.transforms = {{kTransformEncr, 12, 128, {0x00, 0x42, 0x00, 0x02, 0xaa, 0xbb}},
                    {kTransformInteg, 12, std::nullopt, {}},
                    {kTransformEsn, 0, std::nullopt, {}}};
  sa.proposals = {ike, esp};
  return sa;
}

TsPayload SampleTs() {
  TsPayload ts;
  ts.selectors.push_back({kTsIpv4AddrRange, 6, 0, 65535, {10, 0, 0, 0}, {10, 0, 255, 255}});
  Bytes v6_start = Fill(16, 0);
  v6_start[0] = 0x20;
  v6_start[1] = 0x01;
  Bytes v6_end = Fill(16, 0xff);
  ts.selectors.push_back({kTsIpv6AddrRange, 0, 500, 500, v6_start, v6_end});
  return ts;
}

// One payload of every kind this codec knows, SK last.
std::vector<Payload> EveryPayload() {
  return {
      Make(kPayloadSa, SampleSa()),
      Make(kPayloadKe, KePayload{14, Fill(256, 0x33)}),
      Make(kPayloadIdi, IdPayload{2, {'a', '.', 'e', 'x'}}),
      Make(kPayloadIdr, IdPayload{1, {192, 0, 2, 1}}),
      Make(kPayloadCert, CertPayload{4, Fill(300, 0x30)}),
      Make(kPayloadCertReq, CertPayload{4, Fill(20, 0x44)}),
      Make(kPayloadAuth, AuthPayload{2, Fill(32, 0x55)}),
      Make(kPayloadNonce, NoncePayload{Fill(32, 0x66)}),
      Make(kPayloadNotify, NotifyPayload{kProtocolEsp, {1, 2, 3, 4}, kNotifyRekeySa, {}}),
      Make(kPayloadNotify, NotifyPayload{0, {}, kNotifyCookie, Fill(16, 0x77)}),
      Make(kPayloadDelete, DeletePayload{kProtocolEsp, 4, {{1, 2, 3, 4}, {5, 6, 7, 8}}}),
      Make(kPayloadDelete, DeletePayload{kProtocolIke, 0, {}}),
      Make(kPayloadVendorId, VendorIdPayload{{'s', 't', 'r', 'a', 'i', 't'}}),
      Make(kPayloadTsi, SampleTs()),
      Make(kPayloadTsr, SampleTs()),
      Make(kPayloadCp, RawPayload{{1, 0, 0, 0, 0, 1, 0, 0}}),
      Make(200, RawPayload{{9, 9, 9}}),
      Make(kPayloadSk, SkPayload{kPayloadIdi, Fill(48, 0x88)}),
  };
}

Message MessageWith(std::vector<Payload> payloads) {
  Message m;
  m.header.spi_i = 0x1122334455667788;
  m.header.spi_r = 0x99aabbccddeeff00;
  m.header.exchange_type = kExchangeIkeAuth;
  m.header.initiator = true;
  m.header.message_id = 1;
  m.payloads = std::move(payloads);
  return m;
}

TEST(MessageTest, DecodesHandBuiltSaInitRequest) {
  const Bytes bytes = SaInitRequestBytes();
  ASSERT_EQ(bytes.size(), 240u);
  absl::StatusOr<Message> m = DecodeMessage(bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.spi_i, 0x0102030405060708u);
  EXPECT_EQ(m->header.spi_r, 0u);
  EXPECT_EQ(m->header.major_version, 2);
  EXPECT_EQ(m->header.minor_version, 0);
  EXPECT_EQ(m->header.exchange_type, kExchangeIkeSaInit);
  EXPECT_TRUE(m->header.initiator);
  EXPECT_FALSE(m->header.response);
  EXPECT_EQ(m->header.message_id, 0u);
  ASSERT_EQ(m->payloads.size(), 5u);

  ASSERT_EQ(m->payloads[0].type, kPayloadSa);
  const auto& sa = std::get<SaPayload>(m->payloads[0].body);
  ASSERT_EQ(sa.proposals.size(), 1u);
  EXPECT_EQ(sa.proposals[0].number, 1);
  EXPECT_EQ(sa.proposals[0].protocol_id, kProtocolIke);
  EXPECT_TRUE(sa.proposals[0].spi.empty());
  ASSERT_EQ(sa.proposals[0].transforms.size(), 4u);
  EXPECT_EQ(sa.proposals[0].transforms[0], (Transform{kTransformEncr, 20, 256, {}}));
  EXPECT_EQ(sa.proposals[0].transforms[1], (Transform{kTransformPrf, 5, std::nullopt, {}}));
  EXPECT_EQ(sa.proposals[0].transforms[2], (Transform{kTransformDh, 19, std::nullopt, {}}));
  EXPECT_EQ(sa.proposals[0].transforms[3], (Transform{kTransformDh, 31, std::nullopt, {}}));

  ASSERT_EQ(m->payloads[1].type, kPayloadKe);
  EXPECT_EQ(std::get<KePayload>(m->payloads[1].body), (KePayload{19, Fill(64, 0xab)}));
  ASSERT_EQ(m->payloads[2].type, kPayloadNonce);
  EXPECT_EQ(std::get<NoncePayload>(m->payloads[2].body).data, Fill(32, 0xcd));
  ASSERT_EQ(m->payloads[3].type, kPayloadNotify);
  EXPECT_EQ(std::get<NotifyPayload>(m->payloads[3].body),
            (NotifyPayload{0, {}, kNotifyNatDetectionSourceIp, Fill(20, 0x11)}));
  ASSERT_EQ(m->payloads[4].type, kPayloadNotify);
  EXPECT_EQ(std::get<NotifyPayload>(m->payloads[4].body),
            (NotifyPayload{0, {}, kNotifyNatDetectionDestinationIp, Fill(20, 0x22)}));

  EXPECT_TRUE(Verify(*m).ok());
  EXPECT_EQ(EncodeMessage(*m), bytes);
}

TEST(MessageTest, RoundTripsEveryPayloadType) {
  const Message m = MessageWith(EveryPayload());
  ASSERT_TRUE(Verify(m).ok()) << Verify(m);
  const Bytes bytes = EncodeMessage(m);
  absl::StatusOr<Message> decoded = DecodeMessage(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, m);
  EXPECT_EQ(EncodeMessage(*decoded), bytes);
}

TEST(MessageTest, RoundTripsEachPayloadAlone) {
  for (const Payload& p : EveryPayload()) {
    SCOPED_TRACE(absl::StrCat("payload type ", p.type));
    const Bytes body = EncodePayloadBody(p);
    absl::StatusOr<Payload> again = DecodePayloadBody(
        p.type, p.critical,
        p.type == kPayloadSk ? std::get<SkPayload>(p.body).inner_next_payload : 0, body);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, p);
    absl::StatusOr<Message> decoded = DecodeMessage(EncodeMessage(MessageWith({p})));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->payloads, std::vector<Payload>{p});
  }
}

TEST(MessageTest, PerPayloadCodecs) {
  Bytes out;
  EncodeTsPayload(SampleTs(), &out);
  EXPECT_EQ(out.size(), 4u + 16 + 40);
  absl::StatusOr<TsPayload> ts = DecodeTsPayload(out);
  ASSERT_TRUE(ts.ok()) << ts.status();
  EXPECT_EQ(*ts, SampleTs());

  out.clear();
  EncodeSaPayload(SampleSa(), &out);
  absl::StatusOr<SaPayload> sa = DecodeSaPayload(out);
  ASSERT_TRUE(sa.ok()) << sa.status();
  EXPECT_EQ(*sa, SampleSa());

  out.clear();
  EncodeDeletePayload(DeletePayload{kProtocolEsp, 4, {{1, 2, 3, 4}}}, &out);
  EXPECT_EQ(out, (Bytes{3, 4, 0, 1, 1, 2, 3, 4}));

  absl::StatusOr<SkfPayload> skf = DecodeSkfPayload(kPayloadIdi, Bytes{0, 1, 0, 3, 0xee});
  ASSERT_TRUE(skf.ok()) << skf.status();
  EXPECT_EQ(*skf, (SkfPayload{1, 3, kPayloadIdi, {0xee}}));
}

TEST(MessageTest, EncryptedPayloadInnerChain) {
  const std::vector<Payload> inner = {
      Make(kPayloadIdi, IdPayload{2, {'a'}}), Make(kPayloadAuth, AuthPayload{2, Fill(32, 1)}),
      Make(kPayloadSa, SampleSa()),           Make(kPayloadTsi, SampleTs()),
      Make(kPayloadTsr, SampleTs()),
  };
  ASSERT_TRUE(VerifyPayloads(inner).ok());
  const Bytes plaintext = EncodePayloadChain(inner);
  EXPECT_EQ(FirstPayloadType(inner), kPayloadIdi);
  absl::StatusOr<std::vector<Payload>> decoded = DecodePayloadChain(kPayloadIdi, plaintext);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, inner);

  // Empty chain (an INFORMATIONAL liveness check).
  EXPECT_TRUE(EncodePayloadChain({}).empty());
  EXPECT_TRUE(DecodePayloadChain(kPayloadNone, {}).ok());

  // No SK inside SK.
  const Bytes nested = EncodePayloadChain({Make(kPayloadSk, SkPayload{0, {1, 2}})});
  EXPECT_FALSE(DecodePayloadChain(kPayloadSk, nested).ok());
  EXPECT_FALSE(VerifyPayloads({Make(kPayloadSk, SkPayload{0, {1, 2}})}).ok());
  // Trailing bytes (padding the caller did not strip).
  Bytes padded = plaintext;
  padded.push_back(0);
  EXPECT_FALSE(DecodePayloadChain(kPayloadIdi, padded).ok());
}

TEST(MessageTest, EncryptedPayloadMustBeLast) {
  Message m = MessageWith({Make(kPayloadSk, SkPayload{kPayloadIdi, Fill(32, 1)}),
                           Make(kPayloadNonce, NoncePayload{Fill(16, 2)})});
  EXPECT_FALSE(Verify(m).ok());
  // On the wire, a payload after SK can only be bytes after its end.
  Bytes bytes = EncodeMessage(m);
  absl::StatusOr<Message> decoded = DecodeMessage(bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), HasSubstr("not the last payload"));
}

TEST(MessageTest, RejectsEveryTruncation) {
  const Bytes bytes = SaInitRequestBytes();
  for (size_t n = 0; n < bytes.size(); ++n) {
    Bytes truncated(bytes.begin(), bytes.begin() + n);
    EXPECT_FALSE(DecodeMessage(truncated).ok()) << "length " << n;
    // Also with the header length fixed up, so the payload bounds are what
    // catches it.
    if (n >= kIkeHeaderSize) {
      truncated[26] = static_cast<uint8_t>(n >> 8);
      truncated[27] = static_cast<uint8_t>(n);
      EXPECT_FALSE(DecodeMessage(truncated).ok()) << "length " << n << " (fixed up)";
    }
  }
  const Bytes every = EncodeMessage(MessageWith(EveryPayload()));
  for (size_t n = kIkeHeaderSize; n < every.size(); ++n) {
    Bytes truncated(every.begin(), every.begin() + n);
    truncated[24] = static_cast<uint8_t>(n >> 24);
    truncated[25] = static_cast<uint8_t>(n >> 16);
    truncated[26] = static_cast<uint8_t>(n >> 8);
    truncated[27] = static_cast<uint8_t>(n);
    EXPECT_FALSE(DecodeMessage(truncated).ok()) << "length " << n;
  }
}

TEST(MessageTest, RejectsBitFlipsInLengthFields) {
  const Bytes bytes = SaInitRequestBytes();
  for (const auto& [offset, width] : SaInitLengthFields()) {
    for (int bit = 0; bit < width * 8; ++bit) {
      Bytes flipped = bytes;
      flipped[offset + width - 1 - bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      EXPECT_FALSE(DecodeMessage(flipped).ok()) << "offset " << offset << " bit " << bit;
    }
  }
}

TEST(MessageTest, ReportsShortReasons) {
  Bytes bytes = SaInitRequestBytes();
  bytes[54 + 1] = 3;  // PRF transform length 8 -> 3.
  absl::StatusOr<Message> m = DecodeMessage(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(), "SA payload: transform length 3 below minimum 8");

  bytes = SaInitRequestBytes();
  bytes[39] = 5;  // Five transforms declared, four present.
  m = DecodeMessage(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("transform"));

  bytes = SaInitRequestBytes();
  bytes[27] = 241;
  m = DecodeMessage(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "header length 241 differs from datagram length 240");

  bytes = SaInitRequestBytes();
  bytes.push_back(0);
  bytes[27] = 241;
  m = DecodeMessage(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "1 bytes after the last payload");

  // KE payload shorter than its fixed part.
  const Bytes ke = {0, 19, 0};
  EXPECT_FALSE(DecodeKePayload(ke).ok());
  // Delete: SPI count inconsistent with the payload length.
  EXPECT_FALSE(DecodeDeletePayload(Bytes{3, 4, 0, 2, 1, 2, 3, 4}).ok());
  // Notify: SPI size beyond the payload.
  EXPECT_FALSE(DecodeNotifyPayload(Bytes{3, 9, 0x40, 0, 1, 2, 3, 4}).ok());
  // TS: unsupported type, and length not matching the type.
  EXPECT_FALSE(DecodeTsPayload(Bytes{1, 0, 0, 0, 9, 0, 0, 8, 0, 0, 0, 0}).ok());
  Bytes ts = {1, 0, 0, 0, 7, 0, 0, 40, 0, 0, 0, 0};
  AddFill(&ts, 8, 0);
  EXPECT_FALSE(DecodeTsPayload(ts).ok());
  // SA: proposal marked "more" but it is the last one.
  Bytes sa = {2, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 8, 1, 0, 0, 20};
  EXPECT_FALSE(DecodeSaPayload(sa).ok());
  sa[0] = 0;
  EXPECT_TRUE(DecodeSaPayload(sa).ok());
  // Key Length must be TV.
  Bytes tlv = {0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 16, 1, 0, 0, 20, 0, 14, 0, 2, 1, 0};
  tlv[3] = static_cast<uint8_t>(tlv.size());
  tlv[11] = static_cast<uint8_t>(tlv.size() - 8);
  EXPECT_FALSE(DecodeSaPayload(tlv).ok());
}

TEST(MessageTest, UnknownCriticalPayload) {
  Message m = MessageWith({Make(kPayloadNonce, NoncePayload{Fill(16, 1)}),
                           Make(222, RawPayload{{1, 2, 3}}, /*critical=*/true)});
  absl::StatusOr<Message> decoded = DecodeMessage(EncodeMessage(m));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, m);
  const absl::Status status = Verify(*decoded);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NotifyTypeOf(status), kNotifyUnsupportedCriticalPayload);

  m.payloads[1].critical = false;
  EXPECT_TRUE(Verify(m).ok());
  // The critical bit is ignored for payload types we know.
  m.payloads[0].critical = true;
  EXPECT_TRUE(Verify(m).ok());
}

TEST(MessageTest, PayloadCountCap) {
  std::vector<Payload> payloads(kMaxPayloads, Make(kPayloadVendorId, VendorIdPayload{{1}}));
  Message m = MessageWith(payloads);
  EXPECT_TRUE(DecodeMessage(EncodeMessage(m)).ok());
  EXPECT_TRUE(Verify(m).ok());
  m.payloads.push_back(Make(kPayloadVendorId, VendorIdPayload{{1}}));
  absl::StatusOr<Message> decoded = DecodeMessage(EncodeMessage(m));
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message(), "more than 64 payloads");
  EXPECT_FALSE(Verify(m).ok());
}

TEST(MessageTest, TransformCap) {
  SaPayload sa;
  for (int i = 1; i <= 3; ++i) {
    Proposal p;
    p.number = static_cast<uint8_t>(i);
    p.protocol_id = kProtocolIke;
    p.transforms.assign(50, Transform{kTransformEncr, 20, 128, {}});
    sa.proposals.push_back(p);
  }
  Bytes out;
  EncodeSaPayload(sa, &out);
  absl::StatusOr<SaPayload> decoded = DecodeSaPayload(out);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message(), "SA payload: more than 128 transforms");
}

TEST(MessageTest, VerifyLimits) {
  Message m = MessageWith({Make(kPayloadNonce, NoncePayload{Fill(16, 1)})});
  EXPECT_TRUE(Verify(m).ok());
  std::get<NoncePayload>(m.payloads[0].body).data = Fill(15, 1);
  EXPECT_EQ(NotifyTypeOf(Verify(m)), kNotifyInvalidSyntax);
  std::get<NoncePayload>(m.payloads[0].body).data = Fill(256, 1);
  EXPECT_TRUE(Verify(m).ok());
  std::get<NoncePayload>(m.payloads[0].body).data = Fill(257, 1);
  EXPECT_THAT(Verify(m).message(), HasSubstr("Nonce payload"));

  m = MessageWith({});
  m.header.major_version = 3;
  EXPECT_EQ(NotifyTypeOf(Verify(m)), kNotifyInvalidMajorVersion);
  m.header.major_version = 2;
  m.header.minor_version = 1;
  EXPECT_TRUE(Verify(m).ok());

  // Body of the wrong kind for its type.
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadKe, NoncePayload{Fill(16, 1)})})).ok());
  // Sizes that do not fit their fields.
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadVendorId, VendorIdPayload{Fill(70000, 1)})})).ok());
  TsPayload bad_ts = SampleTs();
  bad_ts.selectors[0].end_address.push_back(0);
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadTsi, bad_ts)})).ok());
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadTsi, TsPayload{})})).ok());

  SaPayload sa = SampleSa();
  sa.proposals[1].number = 3;
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadSa, sa)})).ok());
  sa = SampleSa();
  sa.proposals[1].spi = {1, 2};
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadSa, sa)})).ok());
  // A response carries the one accepted proposal under its own number.
  sa = SampleSa();
  sa.proposals.erase(sa.proposals.begin());
  EXPECT_TRUE(Verify(MessageWith({Make(kPayloadSa, sa)})).ok());

  EXPECT_FALSE(
      Verify(MessageWith({Make(kPayloadDelete, DeletePayload{kProtocolEsp, 4, {}})})).ok());
  EXPECT_FALSE(
      Verify(MessageWith({Make(kPayloadDelete, DeletePayload{kProtocolEsp, 4, {{1}}})})).ok());
  EXPECT_FALSE(Verify(MessageWith({Make(kPayloadSkf, SkfPayload{2, 1, 0, {1}})})).ok());
  EXPECT_TRUE(Verify(MessageWith({Make(kPayloadSkf, SkfPayload{1, 2, kPayloadIdi, {1}})})).ok());
}

TEST(MessageTest, HeaderFlags) {
  Message m = MessageWith({});
  m.header.initiator = false;
  m.header.response = true;
  m.header.higher_version = true;
  Bytes bytes = EncodeMessage(m);
  ASSERT_EQ(bytes.size(), kIkeHeaderSize);
  EXPECT_EQ(bytes[16], 0);
  EXPECT_EQ(bytes[17], 0x20);
  EXPECT_EQ(bytes[19], kFlagResponse | kFlagVersion);
  bytes[19] |= 0x07;  // Reserved bits are ignored on receipt.
  absl::StatusOr<Message> decoded = DecodeMessage(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, m);
  absl::StatusOr<IkeHeader> header = DecodeHeader(Bytes(27, 0));
  EXPECT_FALSE(header.ok());
}

// Writes the seed corpus of message_fuzzer when STRAIT_WRITE_IKE_CORPUS names
// a directory; otherwise checks that the committed seeds still decode.
TEST(MessageTest, SeedCorpus) {
  std::vector<std::pair<std::string, Message>> seeds;
  {
    absl::StatusOr<Message> init = DecodeMessage(SaInitRequestBytes());
    ASSERT_TRUE(init.ok());
    seeds.emplace_back("ike_sa_init_request", *init);
    Message response = *init;
    response.header.spi_r = 0x0a0b0c0d0e0f1011;
    response.header.initiator = false;
    response.header.response = true;
    auto& sa = std::get<SaPayload>(response.payloads[0].body);
    sa.proposals[0].transforms.pop_back();
    response.payloads.push_back(Make(kPayloadCertReq, CertPayload{4, Fill(20, 0x5c)}));
    response.payloads.push_back(
        Make(kPayloadNotify, NotifyPayload{0, {}, kNotifyFragmentationSupported, {}}));
    seeds.emplace_back("ike_sa_init_response", response);
    Message cookie =
        MessageWith({Make(kPayloadNotify, NotifyPayload{0, {}, kNotifyCookie, Fill(32, 0x3c)})});
    cookie.header.exchange_type = kExchangeIkeSaInit;
    seeds.emplace_back("cookie", cookie);
  }
  seeds.emplace_back("every_payload", MessageWith(EveryPayload()));
  {
    // The SK content is a plaintext chain so that the fuzzer exercises the
    // inner decoder too.
    const std::vector<Payload> inner = {
        Make(kPayloadIdi, IdPayload{2, {'a', '.', 'e', 'x'}}),
        Make(kPayloadAuth, AuthPayload{2, Fill(32, 0x55)}),
        Make(kPayloadSa, SampleSa()),
        Make(kPayloadTsi, SampleTs()),
        Make(kPayloadTsr, SampleTs()),
    };
    seeds.emplace_back("ike_auth_plaintext_sk",
                       MessageWith({Make(kPayloadSk, SkPayload{FirstPayloadType(inner),
                                                               EncodePayloadChain(inner)})}));
    Message info = MessageWith(
        {Make(kPayloadSk,
              SkPayload{kPayloadDelete,
                        EncodePayloadChain({Make(
                            kPayloadDelete, DeletePayload{kProtocolEsp, 4, {{1, 2, 3, 4}}})})})});
    info.header.exchange_type = kExchangeInformational;
    seeds.emplace_back("informational_delete", info);
  }
  seeds.emplace_back("skf_fragment",
                     MessageWith({Make(kPayloadSkf, SkfPayload{1, 2, kPayloadIdi, Fill(40, 7)})}));
  seeds.emplace_back("unknown_critical",
                     MessageWith({Make(kPayloadNonce, NoncePayload{Fill(16, 1)}),
                                  Make(222, RawPayload{{1, 2, 3}}, /*critical=*/true)}));

  const char* dir = std::getenv("STRAIT_WRITE_IKE_CORPUS");
  for (const auto& [name, message] : seeds) {
    const Bytes bytes = EncodeMessage(message);
    absl::StatusOr<Message> decoded = DecodeMessage(bytes);
    ASSERT_TRUE(decoded.ok()) << name << ": " << decoded.status();
    EXPECT_EQ(*decoded, message) << name;
    if (dir != nullptr) {
      std::ofstream out(absl::StrCat(dir, "/", name), std::ios::binary);
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
      ASSERT_TRUE(out.good()) << name;
    }
  }
}

}  // namespace
}  // namespace strait::ike
