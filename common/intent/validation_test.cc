#include "common/intent/validation.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace strait::intent {
namespace {

using ::strait::v1::Tunnel;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Matcher;
using ::testing::Not;

constexpr char kPsk[] = "correct horse battery staple 42";

Matcher<FieldViolation> Violation(const std::string& field, const std::string& reason_part) {
  return AllOf(Field(&FieldViolation::field, field),
               Field(&FieldViolation::reason, HasSubstr(reason_part)));
}

Tunnel ParseText(const std::string& text) {
  Tunnel tunnel;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &tunnel)) << text;
  return tunnel;
}

// The README's example tunnel, without the fields ApplyDefaults fills.
Tunnel BaseTunnel() {
  Tunnel tunnel = ParseText(R"pb(
    metadata {
      name: "branch-to-vpc"
      labels { key: "env" value: "prod" }
    }
    spec {
      node: "node-a"
      local { address: "192.0.2.1" id: "node-a.example.com" traffic_selectors: "10.1.0.0/24" }
      remote {
        address: "192.0.2.2"
        id: "vpc-gw.example.com"
        traffic_selectors: [ "10.2.0.0/24", "10.3.0.0/16" ]
      }
      ike { proposals: [ "aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048" ] }
      esp { proposals: "aes256gcm16-ecp384" }
    }
  )pb");
  tunnel.mutable_spec()->mutable_auth()->mutable_psk()->set_value(kPsk);
  return tunnel;
}

// `tunnel` after ApplyDefaults, validated against the default policy.
std::vector<FieldViolation> Validate(Tunnel tunnel, const ValidationPolicy& policy = {}) {
  ApplyDefaults(&tunnel);
  return ValidateTunnel(tunnel, policy);
}

// A node-to-node tunnel from node-a (10.1.0.0/24) to node-b (10.2.0.0/24).
Tunnel NodeToNode(const std::string& name) {
  Tunnel t = BaseTunnel();
  t.mutable_metadata()->set_name(name);
  t.mutable_spec()->mutable_remote()->set_node("node-b");
  t.mutable_spec()->mutable_remote()->clear_traffic_selectors();
  t.mutable_spec()->mutable_remote()->add_traffic_selectors("10.2.0.0/24");
  return t;
}

// ---------------------------------------------------------------------------
// ApplyDefaults

TEST(ApplyDefaultsTest, FillsUnsetFields) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->clear_id();
  ApplyDefaults(&t);
  EXPECT_EQ(t.kind(), "Tunnel");
  EXPECT_EQ(t.spec().ike().lifetime().seconds(), 8 * 3600);
  EXPECT_EQ(t.spec().esp().lifetime().seconds(), 3600);
  EXPECT_EQ(t.spec().esp().rekey_margin().seconds(), 9 * 60);
  EXPECT_EQ(t.spec().esp().replay_window(), 64);
  EXPECT_EQ(t.spec().dpd().interval().seconds(), 30);
  EXPECT_EQ(t.spec().dpd().timeout().seconds(), 150);
  EXPECT_EQ(t.spec().dpd().action(), strait::v1::DPD_ACTION_RESTART);
  EXPECT_EQ(t.spec().start_action(), strait::v1::START_ACTION_START);
  EXPECT_EQ(t.spec().local().id(), "node-a.example.com");
  EXPECT_EQ(t.spec().remote().id(), "192.0.2.2");
}

TEST(ApplyDefaultsTest, KeepsSetFieldsIncludingExplicitZeroDurations) {
  Tunnel t = BaseTunnel();
  t.set_kind("Other");
  t.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(3600);
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(1800);
  t.mutable_spec()->mutable_esp()->set_replay_window(1024);
  t.mutable_spec()->mutable_dpd()->mutable_interval();  // present, 0s
  t.mutable_spec()->mutable_dpd()->mutable_timeout()->set_seconds(0);
  t.mutable_spec()->mutable_dpd()->set_action(strait::v1::DPD_ACTION_HOLD);
  t.mutable_spec()->set_start_action(strait::v1::START_ACTION_ADD);
  ApplyDefaults(&t);
  EXPECT_EQ(t.kind(), "Other");
  EXPECT_EQ(t.spec().ike().lifetime().seconds(), 3600);
  EXPECT_EQ(t.spec().esp().lifetime().seconds(), 1800);
  EXPECT_EQ(t.spec().esp().replay_window(), 1024);
  EXPECT_TRUE(t.spec().dpd().has_interval());
  EXPECT_EQ(t.spec().dpd().interval().seconds(), 0);
  EXPECT_EQ(t.spec().dpd().timeout().seconds(), 0);
  EXPECT_EQ(t.spec().dpd().action(), strait::v1::DPD_ACTION_HOLD);
  EXPECT_EQ(t.spec().start_action(), strait::v1::START_ACTION_ADD);
}

