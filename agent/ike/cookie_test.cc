#include "agent/ike/cookie.h"

#include <gtest/gtest.h>

#include "agent/ike/cookie_impl.h"
#include "agent/ike/engine.h"
#include "agent/ike/message.h"
#include "common/clock.h"

namespace strait::ike {
namespace {

// Deterministic bytes: a counter, so that every secret differs.
class CountingRandom : public RandomSource {
 public:
  void Fill(absl::Span<uint8_t> out) override {
    for (uint8_t& b : out) b = static_cast<uint8_t>(next_++ * 131 + 7);
  }

 private:
  uint32_t next_ = 0;
};

class CookieTest : public ::testing::Test {
 protected:
  CookieTest() : generator_(CreateCookieGenerator(clock_, random_, options_)) {}

  const Bytes ni_ = Bytes(32, 0x5a);
  const Endpoint from_{{192, 0, 2, 7}, 500};
  const uint64_t spi_ = 0x0123456789abcdefULL;
  CookieOptions options_{absl::Seconds(120), 1000};
  FakeClock clock_;
  CountingRandom random_;
  CookieGeneratorPtr generator_;
};

TEST_F(CookieTest, ValidCookieVerifies) {
  const Bytes cookie = generator_->Make(ni_, from_, spi_);
  ASSERT_EQ(cookie.size(), kCookieSize);
  EXPECT_TRUE(generator_->Verify(cookie, ni_, from_, spi_));
  // Stateless: the same inputs give the same cookie.
  EXPECT_EQ(generator_->Make(ni_, from_, spi_), cookie);
}

TEST_F(CookieTest, BoundToAddressPortSpiAndNonce) {
  const Bytes cookie = generator_->Make(ni_, from_, spi_);
  EXPECT_FALSE(generator_->Verify(cookie, ni_, Endpoint{{192, 0, 2, 8}, 500}, spi_));
  EXPECT_FALSE(generator_->Verify(cookie, ni_, Endpoint{{192, 0, 2, 7}, 4500}, spi_));
  EXPECT_FALSE(generator_->Verify(cookie, ni_, from_, spi_ + 1));
  Bytes other_ni = ni_;
  other_ni.back() ^= 1;
  EXPECT_FALSE(generator_->Verify(cookie, other_ni, from_, spi_));
  // A nonce one byte shorter with the byte moved into the address must
  // not collide (lengths are hashed).
  EXPECT_FALSE(generator_->Verify(cookie, Bytes(31, 0x5a), from_, spi_));
  // IPv6 of the same leading bytes.
  Endpoint v6{Bytes(16, 0), 500};
  EXPECT_FALSE(generator_->Verify(cookie, ni_, v6, spi_));
}

TEST_F(CookieTest, ForgedOrTruncatedCookieRefused) {
  Bytes cookie = generator_->Make(ni_, from_, spi_);
  for (size_t i = 0; i < cookie.size(); ++i) {
    Bytes forged = cookie;
    forged[i] ^= 0x80;
    EXPECT_FALSE(generator_->Verify(forged, ni_, from_, spi_)) << "byte " << i;
  }
  EXPECT_FALSE(generator_->Verify(Bytes(cookie.begin(), cookie.end() - 1), ni_, from_, spi_));
  Bytes longer = cookie;
  longer.push_back(0);
  EXPECT_FALSE(generator_->Verify(longer, ni_, from_, spi_));
  EXPECT_FALSE(generator_->Verify({}, ni_, from_, spi_));
  EXPECT_FALSE(generator_->Verify(Bytes(kCookieSize, 0), ni_, from_, spi_));
}

TEST_F(CookieTest, PreviousSecretAcceptedForOnePeriod) {
  const Bytes old_cookie = generator_->Make(ni_, from_, spi_);
  clock_.Advance(absl::Seconds(121));
  // Rotated: new cookies carry the next version.
  const Bytes new_cookie = generator_->Make(ni_, from_, spi_);
  EXPECT_NE(new_cookie, old_cookie);
  EXPECT_NE(Bytes(new_cookie.begin(), new_cookie.begin() + 4),
            Bytes(old_cookie.begin(), old_cookie.begin() + 4));
  EXPECT_TRUE(generator_->Verify(old_cookie, ni_, from_, spi_));
  EXPECT_TRUE(generator_->Verify(new_cookie, ni_, from_, spi_));
  // Another period: the old secret is gone.
  clock_.Advance(absl::Seconds(121));
  EXPECT_FALSE(generator_->Verify(old_cookie, ni_, from_, spi_));
  EXPECT_TRUE(generator_->Verify(new_cookie, ni_, from_, spi_));
  clock_.Advance(absl::Seconds(121));
  EXPECT_FALSE(generator_->Verify(new_cookie, ni_, from_, spi_));
}

TEST_F(CookieTest, ExpiredVersionRefusedEvenWithinTime) {
  // Two rotations by count within one period: the oldest version is no
  // longer held at all.
  const Bytes first = generator_->Make(ni_, from_, spi_);
  for (int i = 0; i < 1000; ++i) generator_->Make(ni_, from_, spi_ + 1);
  const Bytes second = generator_->Make(ni_, from_, spi_);
  EXPECT_NE(first, second);
  EXPECT_TRUE(generator_->Verify(first, ni_, from_, spi_));
  for (int i = 0; i < 1000; ++i) generator_->Make(ni_, from_, spi_ + 1);
  generator_->Make(ni_, from_, spi_);
  EXPECT_FALSE(generator_->Verify(first, ni_, from_, spi_));
  EXPECT_TRUE(generator_->Verify(second, ni_, from_, spi_));
}

TEST_F(CookieTest, AnotherGeneratorsCookieRefused) {
  CountingRandom other_random;
  other_random.Fill(absl::MakeSpan(Bytes(5).data(), 5));  // Another sequence.
  CookieGeneratorPtr other = CreateCookieGenerator(clock_, other_random, options_);
  const Bytes cookie = other->Make(ni_, from_, spi_);
  EXPECT_FALSE(generator_->Verify(cookie, ni_, from_, spi_));
}

Message InitRequest(uint64_t spi_i, const Bytes& ni, const std::optional<Bytes>& cookie) {
  Message m;
  m.header.spi_i = spi_i;
  m.header.exchange_type = kExchangeIkeSaInit;
  m.header.initiator = true;
  if (cookie) {
    NotifyPayload n;
    n.type = kNotifyCookie;
    n.data = *cookie;
    m.payloads.push_back(Payload{kPayloadNotify, false, n});
  }
  KePayload ke;
  ke.dh_group = 31;
  ke.data = Bytes(32, 9);
  m.payloads.push_back(Payload{kPayloadKe, false, ke});
  m.payloads.push_back(Payload{kPayloadNonce, false, NoncePayload{ni}});
  return m;
}

TEST(CookieWireTest, ParsesRequestWithAndWithoutCookie) {
  const Bytes ni(24, 3);
  absl::StatusOr<IkeSaInitRequest> plain =
      ParseIkeSaInitRequest(EncodeMessage(InitRequest(42, ni, std::nullopt)));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->spi_i, 42u);
  EXPECT_EQ(plain->ni, ni);
  EXPECT_FALSE(plain->cookie.has_value());

