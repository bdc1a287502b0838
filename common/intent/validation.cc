#include "common/intent/validation.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/intent/cidr.h"
#include "common/intent/node_share.h"
#include "common/intent/proposal.h"

namespace strait::intent {
namespace {

// The number of PEM certificates in `pem`; -1 when some PEM block or the
// DER inside does not parse.
int CountPemCertificates(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return -1;
  int count = 0;
  while (true) {
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    X509_free(cert);
    ++count;
  }
  const unsigned long err = ERR_peek_last_error();
  const bool clean_end =
      err == 0 || (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE);
  ERR_clear_error();
  BIO_free(bio);
  return clean_end ? count : -1;
}

using ::google::protobuf::RepeatedPtrField;
using ::strait::v1::Tunnel;
using ::strait::v1::TunnelSpec;

constexpr size_t kMinPskLength = 16;
constexpr size_t kMaxIdentityLength = 255;
constexpr char kTunnelKind[] = "Tunnel";

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

class Checker {
 public:
  explicit Checker(std::vector<FieldViolation>* out) : out_(out) {}

  void Add(std::string field, std::string reason) {
    out_->push_back({std::move(field), std::move(reason)});
  }

  void DnsLabel(const std::string& field, const std::string& value, absl::string_view what) {
    if (value.empty()) {
      Add(field, absl::StrCat("is required: the ", what));
    } else if (!IsDnsLabel(value)) {
      Add(field, absl::StrCat("\"", absl::CEscape(value),
                              "\" is not a DNS label (1 to 63 lowercase letters, digits and '-', "
                              "starting and ending with a letter or digit)"));
    }
  }

  std::optional<IpAddress> Address(const std::string& field, const std::string& value,
                                   absl::string_view missing_reason) {
    if (value.empty()) {
      Add(field, std::string(missing_reason));
      return std::nullopt;
    }
    auto ip = ParseIpAddress(value);
    if (!ip.ok()) {
      Add(field, std::string(ip.status().message()));
      return std::nullopt;
    }
    return *ip;
  }

  void CertificateAuth(const std::string& field, const strait::v1::CertificateAuth& cert) {
    if (cert.ca_certificates().empty()) {
      Add(field + ".caCertificates", "is required: the PEM CA certificates of the peer");
    } else {
      const int count = CountPemCertificates(cert.ca_certificates());
      if (count < 0) {
        Add(field + ".caCertificates",
            "does not parse as PEM X.509 certificates (-----BEGIN CERTIFICATE----- ...)");
      } else if (count == 0) {
        Add(field + ".caCertificates", "holds no certificate");
      }
    }
    for (const auto& [name, path] :
         {std::pair<const char*, const std::string&>{"certificateFile", cert.certificate_file()},
          {"privateKeyFile", cert.private_key_file()}}) {
      if (!path.empty() && path[0] != '/') {
        Add(absl::StrCat(field, ".", name), absl::StrCat("\"", path, "\" is not an absolute path"));
      }
    }
  }

  void Identity(const std::string& field, const std::string& value) {
    if (value.empty()) {
      Add(field, "is required (it defaults to the address)");
      return;
    }
    if (value.size() > kMaxIdentityLength) {
      Add(field, absl::StrCat("is longer than ", kMaxIdentityLength, " characters"));
      return;
    }
    for (char c : value) {
      if (!absl::ascii_isprint(static_cast<unsigned char>(c))) {
        Add(field, absl::StrCat("\"", absl::CEscape(value),
                                "\" holds a non-printable or non-ASCII character; use an FQDN, an "
                                "email address or an IP address"));
        return;
      }
    }
    if (absl::ascii_isspace(static_cast<unsigned char>(value.front())) ||
        absl::ascii_isspace(static_cast<unsigned char>(value.back()))) {
      Add(field, absl::StrCat("\"", absl::CEscape(value),
                              "\" starts or ends with a space, which the peer would not match"));
    }
  }

  // The parsed selectors, with their index in the list; unparsable ones are
  // reported and left out.
  std::vector<std::pair<int, Cidr>> Selectors(const std::string& field,
                                              const RepeatedPtrField<std::string>& selectors) {
    std::vector<std::pair<int, Cidr>> out;
    if (selectors.empty()) {
      Add(field, "at least one CIDR is required (for example 10.1.0.0/24)");
    }
    for (int i = 0; i < selectors.size(); ++i) {
      auto cidr = ParseCidr(selectors[i]);
      if (!cidr.ok()) {
        Add(absl::StrCat(field, "[", i, "]"), std::string(cidr.status().message()));
        continue;
      }
      out.emplace_back(i, *cidr);
    }
    return out;
  }

