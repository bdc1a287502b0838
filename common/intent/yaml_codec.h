#ifndef STRAIT_COMMON_INTENT_YAML_CODEC_H_
#define STRAIT_COMMON_INTENT_YAML_CODEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::intent {

// Parses one or more YAML documents ("---" separated) of `kind: Tunnel`.
// Field names are camelCase as in the README (trafficSelectors,
// rekeyMargin, startAction); durations are Go/absl style ("8h", "9m",
// "1h30m"); dpd.action is clear|hold|restart; startAction is add|start.
// Unknown fields, wrong types and bad durations are InvalidArgument naming
// the document number and field path ("document 2: spec.ike.lifetime:
// invalid duration \"8x\""). Empty documents are skipped.
absl::StatusOr<std::vector<strait::v1::Tunnel>> ParseTunnelsYaml(absl::string_view text);

// Renders a tunnel in the same YAML shape (including output-only metadata
// and status when set). A PSK value is never rendered, only its fingerprint.
std::string TunnelToYaml(const strait::v1::Tunnel& tunnel);

// Renders a duration the way ParseTunnelsYaml reads it ("8h", "9m", "1h30m").
std::string FormatDuration(const google::protobuf::Duration& d);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_YAML_CODEC_H_