  absl::StatusOr<IkeSaInitRequest> with =
      ParseIkeSaInitRequest(EncodeMessage(InitRequest(42, ni, Bytes(36, 1))));
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->cookie, Bytes(36, 1));
}

TEST(CookieWireTest, CookieOnlyCountsAsFirstPayload) {
  Message m = InitRequest(42, Bytes(24, 3), std::nullopt);
  NotifyPayload n;
  n.type = kNotifyCookie;
  n.data = Bytes(36, 1);
  m.payloads.push_back(Payload{kPayloadNotify, false, n});
  absl::StatusOr<IkeSaInitRequest> parsed = ParseIkeSaInitRequest(EncodeMessage(m));
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->cookie.has_value());
}

TEST(CookieWireTest, RefusesWhatIsNotAnInitRequest) {
  Message m = InitRequest(42, Bytes(24, 3), std::nullopt);
  m.header.response = true;
  EXPECT_FALSE(ParseIkeSaInitRequest(EncodeMessage(m)).ok());
  m = InitRequest(42, Bytes(24, 3), std::nullopt);
  m.header.spi_r = 1;
  EXPECT_FALSE(ParseIkeSaInitRequest(EncodeMessage(m)).ok());
  m = InitRequest(42, Bytes(24, 3), std::nullopt);
  m.payloads.pop_back();  // No nonce.
  EXPECT_FALSE(ParseIkeSaInitRequest(EncodeMessage(m)).ok());
  EXPECT_FALSE(ParseIkeSaInitRequest(Bytes(10, 0)).ok());
}

TEST(CookieWireTest, ResponseIsHeaderAndNotifyOnly) {
  const Bytes cookie(kCookieSize, 0x11);
  const Bytes wire = BuildCookieResponse(0xfeedULL, cookie);
  EXPECT_EQ(wire.size(), kIkeHeaderSize + 8 + kCookieSize);
  absl::StatusOr<Message> m = DecodeMessage(wire);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->header.response);
  EXPECT_FALSE(m->header.initiator);
  EXPECT_EQ(m->header.spi_i, 0xfeedULL);
  EXPECT_EQ(m->header.spi_r, 0u);
  EXPECT_EQ(m->header.exchange_type, kExchangeIkeSaInit);
  ASSERT_EQ(m->payloads.size(), 1u);
  const auto* n = std::get_if<NotifyPayload>(&m->payloads[0].body);
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->type, kNotifyCookie);
  EXPECT_EQ(n->data, cookie);
}

}  // namespace
}  // namespace strait::ike
