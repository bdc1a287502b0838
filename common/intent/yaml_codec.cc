#include "common/intent/yaml_codec.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace strait::intent {
namespace {

using ::strait::v1::Tunnel;

// ---------------------------------------------------------------------------
// Decoding. Every helper reports errors as "<path>: <reason>"; the caller
// prefixes the document number. Nothing here throws except yaml-cpp itself,
// which ParseTunnelsYaml catches.

absl::Status FieldError(const std::string& path, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", reason));
}

std::string Child(const std::string& path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string Index(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

const char* KindName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Null:
      return "nothing";
    default:
      return "a scalar";
  }
}

using FieldFn = std::function<absl::Status(const std::string& key, const YAML::Node& value,
                                           const std::string& path)>;

// Calls `fn` for every key of the mapping `node` (a null node is an empty
// mapping). Keys must be scalars and unique.
absl::Status ForEachField(const YAML::Node& node, const std::string& path, const FieldFn& fn) {
  if (node.IsNull()) {
    return absl::OkStatus();
  }
  if (!node.IsMap()) {
    return FieldError(path.empty() ? "document" : path,
                      absl::StrCat("expected a mapping, got ", KindName(node)));
  }
  std::set<std::string> seen;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) {
      return FieldError(path.empty() ? "document" : path, "keys must be plain strings");
    }
    const std::string& key = entry.first.Scalar();
    std::string child = Child(path, key);
    if (!seen.insert(key).second) {
      return FieldError(child, "appears twice");
    }
    RETURN_IF_ERROR(fn(key, entry.second, child));
  }
  return absl::OkStatus();
}

absl::Status UnknownField(const std::string& path) { return FieldError(path, "unknown field"); }

// A scalar as written; a null value is the empty string.
absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path) {
  if (node.IsNull()) {
    return std::string();
  }
  if (!node.IsScalar()) {
    return FieldError(path, absl::StrCat("expected a string, got ", KindName(node)));
  }
  return node.Scalar();
}

absl::Status StringList(const YAML::Node& node, const std::string& path,
                        google::protobuf::RepeatedPtrField<std::string>* out) {
  out->Clear();
  if (node.IsNull()) {
    return absl::OkStatus();
  }
  if (!node.IsSequence()) {
    return FieldError(path, absl::StrCat("expected a list such as [a, b], got ", KindName(node)));
  }
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    if (!item.IsScalar()) {
      return FieldError(Index(path, i), absl::StrCat("expected a string, got ", KindName(item)));
    }
    out->Add(std::string(item.Scalar()));
  }
  return absl::OkStatus();
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

// A null value leaves the field absent, so that ApplyDefaults fills it.
absl::Status Duration(const YAML::Node& node, const std::string& path,
                      google::protobuf::Duration* out) {
  if (node.IsNull()) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string text, String(node, path));
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration() ||
      d == -absl::InfiniteDuration()) {
    return FieldError(path, absl::StrCat("invalid duration \"", absl::CEscape(text),
                                         "\" (use for example 8h, 9m, 1h30m or 150s)"));
  }
  if (d < absl::ZeroDuration()) {
    return FieldError(path, absl::StrCat("negative duration \"", absl::CEscape(text), "\""));
  }
  SetDuration(d, out);
  return absl::OkStatus();
}

