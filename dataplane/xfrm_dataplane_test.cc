// The XFRM backend, two ways:
//  - what it sends, byte for byte: a fake transport captures each request
//    and the test decodes it with libmnl (no privileges needed);
//  - against the real kernel, inside a network namespace of its own that
//    main() makes with unshare(CLONE_NEWNET) and that vanishes with the
//    process. Those tests need root and skip without it.

#include "dataplane/xfrm_dataplane.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "dataplane/reconcile.h"
#include "dataplane/testing/fake_netlink_transport.h"
#include "dataplane/xfrm_messages.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::dataplane {
namespace {

using testing::Bytes;
using testing::FakeNetlinkTransport;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

bool g_private_netns = false;  // Set by main().

constexpr uint32_t kReqid = kReqidFirst + 0x10;

Address Ip(const char* text) {
  Address out(strchr(text, ':') ? 16 : 4);
  EXPECT_EQ(inet_pton(out.size() == 4 ? AF_INET : AF_INET6, text, out.data()), 1) << text;
  return out;
}

Bytes KeyBytes(size_t size, uint8_t seed) {
  Bytes key(size);
  for (size_t i = 0; i < size; ++i) key[i] = static_cast<uint8_t>(seed + i);
  return key;
}

Secret ToSecret(const Bytes& bytes) { return Secret(std::string(bytes.begin(), bytes.end())); }

template <typename T>
T As(const Bytes& bytes, size_t offset = 0) {
  T value;
  EXPECT_GE(bytes.size(), offset + sizeof(T));
  memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// A captured request: header, fixed part and attributes (type -> payload).
struct Decoded {
  nlmsghdr header = {};
  Bytes fixed;
  std::map<uint16_t, Bytes> attributes;

  std::vector<uint16_t> types() const {
    std::vector<uint16_t> out;
    for (const auto& [type, payload] : attributes) out.push_back(type);
    return out;
  }
};

int CollectAttribute(const nlattr* attr, void* data) {
  auto* attributes = static_cast<std::map<uint16_t, Bytes>*>(data);
  const auto* payload = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
  bool fresh = attributes
                   ->emplace(mnl_attr_get_type(attr),
                             Bytes(payload, payload + mnl_attr_get_payload_len(attr)))
                   .second;
  EXPECT_TRUE(fresh) << "attribute " << mnl_attr_get_type(attr) << " twice";
  return MNL_CB_OK;
}

Decoded Decode(const Bytes& message, size_t fixed_size) {
  Decoded d;
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(message.data());
  EXPECT_EQ(nlh->nlmsg_len, message.size());
  d.header = *nlh;
  const auto* payload = static_cast<const uint8_t*>(mnl_nlmsg_get_payload(nlh));
  EXPECT_GE(mnl_nlmsg_get_payload_len(nlh), fixed_size);
  d.fixed.assign(payload, payload + fixed_size);
  EXPECT_GE(mnl_attr_parse(nlh, static_cast<unsigned>(fixed_size), CollectAttribute, &d.attributes),
            0);
  return d;
}

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::all_of(b, b + n, [](uint8_t x) { return x == 0; });
}

// A dataplane over fakes; `requests` and `events` stay owned by it.
struct FakeKernel {
  FakeNetlinkTransport* requests = nullptr;
  FakeNetlinkTransport* events = nullptr;
  XfrmDataplanePtr dataplane;
};

FakeKernel MakeFake(bool with_events = false) {
  FakeKernel k;
  auto requests = std::make_unique<FakeNetlinkTransport>();
  k.requests = requests.get();
  NetlinkTransportPtr events;
  if (with_events) {
    auto fake_events = std::make_unique<FakeNetlinkTransport>();
    k.events = fake_events.get();
    events = std::move(fake_events);
  }
  auto dataplane = XfrmDataplane::CreateWithTransports(std::move(requests), std::move(events));
  EXPECT_TRUE(dataplane.ok()) << dataplane.status();
  k.dataplane = *std::move(dataplane);
  return k;
}

// --- SAs, decoded from the captured bytes ---

struct Algorithm {
  const char* label;
  uint16_t encr_id;
  int key_bits;
  uint16_t integ_id;
  size_t encr_key_bytes;  // With salt for GCM.
  size_t integ_key_bytes;
  const char* kernel_encr;  // AEAD or CRYPT name.
  const char* kernel_auth;  // nullptr for AEAD.
  unsigned icv_or_trunc_bits;
};

const Algorithm kAlgorithms[] = {
    {"Gcm128", 20, 128, 0, 20, 0, "rfc4106(gcm(aes))", nullptr, 128},
    {"Gcm256", 20, 256, 0, 36, 0, "rfc4106(gcm(aes))", nullptr, 128},
    {"Cbc256Sha256", 12, 256, 12, 32, 32, "cbc(aes)", "hmac(sha256)", 128},
    {"Cbc256Sha384", 12, 256, 13, 32, 48, "cbc(aes)", "hmac(sha384)", 192},
    {"Cbc256Sha512", 12, 256, 14, 32, 64, "cbc(aes)", "hmac(sha512)", 256},
};

SaConfig FullSa(const Algorithm& a, bool ipv6) {
  SaConfig sa;
  sa.id.destination = ipv6 ? Ip("2001:db8::2") : Ip("192.0.2.2");
  sa.id.spi = 0xc0011234;
  sa.source = ipv6 ? Ip("2001:db8::1") : Ip("192.0.2.1");
  sa.reqid = kReqid;
  sa.encr_id = a.encr_id;
  sa.key_bits = a.key_bits;
  sa.integ_id = a.integ_id;
  sa.encr_key = ToSecret(KeyBytes(a.encr_key_bytes, 0x10));
  if (a.integ_key_bytes) sa.integ_key = ToSecret(KeyBytes(a.integ_key_bytes, 0x80));
  sa.replay_window = 128;
  sa.esn = true;
  sa.encapsulation = UdpEncapsulation{4500, 40123};
  sa.soft = {1000000, 0, 3000};
  sa.hard = {2000000, 0, 3600};
  sa.mark = 0x42;
  sa.mark_mask = 0xff;
  sa.if_id = 7;
  return sa;
}

class SaBytesTest : public ::testing::TestWithParam<std::tuple<Algorithm, bool>> {};

TEST_P(SaBytesTest, EveryFieldAndAttribute) {
  const auto& [a, ipv6] = GetParam();
  FakeKernel k = MakeFake();
  SaConfig sa = FullSa(a, ipv6);
  ASSERT_TRUE(k.dataplane->AddSa(sa).ok());
  // The request buffer was wiped before the acknowledgement was read.
  EXPECT_TRUE(k.requests->sender_wiped_before_reading());

  std::vector<Bytes> messages = k.requests->messages();
  ASSERT_EQ(messages.size(), 1u);
  Decoded d = Decode(messages[0], sizeof(xfrm_usersa_info));
  EXPECT_EQ(d.header.nlmsg_type, XFRM_MSG_NEWSA);
  EXPECT_EQ(d.header.nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK);
  EXPECT_NE(d.header.nlmsg_seq, 0u);

  auto info = As<xfrm_usersa_info>(d.fixed);
  size_t alen = ipv6 ? 16 : 4;
  int family = ipv6 ? AF_INET6 : AF_INET;
  EXPECT_EQ(memcmp(&info.id.daddr, sa.id.destination.data(), alen), 0);
  EXPECT_TRUE(AllZero(reinterpret_cast<uint8_t*>(&info.id.daddr) + alen, 16 - alen));
  EXPECT_EQ(info.id.spi, htonl(0xc0011234));
  EXPECT_EQ(info.id.proto, IPPROTO_ESP);
  EXPECT_EQ(memcmp(&info.saddr, sa.source.data(), alen), 0);
  EXPECT_EQ(info.family, family);
  EXPECT_EQ(info.mode, XFRM_MODE_TUNNEL);
  EXPECT_EQ(info.reqid, kReqid);
  EXPECT_EQ(info.flags, XFRM_STATE_AF_UNSPEC | XFRM_STATE_ESN);
  EXPECT_EQ(info.replay_window, 0);  // The kernel wants 0 beside XFRMA_REPLAY_ESN_VAL.
  EXPECT_TRUE(AllZero(&info.sel, sizeof(info.sel)));  // Tunnel mode: policies select.
  EXPECT_EQ(info.lft.soft_byte_limit, 1000000u);
  EXPECT_EQ(info.lft.hard_byte_limit, 2000000u);
  EXPECT_EQ(info.lft.soft_packet_limit, XFRM_INF);
  EXPECT_EQ(info.lft.hard_packet_limit, XFRM_INF);
  EXPECT_EQ(info.lft.soft_add_expires_seconds, 3000u);
  EXPECT_EQ(info.lft.hard_add_expires_seconds, 3600u);
  EXPECT_EQ(info.lft.soft_use_expires_seconds, 0u);
  EXPECT_EQ(info.lft.hard_use_expires_seconds, 0u);
  EXPECT_TRUE(AllZero(&info.curlft, sizeof(info.curlft)));
  EXPECT_TRUE(AllZero(&info.stats, sizeof(info.stats)));

  Bytes encr_key = KeyBytes(a.encr_key_bytes, 0x10);
  if (a.kernel_auth == nullptr) {
    EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_ALG_AEAD, XFRMA_ENCAP, XFRMA_REPLAY_ESN_VAL,
                                                XFRMA_MARK, XFRMA_IF_ID));
    const Bytes& p = d.attributes[XFRMA_ALG_AEAD];
    ASSERT_EQ(p.size(), sizeof(xfrm_algo_aead) + encr_key.size());
    auto aead = As<xfrm_algo_aead>(p);
    EXPECT_STREQ(aead.alg_name, a.kernel_encr);
    EXPECT_EQ(aead.alg_key_len, (a.key_bits + 32u));  // Key and salt.
    EXPECT_EQ(aead.alg_icv_len, a.icv_or_trunc_bits);
    EXPECT_EQ(Bytes(p.begin() + sizeof(xfrm_algo_aead), p.end()), encr_key);
  } else {
    EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_ALG_AUTH_TRUNC, XFRMA_ALG_CRYPT, XFRMA_ENCAP,
                                                XFRMA_REPLAY_ESN_VAL, XFRMA_MARK, XFRMA_IF_ID));
    const Bytes& c = d.attributes[XFRMA_ALG_CRYPT];
    ASSERT_EQ(c.size(), sizeof(xfrm_algo) + encr_key.size());
    auto crypt = As<xfrm_algo>(c);
    EXPECT_STREQ(crypt.alg_name, a.kernel_encr);
    EXPECT_EQ(crypt.alg_key_len, static_cast<unsigned>(a.key_bits));
    EXPECT_EQ(Bytes(c.begin() + sizeof(xfrm_algo), c.end()), encr_key);

    Bytes integ_key = KeyBytes(a.integ_key_bytes, 0x80);
    const Bytes& t = d.attributes[XFRMA_ALG_AUTH_TRUNC];
    ASSERT_EQ(t.size(), sizeof(xfrm_algo_auth) + integ_key.size());
    auto auth = As<xfrm_algo_auth>(t);
    EXPECT_STREQ(auth.alg_name, a.kernel_auth);
    EXPECT_EQ(auth.alg_key_len, integ_key.size() * 8);
    EXPECT_EQ(auth.alg_trunc_len, a.icv_or_trunc_bits);
    EXPECT_EQ(Bytes(t.begin() + sizeof(xfrm_algo_auth), t.end()), integ_key);
  }

  const Bytes& r = d.attributes[XFRMA_REPLAY_ESN_VAL];
  ASSERT_EQ(r.size(), sizeof(xfrm_replay_state_esn) + 4 * sizeof(uint32_t));
  auto replay = As<xfrm_replay_state_esn>(r);
  EXPECT_EQ(replay.bmp_len, 4u);  // 128 bits.
  EXPECT_EQ(replay.replay_window, 128u);
  EXPECT_EQ(replay.seq, 0u);
  EXPECT_EQ(replay.oseq, 0u);
  EXPECT_TRUE(AllZero(r.data() + sizeof(xfrm_replay_state_esn), 16));

  auto encap = As<xfrm_encap_tmpl>(d.attributes[XFRMA_ENCAP]);
  EXPECT_EQ(d.attributes[XFRMA_ENCAP].size(), sizeof(xfrm_encap_tmpl));
  EXPECT_EQ(encap.encap_type, UDP_ENCAP_ESPINUDP);
  EXPECT_EQ(encap.encap_sport, htons(4500));
  EXPECT_EQ(encap.encap_dport, htons(40123));
  EXPECT_TRUE(AllZero(&encap.encap_oa, sizeof(encap.encap_oa)));

  auto mark = As<xfrm_mark>(d.attributes[XFRMA_MARK]);
  EXPECT_EQ(mark.v, 0x42u);
  EXPECT_EQ(mark.m, 0xffu);
  ASSERT_EQ(d.attributes[XFRMA_IF_ID].size(), 4u);
  EXPECT_EQ(As<uint32_t>(d.attributes[XFRMA_IF_ID]), 7u);
}