  // A present, well-formed, non-negative duration; reports the rest.
  std::optional<absl::Duration> Duration(const std::string& field, bool present,
                                         const google::protobuf::Duration& d) {
    if (!present) {
      Add(field, "is required");
      return std::nullopt;
    }
    constexpr int64_t kMaxSeconds = 315576000000;  // google.protobuf.Duration's range
    bool valid = d.seconds() >= -kMaxSeconds && d.seconds() <= kMaxSeconds &&
                 d.nanos() > -1000000000 && d.nanos() < 1000000000 &&
                 !(d.seconds() > 0 && d.nanos() < 0) && !(d.seconds() < 0 && d.nanos() > 0);
    if (!valid) {
      Add(field, "is not a valid duration");
      return std::nullopt;
    }
    absl::Duration out = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
    if (out < absl::ZeroDuration()) {
      Add(field, absl::StrCat(absl::FormatDuration(out), " is negative"));
      return std::nullopt;
    }
    return out;
  }

  // A positive duration no longer than `max`.
  std::optional<absl::Duration> Lifetime(const std::string& field, bool present,
                                         const google::protobuf::Duration& d, absl::Duration max,
                                         absl::string_view what, absl::string_view flag) {
    auto lifetime = Duration(field, present, d);
    if (!lifetime) {
      return std::nullopt;
    }
    if (*lifetime == absl::ZeroDuration()) {
      Add(field, "must be positive");
      return std::nullopt;
    }
    if (*lifetime > max) {
      Add(field,
          absl::StrCat(absl::FormatDuration(*lifetime), " is longer than the maximum ", what,
                       " lifetime ", absl::FormatDuration(max), " (controller flag ", flag, ")"));
    }
    return lifetime;
  }

  void Proposals(const std::string& field, const RepeatedPtrField<std::string>& proposals,
                 ProposalKind kind) {
    if (proposals.empty()) {
      Add(field, absl::StrCat("at least one proposal is required (for example ",
                              kind == ProposalKind::kIke ? "aes256gcm16-prfsha384-ecp384"
                                                         : "aes256gcm16-ecp384",
                              ")"));
      return;
    }
    for (int i = 0; i < proposals.size(); ++i) {
      std::string path = absl::StrCat(field, "[", i, "]");
      auto proposal = ParseProposal(proposals[i], kind);
      if (!proposal.ok()) {
        Add(path, std::string(proposal.status().message()));
        continue;
      }
      for (const Transform& t : proposal->encryption) {
        WeakTransform(path, t, kTransformEncryption);
      }
      for (const Transform& t : proposal->integrity) {
        WeakTransform(path, t, kTransformIntegrity);
      }
      // A PRF derived from a weak integrity algorithm is already reported
      // with it; only PRFs written out are checked on their own.
      std::vector<std::string> keywords = absl::StrSplit(absl::AsciiStrToLower(proposals[i]), '-');
      for (const Transform& t : proposal->prf) {
        if (std::find(keywords.begin(), keywords.end(), t.keyword) == keywords.end()) {
          continue;
        }
        WeakTransform(path, t, kTransformPrf);
      }
      for (const Transform& t : proposal->dh_groups) {
        WeakTransform(path, t, kTransformDh);
      }
    }
  }

 private:
  void WeakTransform(const std::string& field, const Transform& t, absl::string_view type) {
    std::string reason = WeakTransformReason(t, type);
    if (!reason.empty()) {
      Add(field, std::move(reason));
    }
  }

