#include "common/intent/yaml_codec.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/intent/validation.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace strait::intent {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::strait::v1::Tunnel;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kPsk[] = "correct horse battery staple 42";

// The issue's example, verbatim.
constexpr char kSampleYaml[] = R"yaml(kind: Tunnel
metadata:
  name: branch-to-vpc
  labels: {env: prod}
spec:
  node: node-a               # the agent that owns this end
  local:
    address: 192.0.2.1
    id: node-a.example.com
    trafficSelectors: [10.1.0.0/24]
  remote:
    address: 192.0.2.2
    id: vpc-gw.example.com
    trafficSelectors: [10.2.0.0/24, 10.3.0.0/16]
  auth:
    psk: "correct horse battery staple 42"
  ike:
    proposals: [aes256gcm16-prfsha384-ecp384, aes256-sha256-modp2048]
    lifetime: 8h
  esp:
    proposals: [aes256gcm16-ecp384]
    lifetime: 1h
    rekeyMargin: 9m
  dpd: {interval: 30s, timeout: 150s, action: restart}
  startAction: start
)yaml";

constexpr char kSampleProto[] = R"pb(
  kind: "Tunnel"
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
    auth { psk { value: "correct horse battery staple 42" } }
    ike {
      proposals: [ "aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048" ]
      lifetime { seconds: 28800 }
    }
    esp {
      proposals: "aes256gcm16-ecp384"
      lifetime { seconds: 3600 }
      rekey_margin { seconds: 540 }
    }
    dpd {
      interval { seconds: 30 }
      timeout { seconds: 150 }
      action: DPD_ACTION_RESTART
    }
    start_action: START_ACTION_START
  }
)pb";

Tunnel ParseText(const std::string& text) {
  Tunnel tunnel;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &tunnel)) << text;
  return tunnel;
}

// Parses YAML that must hold exactly one tunnel.
Tunnel ParseOne(const std::string& yaml) {
  auto tunnels = ParseTunnelsYaml(yaml);
  EXPECT_TRUE(tunnels.ok()) << tunnels.status();
  if (!tunnels.ok() || tunnels->size() != 1) {
    ADD_FAILURE() << "expected one tunnel";
    return Tunnel();
  }
  return tunnels->front();
}

// The error ParseTunnelsYaml gives for `yaml`.
std::string ParseError(const std::string& yaml) {
  auto tunnels = ParseTunnelsYaml(yaml);
  EXPECT_FALSE(tunnels.ok()) << yaml;
  if (tunnels.ok()) {
    return "";
  }
  EXPECT_EQ(tunnels.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(tunnels.status().message());
}

// kSampleYaml with `from` replaced by `to` (which must be present).
std::string Sample(const std::string& from, const std::string& to) {
  std::string yaml = kSampleYaml;
  EXPECT_THAT(yaml, HasSubstr(from));
  return absl::StrReplaceAll(yaml, {{from, to}});
}

std::string Diff(const Tunnel& a, const Tunnel& b) {
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  differencer.Compare(a, b);
  return diff;
}

// ---------------------------------------------------------------------------
// Parsing

TEST(ParseTunnelsYamlTest, SampleParsesIntoTheExpectedProtoAndIsValid) {
  Tunnel tunnel = ParseOne(kSampleYaml);
  Tunnel expected = ParseText(kSampleProto);
  EXPECT_TRUE(MessageDifferencer::Equals(tunnel, expected)) << Diff(tunnel, expected);

  ApplyDefaults(&tunnel);
  EXPECT_THAT(ValidateTunnel(tunnel, ValidationPolicy()), IsEmpty());
}

TEST(ParseTunnelsYamlTest, ParsesNodeToNodeAndReplayWindow) {
  Tunnel t = ParseOne(Sample("  remote:\n", "  remote:\n    node: node-b\n"));
  EXPECT_EQ(t.spec().remote().node(), "node-b");

  Tunnel window =
      ParseOne(Sample("    rekeyMargin: 9m\n", "    rekeyMargin: 9m\n    replayWindow: 1024\n"));
  EXPECT_EQ(window.spec().esp().replay_window(), 1024);
}

TEST(ParseTunnelsYamlTest, ParsesFlowStyleAndInlineRemoteNode) {
  Tunnel t = ParseOne(R"yaml(
kind: Tunnel
metadata: {name: a-to-b}
spec:
  node: node-a
  local: {address: 198.51.100.11, trafficSelectors: [10.1.0.0/24]}
  remote: {node: node-b, address: 198.51.100.12, trafficSelectors: [10.2.0.0/24]}
  auth: {psk: "e2e secret number one 0123456789"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16]}
  dpd: {action: hold}
  startAction: add
)yaml");
  EXPECT_EQ(t.metadata().name(), "a-to-b");
  EXPECT_EQ(t.spec().remote().node(), "node-b");
  EXPECT_EQ(t.spec().auth().psk().value(), "e2e secret number one 0123456789");
  EXPECT_EQ(t.spec().dpd().action(), strait::v1::DPD_ACTION_HOLD);
  EXPECT_FALSE(t.spec().dpd().has_interval());
  EXPECT_FALSE(t.spec().ike().has_lifetime());
  EXPECT_EQ(t.spec().start_action(), strait::v1::START_ACTION_ADD);
  EXPECT_EQ(t.kind(), "Tunnel");
}