TEST(ApplyDefaultsTest, IsIdempotent) {
  Tunnel once = BaseTunnel();
  ApplyDefaults(&once);
  Tunnel twice = once;
  ApplyDefaults(&twice);
  EXPECT_EQ(once.SerializeAsString(), twice.SerializeAsString());
}

// ---------------------------------------------------------------------------
// ValidateTunnel: what passes

TEST(ValidateTunnelTest, ReadmeExampleIsValid) { EXPECT_THAT(Validate(BaseTunnel()), IsEmpty()); }

TEST(ValidateTunnelTest, NodeToNodeIsValid) {
  EXPECT_THAT(Validate(NodeToNode("a-to-b")), IsEmpty());
}

TEST(ValidateTunnelTest, Ipv6IsValid) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->set_address("2001:db8::1");
  t.mutable_spec()->mutable_remote()->set_address("2001:db8:ffff::2");
  t.mutable_spec()->mutable_local()->add_traffic_selectors("fd00:1::/64");
  t.mutable_spec()->mutable_remote()->add_traffic_selectors("fd00:2::/64");
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, AllAddressesOnOneSideIsFine) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->set_traffic_selectors(0, "0.0.0.0/0");
  EXPECT_THAT(Validate(t), IsEmpty());
  // Both sides all-addresses, but of different families: no single policy
  // captures everything.
  t.mutable_spec()->mutable_local()->set_traffic_selectors(0, "::/0");
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, DefaultsAreWithinTheDefaultPolicy) {
  Tunnel t = BaseTunnel();
  ApplyDefaults(&t);
  EXPECT_THAT(ValidateTunnel(t, ValidationPolicy()), IsEmpty());
}

// ---------------------------------------------------------------------------
// Weak algorithms, one test each.

std::vector<FieldViolation> WithIkeProposal(const std::string& proposal) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_ike()->set_proposals(1, proposal);
  return Validate(t);
}

std::vector<FieldViolation> WithEspProposal(const std::string& proposal) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->set_proposals(0, proposal);
  return Validate(t);
}

TEST(ValidateTunnelTest, RejectsDes) {
  EXPECT_THAT(WithIkeProposal("des-sha256-modp2048"),
              ElementsAre(Violation("spec.ike.proposals[1]", "des is broken")));
}

TEST(ValidateTunnelTest, Rejects3Des) {
  EXPECT_THAT(WithIkeProposal("3des-sha256-modp2048"),
              ElementsAre(Violation("spec.ike.proposals[1]", "3des is broken")));
  EXPECT_THAT(WithEspProposal("3des-sha256"),
              ElementsAre(Violation("spec.esp.proposals[0]", "Sweet32")));
}

TEST(ValidateTunnelTest, RejectsRc4) {
  EXPECT_THAT(WithEspProposal("rc4-sha256"),
              ElementsAre(Violation("spec.esp.proposals[0]", "rc4 (RC4) is broken")));
  EXPECT_THAT(WithEspProposal("arcfour-sha256"),
              ElementsAre(Violation("spec.esp.proposals[0]", "arcfour (RC4) is broken")));
}

TEST(ValidateTunnelTest, RejectsNullEncryption) {
  EXPECT_THAT(WithEspProposal("null-sha256"),
              ElementsAre(Violation("spec.esp.proposals[0]", "unencrypted")));
}

TEST(ValidateTunnelTest, RejectsMd5Integrity) {
  // The PRF derived from md5 is not reported a second time.
  EXPECT_THAT(WithIkeProposal("aes256-md5-modp2048"),
              ElementsAre(Violation("spec.ike.proposals[1]", "md5 is broken")));
  EXPECT_THAT(WithEspProposal("aes256-md5"),
              ElementsAre(Violation("spec.esp.proposals[0]", "md5 is broken")));
}