absl::Status Uint32(const YAML::Node& node, const std::string& path, uint32_t* out) {
  if (node.IsNull()) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string text, String(node, path));
  uint32_t value = 0;
  if (text.empty() || !std::all_of(text.begin(), text.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(text, &value)) {
    return FieldError(
        path, absl::StrCat("expected a non-negative integer, got \"", absl::CEscape(text), "\""));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status DecodeEndpoint(const YAML::Node& node, const std::string& path,
                            strait::v1::Endpoint* end) {
  return ForEachField(node, path,
                      [end](const std::string& key, const YAML::Node& value,
                            const std::string& field) -> absl::Status {
                        if (key == "node") {
                          ASSIGN_OR_RETURN(*end->mutable_node(), String(value, field));
                        } else if (key == "address") {
                          ASSIGN_OR_RETURN(*end->mutable_address(), String(value, field));
                        } else if (key == "id") {
                          ASSIGN_OR_RETURN(*end->mutable_id(), String(value, field));
                        } else if (key == "trafficSelectors") {
                          return StringList(value, field, end->mutable_traffic_selectors());
                        } else {
                          return UnknownField(field);
                        }
                        return absl::OkStatus();
                      });
}

// The key is a plain string. The mapping TunnelToYaml renders in its place
// ({redacted: true, fingerprint: ...}) carries only the fingerprint: the
// controller then keeps the key it stores for that tunnel, and only when the
// fingerprint matches it, so `get -o yaml | apply -f -` works and a redacted
// key is never applied as if it were the key. The value is never echoed.
absl::Status DecodePsk(const YAML::Node& node, const std::string& path,
                       strait::v1::PreSharedKey* psk) {
  if (node.IsMap()) {
    return ForEachField(node, path,
                        [psk](const std::string& key, const YAML::Node& value,
                              const std::string& field) -> absl::Status {
                          if (key == "fingerprint") {
                            ASSIGN_OR_RETURN(*psk->mutable_fingerprint(), String(value, field));
                          } else if (key != "redacted") {
                            return FieldError(field,
                                              "unknown field; a key is written as a string: "
                                              "psk: \"<at least 16 characters>\"");
                          }
                          return absl::OkStatus();
                        });
  }
  if (!node.IsNull() && !node.IsScalar()) {
    return FieldError(path, absl::StrCat("expected the key as a string, got ", KindName(node)));
  }
  if (node.IsScalar()) {
    psk->set_value(node.Scalar());
  }
  return absl::OkStatus();
}

absl::Status DecodeCertificateAuth(const YAML::Node& node, const std::string& path,
                                   strait::v1::CertificateAuth* cert) {
  return ForEachField(node, path,
                      [cert](const std::string& key, const YAML::Node& value,
                             const std::string& field) -> absl::Status {
                        if (key == "caCertificates") {
                          ASSIGN_OR_RETURN(*cert->mutable_ca_certificates(), String(value, field));
                        } else if (key == "certificateFile") {
                          ASSIGN_OR_RETURN(*cert->mutable_certificate_file(), String(value, field));
                        } else if (key == "privateKeyFile") {
                          ASSIGN_OR_RETURN(*cert->mutable_private_key_file(), String(value, field));
                        } else {
                          return UnknownField(field);
                        }
                        return absl::OkStatus();
                      });
}

absl::Status DecodeAuth(const YAML::Node& node, const std::string& path, strait::v1::Auth* auth) {
  return ForEachField(node, path,
                      [auth](const std::string& key, const YAML::Node& value,
                             const std::string& field) -> absl::Status {
                        if (key == "psk") {
                          if (value.IsNull()) {
                            return absl::OkStatus();
                          }
                          if (auth->has_certificate()) {
                            return FieldError(field, "give either psk or certificate, not both");
                          }
                          return DecodePsk(value, field, auth->mutable_psk());
                        }
                        if (key == "certificate") {
                          if (auth->has_psk()) {
                            return FieldError(field, "give either psk or certificate, not both");
                          }
                          return DecodeCertificateAuth(value, field, auth->mutable_certificate());
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeIke(const YAML::Node& node, const std::string& path,
                       strait::v1::IkeConfig* ike) {
  return ForEachField(node, path,
                      [ike](const std::string& key, const YAML::Node& value,
                            const std::string& field) -> absl::Status {
                        if (key == "proposals") {
                          return StringList(value, field, ike->mutable_proposals());
                        }
                        if (key == "lifetime") {
                          return Duration(value, field, ike->mutable_lifetime());
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeEsp(const YAML::Node& node, const std::string& path,
                       strait::v1::EspConfig* esp) {
  return ForEachField(node, path,
                      [esp](const std::string& key, const YAML::Node& value,
                            const std::string& field) -> absl::Status {
                        if (key == "proposals") {
                          return StringList(value, field, esp->mutable_proposals());
                        }
                        if (key == "lifetime") {
                          return Duration(value, field, esp->mutable_lifetime());
                        }
                        if (key == "rekeyMargin") {
                          return Duration(value, field, esp->mutable_rekey_margin());
                        }
                        if (key == "replayWindow") {
                          uint32_t window = esp->replay_window();
                          RETURN_IF_ERROR(Uint32(value, field, &window));
                          esp->set_replay_window(window);
                          return absl::OkStatus();
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeDpd(const YAML::Node& node, const std::string& path, strait::v1::Dpd* dpd) {
  return ForEachField(node, path,
                      [dpd](const std::string& key, const YAML::Node& value,
                            const std::string& field) -> absl::Status {
                        if (key == "interval") {
                          return Duration(value, field, dpd->mutable_interval());
                        }
                        if (key == "timeout") {
                          return Duration(value, field, dpd->mutable_timeout());
                        }
                        if (key == "action") {
                          ASSIGN_OR_RETURN(std::string action, String(value, field));
                          if (action == "clear") {
                            dpd->set_action(strait::v1::DPD_ACTION_CLEAR);
                          } else if (action == "hold") {
                            dpd->set_action(strait::v1::DPD_ACTION_HOLD);
                          } else if (action == "restart") {
                            dpd->set_action(strait::v1::DPD_ACTION_RESTART);
                          } else if (!action.empty()) {
                            return FieldError(field,
                                              absl::StrCat("\"", absl::CEscape(action),
                                                           "\" is not clear, hold or restart"));
                          }
                          return absl::OkStatus();
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeSpec(const YAML::Node& node, const std::string& path,
                        strait::v1::TunnelSpec* spec) {
  return ForEachField(node, path,
                      [spec](const std::string& key, const YAML::Node& value,
                             const std::string& field) -> absl::Status {
                        if (key == "node") {
                          ASSIGN_OR_RETURN(*spec->mutable_node(), String(value, field));
                          return absl::OkStatus();
                        }
                        if (key == "local") {
                          return DecodeEndpoint(value, field, spec->mutable_local());
                        }
                        if (key == "remote") {
                          return DecodeEndpoint(value, field, spec->mutable_remote());
                        }
                        if (key == "auth") {
                          return DecodeAuth(value, field, spec->mutable_auth());
                        }
                        if (key == "ike") {
                          return DecodeIke(value, field, spec->mutable_ike());
                        }
                        if (key == "esp") {
                          return DecodeEsp(value, field, spec->mutable_esp());
                        }
                        if (key == "dpd") {
                          return DecodeDpd(value, field, spec->mutable_dpd());
                        }
                        if (key == "natTraversal") {
                          ASSIGN_OR_RETURN(std::string mode, String(value, field));
                          if (mode == "auto") {
                            spec->set_nat_traversal(strait::v1::NAT_TRAVERSAL_AUTO);
                          } else if (mode == "force") {
                            spec->set_nat_traversal(strait::v1::NAT_TRAVERSAL_FORCE);
                          } else if (!mode.empty()) {
                            return FieldError(field, absl::StrCat("\"", absl::CEscape(mode),
                                                                  "\" is not auto or force"));
                          }
                          return absl::OkStatus();
                        }
                        if (key == "startAction") {
                          ASSIGN_OR_RETURN(std::string action, String(value, field));
                          if (action == "add") {
                            spec->set_start_action(strait::v1::START_ACTION_ADD);
                          } else if (action == "start") {
                            spec->set_start_action(strait::v1::START_ACTION_START);
                          } else if (!action.empty()) {
                            return FieldError(field, absl::StrCat("\"", absl::CEscape(action),
                                                                  "\" is not add or start"));
                          }
                          return absl::OkStatus();
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeMetadata(const YAML::Node& node, const std::string& path,
                            strait::v1::ObjectMeta* meta) {
  return ForEachField(node, path,
                      [meta](const std::string& key, const YAML::Node& value,
                             const std::string& field) -> absl::Status {
                        if (key == "name") {
                          ASSIGN_OR_RETURN(*meta->mutable_name(), String(value, field));
                          return absl::OkStatus();
                        }
                        if (key == "labels") {
                          auto* labels = meta->mutable_labels();
                          return ForEachField(
                              value, field,
                              [labels](const std::string& label, const YAML::Node& label_value,
                                       const std::string& label_field) -> absl::Status {
                                ASSIGN_OR_RETURN((*labels)[label],
                                                 String(label_value, label_field));
                                return absl::OkStatus();
                              });
                        }
                        // Output only: accepted so that `get -o yaml | apply -f -` works,
                        // and ignored.
                        if (key == "generation" || key == "revision" || key == "createTime" ||
                            key == "updateTime") {
                          return absl::OkStatus();
                        }
                        return UnknownField(field);
                      });
}

absl::Status DecodeTunnel(const YAML::Node& node, Tunnel* tunnel) {
  return ForEachField(node, "",
                      [tunnel](const std::string& key, const YAML::Node& value,
                               const std::string& field) -> absl::Status {
                        if (key == "kind") {
                          ASSIGN_OR_RETURN(std::string kind, String(value, field));
                          if (kind != "Tunnel") {
                            return FieldError(field, absl::StrCat("\"", absl::CEscape(kind),
                                                                  "\" is not supported (only "
                                                                  "Tunnel)"));
                          }
                          tunnel->set_kind(kind);
                          return absl::OkStatus();
                        }
                        if (key == "metadata") {
                          return DecodeMetadata(value, field, tunnel->mutable_metadata());
                        }
                        if (key == "spec") {
                          return DecodeSpec(value, field, tunnel->mutable_spec());
                        }
                        // Output only, ignored (see DecodeMetadata).
                        if (key == "status") {
                          return absl::OkStatus();
                        }
                        return UnknownField(field);
                      });
}

// ---------------------------------------------------------------------------
// Encoding.

absl::Duration ToAbsl(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  absl::Time t = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

void EmitStringList(YAML::Emitter& out, const char* key,
                    const google::protobuf::RepeatedPtrField<std::string>& list) {
  if (list.empty()) {
    return;
  }
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& item : list) {
    out << item;
  }
  out << YAML::EndSeq;
}

void EmitString(YAML::Emitter& out, const char* key, const std::string& value) {
  if (!value.empty()) {
    out << YAML::Key << key << YAML::Value << value;
  }
}

void EmitEndpoint(YAML::Emitter& out, const char* key, const strait::v1::Endpoint& end) {
  out << YAML::Key << key << YAML::Value << YAML::BeginMap;
  EmitString(out, "node", end.node());
  EmitString(out, "address", end.address());
  EmitString(out, "id", end.id());
  EmitStringList(out, "trafficSelectors", end.traffic_selectors());
  out << YAML::EndMap;
}

void EmitSpec(YAML::Emitter& out, const strait::v1::TunnelSpec& spec) {
  out << YAML::Key << "spec" << YAML::Value;
  if (spec.ByteSizeLong() == 0) {
    out << YAML::Flow;  // "spec: {}"
  }
  out << YAML::BeginMap;
  EmitString(out, "node", spec.node());
  if (spec.has_local()) {
    EmitEndpoint(out, "local", spec.local());
  }
  if (spec.has_remote()) {
    EmitEndpoint(out, "remote", spec.remote());
  }
  if (spec.auth().has_psk()) {
    // Never the value: a mapping, which ParseTunnelsYaml refuses.
    out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "psk" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "redacted" << YAML::Value << true;
    EmitString(out, "fingerprint", spec.auth().psk().fingerprint());
    out << YAML::EndMap << YAML::EndMap;
  } else if (spec.auth().has_certificate()) {
    const strait::v1::CertificateAuth& cert = spec.auth().certificate();
    out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "certificate" << YAML::Value << YAML::BeginMap;
    if (!cert.ca_certificates().empty()) {
      out << YAML::Key << "caCertificates" << YAML::Value << YAML::Literal
          << cert.ca_certificates();
    }
    EmitString(out, "certificateFile", cert.certificate_file());
    EmitString(out, "privateKeyFile", cert.private_key_file());
    out << YAML::EndMap << YAML::EndMap;
  }
  if (spec.has_ike()) {
    out << YAML::Key << "ike" << YAML::Value << YAML::BeginMap;
    EmitStringList(out, "proposals", spec.ike().proposals());
    if (spec.ike().has_lifetime()) {
      out << YAML::Key << "lifetime" << YAML::Value << FormatDuration(spec.ike().lifetime());
    }
    out << YAML::EndMap;
  }
  if (spec.has_esp()) {
    const strait::v1::EspConfig& esp = spec.esp();
    out << YAML::Key << "esp" << YAML::Value << YAML::BeginMap;
    EmitStringList(out, "proposals", esp.proposals());
    if (esp.has_lifetime()) {
      out << YAML::Key << "lifetime" << YAML::Value << FormatDuration(esp.lifetime());
    }
    if (esp.has_rekey_margin()) {
      out << YAML::Key << "rekeyMargin" << YAML::Value << FormatDuration(esp.rekey_margin());
    }
    if (esp.replay_window() != 0) {
      out << YAML::Key << "replayWindow" << YAML::Value << esp.replay_window();
    }
    out << YAML::EndMap;
  }
  if (spec.has_dpd()) {
    const strait::v1::Dpd& dpd = spec.dpd();
    out << YAML::Key << "dpd" << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (dpd.has_interval()) {
      out << YAML::Key << "interval" << YAML::Value << FormatDuration(dpd.interval());
    }
    if (dpd.has_timeout()) {
      out << YAML::Key << "timeout" << YAML::Value << FormatDuration(dpd.timeout());
    }
    if (dpd.action() != strait::v1::DPD_ACTION_UNSPECIFIED) {
      out << YAML::Key << "action" << YAML::Value << DpdActionName(dpd.action());
    }
    out << YAML::EndMap;
  }
  if (spec.nat_traversal() == strait::v1::NAT_TRAVERSAL_FORCE) {
    out << YAML::Key << "natTraversal" << YAML::Value << "force";
  } else if (spec.nat_traversal() == strait::v1::NAT_TRAVERSAL_AUTO) {
    out << YAML::Key << "natTraversal" << YAML::Value << "auto";
  }
  if (spec.start_action() != strait::v1::START_ACTION_UNSPECIFIED) {
    out << YAML::Key << "startAction" << YAML::Value << StartActionName(spec.start_action());
  }
  out << YAML::EndMap;
}

void EmitStatus(YAML::Emitter& out, const strait::v1::TunnelStatus& status) {
  out << YAML::Key << "status" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "ends" << YAML::Value << YAML::BeginSeq;
  for (const strait::v1::TunnelEndStatus& end : status.ends()) {
    out << YAML::BeginMap;
    EmitString(out, "node", end.node());
    if (end.phase() != strait::v1::TUNNEL_PHASE_UNSPECIFIED) {
      out << YAML::Key << "phase" << YAML::Value << PhaseName(end.phase());
    }
    EmitString(out, "reason", end.reason());
    EmitString(out, "message", end.message());
    if (end.observed_generation() != 0) {
      out << YAML::Key << "observedGeneration" << YAML::Value << end.observed_generation();
    }
    if (end.has_report_time()) {
      out << YAML::Key << "reportTime" << YAML::Value << FormatTimestamp(end.report_time());
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
}

}  // namespace

std::string DpdActionName(strait::v1::DpdAction action) {
  switch (action) {
    case strait::v1::DPD_ACTION_CLEAR:
      return "clear";
    case strait::v1::DPD_ACTION_HOLD:
      return "hold";
    case strait::v1::DPD_ACTION_RESTART:
      return "restart";
    default:
      return absl::StrCat(static_cast<int>(action));
  }
}

std::string StartActionName(strait::v1::StartAction action) {
  switch (action) {
    case strait::v1::START_ACTION_ADD:
      return "add";
    case strait::v1::START_ACTION_START:
      return "start";
    default:
      return absl::StrCat(static_cast<int>(action));
  }
}

std::string PhaseName(strait::v1::TunnelPhase phase) {
  const std::string& name = strait::v1::TunnelPhase_Name(phase);
  if (name.empty()) {
    return absl::StrCat(static_cast<int>(phase));
  }
  absl::string_view short_name = name;
  absl::ConsumePrefix(&short_name, "TUNNEL_PHASE_");
  return std::string(short_name);
}

absl::StatusOr<std::vector<Tunnel>> ParseTunnelsYaml(absl::string_view text) {
  std::vector<Tunnel> tunnels;
  // yaml-cpp reports errors by throwing; this is the one place they are
  // caught and turned into a Status.
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(std::string(text));
    for (size_t i = 0; i < documents.size(); ++i) {
      const YAML::Node& document = documents[i];
      if (document.IsNull()) {
        continue;
      }
      Tunnel tunnel;
      absl::Status status = DecodeTunnel(document, &tunnel);
      if (!status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("document ", i + 1, ": ", status.message()));
      }
      tunnels.push_back(std::move(tunnel));
    }
  } catch (const YAML::Exception& e) {
    // The position counted from 1, as editors show it, and yaml-cpp's
    // message without its "yaml-cpp: error at ..." prefix.
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML at line ", e.mark.line + 1,
                                                   ", column ", e.mark.column + 1, ": ", e.msg));
  }
  return tunnels;
}

std::string TunnelToYaml(const Tunnel& tunnel) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value
      << (tunnel.kind().empty() ? std::string("Tunnel") : tunnel.kind());

  const strait::v1::ObjectMeta& meta = tunnel.metadata();
  out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  EmitString(out, "name", meta.name());
  if (!meta.labels().empty()) {
    // Sorted, so that the output is stable.
    std::vector<std::pair<std::string, std::string>> labels(meta.labels().begin(),
                                                            meta.labels().end());
    std::sort(labels.begin(), labels.end());
    out << YAML::Key << "labels" << YAML::Value << YAML::Flow << YAML::BeginMap;
    for (const auto& [key, value] : labels) {
      out << YAML::Key << key << YAML::Value << value;
    }
    out << YAML::EndMap;
  }
  if (meta.generation() != 0) {
    out << YAML::Key << "generation" << YAML::Value << meta.generation();
  }
  if (meta.revision() != 0) {
    out << YAML::Key << "revision" << YAML::Value << meta.revision();
  }
  if (meta.has_create_time()) {
    out << YAML::Key << "createTime" << YAML::Value << FormatTimestamp(meta.create_time());
  }
  if (meta.has_update_time()) {
    out << YAML::Key << "updateTime" << YAML::Value << FormatTimestamp(meta.update_time());
  }
  out << YAML::EndMap;

  EmitSpec(out, tunnel.spec());
  if (tunnel.has_status() && !tunnel.status().ends().empty()) {
    EmitStatus(out, tunnel.status());
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string FormatDuration(const google::protobuf::Duration& d) {
  absl::Duration duration = ToAbsl(d);
  if (duration == absl::ZeroDuration()) {
    return "0s";
  }
  return absl::FormatDuration(duration);
}

}  // namespace strait::intent