INSTANTIATE_TEST_SUITE_P(AlgorithmsAndFamilies, SaBytesTest,
                         ::testing::Combine(::testing::ValuesIn(kAlgorithms), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<SaBytesTest::ParamType>& info) {
                           return absl::StrCat(std::get<0>(info.param).label,
                                               std::get<1>(info.param) ? "V6" : "V4");
                         });

TEST(SaBytes, MinimalSaHasLegacyReplayAndNoOptionalAttributes) {
  FakeKernel k = MakeFake();
  SaConfig sa = FullSa(kAlgorithms[0], false);
  sa.replay_window = 32;
  sa.esn = false;
  sa.encapsulation.reset();
  sa.soft = {};
  sa.hard = {};
  sa.mark = sa.mark_mask = sa.if_id = 0;
  ASSERT_TRUE(k.dataplane->AddSa(sa).ok());
  Decoded d = Decode(k.requests->messages()[0], sizeof(xfrm_usersa_info));
  auto info = As<xfrm_usersa_info>(d.fixed);
  EXPECT_EQ(info.replay_window, 32);
  EXPECT_EQ(info.flags, XFRM_STATE_AF_UNSPEC);
  // 0 means "none": XFRM_INF for byte and packet limits, 0 for seconds.
  EXPECT_EQ(info.lft.soft_byte_limit, XFRM_INF);
  EXPECT_EQ(info.lft.hard_byte_limit, XFRM_INF);
  EXPECT_EQ(info.lft.soft_packet_limit, XFRM_INF);
  EXPECT_EQ(info.lft.hard_packet_limit, XFRM_INF);
  EXPECT_EQ(info.lft.soft_add_expires_seconds, 0u);
  EXPECT_EQ(info.lft.hard_add_expires_seconds, 0u);
  EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_ALG_AEAD));
}

