#include "agent/ike/tunnel_config.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/ike/engine_proposal.h"
#include "agent/ike/udp_io.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace strait::ike {
absl::StatusOr<Identity> ParseIdentity(const std::string& text) {
  Identity id;
  if (text.empty()) return absl::InvalidArgumentError("empty identity");
  if (absl::StatusOr<Bytes> ip = ParseIpAddress(text); ip.ok()) {
    id.type = ip->size() == 4 ? IdentityType::kIpv4 : IdentityType::kIpv6;
    id.value = *std::move(ip);
    return id;
  }
  if (text.find('=') != std::string::npos) {
    absl::StatusOr<Bytes> dn = ParseDistinguishedName(text);
    if (!dn.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" is not a distinguished name: ", dn.status().message()));
    }
    id.type = IdentityType::kDerAsn1Dn;
    id.value = *std::move(dn);
    return id;
  }
  id.type = text.find('@') != std::string::npos ? IdentityType::kRfc822 : IdentityType::kFqdn;
  id.value.assign(text.begin(), text.end());
  return id;
}

absl::StatusOr<std::vector<TrafficSelectorRange>> ParseSelectors(const std::string& text) {
  std::vector<TrafficSelectorRange> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    std::pair<std::string, std::string> cidr = absl::StrSplit(part, absl::MaxSplits('/', 1));
    ASSIGN_OR_RETURN(Bytes address, ParseIpAddress(cidr.first));
    const int bits = static_cast<int>(address.size() * 8);
    int prefix = bits;
    if (!cidr.second.empty() &&
        (!absl::SimpleAtoi(cidr.second, &prefix) || prefix < 0 || prefix > bits)) {
      return absl::InvalidArgumentError(absl::StrCat("bad prefix length in \"", part, "\""));
    }
    TrafficSelectorRange r;
    r.start_address = address;
    r.end_address = address;
    for (int i = 0; i < bits; ++i) {
      if (i < prefix) continue;
      const uint8_t bit = static_cast<uint8_t>(0x80u >> (i % 8));
      r.start_address[i / 8] &= static_cast<uint8_t>(~bit);
      r.end_address[i / 8] |= bit;
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) return absl::InvalidArgumentError("no traffic selector");
  return out;
}

absl::StatusOr<std::vector<AlgorithmProposal>> ParseProposals(const std::string& text,
                                                              intent::ProposalKind kind) {
  std::vector<AlgorithmProposal> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    ASSIGN_OR_RETURN(std::vector<AlgorithmProposal> more,
                     ParseAlgorithmProposals(absl::StripAsciiWhitespace(part), kind));
    out.insert(out.end(), more.begin(), more.end());
  }
  if (out.empty()) return absl::InvalidArgumentError("no proposal");
  return out;
}

// strongSwan's names, so that the output compares with swanctl --list-sas.
namespace {
std::string EncrName(const AlgorithmProposal& p) {
  std::string name;
  switch (p.encr_id) {
    case 12:
      name = "AES_CBC";
      break;
    case 18:
      name = "AES_GCM_8";
      break;
    case 19:
      name = "AES_GCM_12";
      break;
    case 20:
      name = "AES_GCM_16";
      break;
    case 28:
      name = "CHACHA20_POLY1305";
      break;
    default:
      name = absl::StrCat("ENCR_", p.encr_id);
  }
  if (p.key_bits != 0) absl::StrAppend(&name, "-", p.key_bits);
  return name;
}
std::string IntegName(uint16_t id) {
  switch (id) {
    case 12:
      return "HMAC_SHA2_256_128";
    case 13:
      return "HMAC_SHA2_384_192";
    case 14:
      return "HMAC_SHA2_512_256";
    default:
      return absl::StrCat("INTEG_", id);
  }
}
std::string PrfName(uint16_t id) {
  switch (id) {
    case 5:
      return "PRF_HMAC_SHA2_256";
    case 6:
      return "PRF_HMAC_SHA2_384";
    case 7:
      return "PRF_HMAC_SHA2_512";
    default:
      return absl::StrCat("PRF_", id);
  }
}
std::string DhName(uint16_t id) {
  switch (id) {
    case 14:
      return "MODP_2048";
    case 15:
      return "MODP_3072";
    case 16:
      return "MODP_4096";
    case 19:
      return "ECP_256";
    case 20:
      return "ECP_384";
    case 21:
      return "ECP_521";
    case 31:
      return "CURVE_25519";
    default:
      return absl::StrCat("DH_", id);
  }
}
}  // namespace