TEST(ParseTunnelsYamlTest, ExplicitZeroDurationStaysPresent) {
  Tunnel t = ParseOne(Sample("interval: 30s", "interval: 0s"));
  ASSERT_TRUE(t.spec().dpd().has_interval());
  EXPECT_EQ(t.spec().dpd().interval().seconds(), 0);
  ApplyDefaults(&t);
  EXPECT_EQ(t.spec().dpd().interval().seconds(), 0);
}

TEST(ParseTunnelsYamlTest, ParsesCompoundDurations) {
  Tunnel t = ParseOne(Sample("lifetime: 8h", "lifetime: 1h30m"));
  EXPECT_EQ(t.spec().ike().lifetime().seconds(), 5400);
  Tunnel frac = ParseOne(Sample("interval: 30s", "interval: 1.5s"));
  EXPECT_EQ(frac.spec().dpd().interval().seconds(), 1);
  EXPECT_EQ(frac.spec().dpd().interval().nanos(), 500000000);
}

TEST(ParseTunnelsYamlTest, MultipleDocuments) {
  std::string yaml = absl::StrCat("---\n", kSampleYaml, "---\n# nothing here\n---\n",
                                  Sample("name: branch-to-vpc", "name: second"), "---\n");
  auto tunnels = ParseTunnelsYaml(yaml);
  ASSERT_TRUE(tunnels.ok()) << tunnels.status();
  ASSERT_THAT(*tunnels, SizeIs(2));
  EXPECT_EQ((*tunnels)[0].metadata().name(), "branch-to-vpc");
  EXPECT_EQ((*tunnels)[1].metadata().name(), "second");
}

TEST(ParseTunnelsYamlTest, EmptyInputHasNoTunnels) {
  for (const char* yaml : {"", "# only a comment\n", "---\n---\n"}) {
    auto tunnels = ParseTunnelsYaml(yaml);
    ASSERT_TRUE(tunnels.ok()) << tunnels.status();
    EXPECT_THAT(*tunnels, IsEmpty());
  }
}

TEST(ParseTunnelsYamlTest, ErrorsNameTheDocument) {
  std::string yaml =
      absl::StrCat(kSampleYaml, "---\n# empty\n---\n", Sample("lifetime: 8h", "lifetime: 8x"));
  EXPECT_EQ(ParseError(yaml),
            "document 3: spec.ike.lifetime: invalid duration \"8x\" (use for example 8h, 9m, "
            "1h30m or 150s)");
}