TEST(SaBytes, WideWindowWithoutEsnUsesTheBitmapAttribute) {
  FakeKernel k = MakeFake();
  SaConfig sa = FullSa(kAlgorithms[2], false);
  sa.esn = false;
  sa.replay_window = 1000;
  ASSERT_TRUE(k.dataplane->AddSa(sa).ok());
  Decoded d = Decode(k.requests->messages()[0], sizeof(xfrm_usersa_info));
  auto info = As<xfrm_usersa_info>(d.fixed);
  EXPECT_EQ(info.flags, XFRM_STATE_AF_UNSPEC);
  EXPECT_EQ(info.replay_window, 0);
  auto replay = As<xfrm_replay_state_esn>(d.attributes[XFRMA_REPLAY_ESN_VAL]);
  EXPECT_EQ(replay.replay_window, 1000u);
  EXPECT_EQ(replay.bmp_len, 32u);  // ceil(1000 / 32)
}

TEST(SaBytes, UpdateDeleteAndGetNameTheSaWithItsMark) {
  FakeKernel k = MakeFake();
  SaConfig sa = FullSa(kAlgorithms[0], false);
  ASSERT_TRUE(k.dataplane->AddSa(sa).ok());
  ASSERT_TRUE(k.dataplane->UpdateSa(sa).ok());

  // GETSA is answered with the SA's state, as the kernel does.
  k.requests->SetResponder([](const nlmsghdr& request) -> std::vector<Bytes> {
    if (request.nlmsg_type != XFRM_MSG_GETSA) return {};
    xfrm_usersa_info info = {};
    info.curlft.bytes = 123456;
    info.curlft.packets = 789;
    info.stats.replay = 3;
    info.stats.replay_window = 4;
    info.stats.integrity_failed = 5;
    info.family = AF_INET;
    return {
        FakeNetlinkTransport::Message(XFRM_MSG_NEWSA, 0, request.nlmsg_seq, &info, sizeof(info))};
  });
  absl::StatusOr<SaCounters> counters = k.dataplane->GetCounters(sa.id);
  ASSERT_TRUE(counters.ok()) << counters.status();
  EXPECT_EQ(counters->bytes, 123456u);
  EXPECT_EQ(counters->packets, 789u);
  EXPECT_EQ(counters->replay_failures, 7u);
  EXPECT_EQ(counters->integrity_failures, 5u);
  ASSERT_TRUE(k.dataplane->DeleteSa(sa.id).ok());

  std::vector<Bytes> messages = k.requests->messages();
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(Decode(messages[1], sizeof(xfrm_usersa_info)).header.nlmsg_type, XFRM_MSG_UPDSA);
  for (int i : {2, 3}) {
    Decoded d = Decode(messages[i], sizeof(xfrm_usersa_id));
    EXPECT_EQ(d.header.nlmsg_type, i == 2 ? XFRM_MSG_GETSA : XFRM_MSG_DELSA);
    auto id = As<xfrm_usersa_id>(d.fixed);
    EXPECT_EQ(memcmp(&id.daddr, sa.id.destination.data(), 4), 0);
    EXPECT_EQ(id.spi, htonl(sa.id.spi));
    EXPECT_EQ(id.family, AF_INET);
    EXPECT_EQ(id.proto, IPPROTO_ESP);
    // The kernel finds a marked SA only by its mark.
    EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_MARK));
    EXPECT_EQ(As<xfrm_mark>(d.attributes[XFRMA_MARK]).v, 0x42u);
  }
  EXPECT_TRUE(k.requests->sender_wiped_before_reading());
}

TEST(SaBytes, InvalidSasAreRefusedBeforeAnythingIsSent) {
  FakeKernel k = MakeFake();
  auto expect_refused = [&](const SaConfig& sa, absl::StatusCode code, const char* words) {
    absl::Status status = k.dataplane->AddSa(sa);
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(words));
  };
  SaConfig sa = FullSa(kAlgorithms[0], false);
  sa.reqid = 1;  // strongSwan's first reqid: not ours.
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "outside Strait's range");
  sa = FullSa(kAlgorithms[0], false);
  sa.encr_key = ToSecret(KeyBytes(16, 0));  // Salt missing.
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "key and 4-byte salt");
  sa = FullSa(kAlgorithms[2], false);
  sa.integ_key = ToSecret(KeyBytes(20, 0));
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "hmac(sha256) key");
  sa = FullSa(kAlgorithms[2], false);
  sa.encr_id = 3;  // 3DES
  expect_refused(sa, absl::StatusCode::kUnimplemented, "encryption transform 3");
  sa = FullSa(kAlgorithms[2], false);
  sa.integ_id = 2;  // HMAC-SHA1-96
  expect_refused(sa, absl::StatusCode::kUnimplemented, "integrity transform 2");
  sa = FullSa(kAlgorithms[0], false);
  sa.mark = 0x100;
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "outside its mask");
  sa = FullSa(kAlgorithms[0], false);
  sa.soft.add_seconds = 4000;
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "soft time limit");
  sa = FullSa(kAlgorithms[0], false);
  sa.replay_window = 5000;
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "replay window");
  sa = FullSa(kAlgorithms[0], false);
  sa.source = Ip("2001:db8::1");
  expect_refused(sa, absl::StatusCode::kInvalidArgument, "different families");
  EXPECT_TRUE(k.requests->datagrams().empty());
}