TEST(ValidateTunnelTest, RejectsSha1Integrity) {
  EXPECT_THAT(WithIkeProposal("aes256-sha1-modp2048"),
              ElementsAre(Violation("spec.ike.proposals[1]", "sha1 is refused")));
  EXPECT_THAT(WithEspProposal("aes128-sha1"),
              ElementsAre(Violation("spec.esp.proposals[0]", "SHA-1")));
}

TEST(ValidateTunnelTest, RejectsMd5Prf) {
  EXPECT_THAT(WithIkeProposal("aes256gcm16-prfmd5-ecp384"),
              ElementsAre(Violation("spec.ike.proposals[1]", "prfmd5 is broken")));
}

TEST(ValidateTunnelTest, RejectsSha1Prf) {
  EXPECT_THAT(WithIkeProposal("aes256-sha256-prfsha1-ecp384"),
              ElementsAre(Violation("spec.ike.proposals[1]", "prfsha1 is refused")));
}

TEST(ValidateTunnelTest, RejectsDhGroup1) {
  EXPECT_THAT(WithIkeProposal("aes256-sha256-modp768"),
              ElementsAre(Violation("spec.ike.proposals[1]", "modp768 (DH group 1)")));
}

TEST(ValidateTunnelTest, RejectsDhGroup2) {
  EXPECT_THAT(WithIkeProposal("aes256-sha256-modp1024"),
              ElementsAre(Violation("spec.ike.proposals[1]", "modp1024 (DH group 2)")));
  // As an ESP PFS group too.
  EXPECT_THAT(WithEspProposal("aes256gcm16-modp1024"),
              ElementsAre(Violation("spec.esp.proposals[0]", "DH group 2")));
}

TEST(ValidateTunnelTest, RejectsDhGroup5) {
  EXPECT_THAT(WithIkeProposal("aes256-sha256-modp1536"),
              ElementsAre(Violation("spec.ike.proposals[1]", "modp1536 (DH group 5)")));
}

TEST(ValidateTunnelTest, ReportsEveryWeakTransformOfAProposal) {
  EXPECT_THAT(WithIkeProposal("3des-md5-modp1024"),
              ElementsAre(Violation("spec.ike.proposals[1]", "3des"),
                          Violation("spec.ike.proposals[1]", "md5"),
                          Violation("spec.ike.proposals[1]", "DH group 2")));
}

TEST(ValidateTunnelTest, RejectsUnparsableProposal) {
  EXPECT_THAT(WithIkeProposal("aes256gcm16-ecp384"),
              ElementsAre(Violation("spec.ike.proposals[1]", "PRF must be given")));
  EXPECT_THAT(WithEspProposal("aes256-blowfish"),
              ElementsAre(Violation("spec.esp.proposals[0]", "unknown algorithm keyword")));
}

TEST(ValidateTunnelTest, RejectsMissingIkeProposals) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_ike()->clear_proposals();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.ike.proposals", "at least one proposal")));
}

TEST(ValidateTunnelTest, RejectsMissingEspProposals) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->clear_proposals();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.esp.proposals", "at least one proposal")));
}

// ---------------------------------------------------------------------------
// Selectors and addresses.

TEST(ValidateTunnelTest, RejectsAllAddressesOnBothSides) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->set_traffic_selectors(0, "0.0.0.0/0");
  t.mutable_spec()->mutable_remote()->set_traffic_selectors(1, "0.0.0.0/0");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.remote.trafficSelectors[1]", "0.0.0.0/0 on both sides")));
}

TEST(ValidateTunnelTest, RejectsIpv6AllAddressesOnBothSides) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->add_traffic_selectors("::/0");
  t.mutable_spec()->mutable_remote()->add_traffic_selectors("::/0");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.remote.trafficSelectors[2]", "::/0 on both sides")));
}

TEST(ValidateTunnelTest, RejectsUnparsableSelector) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->set_traffic_selectors(1, "10.3.0.0/33");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.remote.trafficSelectors[1]", "invalid prefix length")));
}

TEST(ValidateTunnelTest, RejectsSelectorWithHostBits) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->set_traffic_selectors(0, "10.1.0.1/24");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.local.trafficSelectors[0]", "did you mean 10.1.0.0/24")));
}

TEST(ValidateTunnelTest, RejectsMissingSelectors) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->clear_traffic_selectors();
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.local.trafficSelectors", "at least one CIDR")));
}

TEST(ValidateTunnelTest, RejectsUnparsableAddress) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->set_address("192.0.2.300");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.local.address", "not an IPv4 or IPv6 address")));
}