TEST(ParseTunnelsYamlTest, UnknownFieldsAreErrors) {
  EXPECT_EQ(ParseError(Sample("    rekeyMargin: 9m", "    rekeyMargn: 9m")),
            "document 1: spec.esp.rekeyMargn: unknown field");
  EXPECT_EQ(ParseError(absl::StrCat("apiVersion: strait/v1\n", kSampleYaml)),
            "document 1: apiVersion: unknown field");
  EXPECT_EQ(ParseError(Sample("    address: 192.0.2.2", "    adress: 192.0.2.2")),
            "document 1: spec.remote.adress: unknown field");
  EXPECT_EQ(ParseError(Sample("  labels: {env: prod}", "  label: {env: prod}")),
            "document 1: metadata.label: unknown field");
  EXPECT_EQ(ParseError(Sample("action: restart", "action: restart, mode: x")),
            "document 1: spec.dpd.mode: unknown field");
}

TEST(ParseTunnelsYamlTest, RejectsNegativeDurations) {
  EXPECT_THAT(ParseError(Sample("lifetime: 1h", "lifetime: -1h")),
              HasSubstr("spec.esp.lifetime: negative duration \"-1h\""));
}

TEST(ParseTunnelsYamlTest, RejectsDurationsWithoutUnits) {
  EXPECT_THAT(ParseError(Sample("rekeyMargin: 9m", "rekeyMargin: 540")),
              HasSubstr("spec.esp.rekeyMargin: invalid duration \"540\""));
  EXPECT_THAT(ParseError(Sample("interval: 30s", "interval: inf")),
              HasSubstr("spec.dpd.interval: invalid duration"));
}

TEST(ParseTunnelsYamlTest, RejectsWrongTypes) {
  EXPECT_EQ(
      ParseError(Sample("trafficSelectors: [10.1.0.0/24]", "trafficSelectors: 10.1.0.0/24")),
      "document 1: spec.local.trafficSelectors: expected a list such as [a, b], got a scalar");
  EXPECT_EQ(ParseError(Sample("[10.2.0.0/24, 10.3.0.0/16]", "[10.2.0.0/24, [10.3.0.0/16]]")),
            "document 1: spec.remote.trafficSelectors[1]: expected a string, got a list");
  EXPECT_EQ(ParseError(Sample("  node: node-a ", "  node: [node-a] ")),
            "document 1: spec.node: expected a string, got a list");
  EXPECT_EQ(ParseError("- kind: Tunnel\n"), "document 1: document: expected a mapping, got a list");
  EXPECT_EQ(ParseError(Sample("  esp:\n", "  esp: fast\n  espx:\n")),
            "document 1: spec.esp: expected a mapping, got a scalar");
}

TEST(ParseTunnelsYamlTest, RejectsBadEnumsAndNumbers) {
  EXPECT_THAT(ParseError(Sample("action: restart", "action: reboot")),
              HasSubstr("spec.dpd.action: \"reboot\" is not clear, hold or restart"));
  EXPECT_THAT(ParseError(Sample("startAction: start", "startAction: route")),
              HasSubstr("spec.startAction: \"route\" is not add or start"));
  EXPECT_THAT(ParseError(Sample("rekeyMargin: 9m", "rekeyMargin: 9m\n    replayWindow: -1")),
              HasSubstr("spec.esp.replayWindow: expected a non-negative integer"));
}

TEST(ParseTunnelsYamlTest, RejectsOtherKinds) {
  EXPECT_EQ(ParseError(Sample("kind: Tunnel", "kind: Node")),
            "document 1: kind: \"Node\" is not supported (only Tunnel)");
}

TEST(ParseTunnelsYamlTest, RejectsDuplicateKeys) {
  EXPECT_EQ(ParseError(Sample("  node: node-a ", "  node: node-b\n  node: node-a ")),
            "document 1: spec.node: appears twice");
}