TEST(SaBytes, KernelErrnosMapToStatusCodes) {
  const std::pair<int, absl::StatusCode> cases[] = {
      {EEXIST, absl::StatusCode::kAlreadyExists},
      {ESRCH, absl::StatusCode::kNotFound},
      {ENOENT, absl::StatusCode::kNotFound},
      {EINVAL, absl::StatusCode::kInvalidArgument},
      {EPERM, absl::StatusCode::kPermissionDenied},
      {EACCES, absl::StatusCode::kPermissionDenied},
      {EPROTONOSUPPORT, absl::StatusCode::kUnimplemented},
      {ENOSYS, absl::StatusCode::kUnimplemented},
      {EAFNOSUPPORT, absl::StatusCode::kUnimplemented},
      {ENOMEM, absl::StatusCode::kInternal},
  };
  for (const auto& [error, code] : cases) {
    FakeKernel k = MakeFake();
    k.requests->FailNext(error, "Requested type not found");
    SaConfig sa = FullSa(kAlgorithms[3], false);
    absl::Status status = k.dataplane->AddSa(sa);
    EXPECT_EQ(status.code(), code) << status;
    std::string message(status.message());
    EXPECT_THAT(message, HasSubstr("add SA spi 0xc0011234 dst 192.0.2.2"));
    EXPECT_THAT(message, HasSubstr(strerror(error)));
    EXPECT_THAT(message, HasSubstr("(kernel: Requested type not found)"));
    if (code == absl::StatusCode::kUnimplemented) {
      EXPECT_THAT(message, HasSubstr("this kernel lacks ESP"));
    }
    // Keys never reach a message: not as text, not as hex.
    for (const char* key : {"\x10\x11\x12\x13", "10111213", "\x80\x81\x82", "808182"}) {
      EXPECT_THAT(message, Not(HasSubstr(key)));
    }
    EXPECT_TRUE(k.requests->sender_wiped_before_reading());
  }
}

// --- policies, decoded ---

PolicyConfig Policy(const Selector& selector, Direction direction, uint32_t reqid = kReqid) {
  PolicyConfig p;
  p.selector = selector;
  p.direction = direction;
  bool v6 = selector.source.size() == 16;
  p.tunnel_source = v6 ? Ip("2001:db8::1") : Ip("192.0.2.1");
  p.tunnel_destination = v6 ? Ip("2001:db8::2") : Ip("192.0.2.2");
  p.reqid = reqid;
  return p;
}

Selector Net(const char* source, uint8_t source_prefix, const char* destination,
             uint8_t destination_prefix) {
  Selector s;
  s.source = Ip(source);
  s.source_prefix = source_prefix;
  s.destination = Ip(destination);
  s.destination_prefix = destination_prefix;
  return s;
}

TEST(PolicyBytes, TemplateSelectorMarkAndDefaultPriority) {
  FakeKernel k = MakeFake();
  PolicyConfig p = Policy(Net("10.1.0.0", 16, "10.2.3.0", 24), Direction::kFwd);
  p.selector.ip_protocol = IPPROTO_UDP;
  p.selector.destination_port = 53;
  p.mark = 0x10;
  p.mark_mask = 0xf0;
  p.if_id = 9;
  ASSERT_TRUE(k.dataplane->AddPolicy(p).ok());

  Decoded d = Decode(k.requests->messages()[0], sizeof(xfrm_userpolicy_info));
  EXPECT_EQ(d.header.nlmsg_type, XFRM_MSG_UPDPOLICY);
  EXPECT_EQ(d.header.nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK);
  auto info = As<xfrm_userpolicy_info>(d.fixed);
  EXPECT_EQ(info.sel.family, AF_INET);
  EXPECT_EQ(memcmp(&info.sel.saddr, p.selector.source.data(), 4), 0);
  EXPECT_EQ(memcmp(&info.sel.daddr, p.selector.destination.data(), 4), 0);
  EXPECT_EQ(info.sel.prefixlen_s, 16);
  EXPECT_EQ(info.sel.prefixlen_d, 24);
  EXPECT_EQ(info.sel.proto, IPPROTO_UDP);
  EXPECT_EQ(info.sel.sport, 0);
  EXPECT_EQ(info.sel.sport_mask, 0);
  EXPECT_EQ(info.sel.dport, htons(53));
  EXPECT_EQ(info.sel.dport_mask, 0xffff);
  EXPECT_EQ(info.sel.ifindex, 0);
  EXPECT_EQ(info.dir, XFRM_POLICY_FWD);
  EXPECT_EQ(info.action, XFRM_POLICY_ALLOW);
  // 2000 + 4 * (16 + 8 host bits) + 0 (a port) + 0 (a protocol).
  EXPECT_EQ(info.priority, 2096u);
  EXPECT_EQ(info.priority, xfrm::DefaultPriority(p.selector));
  EXPECT_EQ(info.lft.soft_byte_limit, XFRM_INF);
  EXPECT_EQ(info.lft.hard_packet_limit, XFRM_INF);
  EXPECT_EQ(info.lft.hard_add_expires_seconds, 0u);

  EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_TMPL, XFRMA_MARK, XFRMA_IF_ID));
  ASSERT_EQ(d.attributes[XFRMA_TMPL].size(), sizeof(xfrm_user_tmpl));
  auto tmpl = As<xfrm_user_tmpl>(d.attributes[XFRMA_TMPL]);
  EXPECT_EQ(memcmp(&tmpl.saddr, p.tunnel_source.data(), 4), 0);
  EXPECT_EQ(memcmp(&tmpl.id.daddr, p.tunnel_destination.data(), 4), 0);
  EXPECT_EQ(tmpl.id.spi, 0u);
  EXPECT_EQ(tmpl.id.proto, IPPROTO_ESP);
  EXPECT_EQ(tmpl.family, AF_INET);
  EXPECT_EQ(tmpl.reqid, kReqid);
  EXPECT_EQ(tmpl.mode, XFRM_MODE_TUNNEL);
  EXPECT_EQ(tmpl.optional, 0);
  EXPECT_EQ(tmpl.aalgos, ~0u);
  EXPECT_EQ(tmpl.ealgos, ~0u);
  EXPECT_EQ(tmpl.calgos, ~0u);
  EXPECT_EQ(As<xfrm_mark>(d.attributes[XFRMA_MARK]).v, 0x10u);
  EXPECT_EQ(As<xfrm_mark>(d.attributes[XFRMA_MARK]).m, 0xf0u);
  EXPECT_EQ(As<uint32_t>(d.attributes[XFRMA_IF_ID]), 9u);
}