  std::vector<FieldViolation>* out_;
};

bool IsAllowedDpdAction(strait::v1::DpdAction action) {
  return action == strait::v1::DPD_ACTION_CLEAR || action == strait::v1::DPD_ACTION_HOLD ||
         action == strait::v1::DPD_ACTION_RESTART;
}

bool IsAllowedStartAction(strait::v1::StartAction action) {
  return action == strait::v1::START_ACTION_ADD || action == strait::v1::START_ACTION_START;
}

// A (local, remote) pair of a node half's parsed traffic selectors; one
// kernel policy each. Unparsable selectors are skipped (ValidateTunnel
// reports them).
struct SelectorPair {
  int local_index;
  Cidr local;
  Cidr remote;
};

std::vector<SelectorPair> SelectorPairs(const TunnelSpec& half) {
  std::vector<Cidr> remotes;
  for (const std::string& s : half.remote().traffic_selectors()) {
    auto cidr = ParseCidr(s);
    if (cidr.ok()) {
      remotes.push_back(*cidr);
    }
  }
  std::vector<SelectorPair> pairs;
  for (int i = 0; i < half.local().traffic_selectors().size(); ++i) {
    auto local = ParseCidr(half.local().traffic_selectors(i));
    if (!local.ok()) {
      continue;
    }
    for (const Cidr& remote : remotes) {
      pairs.push_back({i, *local, remote});
    }
  }
  return pairs;
}

// The first pair of `mine` whose local and remote selectors both overlap
// those of a pair of `theirs`.
std::optional<std::pair<SelectorPair, SelectorPair>> FirstOverlap(const TunnelSpec& mine,
                                                                  const TunnelSpec& theirs) {
  const std::vector<SelectorPair> their_pairs = SelectorPairs(theirs);
  for (const SelectorPair& a : SelectorPairs(mine)) {
    for (const SelectorPair& b : their_pairs) {
      if (a.local.Overlaps(b.local) && a.remote.Overlaps(b.remote)) {
        return std::make_pair(a, b);
      }
    }
  }
  return std::nullopt;
}

}  // namespace

void ApplyDefaults(Tunnel* tunnel) {
  if (tunnel->kind().empty()) {
    tunnel->set_kind(kTunnelKind);
  }
  TunnelSpec* spec = tunnel->mutable_spec();
  // Presence, not value: a Duration written as 0s stays 0s, so that
  // validation can refuse it instead of silently repairing it.
  if (!spec->ike().has_lifetime()) {
    SetDuration(absl::Hours(8), spec->mutable_ike()->mutable_lifetime());
  }
  strait::v1::EspConfig* esp = spec->mutable_esp();
  if (!esp->has_lifetime()) {
    SetDuration(absl::Hours(1), esp->mutable_lifetime());
  }
  if (!esp->has_rekey_margin()) {
    SetDuration(absl::Minutes(9), esp->mutable_rekey_margin());
  }
  // proto3 scalars have no presence; 0 is not a usable window anyway.
  if (esp->replay_window() == 0) {
    esp->set_replay_window(64);
  }
  strait::v1::Dpd* dpd = spec->mutable_dpd();
  if (!dpd->has_interval()) {
    SetDuration(absl::Seconds(30), dpd->mutable_interval());
  }
  if (!dpd->has_timeout()) {
    SetDuration(absl::Seconds(150), dpd->mutable_timeout());
  }
  if (dpd->action() == strait::v1::DPD_ACTION_UNSPECIFIED) {
    dpd->set_action(strait::v1::DPD_ACTION_RESTART);
  }
  if (spec->nat_traversal() == strait::v1::NAT_TRAVERSAL_UNSPECIFIED) {
    spec->set_nat_traversal(strait::v1::NAT_TRAVERSAL_AUTO);
  }
  if (spec->start_action() == strait::v1::START_ACTION_UNSPECIFIED) {
    spec->set_start_action(strait::v1::START_ACTION_START);
  }
  for (strait::v1::Endpoint* end : {spec->mutable_local(), spec->mutable_remote()}) {
    if (end->id().empty()) {
      end->set_id(end->address());
    }
  }
}

std::vector<FieldViolation> ValidateTunnel(const Tunnel& tunnel, const ValidationPolicy& policy) {
  std::vector<FieldViolation> violations;
  Checker check(&violations);
  const TunnelSpec& spec = tunnel.spec();

  if (tunnel.kind() != kTunnelKind) {
    check.Add("kind", tunnel.kind().empty()
                          ? std::string("is required and must be \"Tunnel\"")
                          : absl::StrCat("\"", absl::CEscape(tunnel.kind()),
                                         "\" is not supported; only \"Tunnel\" is"));
  }
  check.DnsLabel("metadata.name", tunnel.metadata().name(), "tunnel's name");
  check.DnsLabel("spec.node", spec.node(), "managed node that owns the local end");

  // Ends.
  if (!spec.local().node().empty()) {
    check.Add("spec.local.node",
              "only the remote end can name a node; the local end belongs to spec.node");
  }
  const bool node_to_node = !spec.remote().node().empty();
  if (node_to_node) {
    check.DnsLabel("spec.remote.node", spec.remote().node(), "managed node at the remote end");
    if (spec.remote().node() == spec.node()) {
      check.Add("spec.remote.node",
                absl::StrCat("is spec.node (", spec.node(),
                             ") again; a node-to-node tunnel needs two different nodes"));
    }
  }
  auto local_ip = check.Address("spec.local.address", spec.local().address(),
                                "is required: the outer IP address of this node's end");
  auto remote_ip = check.Address(
      "spec.remote.address", spec.remote().address(),
      node_to_node
          ? absl::StrCat("is required: a node-to-node tunnel needs the outer IP address of "
                         "node ",
                         spec.remote().node())
          : std::string("is required: the outer IP address of the remote gateway"));
  if (local_ip && remote_ip) {
    if (local_ip->family != remote_ip->family) {
      check.Add("spec.remote.address",
                absl::StrCat(spec.remote().address(), " is IPv", remote_ip->family,
                             " but spec.local.address is IPv", local_ip->family,
                             "; both outer addresses must be of the same family"));
    } else if (*local_ip == *remote_ip) {
      check.Add("spec.remote.address",
                absl::StrCat(spec.remote().address(), " is also the local address"));
    }
  }
  check.Identity("spec.local.id", spec.local().id());
  check.Identity("spec.remote.id", spec.remote().id());

  auto local_selectors =
      check.Selectors("spec.local.trafficSelectors", spec.local().traffic_selectors());
  auto remote_selectors =
      check.Selectors("spec.remote.trafficSelectors", spec.remote().traffic_selectors());
  for (const auto& [j, remote] : remote_selectors) {
    if (!remote.IsAllAddresses()) {
      continue;
    }
    for (const auto& [i, local] : local_selectors) {
      if (local.IsAllAddresses() && local.address.family == remote.address.family) {
        check.Add(absl::StrCat("spec.remote.trafficSelectors[", j, "]"),
                  absl::StrCat(remote.ToString(), " on both sides (spec.local.trafficSelectors[", i,
                               "] too) would capture all traffic of the node, including IKE "
                               "to the peer; narrow one side"));
        break;
      }
    }
  }

  // Authentication. The key itself never appears in a message.
  if (spec.auth().has_certificate()) {
    check.CertificateAuth("spec.auth.certificate", spec.auth().certificate());
  } else if (!spec.auth().has_psk()) {
    check.Add("spec.auth",
              "is required: psk (a pre-shared key of at least 16 characters) or certificate");
  } else if (spec.auth().psk().value().empty()) {
    check.Add("spec.auth.psk", "is required: a pre-shared key of at least 16 characters");
  } else if (spec.auth().psk().value().size() < kMinPskLength) {
    check.Add("spec.auth.psk",
              "is too short: use at least 16 characters (32 random bytes, base64-encoded, is "
              "better)");
  }

  // Proposals and lifetimes.
  check.Proposals("spec.ike.proposals", spec.ike().proposals(), ProposalKind::kIke);
  check.Proposals("spec.esp.proposals", spec.esp().proposals(), ProposalKind::kEsp);
  check.Lifetime("spec.ike.lifetime", spec.ike().has_lifetime(), spec.ike().lifetime(),
                 policy.max_ike_lifetime, "IKE", "--max-ike-lifetime");
  auto child_lifetime =
      check.Lifetime("spec.esp.lifetime", spec.esp().has_lifetime(), spec.esp().lifetime(),
                     policy.max_child_lifetime, "child SA", "--max-child-lifetime");
  auto margin = check.Duration("spec.esp.rekeyMargin", spec.esp().has_rekey_margin(),
                               spec.esp().rekey_margin());
  if (margin) {
    if (*margin == absl::ZeroDuration()) {
      check.Add("spec.esp.rekeyMargin",
                "must be positive: with no margin the SA expires before it is rekeyed");
    } else if (child_lifetime && *child_lifetime <= *margin) {
      check.Add(
          "spec.esp.rekeyMargin",
          absl::StrCat(absl::FormatDuration(*margin), " is not shorter than the child SA lifetime ",
                       absl::FormatDuration(*child_lifetime),
                       ", so the SA would rekey as soon as it is up"));
    }
  }
  if (spec.esp().replay_window() == 0) {
    check.Add("spec.esp.replayWindow", "must be positive (64 packets is the default)");
  }

  // Dead peer detection.
  auto interval =
      check.Duration("spec.dpd.interval", spec.dpd().has_interval(), spec.dpd().interval());
  auto timeout = check.Duration("spec.dpd.timeout", spec.dpd().has_timeout(), spec.dpd().timeout());
  if (interval && *interval == absl::ZeroDuration()) {
    check.Add("spec.dpd.interval",
              "0s disables dead peer detection, which Strait requires (for example 30s)");
  }
  if (timeout && *timeout == absl::ZeroDuration()) {
    check.Add("spec.dpd.timeout",
              "0s disables dead peer detection, which Strait requires (for example 150s)");
  }
  if (interval && timeout && *interval > absl::ZeroDuration() && *timeout > absl::ZeroDuration() &&
      *timeout <= *interval) {
    check.Add("spec.dpd.timeout",
              absl::StrCat(absl::FormatDuration(*timeout), " must be longer than the interval ",
                           absl::FormatDuration(*interval)));
  }
  if (!IsAllowedDpdAction(spec.dpd().action())) {
    check.Add("spec.dpd.action", "must be clear, hold or restart");
  }
  if (spec.nat_traversal() != strait::v1::NAT_TRAVERSAL_UNSPECIFIED &&
      spec.nat_traversal() != strait::v1::NAT_TRAVERSAL_AUTO &&
      spec.nat_traversal() != strait::v1::NAT_TRAVERSAL_FORCE) {
    check.Add("spec.natTraversal", "must be auto or force");
  }
  if (!IsAllowedStartAction(spec.start_action())) {
    check.Add("spec.startAction", "must be add or start");
  }
  return violations;
}

std::vector<FieldViolation> CheckOverlaps(const Tunnel& candidate,
                                          const std::vector<const Tunnel*>& others) {
  std::vector<FieldViolation> violations;
  const std::vector<std::string> candidate_nodes = TunnelNodes(candidate.spec());
  for (const Tunnel* other : others) {
    if (other == nullptr || other->metadata().name() == candidate.metadata().name()) {
      continue;
    }
    const std::vector<std::string> other_nodes = TunnelNodes(other->spec());
    for (const std::string& node : candidate_nodes) {
      if (std::find(other_nodes.begin(), other_nodes.end(), node) == other_nodes.end()) {
        continue;
      }
      auto mine = NodeHalf(candidate, node);
      auto theirs = NodeHalf(*other, node);
      if (!mine || !theirs) {
        continue;
      }
      // One violation per tunnel and node is enough to act on.
      auto overlap = FirstOverlap(mine->spec(), theirs->spec());
      if (!overlap) {
        continue;
      }
      const SelectorPair& a = overlap->first;
      const SelectorPair& b = overlap->second;
      // On the remote node of a node-to-node tunnel, that node's local
      // selectors are the spec's remote ones.
      const bool mirrored = candidate.spec().node() != node;
      violations.push_back(
          {absl::StrCat(mirrored ? "spec.remote" : "spec.local", ".trafficSelectors[",
                        a.local_index, "]"),
           absl::StrCat(a.local.ToString(), " <-> ", a.remote.ToString(), " on node ", node,
                        " overlaps ", b.local.ToString(), " <-> ", b.remote.ToString(),
                        " of tunnel \"", other->metadata().name(),
                        "\"; the kernel could not tell their IPsec policies apart")});
    }
  }
  return violations;
}

absl::Status ViolationsToStatus(const std::vector<FieldViolation>& violations) {
  if (violations.empty()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrJoin(violations, "; ", [](std::string* out, const FieldViolation& v) {
        absl::StrAppend(out, v.field, ": ", v.reason);
      }));
}

bool IsDnsLabel(const std::string& name) {
  if (name.empty() || name.size() > 63) {
    return false;
  }
  for (char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-') {
      return false;
    }
  }
  return name.front() != '-' && name.back() != '-';
}

}  // namespace strait::intent