TEST(ParseTunnelsYamlTest, RejectsInvalidYaml) {
  std::string error =
      ParseError(Sample("trafficSelectors: [10.1.0.0/24]", "trafficSelectors: [10"));
  EXPECT_THAT(error, HasSubstr("invalid YAML at line"));
}

TEST(ParseTunnelsYamlTest, IgnoresOutputOnlyFields) {
  std::string yaml = Sample("  labels: {env: prod}\n",
                            "  labels: {env: prod}\n  generation: 3\n  revision: 17\n"
                            "  createTime: 2026-11-27T02:44:29Z\n  updateTime: whenever\n") +
                     "status:\n  ends:\n  - {node: node-a, phase: ESTABLISHED, futureField: 1}\n";
  Tunnel t = ParseOne(yaml);
  Tunnel expected = ParseText(kSampleProto);
  EXPECT_TRUE(MessageDifferencer::Equals(t, expected)) << Diff(t, expected);
}

TEST(ParseTunnelsYamlTest, RedactedPskCarriesOnlyTheFingerprint) {
  Tunnel t = ParseOne(Sample("psk: \"correct horse battery staple 42\"",
                             "psk: {redacted: true, fingerprint: \"sha256:0123456789abcdef\"}"));
  EXPECT_EQ(t.spec().auth().psk().value(), "");
  EXPECT_EQ(t.spec().auth().psk().fingerprint(), "sha256:0123456789abcdef");
  // Without the controller's stored key there is nothing to run on.
  ApplyDefaults(&t);
  EXPECT_THAT(ViolationsToStatus(ValidateTunnel(t, ValidationPolicy())).message(),
              HasSubstr("spec.auth.psk: is required"));
  EXPECT_THAT(ParseError(Sample("psk: \"correct horse battery staple 42\"",
                                "psk: {value: \"correct horse battery staple 42\"}")),
              AllOf(HasSubstr("spec.auth.psk.value: unknown field"), Not(HasSubstr("horse"))));
}

TEST(ParseTunnelsYamlTest, ErrorsNeverQuoteThePsk) {
  for (const std::string& yaml : {
           Sample("psk: \"correct horse battery staple 42\"",
                  "psk: [\"correct horse battery staple 42\"]"),
           Sample("psk: \"correct horse battery staple 42\"",
                  "psk: \"correct horse battery staple 42\"\n    psk: again"),
           Sample("psk: \"correct horse battery staple 42\"",
                  "psk: {key: \"correct horse battery staple 42\""),
       }) {
    EXPECT_THAT(ParseError(yaml), Not(HasSubstr("horse")));
  }
}

// ---------------------------------------------------------------------------
// Rendering

Tunnel StoredTunnel() {
  Tunnel t = ParseText(kSampleProto);
  t.mutable_spec()->mutable_auth()->mutable_psk()->set_fingerprint("sha256:3f9a1c2b7d4e");
  t.mutable_spec()->mutable_remote()->set_node("node-b");
  t.mutable_spec()->mutable_esp()->set_replay_window(64);
  t.mutable_metadata()->set_generation(3);
  t.mutable_metadata()->set_revision(17);
  t.mutable_metadata()->mutable_create_time()->set_seconds(1795747469);
  t.mutable_metadata()->mutable_update_time()->set_seconds(1795747470);
  t.mutable_metadata()->mutable_update_time()->set_nanos(123000000);
  strait::v1::TunnelEndStatus* end = t.mutable_status()->add_ends();
  end->set_node("node-a");
  end->set_phase(strait::v1::TUNNEL_PHASE_PENDING);
  end->set_reason("AWAITING_IKE");
  end->set_message("the agent does not run IKEv2 yet");
  end->set_observed_generation(3);
  end->mutable_report_time()->set_seconds(1795747471);
  return t;
}