TEST(PolicyBytes, DefaultPriorityPrefersTheMoreSpecific) {
  Selector wide = Net("0.0.0.0", 0, "0.0.0.0", 0);
  Selector narrow = Net("10.0.0.0", 8, "10.1.0.0", 16);
  Selector hosts = Net("10.0.0.1", 32, "10.1.0.1", 32);
  EXPECT_EQ(xfrm::DefaultPriority(wide), 2259u);
  EXPECT_LT(xfrm::DefaultPriority(narrow), xfrm::DefaultPriority(wide));
  EXPECT_LT(xfrm::DefaultPriority(hosts), xfrm::DefaultPriority(narrow));
  EXPECT_EQ(xfrm::DefaultPriority(Net("::", 0, "::", 0)), 3027u);
}

TEST(PolicyBytes, InvalidPoliciesAreRefused) {
  FakeKernel k = MakeFake();
  PolicyConfig p = Policy(Net("10.1.2.3", 16, "10.2.0.0", 16), Direction::kOut);
  absl::Status status = k.dataplane->AddPolicy(p);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("10.1.2.3/16 has host bits set"));

  p = Policy(Net("10.1.0.0", 16, "10.2.0.0", 16), Direction::kOut, /*reqid=*/16384);
  EXPECT_TRUE(absl::IsInvalidArgument(k.dataplane->AddPolicy(p)));

  p = Policy(Net("10.1.0.0", 16, "10.2.0.0", 16), Direction::kOut);
  p.selector.source_port = 500;  // No protocol.
  EXPECT_TRUE(absl::IsInvalidArgument(k.dataplane->AddPolicy(p)));

  // In a batch, the index of the bad one; nothing is sent.
  std::vector<PolicyConfig> batch(5, Policy(Net("10.1.0.0", 16, "10.2.0.0", 16), Direction::kIn));
  batch[3].selector.destination_prefix = 33;
  status = k.dataplane->AddPolicies(batch);
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_THAT(std::string(status.message()), HasSubstr("policy 4 of 5"));
  EXPECT_TRUE(k.requests->datagrams().empty());
}

std::vector<PolicyConfig> ManyPolicies(size_t n, Direction direction = Direction::kOut) {
  std::vector<PolicyConfig> out;
  for (size_t i = 0; i < n; ++i) {
    std::string destination = absl::StrFormat("10.%d.%d.0", 100 + i / 256, i % 256);
    out.push_back(Policy(Net("172.16.0.0", 16, destination.c_str(), 24), direction,
                         kReqidFirst + static_cast<uint32_t>(i % 1000)));
  }
  return out;
}

TEST(PolicyBytes, BatchesAreBoundedAndNumberedInOrder) {
  FakeKernel k = MakeFake();
  std::vector<PolicyConfig> policies = ManyPolicies(1000);
  ASSERT_TRUE(k.dataplane->AddPolicies(policies).ok());

  std::vector<Bytes> datagrams = k.requests->datagrams();
  EXPECT_GE(datagrams.size(), 1000 / XfrmDataplane::kBatchMaxMessages);
  EXPECT_LT(datagrams.size(), 20u);
  size_t total = 0;
  uint32_t expected_seq = 0;
  for (const Bytes& datagram : datagrams) {
    EXPECT_LE(datagram.size(), 32u * 1024);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data());
    int remaining = static_cast<int>(datagram.size());
    size_t in_datagram = 0;
    while (mnl_nlmsg_ok(nlh, remaining)) {
      if (total == 0) expected_seq = nlh->nlmsg_seq;
      EXPECT_EQ(nlh->nlmsg_seq, expected_seq++);
      EXPECT_EQ(nlh->nlmsg_type, XFRM_MSG_UPDPOLICY);
      Decoded d = Decode(Bytes(reinterpret_cast<const uint8_t*>(nlh),
                               reinterpret_cast<const uint8_t*>(nlh) + nlh->nlmsg_len),
                         sizeof(xfrm_userpolicy_info));
      auto info = As<xfrm_userpolicy_info>(d.fixed);
      EXPECT_EQ(memcmp(&info.sel.daddr, policies[total].selector.destination.data(), 4), 0);
      ++total;
      ++in_datagram;
      nlh = mnl_nlmsg_next(nlh, &remaining);
    }
    EXPECT_EQ(remaining, 0);
    EXPECT_LE(in_datagram, XfrmDataplane::kBatchMaxMessages);
  }
  EXPECT_EQ(total, 1000u);
}

TEST(PolicyBytes, BatchReportsTheFirstRefusedPolicy) {
  FakeKernel k = MakeFake();
  std::vector<PolicyConfig> policies = ManyPolicies(300);
  // Policies 1-4 succeed, 5 and 7 are refused.
  for (int i = 0; i < 4; ++i) k.requests->FailNext(0);
  k.requests->FailNext(EINVAL, "Invalid policy template");
  k.requests->FailNext(0);
  k.requests->FailNext(ENOMEM);
  absl::Status status = k.dataplane->AddPolicies(policies);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  std::string message(status.message());
  EXPECT_THAT(message, HasSubstr("add policy 5 of 300 (out 172.16.0.0/16 -> 10.100.4.0/24"));
  EXPECT_THAT(message, HasSubstr("(kernel: Invalid policy template)"));
  EXPECT_THAT(message, HasSubstr("2 of the "));
  EXPECT_THAT(message, HasSubstr("were not sent"));
  EXPECT_EQ(k.requests->datagrams().size(), 1u);  // Stopped after the first datagram.
}

TEST(PolicyBytes, DeleteNamesSelectorDirectionMarkAndIfId) {
  FakeKernel k = MakeFake();
  Selector s = Net("2001:db8:1::", 48, "2001:db8:2::", 48);
  ASSERT_TRUE(k.dataplane->DeletePolicy(s, Direction::kIn, 0x5, 0xf, 3).ok());
  Decoded d = Decode(k.requests->messages()[0], sizeof(xfrm_userpolicy_id));
  EXPECT_EQ(d.header.nlmsg_type, XFRM_MSG_DELPOLICY);
  auto id = As<xfrm_userpolicy_id>(d.fixed);
  EXPECT_EQ(id.dir, XFRM_POLICY_IN);
  EXPECT_EQ(id.sel.family, AF_INET6);
  EXPECT_EQ(id.sel.prefixlen_s, 48);
  EXPECT_EQ(memcmp(id.sel.daddr.a6, s.destination.data(), 16), 0);
  EXPECT_EQ(id.index, 0u);
  EXPECT_THAT(d.types(), UnorderedElementsAre(XFRMA_MARK, XFRMA_IF_ID));

  k.requests->FailNext(ENOENT);
  absl::Status status = k.dataplane->DeletePolicy(s, Direction::kOut);
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("delete policy out 2001:db8:1::/48 -> 2001:db8:2::/48"));
}

