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
// invalid duration \"8x\""); document numbers count every "---" section,
// empty ones included. Empty documents are skipped. A kind other than
// "Tunnel" is an error; a missing kind is left empty (ApplyDefaults sets it).
// A null value (`lifetime:`) leaves the field unset; an explicit "0s" stays
// present. Negative durations are errors.
//
// Output-only fields are accepted and ignored, so that `get -o yaml` output
// can be applied again: `status`, and metadata.generation, revision,
// createTime and updateTime.
//
// spec.auth.psk is the key as a plain string. The redacted mapping that
// TunnelToYaml prints in its place sets only psk.fingerprint: the
// controller then keeps the key it stores for that tunnel if (and only if)
// the fingerprint matches it, and validation alone refuses it for lack of a
// key. A key read back is never applied as if it were the key. Error
// messages never quote the key.
absl::StatusOr<std::vector<strait::v1::Tunnel>> ParseTunnelsYaml(absl::string_view text);

// Renders a tunnel in the same YAML shape (including output-only metadata
// and status when set; unset fields are left out; labels sorted). A PSK
// value is never rendered; in its place:
//
//   auth:
//     psk: {redacted: true, fingerprint: sha256:3f9a1c2b7d4e}
//
// (`{redacted: true}` when there is no fingerprint): a mapping, unlike any
// string a user could mean as a key.
// Timestamps are RFC 3339 in UTC; phases are PENDING, ESTABLISHED, ...
std::string TunnelToYaml(const strait::v1::Tunnel& tunnel);

// The YAML spellings of enum values: "restart", "start", "PENDING". Values
// outside the enum render as their number.
std::string DpdActionName(strait::v1::DpdAction action);
std::string StartActionName(strait::v1::StartAction action);
std::string PhaseName(strait::v1::TunnelPhase phase);

// Renders a duration the way ParseTunnelsYaml reads it ("8h", "9m", "1h30m").
std::string FormatDuration(const google::protobuf::Duration& d);

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_YAML_CODEC_H_