TEST(TunnelToYamlTest, RendersTheSameShape) {
  EXPECT_EQ(TunnelToYaml(StoredTunnel()), R"yaml(kind: Tunnel
metadata:
  name: branch-to-vpc
  labels: {env: prod}
  generation: 3
  revision: 17
  createTime: 2026-11-27T02:44:29Z
  updateTime: 2026-11-27T02:44:30.123Z
spec:
  node: node-a
  local:
    address: 192.0.2.1
    id: node-a.example.com
    trafficSelectors: [10.1.0.0/24]
  remote:
    node: node-b
    address: 192.0.2.2
    id: vpc-gw.example.com
    trafficSelectors: [10.2.0.0/24, 10.3.0.0/16]
  auth:
    psk: {redacted: true, fingerprint: sha256:3f9a1c2b7d4e}
  ike:
    proposals: [aes256gcm16-prfsha384-ecp384, aes256-sha256-modp2048]
    lifetime: 8h
  esp:
    proposals: [aes256gcm16-ecp384]
    lifetime: 1h
    rekeyMargin: 9m
    replayWindow: 64
  dpd: {interval: 30s, timeout: 2m30s, action: restart}
  startAction: start
status:
  ends:
    - node: node-a
      phase: PENDING
      reason: AWAITING_IKE
      message: the agent does not run IKEv2 yet
      observedGeneration: 3
      reportTime: 2026-11-27T02:44:31Z
)yaml");
}

TEST(TunnelToYamlTest, NeverContainsThePsk) {
  Tunnel t = StoredTunnel();
  EXPECT_THAT(TunnelToYaml(t), Not(HasSubstr("horse")));
  // Without a fingerprint (an agent's half, say) the key stays hidden too.
  t.mutable_spec()->mutable_auth()->mutable_psk()->clear_fingerprint();
  std::string yaml = TunnelToYaml(t);
  EXPECT_THAT(yaml, Not(HasSubstr("horse")));
  EXPECT_THAT(yaml, HasSubstr("psk: {redacted: true}"));
}

TEST(TunnelToYamlTest, RoundTripsExceptThePsk) {
  Tunnel original = StoredTunnel();
  original.mutable_spec()->mutable_dpd()->mutable_interval()->set_nanos(250000000);
  original.mutable_spec()->mutable_ike()->mutable_lifetime()->set_seconds(5400);
  original.mutable_metadata()->mutable_labels()->insert({"team", "net ops: core"});
  original.mutable_metadata()->mutable_labels()->insert({"flag", "true"});
  std::string yaml = TunnelToYaml(original);

  // Fed back as is, only the fingerprint comes back (the controller keeps
  // its stored key when it matches)...
  EXPECT_EQ(ParseOne(yaml).spec().auth().psk().fingerprint(), "sha256:3f9a1c2b7d4e");
  EXPECT_EQ(ParseOne(yaml).spec().auth().psk().value(), "");

  // ...and with a key written in, everything but output-only data survives.
  std::string edited = absl::StrReplaceAll(
      yaml,
      {{"psk: {redacted: true, fingerprint: sha256:3f9a1c2b7d4e}", "psk: a new key, 16+ chars"}});
  Tunnel parsed = ParseOne(edited);

  Tunnel expected = original;
  expected.mutable_spec()->mutable_auth()->mutable_psk()->set_value("a new key, 16+ chars");
  expected.mutable_spec()->mutable_auth()->mutable_psk()->clear_fingerprint();
  expected.mutable_metadata()->clear_generation();
  expected.mutable_metadata()->clear_revision();
  expected.mutable_metadata()->clear_create_time();
  expected.mutable_metadata()->clear_update_time();
  expected.clear_status();
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, expected)) << Diff(parsed, expected) << yaml;
}

