#ifndef STRAIT_CLI_OUTPUT_H_
#define STRAIT_CLI_OUTPUT_H_

// Rendering of API objects for straitctl: aligned tables, YAML (the shape
// `apply` reads) and JSON (proto3 JSON mapping, camelCase). Pure functions
// of their inputs, so the current time is a parameter.
//
// No output carries a PSK value: every renderer works on a redacted copy,
// even though the controller never returns one.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/strait/v1/admin.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::cli {

enum class OutputFormat { kTable, kYaml, kJson };

// Parses "table", "yaml" or "json".
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view text);

// Columns padded to the widest cell, three spaces apart, no trailing blanks.
// Empty cells show as "-" so that every row has the same number of fields
// for awk and cut.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  // `cells` must have as many entries as the header (missing ones are blank,
  // extra ones are dropped).
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Clears the PSK value, keeping its fingerprint.
void RedactTunnel(strait::v1::Tunnel* tunnel);

// kubectl-style age of `since` at `now`: "90s", "5m", "3h", "12d"; "-" when
// `since` is unset.
std::string FormatAge(const google::protobuf::Timestamp& since, absl::Time now);

// RFC 3339 in UTC, "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts);

// "PENDING", "ESTABLISHED", ... ("UNSPECIFIED" for 0).
std::string PhaseName(strait::v1::TunnelPhase phase);

// The ends' phases in the order of the spec (local node, then a managed
// remote node), "/"-separated, "-" for an end without a report yet
// (TUNNEL_PHASE_UNSPECIFIED): "PENDING", "PENDING/UP", "UP/-"; just "-" when
// no end has reported.
std::string TunnelPhaseSummary(const strait::v1::Tunnel& tunnel);

// Proto3 JSON, camelCase field names, indented, newline-terminated.
absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& message);

// `get tunnels` / `get tunnel NAME`. Table columns:
// NAME NODE REMOTE LOCAL-TS REMOTE-TS PHASE GEN AGE. YAML is one document
// per tunnel, "---" between them; JSON is the response message (a list) or
// the tunnel itself.
// Fails only when the JSON conversion does (a timestamp out of range).
absl::StatusOr<std::string> FormatTunnelList(const strait::v1::ListTunnelsResponse& response,
                                             OutputFormat format, absl::Time now);
absl::StatusOr<std::string> FormatTunnel(const strait::v1::Tunnel& tunnel, OutputFormat format,
                                         absl::Time now);

// `get nodes`. Table columns:
// NAME CONNECTED CURRENT-VERSION ACKED-VERSION IN-SYNC TUNNELS LAST-ERROR.
// YAML is one document per node, JSON the response message.
absl::StatusOr<std::string> FormatNodeList(const strait::v1::ListNodesResponse& response,
                                           OutputFormat format);

// `describe tunnel NAME`: metadata, spec, and per managed end the desired
// generation against what its agent reported.
std::string DescribeTunnel(const strait::v1::Tunnel& tunnel, absl::Time now);

}  // namespace strait::cli

#endif  // STRAIT_CLI_OUTPUT_H_