// --- events, from a fake event socket ---

Bytes ExpireMessage(bool hard, uint32_t reqid, uint32_t spi) {
  xfrm_user_expire expire = {};
  expire.state.family = AF_INET;
  memcpy(&expire.state.id.daddr, Ip("192.0.2.2").data(), 4);
  expire.state.id.spi = htonl(spi);
  expire.state.id.proto = IPPROTO_ESP;
  expire.state.reqid = reqid;
  expire.hard = hard ? 1 : 0;
  return FakeNetlinkTransport::Message(XFRM_MSG_EXPIRE, 0, 0, &expire, sizeof(expire));
}

Bytes AcquireMessage(uint32_t reqid) {
  xfrm_user_acquire acquire = {};
  acquire.sel.family = AF_INET;
  memcpy(&acquire.sel.saddr, Ip("10.1.0.5").data(), 4);
  memcpy(&acquire.sel.daddr, Ip("10.2.0.7").data(), 4);
  acquire.sel.prefixlen_s = acquire.sel.prefixlen_d = 32;
  acquire.sel.proto = IPPROTO_UDP;
  acquire.sel.dport = htons(53);
  acquire.sel.dport_mask = 0xffff;
  return FakeNetlinkTransport::Message(XFRM_MSG_ACQUIRE, 0, 0, &acquire, sizeof(acquire),
                                       [&](nlmsghdr* nlh) {
                                         xfrm_user_tmpl tmpl = {};
                                         tmpl.reqid = reqid;
                                         tmpl.family = AF_INET;
                                         mnl_attr_put(nlh, XFRMA_TMPL, sizeof(tmpl), &tmpl);
                                       });
}

class EventCollector {
 public:
  void Add(const DataplaneEvent& e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  // Waits up to `timeout` for `n` events.
  std::vector<DataplaneEvent> Wait(size_t n, absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return events_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<DataplaneEvent> events_ ABSL_GUARDED_BY(mu_);
};

TEST(Events, ExpiresAndAcquiresOfStraitReqidsReachTheSubscriber) {
  FakeKernel k = MakeFake(/*with_events=*/true);
  EventCollector collector;
  k.dataplane->Subscribe([&](const DataplaneEvent& e) { collector.Add(e); });

  k.events->Queue(ExpireMessage(false, 7, 0x1111));  // Another daemon's: dropped.
  k.events->Queue(ExpireMessage(false, kReqid, 0x2222));
  k.events->QueueOverflow();
  k.events->Queue(ExpireMessage(true, kReqid, 0x3333));
  k.events->Queue(AcquireMessage(kReqid));
  std::vector<DataplaneEvent> events = collector.Wait(3);
  ASSERT_EQ(events.size(), 3u);

  EXPECT_EQ(events[0].kind, DataplaneEvent::Kind::kSoftExpire);
  EXPECT_EQ(events[0].sa.spi, 0x2222u);
  EXPECT_EQ(events[0].sa.destination, Ip("192.0.2.2"));
  EXPECT_EQ(events[0].reqid, kReqid);
  EXPECT_EQ(events[1].kind, DataplaneEvent::Kind::kHardExpire);
  EXPECT_EQ(events[1].sa.spi, 0x3333u);
  EXPECT_EQ(events[2].kind, DataplaneEvent::Kind::kAcquire);
  EXPECT_EQ(events[2].reqid, kReqid);
  ASSERT_TRUE(events[2].selector.has_value());
  EXPECT_EQ(events[2].selector->source, Ip("10.1.0.5"));
  EXPECT_EQ(events[2].selector->destination_prefix, 32);
  EXPECT_EQ(events[2].selector->ip_protocol, IPPROTO_UDP);
  EXPECT_EQ(events[2].selector->destination_port, 53);

  XfrmDataplaneStats stats = k.dataplane->stats();
  EXPECT_EQ(stats.events_delivered, 3u);
  EXPECT_EQ(stats.events_foreign, 1u);
  EXPECT_EQ(stats.events_lost, 1u);
}

TEST(Events, ThreadStopsPromptlyWhenIdle) {
  for (int i = 0; i < 20; ++i) {
    FakeKernel k = MakeFake(/*with_events=*/true);
    auto start = std::chrono::steady_clock::now();
    k.dataplane.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  }
}

// --- against the kernel, in this process's own network namespace ---

std::string IpTool() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "ip";
}

int Shell(const std::string& command) { return system(command.c_str()); }

std::string ShellOutput(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_private_netns) GTEST_SKIP() << "needs root for a private network namespace";
    ASSERT_EQ(Shell(IpTool() + " xfrm policy flush && " + IpTool() + " xfrm state flush"), 0);
    absl::StatusOr<XfrmDataplanePtr> dataplane = XfrmDataplane::Create();
    ASSERT_TRUE(dataplane.ok()) << dataplane.status();
    dataplane_ = *std::move(dataplane);
  }

  std::vector<PolicyConfig> Listed() {
    absl::StatusOr<InstalledState> state = dataplane_->List();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? state->policies : std::vector<PolicyConfig>{};
  }

  XfrmDataplanePtr dataplane_;
};

void ExpectSamePolicy(const PolicyConfig& got, const PolicyConfig& want) {
  EXPECT_EQ(got.selector, want.selector) << xfrm::SelectorToString(got.selector);
  EXPECT_EQ(got.direction, want.direction);
  EXPECT_EQ(got.tunnel_source, want.tunnel_source);
  EXPECT_EQ(got.tunnel_destination, want.tunnel_destination);
  EXPECT_EQ(got.reqid, want.reqid);
  EXPECT_EQ(got.priority,
            want.priority != 0 ? want.priority : xfrm::DefaultPriority(want.selector));
  EXPECT_EQ(got.mark, want.mark);
  EXPECT_EQ(got.mark_mask, want.mark_mask);
  EXPECT_EQ(got.if_id, want.if_id);
}

const PolicyConfig* Find(const std::vector<PolicyConfig>& policies, const Selector& selector,
                         Direction direction) {
  for (const PolicyConfig& p : policies) {
    if (p.selector == selector && p.direction == direction) return &p;
  }
  return nullptr;
}