TEST(TunnelToYamlTest, QuotesStringsThatWouldReadBackDifferently) {
  Tunnel t = ParseText(kSampleProto);
  t.mutable_metadata()->mutable_labels()->insert({"empty", ""});
  t.mutable_metadata()->mutable_labels()->insert({"tilde", "~"});
  t.mutable_metadata()->mutable_labels()->insert({"null", "null"});
  t.mutable_metadata()->mutable_labels()->insert({"hash", "#x"});
  t.mutable_metadata()->mutable_labels()->insert({"multi", "a\nb"});
  t.mutable_spec()->mutable_auth()->clear_psk();
  Tunnel parsed = ParseOne(TunnelToYaml(t));
  // An empty label value reads back as an empty value; the rest verbatim.
  EXPECT_TRUE(MessageDifferencer::Equals(parsed.metadata(), t.metadata())) << TunnelToYaml(t);
}

TEST(TunnelToYamlTest, OmitsUnsetFields) {
  Tunnel t;
  t.mutable_metadata()->set_name("bare");
  EXPECT_EQ(TunnelToYaml(t), "kind: Tunnel\nmetadata:\n  name: bare\nspec: {}\n");
}

TEST(FormatDurationTest, UsesTheParsersSyntax) {
  google::protobuf::Duration d;
  d.set_seconds(int64_t{8} * 3600);
  EXPECT_EQ(FormatDuration(d), "8h");
  d.set_seconds(int64_t{9} * 60);
  EXPECT_EQ(FormatDuration(d), "9m");
  d.set_seconds(5400);
  EXPECT_EQ(FormatDuration(d), "1h30m");
  d.set_seconds(150);
  EXPECT_EQ(FormatDuration(d), "2m30s");
  d.set_seconds(1);
  d.set_nanos(500000000);
  EXPECT_EQ(FormatDuration(d), "1.5s");
  EXPECT_EQ(FormatDuration(google::protobuf::Duration()), "0s");
}

TEST(ParseTunnelsYamlTest, CertificateAuthRoundTrips) {
  const std::string yaml = R"yaml(kind: Tunnel
metadata: {name: to-gw}
spec:
  node: node-a
  local: {address: 192.0.2.1, id: "C=CH, O=Strait, CN=node-a", trafficSelectors: [10.1.0.0/24]}
  remote: {address: 192.0.2.9, id: gw.example.com, trafficSelectors: [10.9.0.0/24]}
  auth:
    certificate:
      caCertificates: |
        -----BEGIN CERTIFICATE-----
        MIIB
        -----END CERTIFICATE-----
      certificateFile: /etc/strait/ike.crt
      privateKeyFile: /etc/strait/ike.key
)yaml";
  auto tunnels = ParseTunnelsYaml(yaml);
  ASSERT_TRUE(tunnels.ok()) << tunnels.status();
  ASSERT_EQ(tunnels->size(), 1u);
  const strait::v1::CertificateAuth& cert = (*tunnels)[0].spec().auth().certificate();
  EXPECT_EQ(cert.ca_certificates(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(cert.certificate_file(), "/etc/strait/ike.crt");
  EXPECT_EQ(cert.private_key_file(), "/etc/strait/ike.key");
  EXPECT_EQ((*tunnels)[0].spec().local().id(), "C=CH, O=Strait, CN=node-a");

  auto again = ParseTunnelsYaml(TunnelToYaml((*tunnels)[0]));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)[0].spec().auth().SerializeAsString(),
            (*tunnels)[0].spec().auth().SerializeAsString());
}

TEST(ParseTunnelsYamlTest, RefusesPskAndCertificateTogether) {
  auto tunnels = ParseTunnelsYaml(R"yaml(kind: Tunnel
metadata: {name: both}
spec:
  auth:
    psk: "0123456789abcdef0123"
    certificate: {caCertificates: x}
)yaml");
  ASSERT_FALSE(tunnels.ok());
  EXPECT_THAT(tunnels.status().message(),
              HasSubstr("spec.auth.certificate: give either psk or certificate, not both"));
}

}  // namespace
}  // namespace strait::intent