TEST(ValidateTunnelTest, RejectsMissingRemoteAddress) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->clear_address();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.address", "is required")));
}

TEST(ValidateTunnelTest, RejectsAddressFamilyMismatch) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->set_address("2001:db8::2");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.address", "same family")));
}

TEST(ValidateTunnelTest, RejectsSameAddressOnBothEnds) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->set_address("192.0.2.1");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.address", "also the local")));
}

TEST(ValidateTunnelTest, RejectsBadIdentity) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_remote()->set_id("gw\texample");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.id", "non-printable")));
}

// ---------------------------------------------------------------------------
// Names and nodes.

TEST(ValidateTunnelTest, RejectsNameThatIsNotADnsLabel) {
  for (const char* name : {"Branch", "-a", "a-", "a_b", "a.b", ""}) {
    Tunnel t = BaseTunnel();
    t.mutable_metadata()->set_name(name);
    EXPECT_THAT(Validate(t), ElementsAre(Field(&FieldViolation::field, "metadata.name"))) << name;
  }
}

TEST(ValidateTunnelTest, RejectsNodeThatIsNotADnsLabel) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->set_node("Node_A");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.node", "not a DNS label")));
}

TEST(ValidateTunnelTest, RejectsMissingNode) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->clear_node();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.node", "is required")));
}

TEST(ValidateTunnelTest, RejectsRemoteNodeThatIsNotADnsLabel) {
  Tunnel t = NodeToNode("a-to-b");
  t.mutable_spec()->mutable_remote()->set_node("node b");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.node", "not a DNS label")));
}

TEST(ValidateTunnelTest, RejectsRemoteNodeEqualToNode) {
  Tunnel t = NodeToNode("a-to-a");
  t.mutable_spec()->mutable_remote()->set_node("node-a");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.remote.node", "two different nodes")));
}

TEST(ValidateTunnelTest, RejectsNodeToNodeWithoutRemoteAddress) {
  Tunnel t = NodeToNode("a-to-b");
  t.mutable_spec()->mutable_remote()->clear_address();
  t.mutable_spec()->mutable_remote()->clear_id();
  auto violations = Validate(t);
  EXPECT_THAT(violations, Contains(Violation("spec.remote.address",
                                             "node-to-node tunnel needs the outer IP "
                                             "address of node node-b")));
}

TEST(ValidateTunnelTest, RejectsNodeOnLocalEnd) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_local()->set_node("node-a");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.local.node", "only the remote end")));
}

TEST(ValidateTunnelTest, RejectsOtherKind) {
  Tunnel t = BaseTunnel();
  t.set_kind("Gateway");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("kind", "\"Gateway\" is not supported")));
}

TEST(ValidateTunnelTest, RejectsEmptyKindWithoutDefaults) {
  Tunnel t = BaseTunnel();
  ApplyDefaults(&t);
  t.clear_kind();
  EXPECT_THAT(ValidateTunnel(t, ValidationPolicy()), ElementsAre(Violation("kind", "required")));
}

// ---------------------------------------------------------------------------
// Pre-shared key.

TEST(ValidateTunnelTest, RejectsMissingPsk) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->clear_auth();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.auth", "is required: psk")));
  // Only a fingerprint (a tunnel as read back) is no key either.
  t.mutable_spec()->mutable_auth()->mutable_psk()->set_fingerprint("sha256:0123");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.auth.psk", "is required")));
}

// A self-signed P-256 CA certificate ("CN=Strait Test CA").
constexpr char kCaPem[] = R"(-----BEGIN CERTIFICATE-----
MIIBhjCCAS2gAwIBAgIUNsoHYyDNOuv5zrhpOl/bRKw95xwwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOU3RyYWl0IFRlc3QgQ0EwHhcNMjYxMTI3MDUwMzUyWhcNMzYx
MTI0MDUwMzUyWjAZMRcwFQYDVQQDDA5TdHJhaXQgVGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABEijzVGGR4NM+aqozgTKLs/ryC6aY3GhMBZmnQ/KvuV8
EEf+Z0n+Mj7y4duX003H9BAX6IZ5XASQLh6nvnxZVMijUzBRMB0GA1UdDgQWBBSG
NnLukcVC7xS9HqU4lOU0xrhpQDAfBgNVHSMEGDAWgBSGNnLukcVC7xS9HqU4lOU0
xrhpQDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIArOj6HEST4z
dBpGOY06T4E1ByF8qMJbNhRKIauU/xA5AiAZkoCtcP3M6W0Avqgjl24Cxge5y3+v
RBJeMH6FLQULrQ==
-----END CERTIFICATE-----
)";