class KernelPolicyTest : public KernelTest, public ::testing::WithParamInterface<bool> {
 protected:
  Selector Nets() const {
    return GetParam() ? Net("2001:db8:a::", 48, "2001:db8:b::", 48)
                      : Net("10.1.0.0", 16, "10.2.0.0", 16);
  }
};

TEST_P(KernelPolicyTest, AddListReplaceDelete) {
  Selector nets = Nets();
  std::vector<PolicyConfig> added;
  for (Direction d : {Direction::kIn, Direction::kOut, Direction::kFwd}) {
    added.push_back(Policy(nets, d));
    ASSERT_TRUE(dataplane_->AddPolicy(added.back()).ok()) << DirectionName(d);
  }
  // One with everything set, and an explicit priority.
  PolicyConfig marked = Policy(nets, Direction::kOut, kReqid + 1);
  marked.selector.ip_protocol = IPPROTO_TCP;
  marked.selector.source_port = 179;
  marked.priority = 1500;
  marked.mark = 0x1;
  marked.mark_mask = 0xff;
  marked.if_id = 4;
  ASSERT_TRUE(dataplane_->AddPolicy(marked).ok());
  added.push_back(marked);

  std::vector<PolicyConfig> listed = Listed();
  ASSERT_EQ(listed.size(), 4u);
  for (const PolicyConfig& want : added) {
    const PolicyConfig* got = nullptr;
    for (const PolicyConfig& p : listed) {
      if (p.selector == want.selector && p.direction == want.direction && p.mark == want.mark) {
        got = &p;
      }
    }
    ASSERT_NE(got, nullptr) << DirectionName(want.direction);
    ExpectSamePolicy(*got, want);
  }

  // The same selector and direction again replaces.
  PolicyConfig replacement = Policy(nets, Direction::kOut, kReqid + 2);
  ASSERT_TRUE(dataplane_->AddPolicy(replacement).ok());
  listed = Listed();
  EXPECT_EQ(listed.size(), 4u);
  const PolicyConfig* out = nullptr;
  for (const PolicyConfig& p : listed) {
    if (p.direction == Direction::kOut && p.mark_mask == 0) out = &p;
  }
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->reqid, kReqid + 2);

  for (Direction d : {Direction::kIn, Direction::kOut, Direction::kFwd}) {
    ASSERT_TRUE(dataplane_->DeletePolicy(nets, d).ok()) << DirectionName(d);
  }
  // A marked policy is found only with its mark and if_id.
  absl::Status unmarked = dataplane_->DeletePolicy(marked.selector, Direction::kOut);
  EXPECT_TRUE(absl::IsNotFound(unmarked)) << unmarked;
  ASSERT_TRUE(dataplane_
                  ->DeletePolicy(marked.selector, Direction::kOut, marked.mark, marked.mark_mask,
                                 marked.if_id)
                  .ok());
  EXPECT_TRUE(Listed().empty());

  absl::Status missing = dataplane_->DeletePolicy(nets, Direction::kIn);
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  EXPECT_THAT(std::string(missing.message()), HasSubstr("delete policy in"));
}

TEST_P(KernelPolicyTest, BatchedAddsListAndDelete) {
  Selector nets = Nets();
  std::vector<PolicyConfig> batch;
  for (Direction d : {Direction::kIn, Direction::kOut, Direction::kFwd}) {
    batch.push_back(Policy(nets, d));
  }
  Selector other = GetParam() ? Net("2001:db8:c::", 48, "2001:db8:d::", 64)
                              : Net("10.3.0.0", 16, "10.4.5.0", 24);
  batch.push_back(Policy(other, Direction::kOut, kReqid + 3));
  ASSERT_TRUE(dataplane_->AddPolicies(batch).ok());
  std::vector<PolicyConfig> listed = Listed();
  ASSERT_EQ(listed.size(), batch.size());
  for (const PolicyConfig& want : batch) {
    const PolicyConfig* got = Find(listed, want.selector, want.direction);
    ASSERT_NE(got, nullptr);
    ExpectSamePolicy(*got, want);
  }
  // Again: all replaced, none added.
  ASSERT_TRUE(dataplane_->AddPolicies(batch).ok());
  EXPECT_EQ(Listed().size(), batch.size());
  for (const PolicyConfig& p : batch) {
    ASSERT_TRUE(dataplane_->DeletePolicy(p.selector, p.direction).ok());
  }
  EXPECT_TRUE(Listed().empty());
}

INSTANTIATE_TEST_SUITE_P(Families, KernelPolicyTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "IPv6" : "IPv4";
                         });

TEST_F(KernelTest, ReconcileRemovesOnlyUnwantedStraitState) {
  PolicyConfig keep = Policy(Net("10.1.0.0", 16, "10.2.0.0", 16), Direction::kOut);
  PolicyConfig stale = Policy(Net("10.5.0.0", 16, "10.6.0.0", 16), Direction::kIn, kReqid + 5);
  PolicyConfig stale_marked = stale;
  stale_marked.direction = Direction::kFwd;
  stale_marked.mark = 0x7;
  stale_marked.mark_mask = 0xf;
  stale_marked.if_id = 2;
  ASSERT_TRUE(dataplane_->AddPolicies({keep, stale, stale_marked}).ok());
  // An operator's policy, and strongSwan-style ones with small reqids, some
  // even with the same selectors: not ours, never touched.
  std::string ip = IpTool();
  ASSERT_EQ(Shell(ip + " xfrm policy add src 10.8.0.0/16 dst 10.9.0.0/16 dir out"
                       " tmpl src 192.0.2.1 dst 192.0.2.9 proto esp reqid 1 mode tunnel"),
            0);
  ASSERT_EQ(Shell(ip + " xfrm policy add src 10.5.0.0/16 dst 10.6.0.0/16 dir out priority 375423"
                       " tmpl src 192.0.2.1 dst 192.0.2.9 proto esp reqid 2 mode tunnel"),
            0);
  ASSERT_EQ(Shell(ip + " xfrm policy add src 10.7.0.0/16 dst 10.6.0.0/16 dir in"),
            0);  // No template at all.

  InstalledState wanted;
  wanted.policies = {keep};
  absl::StatusOr<ReconcileResult> result = Reconcile(*dataplane_, wanted);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->policies_removed, 2u);
  EXPECT_EQ(result->sas_removed, 0u);

  std::vector<PolicyConfig> listed = Listed();
  ASSERT_EQ(listed.size(), 1u);
  ExpectSamePolicy(listed[0], keep);
  std::string all = ShellOutput(ip + " xfrm policy list");
  EXPECT_THAT(all, HasSubstr("src 10.8.0.0/16 dst 10.9.0.0/16"));
  EXPECT_THAT(all, HasSubstr("src 10.5.0.0/16 dst 10.6.0.0/16 \n\tdir out priority 375423"));
  EXPECT_THAT(all, HasSubstr("src 10.7.0.0/16 dst 10.6.0.0/16"));
  EXPECT_THAT(all, Not(HasSubstr("dir fwd")));
  // Idempotent.
  result = Reconcile(*dataplane_, wanted);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->policies_removed, 0u);
}