std::string SuiteName(const AlgorithmProposal& p, bool ike) {
  std::vector<std::string> parts = {EncrName(p)};
  if (p.integ_id != 0) parts.push_back(IntegName(p.integ_id));
  if (ike) {
    parts.push_back(PrfName(p.prf_id));
    parts.push_back(DhName(p.dh_group));
  }
  return absl::StrJoin(parts, "/");
}

// "10.1.0.0/24", or "start..end" when the range is no prefix.
std::string FormatSelector(const TrafficSelectorRange& r) {
  const Bytes& s = r.start_address;
  const Bytes& e = r.end_address;
  int prefix = -1;
  if (s.size() == e.size() && !s.empty()) {
    const int bits = static_cast<int>(s.size() * 8);
    int i = 0;
    while (i < bits && ((s[i / 8] ^ e[i / 8]) & (0x80u >> (i % 8))) == 0) ++i;
    prefix = i;
    for (int j = i; j < bits; ++j) {
      const uint8_t bit = static_cast<uint8_t>(0x80u >> (j % 8));
      if ((s[j / 8] & bit) != 0 || (e[j / 8] & bit) == 0) prefix = -1;
    }
  }
  std::string out = prefix >= 0 ? absl::StrCat(FormatIpAddress(s), "/", prefix)
                                : absl::StrCat(FormatIpAddress(s), "..", FormatIpAddress(e));
  if (r.ip_protocol != 0 || r.start_port != 0 || r.end_port != 0xffff) {
    absl::StrAppend(&out, "[", r.ip_protocol, "/", r.start_port, "-", r.end_port, "]");
  }
  return out;
}