TEST(ValidateTunnelTest, AcceptsCertificateAuth) {
  Tunnel t = BaseTunnel();
  strait::v1::CertificateAuth* cert = t.mutable_spec()->mutable_auth()->mutable_certificate();
  cert->set_ca_certificates(kCaPem);
  cert->set_certificate_file("/etc/strait/ike.crt");
  cert->set_private_key_file("/etc/strait/ike.key");
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, RejectsBadCertificateAuth) {
  Tunnel t = BaseTunnel();
  strait::v1::CertificateAuth* cert = t.mutable_spec()->mutable_auth()->mutable_certificate();
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.auth.certificate.caCertificates", "is required")));
  cert->set_ca_certificates(
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.auth.certificate.caCertificates", "does not parse")));
  cert->set_ca_certificates("just text");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.auth.certificate.caCertificates",
                                                 "holds no certificate")));
  cert->set_ca_certificates(kCaPem);
  cert->set_private_key_file("ike.key");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.auth.certificate.privateKeyFile",
                                                 "not an absolute path")));
}

TEST(ValidateTunnelTest, RejectsShortPsk) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_auth()->mutable_psk()->set_value("fifteen chars!!");
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.auth.psk", "at least 16 characters")));
  t.mutable_spec()->mutable_auth()->mutable_psk()->set_value("sixteen chars!!!");
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, MessagesNeverContainThePsk) {
  // A tunnel wrong in every way, with a short key and a long one.
  for (const char* psk : {"tiny-key", kPsk}) {
    Tunnel t = BaseTunnel();
    t.set_kind("Bad");
    t.mutable_metadata()->set_name("Bad Name");
    t.mutable_spec()->mutable_local()->set_address("not an address");
    t.mutable_spec()->mutable_ike()->set_proposals(0, "3des-md5-modp768");
    t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(-5);
    t.mutable_spec()->mutable_auth()->mutable_psk()->set_value(psk);
    auto violations = Validate(t);
    ASSERT_THAT(violations, Not(IsEmpty()));
    std::string all = std::string(ViolationsToStatus(violations).message());
    EXPECT_THAT(all, Not(HasSubstr(psk)));
  }
}

// ---------------------------------------------------------------------------
// Lifetimes.

TEST(ValidateTunnelTest, RejectsIkeLifetimeOverPolicy) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(int64_t{8} * 3600 + 1);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.ike.lifetime",
                                                 "longer than the maximum IKE lifetime 8h")));
  t.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(int64_t{8} * 3600);
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, RejectsChildLifetimeOverPolicy) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(int64_t{2} * 3600);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.esp.lifetime",
                                                 "longer than the maximum child SA lifetime 1h")));
}

TEST(ValidateTunnelTest, CustomPolicyMovesTheLimits) {
  ValidationPolicy policy;
  policy.max_ike_lifetime = absl::Hours(24);
  policy.max_child_lifetime = absl::Minutes(30);

  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(int64_t{12} * 3600);
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(int64_t{20} * 60);
  EXPECT_THAT(Validate(t, policy), IsEmpty());
  // Over the default policy's IKE limit.
  EXPECT_THAT(Validate(t), ElementsAre(Field(&FieldViolation::field, "spec.ike.lifetime")));

  // The default child lifetime, 1h, is now too long.
  t.mutable_spec()->mutable_esp()->clear_lifetime();
  EXPECT_THAT(Validate(t, policy),
              ElementsAre(Violation("spec.esp.lifetime", "maximum child SA lifetime 30m")));
}

TEST(ValidateTunnelTest, RejectsZeroAndNegativeLifetimes) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_ike()->mutable_lifetime();  // 0s
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(-60);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.ike.lifetime", "must be positive"),
                                       Violation("spec.esp.lifetime", "negative")));
}

TEST(ValidateTunnelTest, RejectsRekeyMarginEqualToLifetime) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(600);
  t.mutable_spec()->mutable_esp()->mutable_rekey_margin()->set_seconds(600);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.esp.rekeyMargin",
                                                 "10m is not shorter than the child SA lifetime")));
}

