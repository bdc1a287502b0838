#include "cli/output.h"

#include <algorithm>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "common/intent/yaml_codec.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace strait::cli {
namespace {

using strait::v1::Node;
using strait::v1::Tunnel;
using strait::v1::TunnelEndStatus;

constexpr absl::string_view kColumnGap = "   ";
constexpr absl::string_view kNone = "-";

// Table cells are one line each: a multi-line agent message must not break
// the columns.
std::string Cell(absl::string_view text) {
  if (text.empty()) return std::string(kNone);
  std::string cell =
      absl::StrReplaceAll(text, {{"\r\n", " "}, {"\n", " "}, {"\r", " "}, {"\t", " "}});
  return std::string(absl::StripAsciiWhitespace(cell));
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsSet(const google::protobuf::Timestamp& ts) { return ts.seconds() != 0 || ts.nanos() != 0; }

std::string JoinOrNone(const google::protobuf::RepeatedPtrField<std::string>& items,
                       absl::string_view sep) {
  if (items.empty()) return std::string(kNone);
  return absl::StrJoin(items, sep);
}

// A managed end of a tunnel: the node and what its agent reported, if
// anything.
struct End {
  std::string node;
  std::string role;  // "local", "remote" or "unexpected"
  const TunnelEndStatus* status = nullptr;
};

// Ends in spec order (the owning node, then a managed remote node), then
// any end the status mentions that the spec does not.
std::vector<End> Ends(const Tunnel& tunnel) {
  std::vector<End> ends;
  auto add_expected = [&](const std::string& node, absl::string_view role) {
    if (node.empty()) return;
    for (const End& end : ends) {
      if (end.node == node) return;
    }
    ends.push_back(End{node, std::string(role), nullptr});
  };
  add_expected(tunnel.spec().node(), "local");
  add_expected(tunnel.spec().remote().node(), "remote");
  for (const TunnelEndStatus& status : tunnel.status().ends()) {
    // The controller lists every managed end; one its agent has not
    // reported on yet has no phase.
    if (status.phase() == strait::v1::TUNNEL_PHASE_UNSPECIFIED) continue;
    auto it = std::find_if(ends.begin(), ends.end(),
                           [&](const End& end) { return end.node == status.node(); });
    if (it == ends.end()) {
      ends.push_back(End{status.node(), "not in spec", &status});
    } else if (it->status == nullptr) {
      it->status = &status;
    }
  }
  return ends;
}

Tunnel Redacted(const Tunnel& tunnel) {
  Tunnel copy = tunnel;
  RedactTunnel(&copy);
  return copy;
}

std::string TunnelsToYaml(const google::protobuf::RepeatedPtrField<Tunnel>& tunnels) {
  std::string out;
  for (const Tunnel& tunnel : tunnels) {
    if (!out.empty()) absl::StrAppend(&out, "---\n");
    std::string doc = intent::TunnelToYaml(Redacted(tunnel));
    if (!doc.empty() && doc.back() != '\n') doc.push_back('\n');
    absl::StrAppend(&out, doc);
  }
  return out;
}

std::vector<std::string> TunnelRow(const Tunnel& tunnel, absl::Time now) {
  const strait::v1::TunnelSpec& spec = tunnel.spec();
  const std::string& remote =
      spec.remote().node().empty() ? spec.remote().address() : spec.remote().node();
  return {tunnel.metadata().name(),
          spec.node(),
          remote,
          absl::StrJoin(spec.local().traffic_selectors(), ","),
          absl::StrJoin(spec.remote().traffic_selectors(), ","),
          TunnelPhaseSummary(tunnel),
          absl::StrCat(tunnel.metadata().generation()),
          FormatAge(tunnel.metadata().create_time(), now)};
}

Table TunnelTable() {
  return Table({"NAME", "NODE", "REMOTE", "LOCAL-TS", "REMOTE-TS", "PHASE", "GEN", "AGE"});
}

// Plain YAML scalars only for strings that every YAML reader takes as
// strings; versions like "12.34" or names like "no" are quoted.
void EmitString(YAML::Emitter& e, const std::string& value) {
  static const char* const kReserved[] = {"y",  "yes", "n",    "no", "true", "false",
                                          "on", "off", "null", "~",  ""};
  bool plain = !value.empty() && absl::ascii_isalpha(static_cast<unsigned char>(value[0]));
  for (char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      plain = false;
    }
  }
  for (const char* word : kReserved) {
    if (absl::EqualsIgnoreCase(value, word)) plain = false;
  }
  if (!plain) e << YAML::DoubleQuoted;
  e << value;
}

std::string NodeToYaml(const Node& node) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value;
  EmitString(e, node.name());
  e << YAML::Key << "connected" << YAML::Value << node.connected();
  e << YAML::Key << "currentVersion" << YAML::Value;
  EmitString(e, node.current_version());
  e << YAML::Key << "ackedVersion" << YAML::Value;
  EmitString(e, node.acked_version());
  e << YAML::Key << "inSync" << YAML::Value << (node.acked_version() == node.current_version());
  e << YAML::Key << "tunnelCount" << YAML::Value << node.tunnel_count();
  if (!node.last_error().empty()) {
    e << YAML::Key << "lastError" << YAML::Value;
    EmitString(e, node.last_error());
  }
  if (IsSet(node.last_seen())) {
    e << YAML::Key << "lastSeen" << YAML::Value << FormatTimestamp(node.last_seen());
  }
  if (!node.peer().empty()) {
    e << YAML::Key << "peer" << YAML::Value;
    EmitString(e, node.peer());
  }
  e << YAML::EndMap;
  return absl::StrCat(e.c_str(), "\n");
}