absl::StatusOr<EngineConfig> EngineConfigFromSpec(const strait::v1::TunnelSpec& spec,
                                                  const CertificateDefaults& defaults) {
  EngineConfig config;
  absl::StatusOr<Bytes> local = ParseIpAddress(spec.local().address());
  if (!local.ok()) return absl::InvalidArgumentError("local.address: not an IP address");
  absl::StatusOr<Bytes> remote = ParseIpAddress(spec.remote().address());
  if (!remote.ok()) return absl::InvalidArgumentError("remote.address: not an IP address");
  if (local->size() != remote->size()) {
    return absl::InvalidArgumentError("local and remote addresses differ in family");
  }
  config.local = {*std::move(local), 500};
  config.remote = {*std::move(remote), 500};
  absl::StatusOr<Identity> lid =
      ParseIdentity(spec.local().id().empty() ? spec.local().address() : spec.local().id());
  if (!lid.ok())
    return absl::InvalidArgumentError(absl::StrCat("local.id: ", lid.status().message()));
  absl::StatusOr<Identity> rid =
      ParseIdentity(spec.remote().id().empty() ? spec.remote().address() : spec.remote().id());
  if (!rid.ok())
    return absl::InvalidArgumentError(absl::StrCat("remote.id: ", rid.status().message()));
  config.local_id = *std::move(lid);
  config.remote_id = *std::move(rid);

  auto ike = ParseProposals(absl::StrJoin(spec.ike().proposals(), ","), intent::ProposalKind::kIke);
  if (!ike.ok())
    return absl::InvalidArgumentError(absl::StrCat("ike.proposals: ", ike.status().message()));
  auto esp = ParseProposals(absl::StrJoin(spec.esp().proposals(), ","), intent::ProposalKind::kEsp);
  if (!esp.ok())
    return absl::InvalidArgumentError(absl::StrCat("esp.proposals: ", esp.status().message()));
  config.ike_proposals = *std::move(ike);
  config.esp_proposals = *std::move(esp);
  auto lts = ParseSelectors(absl::StrJoin(spec.local().traffic_selectors(), ","));
  if (!lts.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("local.traffic_selectors: ", lts.status().message()));
  auto rts = ParseSelectors(absl::StrJoin(spec.remote().traffic_selectors(), ","));
  if (!rts.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("remote.traffic_selectors: ", rts.status().message()));
  config.local_ts = *std::move(lts);
  config.remote_ts = *std::move(rts);

  if (spec.dpd().has_interval()) {
    config.dpd_interval = absl::Seconds(spec.dpd().interval().seconds()) +
                          absl::Nanoseconds(spec.dpd().interval().nanos());
  }
  if (spec.dpd().has_timeout()) {
    config.dpd_timeout = absl::Seconds(spec.dpd().timeout().seconds()) +
                         absl::Nanoseconds(spec.dpd().timeout().nanos());
  }

  // The CHILD SA rekeys `rekey_margin` before its lifetime ends, up to half
  // a margin earlier (fuzz), so that two ends configured alike rarely
  // collide.
  if (spec.esp().has_lifetime()) {
    const absl::Duration lifetime = absl::Seconds(spec.esp().lifetime().seconds());
    const absl::Duration margin = absl::Seconds(spec.esp().rekey_margin().seconds());
    if (lifetime > margin) {
      config.child_rekey_after = lifetime - margin;
      config.rekey_fuzz = std::min(margin / 2, (lifetime - margin) / 2);
    }
  }

  // The IKE SA rekeys (RFC 7296 §1.3.2; the CHILD SAs move to the new one)
  // a tenth of its lifetime before it ends, up to half of that earlier
  // (fuzz), like the CHILD SA.
  if (spec.ike().has_lifetime()) {
    const absl::Duration lifetime = absl::Seconds(spec.ike().lifetime().seconds()) +
                                    absl::Nanoseconds(spec.ike().lifetime().nanos());
    if (lifetime > absl::ZeroDuration()) {
      const absl::Duration margin = lifetime / 10;
      config.ike_rekey_after = lifetime - margin;
      config.ike_rekey_fuzz = std::min(margin / 2, (lifetime - margin) / 2);
    }
  }

  config.force_encapsulation = spec.nat_traversal() == strait::v1::NAT_TRAVERSAL_FORCE;

  if (spec.auth().has_certificate()) {
    const strait::v1::CertificateAuth& cert = spec.auth().certificate();
    auto anchors = TrustAnchors::FromPem(cert.ca_certificates());
    if (!anchors.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth.certificate.ca_certificates: ", anchors.status().message()));
    }
    const std::string& cert_file =
        cert.certificate_file().empty() ? defaults.certificate_file : cert.certificate_file();
    const std::string& key_file =
        cert.private_key_file().empty() ? defaults.private_key_file : cert.private_key_file();
    if (cert_file.empty() || key_file.empty()) {
      return absl::FailedPreconditionError(
          "auth.certificate: no certificate or private key file: set certificateFile and "
          "privateKeyFile, or start the agent with --ike-certificate and --ike-private-key");
    }
    auto credentials = LocalCredentials::FromFiles(cert_file, key_file);
    if (!credentials.ok()) {
      return absl::Status(credentials.status().code(),
                          absl::StrCat("auth.certificate: ", credentials.status().message()));
    }
    config.trust_anchors = *std::move(anchors);
    config.credentials = *std::move(credentials);
    return config;
  }
  if (!spec.auth().has_psk() || spec.auth().psk().value().empty()) {
    return absl::InvalidArgumentError("auth.psk: no pre-shared key");
  }
  config.psk = Secret(spec.auth().psk().value());
  return config;
}

}  // namespace strait::ike