TEST(ValidateTunnelTest, RejectsRekeyMarginLongerThanLifetime) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(300);  // margin defaults to 9m
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.esp.rekeyMargin",
                                    "9m is not shorter than the child SA lifetime 5m")));
  t.mutable_spec()->mutable_esp()->mutable_rekey_margin()->set_seconds(299);
  EXPECT_THAT(Validate(t), IsEmpty());
}

TEST(ValidateTunnelTest, RejectsZeroRekeyMargin) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->mutable_rekey_margin();
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.esp.rekeyMargin", "must be positive")));
}

TEST(ValidateTunnelTest, RejectsInvalidDurationMessage) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_seconds(60);
  t.mutable_spec()->mutable_esp()->mutable_lifetime()->set_nanos(-1);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.esp.lifetime", "not a valid duration")));
}

// ---------------------------------------------------------------------------
// Dead peer detection.

TEST(ValidateTunnelTest, RejectsDpdDisabledByZeroInterval) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_dpd()->mutable_interval()->set_seconds(0);
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.dpd.interval", "disables dead peer detection")));
}

TEST(ValidateTunnelTest, RejectsDpdDisabledByZeroTimeout) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_dpd()->mutable_timeout()->set_seconds(0);
  EXPECT_THAT(Validate(t),
              ElementsAre(Violation("spec.dpd.timeout", "disables dead peer detection")));
}

TEST(ValidateTunnelTest, RejectsDpdTimeoutNotLongerThanInterval) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_dpd()->mutable_interval()->set_seconds(150);
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.dpd.timeout",
                                                 "2m30s must be longer than the interval 2m30s")));
  t.mutable_spec()->mutable_dpd()->mutable_interval()->set_seconds(200);
  EXPECT_THAT(Validate(t), ElementsAre(Field(&FieldViolation::field, "spec.dpd.timeout")));
}

TEST(ValidateTunnelTest, RejectsUnknownEnumValues) {
  Tunnel t = BaseTunnel();
  t.mutable_spec()->mutable_dpd()->set_action(static_cast<strait::v1::DpdAction>(42));
  t.mutable_spec()->set_start_action(static_cast<strait::v1::StartAction>(42));
  EXPECT_THAT(Validate(t), ElementsAre(Violation("spec.dpd.action", "clear, hold or restart"),
                                       Violation("spec.startAction", "add or start")));
}

TEST(ValidateTunnelTest, WithoutDefaultsRequiredFieldsAreNamed) {
  Tunnel t = BaseTunnel();
  t.set_kind("Tunnel");
  auto violations = ValidateTunnel(t, ValidationPolicy());
  EXPECT_THAT(violations, Contains(Violation("spec.ike.lifetime", "is required")));
  EXPECT_THAT(violations, Contains(Violation("spec.dpd.interval", "is required")));
  EXPECT_THAT(violations, Contains(Violation("spec.esp.replayWindow", "must be positive")));
}

// ---------------------------------------------------------------------------
// CheckOverlaps

Tunnel Defaulted(Tunnel t) {
  ApplyDefaults(&t);
  return t;
}

Tunnel External(const std::string& name, const std::string& node, const std::string& local,
                const std::string& remote) {
  Tunnel t = BaseTunnel();
  t.mutable_metadata()->set_name(name);
  t.mutable_spec()->set_node(node);
  t.mutable_spec()->mutable_local()->clear_traffic_selectors();
  t.mutable_spec()->mutable_local()->add_traffic_selectors(local);
  t.mutable_spec()->mutable_remote()->clear_traffic_selectors();
  t.mutable_spec()->mutable_remote()->add_traffic_selectors(remote);
  return Defaulted(t);
}

TEST(CheckOverlapsTest, RejectsOverlapOnTheSameNode) {
  Tunnel existing = External("first", "node-a", "10.1.0.0/16", "10.2.0.0/24");
  Tunnel candidate = BaseTunnel();  // 10.1.0.0/24 <-> 10.2.0.0/24, 10.3.0.0/16
  EXPECT_THAT(CheckOverlaps(candidate, {&existing}),
              ElementsAre(Violation("spec.local.trafficSelectors[0]",
                                    "10.1.0.0/24 <-> 10.2.0.0/24 on node node-a overlaps "
                                    "10.1.0.0/16 <-> 10.2.0.0/24 of tunnel \"first\"")));
}

TEST(CheckOverlapsTest, AllowsOverlapOnOtherNodes) {
  Tunnel existing = External("first", "node-c", "10.1.0.0/24", "10.2.0.0/24");
  EXPECT_THAT(CheckOverlaps(BaseTunnel(), {&existing}), IsEmpty());
}