// describe: "  Key:" then the value, every value in one column.
void Field(std::string* out, int indent, absl::string_view key, absl::string_view value) {
  constexpr size_t kValueColumn = 20;
  std::string label = absl::StrCat(std::string(indent, ' '), key, ":");
  if (value.empty()) {
    absl::StrAppend(out, label, "\n");
    return;
  }
  const size_t width = std::max(label.size() + 1, kValueColumn);
  label.resize(width, ' ');
  // Continuation lines of a multi-line value line up under the first.
  std::string continuation = absl::StrCat("\n", std::string(width, ' '));
  absl::StrAppend(out, label, absl::StrReplaceAll(value, {{"\n", continuation}}), "\n");
}

std::string DurationOrDefault(const google::protobuf::Duration& d, bool has,
                              absl::string_view fallback) {
  if (!has) return absl::StrCat("default (", fallback, ")");
  return intent::FormatDuration(d);
}

void DescribeEndpoint(std::string* out, absl::string_view title,
                      const strait::v1::Endpoint& endpoint) {
  Field(out, 2, title, "");
  if (!endpoint.node().empty()) Field(out, 4, "Node", endpoint.node());
  Field(out, 4, "Address", endpoint.address().empty() ? kNone : endpoint.address());
  Field(out, 4, "ID", endpoint.id().empty() ? "(address)" : endpoint.id());
  Field(out, 4, "Selectors", JoinOrNone(endpoint.traffic_selectors(), ", "));
}

std::string TimeAndAge(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (!IsSet(ts)) return std::string(kNone);
  return absl::StrCat(FormatTimestamp(ts), " (", FormatAge(ts, now), " ago)");
}

std::string DpdActionName(strait::v1::DpdAction action) {
  return action == strait::v1::DPD_ACTION_UNSPECIFIED ? "default (restart)"
                                                      : intent::DpdActionName(action);
}

std::string StartActionName(strait::v1::StartAction action) {
  return action == strait::v1::START_ACTION_UNSPECIFIED ? "default (start)"
                                                        : intent::StartActionName(action);
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view text) {
  if (text == "table") return OutputFormat::kTable;
  if (text == "yaml") return OutputFormat::kYaml;
  if (text == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format \"", text, "\" (want table, yaml or json)"));
}

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(header_.size());
  for (std::string& cell : cells) cell = Cell(cell);
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);

  std::string out;
  auto render = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) absl::StrAppend(&line, kColumnGap);
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size(), ' ');
    }
    absl::StrAppend(&out, line, "\n");
  };
  render(header_);
  for (const auto& row : rows_) render(row);
  return out;
}

void RedactTunnel(Tunnel* tunnel) {
  if (tunnel->spec().auth().has_psk()) {
    tunnel->mutable_spec()->mutable_auth()->mutable_psk()->clear_value();
  }
}

std::string FormatAge(const google::protobuf::Timestamp& since, absl::Time now) {
  if (!IsSet(since)) return std::string(kNone);
  absl::Duration age = now - ToTime(since);
  if (age < absl::ZeroDuration()) age = absl::ZeroDuration();
  if (age < absl::Minutes(2)) return absl::StrCat(absl::ToInt64Seconds(age), "s");
  if (age < absl::Hours(2)) return absl::StrCat(absl::ToInt64Minutes(age), "m");
  if (age < absl::Hours(48)) return absl::StrCat(absl::ToInt64Hours(age), "h");
  return absl::StrCat(absl::ToInt64Hours(age) / 24, "d");
}

std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  if (!IsSet(ts)) return std::string(kNone);
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", ToTime(ts), absl::UTCTimeZone());
}