TEST_F(KernelTest, ThousandPoliciesInBatches) {
  std::vector<PolicyConfig> policies = ManyPolicies(1000, Direction::kFwd);
  auto start = absl::Now();
  ASSERT_TRUE(dataplane_->AddPolicies(policies).ok());
  absl::Duration took = absl::Now() - start;
  std::printf("1000 policies in %s\n", absl::FormatDuration(took).c_str());
  std::vector<PolicyConfig> listed = Listed();
  ASSERT_EQ(listed.size(), 1000u);
  for (size_t i : {size_t{0}, size_t{499}, size_t{999}}) {
    const PolicyConfig* got = Find(listed, policies[i].selector, Direction::kFwd);
    ASSERT_NE(got, nullptr) << i;
    ExpectSamePolicy(*got, policies[i]);
  }
  absl::StatusOr<ReconcileResult> result = Reconcile(*dataplane_, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->policies_removed, 1000u);
  EXPECT_TRUE(Listed().empty());
}

// This machine's kernel has XFRM but no ESP: adding an SA must come back as
// a clean, explained Unimplemented. On a kernel with ESP the SA must
// install, list (without keys), count and delete.
TEST_F(KernelTest, EspSaAgainstThisKernel) {
  for (const Algorithm& a : {kAlgorithms[0], kAlgorithms[2]}) {
    SaConfig sa = FullSa(a, false);
    absl::Status added = dataplane_->AddSa(sa);
    std::printf("AddSa %s on this kernel: %s\n", a.label, added.ToString().c_str());
    if (!added.ok()) {
      EXPECT_TRUE(absl::IsUnimplemented(added)) << added;
      EXPECT_THAT(std::string(added.message()), HasSubstr("add SA spi 0xc0011234 dst 192.0.2.2"));
      EXPECT_THAT(std::string(added.message()), HasSubstr("(kernel: Requested"));
      EXPECT_THAT(std::string(added.message()), HasSubstr("lacks ESP"));
      continue;
    }
    absl::StatusOr<InstalledState> state = dataplane_->List();
    ASSERT_TRUE(state.ok()) << state.status();
    ASSERT_EQ(state->sas.size(), 1u);
    EXPECT_EQ(state->sas[0].id, sa.id);
    EXPECT_EQ(state->sas[0].encr_id, a.encr_id);
    EXPECT_EQ(state->sas[0].key_bits, a.key_bits);
    EXPECT_EQ(state->sas[0].mark, sa.mark);
    EXPECT_TRUE(state->sas[0].encr_key.empty());
    EXPECT_TRUE(dataplane_->GetCounters(sa.id).ok());
    EXPECT_TRUE(absl::IsAlreadyExists(dataplane_->AddSa(sa)));
    EXPECT_TRUE(dataplane_->DeleteSa(sa.id).ok());
  }
  SaId missing{Ip("192.0.2.77"), 0x1234};
  absl::Status deleted = dataplane_->DeleteSa(missing);
  EXPECT_TRUE(absl::IsNotFound(deleted)) << deleted;
  EXPECT_THAT(std::string(deleted.message()), HasSubstr("delete SA spi 0x00001234 dst 192.0.2.77"));
  EXPECT_TRUE(absl::IsNotFound(dataplane_->GetCounters(missing).status()));
  absl::StatusOr<InstalledState> state = dataplane_->List();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(state->sas.empty());
}

TEST_F(KernelTest, EventThreadStartsAndStops) {
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<XfrmDataplanePtr> dataplane = XfrmDataplane::Create();
    ASSERT_TRUE(dataplane.ok()) << dataplane.status();
    auto start = std::chrono::steady_clock::now();
    dataplane->reset();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  }
}

// Traffic that matches an outbound policy without an SA makes the kernel
// ask for one: a real XFRM_MSG_ACQUIRE reaches the subscriber, and the
// larval SA the kernel holds meanwhile (SPI 0) is not listed as ours.
TEST_F(KernelTest, AcquireFromRealTraffic) {
  std::string ip = IpTool();
  // Loopback skips XFRM unless told otherwise (disable_xfrm), per namespace.
  ASSERT_EQ(Shell(ip + " link set lo up && " + ip + " addr replace 192.0.2.1/32 dev lo && " + ip +
                  " route replace 198.51.100.0/24 dev lo src 192.0.2.1 && "
                  "echo 0 > /proc/sys/net/ipv4/conf/lo/disable_xfrm"),
            0);
  EventCollector collector;
  dataplane_->Subscribe([&](const DataplaneEvent& e) { collector.Add(e); });
  PolicyConfig out = Policy(Net("192.0.2.1", 32, "198.51.100.0", 24), Direction::kOut);
  ASSERT_TRUE(dataplane_->AddPolicy(out).ok());

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to = {};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, "198.51.100.7", &to.sin_addr);
  // Dropped (or queued) while the SA is being acquired; only the event matters.
  sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  close(fd);

  std::vector<DataplaneEvent> events = collector.Wait(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, DataplaneEvent::Kind::kAcquire);
  EXPECT_EQ(events[0].reqid, kReqid);
  ASSERT_TRUE(events[0].selector.has_value());
  EXPECT_EQ(events[0].selector->destination, Ip("198.51.100.7"));
  EXPECT_EQ(events[0].selector->destination_port, 9);
  EXPECT_EQ(events[0].selector->ip_protocol, IPPROTO_UDP);

  EXPECT_THAT(ShellOutput(ip + " xfrm state list"), HasSubstr("spi 0x00000000"));
  absl::StatusOr<InstalledState> state = dataplane_->List();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(state->sas.empty());
  EXPECT_EQ(state->policies.size(), 1u);
}

}  // namespace
}  // namespace strait::dataplane

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Before any thread exists: the namespace is per thread, and every thread
  // and child process made later inherits it.
  if (geteuid() == 0) {
    if (unshare(CLONE_NEWNET) == 0) {
      strait::dataplane::g_private_netns = true;
    } else {
      std::perror("unshare(CLONE_NEWNET)");
    }
  }
  return RUN_ALL_TESTS();
}
