#include "cli/output.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strait::cli {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPsk[] = "super secret key 0123456789";
constexpr char kFingerprint[] = "sha256:0f1e2d3c";

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

google::protobuf::Timestamp Ago(absl::Duration d) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(kNow - d));
  return ts;
}

strait::v1::Tunnel MakeTunnel(const std::string& name, const std::string& remote_node) {
  strait::v1::Tunnel t;
  t.set_kind("Tunnel");
  t.mutable_metadata()->set_name(name);
  t.mutable_metadata()->set_generation(3);
  t.mutable_metadata()->set_revision(17);
  (*t.mutable_metadata()->mutable_labels())["env"] = "test";
  *t.mutable_metadata()->mutable_create_time() = Ago(absl::Minutes(5));
  *t.mutable_metadata()->mutable_update_time() = Ago(absl::Seconds(30));
  auto* spec = t.mutable_spec();
  spec->set_node("node-a");
  spec->mutable_local()->set_address("192.0.2.1");
  spec->mutable_local()->add_traffic_selectors("10.1.0.0/24");
  spec->mutable_remote()->set_node(remote_node);
  spec->mutable_remote()->set_address("192.0.2.2");
  spec->mutable_remote()->add_traffic_selectors("10.2.0.0/24");
  spec->mutable_remote()->add_traffic_selectors("10.3.0.0/16");
  spec->mutable_auth()->mutable_psk()->set_value(kPsk);
  spec->mutable_auth()->mutable_psk()->set_fingerprint(kFingerprint);
  spec->mutable_ike()->add_proposals("aes256gcm16-prfsha384-ecp384");
  spec->mutable_ike()->mutable_lifetime()->set_seconds(int64_t{8} * 3600);
  spec->mutable_esp()->add_proposals("aes256gcm16-ecp384");
  spec->mutable_dpd()->set_action(strait::v1::DPD_ACTION_RESTART);
  spec->set_start_action(strait::v1::START_ACTION_START);
  auto* end = t.mutable_status()->add_ends();
  end->set_node("node-a");
  end->set_phase(strait::v1::TUNNEL_PHASE_PENDING);
  end->set_reason("AWAITING_IKE");
  end->set_message("IKEv2 is not implemented yet");
  end->set_observed_generation(2);
  *end->mutable_report_time() = Ago(absl::Seconds(4));
  return t;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(TableTest, AlignsColumnsWithoutTrailingBlanks) {
  Table table({"NAME", "X", "LAST"});
  table.AddRow({"a", "longer-cell", "z"});
  table.AddRow({"much-longer-name", "", "tail"});
  EXPECT_EQ(table.Render(),
            "NAME               X             LAST\n"
            "a                  longer-cell   z\n"
            "much-longer-name   -             tail\n");
}

TEST(TableTest, FlattensMultiLineCells) {
  Table table({"A", "B"});
  table.AddRow({"x", "line one\nline two\t!"});
  EXPECT_THAT(Lines(table.Render()), ElementsAre("A   B", "x   line one line two !"));
}

TEST(OutputTest, ParsesFormats) {
  EXPECT_EQ(*ParseOutputFormat("table"), OutputFormat::kTable);
  EXPECT_EQ(*ParseOutputFormat("yaml"), OutputFormat::kYaml);
  EXPECT_EQ(*ParseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_FALSE(ParseOutputFormat("xml").ok());
}

TEST(OutputTest, FormatsAges) {
  EXPECT_EQ(FormatAge(Ago(absl::Seconds(42)), kNow), "42s");
  EXPECT_EQ(FormatAge(Ago(absl::Seconds(119)), kNow), "119s");
  EXPECT_EQ(FormatAge(Ago(absl::Minutes(5) + absl::Seconds(59)), kNow), "5m");
  EXPECT_EQ(FormatAge(Ago(absl::Minutes(119)), kNow), "119m");
  EXPECT_EQ(FormatAge(Ago(absl::Hours(30)), kNow), "30h");
  EXPECT_EQ(FormatAge(Ago(absl::Hours(24 * 12 + 5)), kNow), "12d");
  EXPECT_EQ(FormatAge(Ago(-absl::Seconds(3)), kNow), "0s");  // Clock skew.
  EXPECT_EQ(FormatAge(google::protobuf::Timestamp(), kNow), "-");
}

TEST(OutputTest, PhaseSummaryFollowsSpecOrder) {
  strait::v1::Tunnel external = MakeTunnel("a-to-gw", "");
  EXPECT_EQ(TunnelPhaseSummary(external), "PENDING");

  strait::v1::Tunnel managed = MakeTunnel("a-to-b", "node-b");
  EXPECT_EQ(TunnelPhaseSummary(managed), "PENDING/-");
  // Reported in the other order: still local end first.
  managed.mutable_status()->clear_ends();
  auto* b = managed.mutable_status()->add_ends();
  b->set_node("node-b");
  b->set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
  auto* a = managed.mutable_status()->add_ends();
  a->set_node("node-a");
  a->set_phase(strait::v1::TUNNEL_PHASE_PENDING);
  EXPECT_EQ(TunnelPhaseSummary(managed), "PENDING/ESTABLISHED");
  // Ends listed without a phase have not reported yet.
  a->set_phase(strait::v1::TUNNEL_PHASE_UNSPECIFIED);
  EXPECT_EQ(TunnelPhaseSummary(managed), "-/ESTABLISHED");
  b->set_phase(strait::v1::TUNNEL_PHASE_UNSPECIFIED);
  EXPECT_EQ(TunnelPhaseSummary(managed), "-");
}

TEST(OutputTest, TunnelTableIsAligned) {
  strait::v1::ListTunnelsResponse response;
  *response.add_tunnels() = MakeTunnel("a-to-b", "node-b");
  strait::v1::Tunnel gw = MakeTunnel("branch-to-vpc", "");
  gw.mutable_spec()->mutable_remote()->set_address("198.51.100.50");
  *gw.mutable_metadata()->mutable_create_time() = Ago(absl::Hours(3));
  *response.add_tunnels() = gw;

  absl::StatusOr<std::string> table = FormatTunnelList(response, OutputFormat::kTable, kNow);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(
      Lines(*table),
      ElementsAre(
          "NAME            NODE     REMOTE          LOCAL-TS      REMOTE-TS                 PHASE "
          "      GEN   AGE",
          "a-to-b          node-a   node-b          10.1.0.0/24   10.2.0.0/24,10.3.0.0/16   "
          "PENDING/-   3     5m",
          "branch-to-vpc   node-a   198.51.100.50   10.1.0.0/24   10.2.0.0/24,10.3.0.0/16   "
          "PENDING     3     3h"));
}

TEST(OutputTest, JsonIsCamelCaseWithoutPsk) {
  strait::v1::ListTunnelsResponse response;
  *response.add_tunnels() = MakeTunnel("a-to-b", "node-b");
  absl::StatusOr<std::string> list = FormatTunnelList(response, OutputFormat::kJson, kNow);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(*list, AllOf(HasSubstr("\"tunnels\": ["), HasSubstr("\"trafficSelectors\""),
                           HasSubstr("\"observedGeneration\""), HasSubstr(kFingerprint),
                           Not(HasSubstr(kPsk)), Not(HasSubstr("traffic_selectors"))));

  absl::StatusOr<std::string> one =
      FormatTunnel(MakeTunnel("a-to-b", "node-b"), OutputFormat::kJson, kNow);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(*one,
              AllOf(HasSubstr("\"metadata\": {"), HasSubstr(kFingerprint), Not(HasSubstr(kPsk))));
  EXPECT_EQ(one->front(), '{');
}

TEST(OutputTest, YamlSeparatesDocumentsWithoutPsk) {
  strait::v1::ListTunnelsResponse response;
  *response.add_tunnels() = MakeTunnel("first", "");
  *response.add_tunnels() = MakeTunnel("second", "node-b");
  absl::StatusOr<std::string> yaml = FormatTunnelList(response, OutputFormat::kYaml, kNow);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, AllOf(HasSubstr("name: first"), HasSubstr("\n---\n"),
                           HasSubstr("name: second"), Not(HasSubstr(kPsk))));
  std::vector<std::string> docs = absl::StrSplit(*yaml, "---\n");
  EXPECT_EQ(docs.size(), 2u);

  absl::StatusOr<std::string> one = FormatTunnel(MakeTunnel("only", ""), OutputFormat::kYaml, kNow);
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(*one, AllOf(HasSubstr("name: only"), Not(HasSubstr("---")), Not(HasSubstr(kPsk))));
}

TEST(OutputTest, TableHasNoPsk) {
  absl::StatusOr<std::string> table =
      FormatTunnel(MakeTunnel("a-to-b", "node-b"), OutputFormat::kTable, kNow);
  ASSERT_TRUE(table.ok());
  EXPECT_THAT(*table, Not(HasSubstr(kPsk)));
}

TEST(OutputTest, RedactKeepsFingerprint) {
  strait::v1::Tunnel t = MakeTunnel("a", "");
  RedactTunnel(&t);
  EXPECT_TRUE(t.spec().auth().psk().value().empty());
  EXPECT_EQ(t.spec().auth().psk().fingerprint(), kFingerprint);
}

TEST(OutputTest, DescribeShowsDesiredAgainstActualPerEnd) {
  std::string text = DescribeTunnel(MakeTunnel("a-to-b", "node-b"), kNow);
  EXPECT_THAT(
      text,
      AllOf(HasSubstr("Name:               a-to-b\n"), HasSubstr("Labels:             env=test\n"),
            HasSubstr("Generation:         3\n"),
            HasSubstr("Created:            2023-11-14T22:08:20Z (5m ago)\n"),
            HasSubstr("  Remote (managed node):\n    Node:           node-b\n"),
            HasSubstr("    Selectors:      10.2.0.0/24, 10.3.0.0/16\n"),
            HasSubstr("  Auth:             pre-shared key, fingerprint sha256:0f1e2d3c\n"),
            HasSubstr("    Lifetime:       8h\n"), HasSubstr("    Lifetime:       default (1h)\n"),
            HasSubstr("    Action:         restart\n"), HasSubstr("  Start action:     start\n"),
            HasSubstr("Ends:\n  node-a (local):\n"), HasSubstr("    Phase:          PENDING\n"),
            HasSubstr("    Reason:         AWAITING_IKE\n"),
            HasSubstr("    Message:        IKEv2 is not implemented yet\n"),
            HasSubstr("    Generation:     desired 3, observed 2 (behind)\n"),
            HasSubstr("    Reported:       2023-11-14T22:13:16Z (4s ago)\n"),
            HasSubstr("  node-b (remote):\n    Phase:          - (no report yet)\n"),
            Not(HasSubstr(kPsk))));
  // An external gateway has no second end.
  std::string external = DescribeTunnel(MakeTunnel("a-to-gw", ""), kNow);
  EXPECT_THAT(external, AllOf(HasSubstr("  Remote (external gateway):\n    Address:"),
                              Not(HasSubstr("(remote)"))));
}

TEST(OutputTest, NodesTable) {
  strait::v1::ListNodesResponse response;
  auto* a = response.add_nodes();
  a->set_name("node-a");
  a->set_connected(true);
  a->set_current_version("7.abc");
  a->set_acked_version("7.abc");
  a->set_tunnel_count(2);
  auto* b = response.add_nodes();
  b->set_name("node-b");
  b->set_current_version("9.abc");
  b->set_acked_version("7.abc");
  b->set_tunnel_count(1);
  b->set_last_error("spec.esp: bad\nproposal");

  absl::StatusOr<std::string> table = FormatNodeList(response, OutputFormat::kTable);
  ASSERT_TRUE(table.ok());
  EXPECT_THAT(Lines(*table),
              ElementsAre("NAME     CONNECTED   CURRENT-VERSION   ACKED-VERSION   IN-SYNC   "
                          "TUNNELS   LAST-ERROR",
                          "node-a   yes         7.abc             7.abc           yes       2  "
                          "       -",
                          "node-b   no          9.abc             7.abc           no        1  "
                          "       spec.esp: bad proposal"));

  absl::StatusOr<std::string> json = FormatNodeList(response, OutputFormat::kJson);
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, AllOf(HasSubstr("\"nodes\": ["), HasSubstr("\"ackedVersion\": \"7.abc\""),
                           HasSubstr("\"currentVersion\": \"9.abc\"")));

  absl::StatusOr<std::string> yaml = FormatNodeList(response, OutputFormat::kYaml);
  ASSERT_TRUE(yaml.ok());
  EXPECT_THAT(*yaml,
              AllOf(HasSubstr("name: node-a\n"), HasSubstr("connected: true\n"),
                    HasSubstr("currentVersion: \"7.abc\"\n"), HasSubstr("inSync: false\n"),
                    HasSubstr("\n---\n"), HasSubstr("lastError: \"spec.esp: bad\\nproposal\"")));
}

TEST(OutputTest, NodeYamlQuotesAmbiguousStrings) {
  strait::v1::ListNodesResponse response;
  auto* n = response.add_nodes();
  n->set_name("no");
  n->set_current_version("12.34");
  absl::StatusOr<std::string> yaml = FormatNodeList(response, OutputFormat::kYaml);
  ASSERT_TRUE(yaml.ok());
  EXPECT_THAT(*yaml, AllOf(HasSubstr("name: \"no\"\n"), HasSubstr("currentVersion: \"12.34\"\n"),
                           HasSubstr("ackedVersion: \"\"\n")));
}

}  // namespace
}  // namespace strait::cli