std::string TunnelPhaseSummary(const Tunnel& tunnel) {
  std::vector<std::string> phases;
  bool any_reported = false;
  for (const End& end : Ends(tunnel)) {
    any_reported |= end.status != nullptr;
    phases.push_back(end.status == nullptr ? std::string(kNone)
                                           : intent::PhaseName(end.status->phase()));
  }
  if (!any_reported) return std::string(kNone);
  return absl::StrJoin(phases, "/");
}

absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = false;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot render JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json.push_back('\n');
  return json;
}

absl::StatusOr<std::string> FormatTunnelList(const strait::v1::ListTunnelsResponse& response,
                                             OutputFormat format, absl::Time now) {
  switch (format) {
    case OutputFormat::kYaml:
      return TunnelsToYaml(response.tunnels());
    case OutputFormat::kJson: {
      strait::v1::ListTunnelsResponse redacted = response;
      for (Tunnel& tunnel : *redacted.mutable_tunnels()) RedactTunnel(&tunnel);
      return MessageToJson(redacted);
    }
    case OutputFormat::kTable:
      break;
  }
  Table table = TunnelTable();
  for (const Tunnel& tunnel : response.tunnels()) table.AddRow(TunnelRow(tunnel, now));
  return table.Render();
}

absl::StatusOr<std::string> FormatTunnel(const Tunnel& tunnel, OutputFormat format,
                                         absl::Time now) {
  switch (format) {
    case OutputFormat::kYaml: {
      google::protobuf::RepeatedPtrField<Tunnel> one;
      *one.Add() = tunnel;
      return TunnelsToYaml(one);
    }
    case OutputFormat::kJson:
      return MessageToJson(Redacted(tunnel));
    case OutputFormat::kTable:
      break;
  }
  Table table = TunnelTable();
  table.AddRow(TunnelRow(tunnel, now));
  return table.Render();
}

absl::StatusOr<std::string> FormatNodeList(const strait::v1::ListNodesResponse& response,
                                           OutputFormat format) {
  switch (format) {
    case OutputFormat::kYaml: {
      std::string out;
      for (const Node& node : response.nodes()) {
        if (!out.empty()) absl::StrAppend(&out, "---\n");
        absl::StrAppend(&out, NodeToYaml(node));
      }
      return out;
    }
    case OutputFormat::kJson:
      return MessageToJson(response);
    case OutputFormat::kTable:
      break;
  }
  Table table({"NAME", "CONNECTED", "CURRENT-VERSION", "ACKED-VERSION", "IN-SYNC", "TUNNELS",
               "LAST-ERROR"});
  for (const Node& node : response.nodes()) {
    table.AddRow({node.name(), node.connected() ? "yes" : "no", node.current_version(),
                  node.acked_version(),
                  node.acked_version() == node.current_version() ? "yes" : "no",
                  absl::StrCat(node.tunnel_count()), node.last_error()});
  }
  return table.Render();
}