TEST(CheckOverlapsTest, NeedsBothSidesToOverlap) {
  Tunnel same_local = External("first", "node-a", "10.1.0.0/24", "10.9.0.0/24");
  Tunnel same_remote = External("second", "node-a", "10.8.0.0/24", "10.2.0.0/24");
  Tunnel other_family = External("third", "node-a", "fd00:1::/64", "fd00:2::/64");
  EXPECT_THAT(CheckOverlaps(BaseTunnel(), {&same_local, &same_remote, &other_family}), IsEmpty());
}

TEST(CheckOverlapsTest, SkipsTunnelWithTheSameName) {
  Tunnel old_version = Defaulted(BaseTunnel());
  EXPECT_THAT(CheckOverlaps(BaseTunnel(), {&old_version}), IsEmpty());
}

TEST(CheckOverlapsTest, ReportsEachConflictingTunnel) {
  Tunnel first = External("first", "node-a", "10.1.0.0/24", "10.3.1.0/24");
  Tunnel second = External("second", "node-a", "10.0.0.0/8", "10.2.0.0/23");
  EXPECT_THAT(CheckOverlaps(BaseTunnel(), {&first, &second}),
              ElementsAre(Violation("spec.local.trafficSelectors[0]", "tunnel \"first\""),
                          Violation("spec.local.trafficSelectors[0]", "tunnel \"second\"")));
}

TEST(CheckOverlapsTest, NodeToNodeCandidateOverlapsOnTheRemoteNode) {
  // node-b's half of a-to-b is 10.2.0.0/24 <-> 10.1.0.0/24; a tunnel that
  // node-b owns covers it.
  Tunnel on_b = External("b-to-gw", "node-b", "10.2.0.0/16", "10.1.0.0/24");
  Tunnel candidate = NodeToNode("a-to-b");
  EXPECT_THAT(CheckOverlaps(candidate, {&on_b}),
              ElementsAre(Violation("spec.remote.trafficSelectors[0]",
                                    "10.2.0.0/24 <-> 10.1.0.0/24 on node node-b")));
}

TEST(CheckOverlapsTest, CandidateOverlapsTheMirroredHalfOfANodeToNodeTunnel) {
  Tunnel a_to_b = Defaulted(NodeToNode("a-to-b"));
  Tunnel candidate = External("b-to-gw", "node-b", "10.2.0.0/24", "10.1.0.0/16");
  EXPECT_THAT(CheckOverlaps(candidate, {&a_to_b}),
              ElementsAre(Violation("spec.local.trafficSelectors[0]", "tunnel \"a-to-b\"")));
  // The same selectors in the direction of node-b's half do not collide.
  Tunnel reversed = External("b-to-gw", "node-b", "10.1.0.0/16", "10.2.0.0/24");
  EXPECT_THAT(CheckOverlaps(reversed, {&a_to_b}), IsEmpty());
}

// ---------------------------------------------------------------------------
// ViolationsToStatus and IsDnsLabel

TEST(ViolationsToStatusTest, JoinsFieldAndReason) {
  EXPECT_TRUE(ViolationsToStatus({}).ok());
  absl::Status status = ViolationsToStatus(
      {{"spec.ike.proposals[0]", "3des is broken"}, {"metadata.name", "is required"}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "spec.ike.proposals[0]: 3des is broken; metadata.name: is required");
}

TEST(IsDnsLabelTest, FollowsRfc1123) {
  EXPECT_TRUE(IsDnsLabel("a"));
  EXPECT_TRUE(IsDnsLabel("node-a"));
  EXPECT_TRUE(IsDnsLabel("0node9"));
  EXPECT_TRUE(IsDnsLabel(std::string(63, 'a')));
  EXPECT_FALSE(IsDnsLabel(std::string(64, 'a')));
  EXPECT_FALSE(IsDnsLabel(""));
  EXPECT_FALSE(IsDnsLabel("-a"));
  EXPECT_FALSE(IsDnsLabel("a-"));
  EXPECT_FALSE(IsDnsLabel("Node"));
  EXPECT_FALSE(IsDnsLabel("a.b"));
  EXPECT_FALSE(IsDnsLabel("a_b"));
  EXPECT_FALSE(IsDnsLabel("\xc3\xa9t\xc3\xa9"));
}

}  // namespace
}  // namespace strait::intent
