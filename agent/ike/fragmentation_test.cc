#include "agent/ike/fragmentation.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "agent/ike/crypto_sk.h"
#include "agent/ike/message.h"
#include "gtest/gtest.h"

namespace strait::ike {
namespace {

SkCipherPtr Cipher(const CipherSuite& suite) {
  std::string encr(EncrKeyMaterialSize(suite), '\x11');
  std::string integ(IntegKeySize(suite.integ), '\x22');
  absl::StatusOr<SkCipherPtr> c = CreateSkCipher(suite, Secret(encr), Secret(integ));
  EXPECT_TRUE(c.ok()) << c.status();
  return *std::move(c);
}

absl::string_view View(const Bytes& b) {
  return absl::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

Payload Make(uint8_t type, PayloadBody body) {
  Payload p;
  p.type = type;
  p.body = std::move(body);
  return p;
}

// An IKE_AUTH-like inner chain: IDi, `certs` CERT payloads of `cert_size`
// bytes, AUTH.
std::vector<Payload> Inner(int certs, size_t cert_size) {
  std::vector<Payload> inner;
  inner.push_back(Make(kPayloadIdi, IdPayload{2, {'m', 'o', 'o', 'n'}}));
  for (int i = 0; i < certs; ++i) {
    inner.push_back(Make(kPayloadCert, CertPayload{4, Bytes(cert_size, static_cast<uint8_t>(i))}));
  }
  inner.push_back(Make(kPayloadAuth, AuthPayload{14, Bytes(96, 0xaa)}));
  return inner;
}

IkeHeader Header() {
  IkeHeader h;
  h.spi_i = 0x0102030405060708;
  h.spi_r = 0x1112131415161718;
  h.exchange_type = kExchangeIkeAuth;
  h.initiator = true;
  h.message_id = 1;
  return h;
}

// Seals `inner` into one SK message, as the engine's Encode() does.
Bytes SealMessage(const SkCipher& cipher, const std::vector<Payload>& inner) {
  const Bytes plain = EncodePayloadChain(inner);
  const size_t sealed_size = cipher.SealedSize(plain.size());
  Message m;
  m.header = Header();
  m.payloads.push_back(Make(kPayloadSk, SkPayload{FirstPayloadType(inner), Bytes(sealed_size)}));
  Bytes bytes = EncodeMessage(m);
  const size_t aad = bytes.size() - sealed_size;
  absl::StatusOr<std::string> sealed =
      cipher.Seal(absl::string_view(reinterpret_cast<const char*>(bytes.data()), aad), View(plain));
  EXPECT_TRUE(sealed.ok());
  std::memcpy(bytes.data() + aad, sealed->data(), sealed->size());
  return bytes;
}

struct Opened {
  SkfPayload skf;
  std::string plaintext;
};

Opened Open(const SkCipher& cipher, const Bytes& datagram) {
  absl::StatusOr<Message> m = DecodeMessage(datagram);
  EXPECT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(Verify(*m).ok());
  EXPECT_EQ(m->header, Header());
  EXPECT_EQ(m->payloads.size(), 1u);
  const auto& skf = std::get<SkfPayload>(m->payloads.back().body);
  absl::StatusOr<std::string> plain = OpenFragment(cipher, datagram, skf);
  EXPECT_TRUE(plain.ok()) << plain.status();
  return {skf, *plain};
}

TEST(FragmentationTest, MaxMessageSizeLeavesRoomForHeaders) {
  EXPECT_EQ(MaxFragmentMessageSize(1280, false), 1280u - 20 - 8 - 4);
  EXPECT_EQ(MaxFragmentMessageSize(1280, true), 1280u - 40 - 8 - 4);
  EXPECT_EQ(MaxFragmentMessageSize(30, false), 0u);
}

class FragmentSuiteTest : public ::testing::TestWithParam<CipherSuite> {};

TEST_P(FragmentSuiteTest, SplitsSealsAndReassembles) {
  SkCipherPtr cipher = Cipher(GetParam());
  const std::vector<Payload> inner = Inner(3, 1500);
  const Bytes message = SealMessage(*cipher, inner);
  for (size_t max : {size_t{1248}, size_t{512}, size_t{200}}) {
    SCOPED_TRACE(max);
    absl::StatusOr<std::vector<Bytes>> fragments = FragmentMessage(*cipher, message, max);
    ASSERT_TRUE(fragments.ok()) << fragments.status();
    ASSERT_GT(fragments->size(), 1u);
    Reassembler reassembler;
    const absl::Time now = absl::UnixEpoch();
    for (size_t i = 0; i < fragments->size(); ++i) {
      const Bytes& f = (*fragments)[i];
      EXPECT_LE(f.size(), max);
      Opened o = Open(*cipher, f);
      EXPECT_EQ(o.skf.fragment_number, i + 1);
      EXPECT_EQ(o.skf.total_fragments, fragments->size());
      EXPECT_EQ(o.skf.inner_next_payload, i == 0 ? kPayloadIdi : kPayloadNone);
      EXPECT_EQ(reassembler.Add(1, o.skf, o.plaintext, f, now), i + 1 == fragments->size()
                                                                    ? Reassembler::Result::kComplete
                                                                    : Reassembler::Result::kStored);
    }
    Reassembler::Completed done = reassembler.TakeMessage();
    EXPECT_TRUE(reassembler.empty());
    EXPECT_EQ(done.message_id, 1u);
    EXPECT_EQ(done.first_datagram, fragments->front());
    absl::StatusOr<std::vector<Payload>> decoded =
        DecodePayloadChain(done.first_payload, done.inner);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, inner);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Suites, FragmentSuiteTest,
    ::testing::Values(CipherSuite{EncrId::kAesGcm16, 256, IntegId::kNone},
                      CipherSuite{EncrId::kAesCbc, 128, IntegId::kHmacSha2_256_128},
                      CipherSuite{EncrId::kAesCbc, 256, IntegId::kHmacSha2_512_256}));

TEST(FragmentationTest, SmallMessageIsLeftAlone) {
  SkCipherPtr cipher = Cipher({});
  const Bytes message = SealMessage(*cipher, Inner(0, 0));
  absl::StatusOr<std::vector<Bytes>> out = FragmentMessage(*cipher, message, 1248);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ(out->front(), message);
}

TEST(FragmentationTest, RefusesWhatCannotBeFragmented) {
  SkCipherPtr cipher = Cipher({});
  const Bytes message = SealMessage(*cipher, Inner(2, 1000));
  // No room for any data.
  EXPECT_FALSE(FragmentMessage(*cipher, message, 60).ok());
  // 70 bytes leave 10 per GCM fragment: many, but it works.
  absl::StatusOr<std::vector<Bytes>> tiny = FragmentMessage(*cipher, message, 70);
  ASSERT_TRUE(tiny.ok());
  EXPECT_GT(tiny->size(), 200u);
  // Not an SK message.
  Message plain;
  plain.header = Header();
  plain.payloads.push_back(Make(kPayloadNonce, NoncePayload{Bytes(3000, 1)}));
  EXPECT_FALSE(FragmentMessage(*cipher, EncodeMessage(plain), 500).ok());
  // Sealed with other keys.
  SkCipherPtr other = Cipher({EncrId::kAesGcm16, 128, IntegId::kNone});
  EXPECT_FALSE(FragmentMessage(*other, message, 500).ok());
}

TEST(FragmentationTest, TamperedFragmentDoesNotOpen) {
  SkCipherPtr cipher = Cipher({});
  absl::StatusOr<std::vector<Bytes>> fragments =
      FragmentMessage(*cipher, SealMessage(*cipher, Inner(2, 1000)), 500);
  ASSERT_TRUE(fragments.ok());
  for (size_t offset : {size_t{20}, size_t{30}, size_t{34}, size_t{60}}) {
    Bytes f = (*fragments)[1];
    f[offset] ^= 1;  // Header, SKF fields (AAD), ciphertext.
    absl::StatusOr<Message> m = DecodeMessage(f);
    if (!m.ok()) continue;
    const auto* skf = std::get_if<SkfPayload>(&m->payloads.back().body);
    if (skf == nullptr) continue;
    EXPECT_FALSE(OpenFragment(*cipher, f, *skf).ok()) << offset;
  }
}

TEST(FragmentationTest, CodecBounds) {
  // SKF needs its two fields; without sealed data it does not open.
  EXPECT_FALSE(DecodeSkfPayload(kPayloadIdi, Bytes{0, 1, 0}).ok());
  absl::StatusOr<SkfPayload> empty = DecodeSkfPayload(kPayloadIdi, Bytes{0, 1, 0, 2});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->encrypted.empty());
  EXPECT_FALSE(OpenFragment(*Cipher({}), Bytes(40), *empty).ok());
  EXPECT_FALSE(OpenFragment(*Cipher({}), Bytes(10), SkfPayload{1, 1, 0, Bytes(30)}).ok());
  absl::StatusOr<SkfPayload> skf = DecodeSkfPayload(kPayloadIdi, Bytes{0, 2, 0, 3, 1, 2, 3, 4});
  ASSERT_TRUE(skf.ok());
  EXPECT_EQ(skf->fragment_number, 2);
  EXPECT_EQ(skf->total_fragments, 3);
  // Fragment 0, a number above the total, and Next Payload outside
  // fragment 1 fail Verify().
  auto verify = [](SkfPayload s) {
    Message m;
    m.header = Header();
    m.payloads.push_back(Make(kPayloadSkf, std::move(s)));
    return Verify(m).ok();
  };
  EXPECT_FALSE(verify({0, 2, 0, Bytes(8)}));
  EXPECT_FALSE(verify({3, 2, 0, Bytes(8)}));
  EXPECT_FALSE(verify({2, 2, kPayloadIdi, Bytes(8)}));
  EXPECT_TRUE(verify({2, 2, 0, Bytes(8)}));
  // An SKF must be the last payload.
  Message m;
  m.header = Header();
  m.payloads.push_back(Make(kPayloadSkf, SkfPayload{1, 1, kPayloadIdi, Bytes(8)}));
  m.payloads.push_back(Make(kPayloadNonce, NoncePayload{Bytes(16)}));
  EXPECT_FALSE(Verify(m).ok());
}

SkfPayload Frag(uint16_t number, uint16_t total) {
  return SkfPayload{number, total, number == 1 ? uint8_t{kPayloadIdi} : uint8_t{kPayloadNone}, {}};
}

TEST(ReassemblerTest, DuplicatesAndOrder) {
  Reassembler r;
  const absl::Time t = absl::UnixEpoch();
  EXPECT_EQ(r.Add(2, Frag(3, 3), "c", Bytes{3}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(2, Frag(3, 3), "c", Bytes{3}, t), Reassembler::Result::kDuplicate);
  EXPECT_EQ(r.Add(2, Frag(1, 3), "a", Bytes{1}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(2, Frag(1, 3), "x", Bytes{9}, t), Reassembler::Result::kDuplicate);
  EXPECT_EQ(r.Add(2, Frag(2, 3), "b", Bytes{2}, t), Reassembler::Result::kComplete);
  Reassembler::Completed done = r.TakeMessage();
  EXPECT_EQ(done.inner, (Bytes{'a', 'b', 'c'}));
  EXPECT_EQ(done.first_payload, kPayloadIdi);
  EXPECT_EQ(done.first_datagram, Bytes{1});
}

TEST(ReassemblerTest, GreaterTotalRestartsSmallerIsIgnored) {
  Reassembler r;
  const absl::Time t = absl::UnixEpoch();
  EXPECT_EQ(r.Add(1, Frag(1, 2), "big", Bytes{1}, t), Reassembler::Result::kStored);
  // The sender went to smaller fragments: start over.
  EXPECT_EQ(r.Add(1, Frag(2, 4), "b", Bytes{2}, t), Reassembler::Result::kStored);
  // A late fragment of the old, larger size.
  EXPECT_EQ(r.Add(1, Frag(2, 2), "g", Bytes{2}, t), Reassembler::Result::kSmallerTotal);
  EXPECT_EQ(r.Add(1, Frag(1, 4), "a", Bytes{1}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(1, Frag(3, 4), "c", Bytes{3}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(1, Frag(4, 4), "d", Bytes{4}, t), Reassembler::Result::kComplete);
  EXPECT_EQ(r.TakeMessage().inner, (Bytes{'a', 'b', 'c', 'd'}));
}

TEST(ReassemblerTest, NewMessageIdReplacesTheOld) {
  Reassembler r;
  const absl::Time t = absl::UnixEpoch();
  EXPECT_EQ(r.Add(1, Frag(1, 2), "a", Bytes{1}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(2, Frag(2, 2), "y", Bytes{2}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(2, Frag(1, 2), "x", Bytes{1}, t), Reassembler::Result::kComplete);
  EXPECT_EQ(r.TakeMessage().inner, (Bytes{'x', 'y'}));
}

TEST(ReassemblerTest, Limits) {
  Reassembler::Limits limits;
  limits.max_fragments = 4;
  limits.max_message_size = 10;
  limits.timeout = absl::Seconds(5);
  Reassembler r(limits);
  const absl::Time t = absl::UnixEpoch();
  EXPECT_EQ(r.Add(1, Frag(1, 5), "a", Bytes{1}, t), Reassembler::Result::kTooMany);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.Add(1, Frag(1, 3), "123456", Bytes{1}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(1, Frag(2, 3), "789012", Bytes{2}, t), Reassembler::Result::kTooLarge);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.Add(1, Frag(1, 3), "a", Bytes{1}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Add(1, Frag(2, 3), "b", Bytes{2}, t), Reassembler::Result::kStored);
  EXPECT_EQ(r.Expire(t + absl::Seconds(4)), 0u);
  EXPECT_EQ(r.Expire(t + absl::Seconds(5)), 2u);
  EXPECT_TRUE(r.empty());
}

}  // namespace
}  // namespace strait::ike