std::string DescribeTunnel(const Tunnel& tunnel, absl::Time now) {
  const strait::v1::ObjectMeta& meta = tunnel.metadata();
  const strait::v1::TunnelSpec& spec = tunnel.spec();
  std::string out;

  Field(&out, 0, "Name", meta.name());
  absl::btree_map<std::string, std::string> labels(meta.labels().begin(), meta.labels().end());
  Field(
      &out, 0, "Labels",
      labels.empty() ? std::string(kNone) : absl::StrJoin(labels, ", ", absl::PairFormatter("=")));
  Field(&out, 0, "Generation", absl::StrCat(meta.generation()));
  Field(&out, 0, "Revision", absl::StrCat(meta.revision()));
  Field(&out, 0, "Created", TimeAndAge(meta.create_time(), now));
  Field(&out, 0, "Updated", TimeAndAge(meta.update_time(), now));

  Field(&out, 0, "Spec", "");
  Field(&out, 2, "Node", spec.node().empty() ? kNone : spec.node());
  DescribeEndpoint(&out, "Local", spec.local());
  DescribeEndpoint(
      &out, spec.remote().node().empty() ? "Remote (external gateway)" : "Remote (managed node)",
      spec.remote());
  if (spec.auth().has_psk()) {
    const std::string& fingerprint = spec.auth().psk().fingerprint();
    Field(&out, 2, "Auth",
          absl::StrCat("pre-shared key, fingerprint ", fingerprint.empty() ? kNone : fingerprint));
  } else if (spec.auth().has_certificate()) {
    const strait::v1::CertificateAuth& cert = spec.auth().certificate();
    size_t cas = 0;
    for (size_t at = cert.ca_certificates().find("-----BEGIN CERTIFICATE-----");
         at != std::string::npos;
         at = cert.ca_certificates().find("-----BEGIN CERTIFICATE-----", at + 1)) {
      ++cas;
    }
    Field(&out, 2, "Auth", absl::StrCat("certificates, ", cas, " CA certificate(s)"));
    Field(&out, 4, "Certificate",
          cert.certificate_file().empty() ? "agent default" : cert.certificate_file());
    Field(&out, 4, "Private key",
          cert.private_key_file().empty() ? "agent default" : cert.private_key_file());
  } else {
    Field(&out, 2, "Auth", "none");
  }
  Field(&out, 2, "IKE", "");
  Field(&out, 4, "Proposals", JoinOrNone(spec.ike().proposals(), ", "));
  Field(&out, 4, "Lifetime",
        DurationOrDefault(spec.ike().lifetime(), spec.ike().has_lifetime(), "8h"));
  Field(&out, 2, "ESP", "");
  Field(&out, 4, "Proposals", JoinOrNone(spec.esp().proposals(), ", "));
  Field(&out, 4, "Lifetime",
        DurationOrDefault(spec.esp().lifetime(), spec.esp().has_lifetime(), "1h"));
  Field(&out, 4, "Rekey margin",
        DurationOrDefault(spec.esp().rekey_margin(), spec.esp().has_rekey_margin(), "9m"));
  Field(&out, 4, "Replay window",
        spec.esp().replay_window() == 0 ? std::string("default (64)")
                                        : absl::StrCat(spec.esp().replay_window()));
  Field(&out, 2, "DPD", "");
  Field(&out, 4, "Interval",
        DurationOrDefault(spec.dpd().interval(), spec.dpd().has_interval(), "30s"));
  Field(&out, 4, "Timeout",
        DurationOrDefault(spec.dpd().timeout(), spec.dpd().has_timeout(), "150s"));
  Field(&out, 4, "Action", DpdActionName(spec.dpd().action()));
  Field(&out, 2, "Start action", StartActionName(spec.start_action()));
  Field(
      &out, 2, "NAT traversal",
      spec.nat_traversal() == strait::v1::NAT_TRAVERSAL_FORCE ? "force (always UDP 4500)" : "auto");

  // Desired (the spec's generation) against actual (what each agent last
  // reported) for every managed end.
  Field(&out, 0, "Ends", "");
  std::vector<End> ends = Ends(tunnel);
  if (ends.empty()) Field(&out, 2, "(none)", "");
  for (const End& end : ends) {
    Field(&out, 2, absl::StrCat(end.node, " (", end.role, ")"), "");
    if (end.status == nullptr) {
      Field(&out, 4, "Phase", "- (no report yet)");
      Field(&out, 4, "Generation", absl::StrCat("desired ", meta.generation(), ", observed -"));
      continue;
    }
    const TunnelEndStatus& s = *end.status;
    std::string sync = s.observed_generation() == meta.generation()  ? "up to date"
                       : s.observed_generation() < meta.generation() ? "behind"
                                                                     : "ahead";
    Field(&out, 4, "Phase", intent::PhaseName(s.phase()));
    Field(&out, 4, "Reason", s.reason().empty() ? kNone : s.reason());
    Field(&out, 4, "Message", s.message().empty() ? kNone : s.message());
    Field(&out, 4, "Generation",
          absl::StrCat("desired ", meta.generation(), ", observed ", s.observed_generation(), " (",
                       sync, ")"));
    Field(&out, 4, "Reported", TimeAndAge(s.report_time(), now));
    if (s.has_ike_sa()) {
      const strait::v1::IkeSaStatus& ike = s.ike_sa();
      Field(&out, 4, "IKE SA",
            absl::StrCat(ike.initiator_spi(), "_i ", ike.responder_spi(), "_r",
                         ike.initiator() ? " (initiator)" : " (responder)"));
      Field(&out, 6, "Algorithms", ike.algorithms().empty() ? kNone : ike.algorithms());
      Field(&out, 6, "Peer",
            absl::StrCat(
                ike.remote_identity().empty() ? kNone : ike.remote_identity(),
                ike.auth_method().empty() ? "" : absl::StrCat(" (", ike.auth_method(), ")")));
      if (ike.local_behind_nat() || ike.remote_behind_nat()) {
        Field(&out, 6, "NAT",
              absl::StrCat(ike.local_behind_nat() ? "local " : "",
                           ike.remote_behind_nat() ? "remote" : ""));
      }
    }
    for (const strait::v1::ChildSaStatus& child : s.child_sas()) {
      Field(&out, 4, "CHILD SA",
            absl::StrCat(child.inbound_spi(), "_i ", child.outbound_spi(), "_o ",
                         child.algorithms()));
      Field(&out, 6, "Selectors",
            absl::StrCat(absl::StrJoin(child.local_traffic_selectors(), ","),
                         " === ", absl::StrJoin(child.remote_traffic_selectors(), ",")));
    }
  }
  return out;
}

}  // namespace strait::cli
