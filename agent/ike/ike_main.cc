// strait-ike: runs one IKEv2 negotiation (IKE_SA_INIT + IKE_AUTH with a
// pre-shared key and the first CHILD SA) against a peer over UDP, prints the
// outcome as one line of JSON on stdout, and exits 0 when the CHILD SA is
// established. For interoperability tests and debugging; the agent runs the
// same engine under its own control. The CHILD SA is only recorded: no
// dataplane is programmed.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/ike/cookie.h"
#include "agent/ike/cookie_impl.h"
#include "agent/ike/engine.h"
#include "agent/ike/engine_impl.h"
#include "agent/ike/engine_proposal.h"
#include "agent/ike/tunnel_config.h"
#include "agent/ike/udp_io.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"

ABSL_FLAG(std::string, local, "",
          "Required. Local IP address (IPv4 or IPv6) to bind and speak from.");
ABSL_FLAG(std::string, remote, "", "Required. The peer's IP address, same family as --local.");
ABSL_FLAG(int, port, 500, "UDP port for IKE, local and remote.");
ABSL_FLAG(int, nat_t_port, 4500,
          "Also listen on this UDP port for IKE with the non-ESP marker (RFC 3948), where a "
          "peer that sees a NAT floats to, and where strait-ike moves when it initiates and "
          "detects a NAT. 0 disables it.");
ABSL_FLAG(std::string, local_id, "",
          "Our IKE identity: an IP address (ID_IPV4_ADDR/ID_IPV6_ADDR), user@domain "
          "(ID_RFC822_ADDR), a DN with '=' in it (\"C=CH, O=Strait, CN=gw\", ID_DER_ASN1_DN) or "
          "a name (ID_FQDN). Default: --local as an IP identity.");
ABSL_FLAG(std::string, remote_id, "",
          "The identity the peer must authenticate as, same syntax as --local-id. Default: "
          "--remote as an IP identity.");
ABSL_FLAG(std::string, psk_file, "",
          "File holding the pre-shared key (one trailing newline is dropped). Its mode must be "
          "0600 (no group or other access), else strait-ike refuses to start. Either this or "
          "--ca-file.");
ABSL_FLAG(std::string, ca_file, "",
          "Certificate authentication: PEM CA certificates that the peer's certificate must "
          "chain to. Needs --cert-file and --key-file.");
ABSL_FLAG(std::string, cert_file, "",
          "Our certificate (PEM, end entity first, then intermediates).");
ABSL_FLAG(std::string, key_file, "",
          "Our private key (PEM, mode 0600). Used with --ca-file and --cert-file.");
ABSL_FLAG(std::string, ike_proposals, "aes256gcm16-prfsha384-ecp384",
          "IKE proposals, comma-separated, each in strongSwan's keyword syntax "
          "(aes256gcm16-prfsha384-ecp384, aes256-sha256-modp2048), most preferred first.");
ABSL_FLAG(std::string, esp_proposals, "aes256gcm16",
          "ESP proposals for the CHILD SA, comma-separated strongSwan keywords (aes256gcm16, "
          "aes256-sha256), most preferred first.");
ABSL_FLAG(std::string, local_ts, "",
          "Required. Local traffic selectors: comma-separated CIDRs (10.1.0.0/24).");
ABSL_FLAG(std::string, remote_ts, "",
          "Required. Remote traffic selectors: comma-separated CIDRs (10.2.0.0/24).");
ABSL_FLAG(bool, initiate, false, "Initiate the IKE SA; without it strait-ike waits as responder.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "Give up when the CHILD SA is not established within this time (phase FAILED, "
          "reason TIMEOUT).");
ABSL_FLAG(bool, force_encapsulation, false,
          "Act as if behind a NAT (natTraversal: force): both ends move to UDP 4500 and the "
          "CHILD SA is UDP-encapsulated.");
ABSL_FLAG(absl::Duration, settle, absl::ZeroDuration(),
          "After the CHILD SA is established, keep listening this long before printing the "
          "result, so that a peer that refuses our AUTH afterwards (an INFORMATIONAL "
          "AUTHENTICATION_FAILED, as a responder sees it) turns the result into FAILED.");
ABSL_FLAG(bool, require_cookie, false,
          "As responder: answer an IKE_SA_INIT request from --remote that carries no valid "
          "COOKIE with a stateless N(COOKIE) (RFC 7296 2.6), so that a request with a spoofed "
          "source address cannot take strait-ike's single responder slot.");
ABSL_FLAG(bool, stay, false,
          "After printing the result, keep running (answering retransmitted requests) until "
          "SIGTERM or SIGINT, so that the peer can still be queried.");
ABSL_FLAG(absl::Duration, ike_lifetime, absl::ZeroDuration(),
          "Rekey the IKE SA (CREATE_CHILD_SA, RFC 7296 §1.3.2) this long after it is made, "
          "less up to a tenth at random; 0: only when the peer rekeys. Useful with --stay.");
ABSL_FLAG(std::string, status_file, "",
          "With --stay: after each change (an IKE SA rekey, say) write the result JSON, with "
          "the current IKE SPIs and an \"ike_rekeys\" count, to this file (replaced "
          "atomically).");
ABSL_FLAG(int, fragment_size, 1280,
          "IKE fragmentation (RFC 7383): encrypted messages that would make an IP datagram "
          "larger than this many bytes (IP and UDP headers included) are sent as fragments, "
          "when the peer supports it. 0 turns fragmentation off (not offered).");
ABSL_FLAG(std::string, log_level, "warning",
          "Least severe log level on stderr: debug, info, warning, error.");

namespace {

using strait::ike::AlgorithmProposal;
using strait::ike::Bytes;
using strait::ike::EngineEvent;
using strait::ike::FormatSelector;
using strait::ike::ParseIdentity;
using strait::ike::ParseProposals;
using strait::ike::ParseSelectors;
using strait::ike::SuiteName;
using strait::ike::TrafficSelectorRange;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] = R"(runs one IKEv2 negotiation with a pre-shared key or certificates.

Usage: strait-ike --local ADDR --remote ADDR
                  (--psk-file FILE | --ca-file FILE --cert-file FILE --key-file FILE)
                  --local-ts CIDR[,CIDR] --remote-ts CIDR[,CIDR] [--initiate] [flags]

Negotiates an IKE SA and its first CHILD SA with the peer (as initiator with
--initiate, else as responder), prints one line of JSON with the result and
exits 0 when the CHILD SA is established, 1 otherwise, 2 on bad usage.
Flags may be written with dashes or underscores.)";

std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop.store(true); }

int UsageError(absl::string_view message) {
  std::cerr << "strait-ike: " << message << "\n(see strait-ike --help)\n";
  return kExitUsage;
}

// Records the CHILD SA instead of installing it: no dataplane yet.
class RecordingSink : public strait::ike::ChildSaSink {
 public:
  absl::Status InstallChildSa(const strait::ike::ChildSa&) override {
    ++installed_;
    return absl::OkStatus();
  }
  absl::Status RemoveChildSa(const strait::ike::ChildSa&) override { return absl::OkStatus(); }
  int installed() const { return installed_; }

 private:
  int installed_ = 0;
};

// Reads the PSK, refusing a file that others can read. The buffer that held
// the file is wiped before it is freed.
absl::StatusOr<strait::Secret> ReadPsk(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return strait::ErrnoToStatus(errno, path);
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(path + " is not a regular file");
  if ((st.st_mode & 07777) != 0600) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s has mode %04o; a PSK file must have mode 0600", path, st.st_mode & 07777));
  }
  ASSIGN_OR_RETURN(std::string raw, strait::ReadFile(path));
  if (!raw.empty() && raw.back() == '\n') raw.pop_back();
  if (!raw.empty() && raw.back() == '\r') raw.pop_back();
  if (raw.empty()) {
    strait::WipeString(&raw);
    return absl::InvalidArgumentError(path + " holds an empty key");
  }
  strait::Secret psk(raw);
  strait::WipeString(&raw);
  return psk;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonSelectors(const std::vector<TrafficSelectorRange>& list) {
  std::vector<std::string> items;
  for (const auto& r : list) items.push_back(JsonString(FormatSelector(r)));
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

struct Outcome {
  bool established = false;
  std::string reason;
  std::string detail;
  std::optional<EngineEvent> ike;
  std::optional<EngineEvent> child;
  int ike_rekeys = 0;  // IKE SA rekeys (either end's) since established.
};

std::string CountersJson(const strait::ike::EngineCounters& c) {
  return absl::StrCat(
      "{\"datagrams_sent\":", c.datagrams_sent, ",\"datagrams_received\":", c.datagrams_received,
      ",\"fragments_sent\":", c.fragments_sent, ",\"fragments_received\":", c.fragments_received,
      ",\"messages_reassembled\":", c.messages_reassembled,
      ",\"reassembly_dropped\":", c.reassembly_dropped,
      ",\"malformed_dropped\":", c.malformed_dropped,
      ",\"undecryptable_dropped\":", c.undecryptable_dropped,
      ",\"retransmits_sent\":", c.retransmits_sent, ",\"responses_resent\":", c.responses_resent,
      "}");
}

std::string OutcomeJson(const Outcome& o, bool initiator,
                        const strait::ike::EngineCounters& counters) {
  std::string out =
      absl::StrCat("{\"phase\":", JsonString(o.established ? "ESTABLISHED" : "FAILED"),
                   ",\"reason\":", JsonString(o.reason), ",\"detail\":", JsonString(o.detail),
                   ",\"initiator\":", initiator ? "true" : "false");
  if (o.ike.has_value()) {
    absl::StrAppend(&out,
                    ",\"ike\":{\"spi_i\":", JsonString(absl::StrFormat("%016x", o.ike->ike_spi_i)),
                    ",\"spi_r\":", JsonString(absl::StrFormat("%016x", o.ike->ike_spi_r)),
                    ",\"algorithms\":", JsonString(SuiteName(o.ike->algorithms, true)),
                    ",\"local_behind_nat\":", o.ike->local_behind_nat ? "true" : "false",
                    ",\"remote_behind_nat\":", o.ike->remote_behind_nat ? "true" : "false",
                    ",\"remote_identity\":", JsonString(o.ike->remote_identity),
                    ",\"auth_method\":", JsonString(o.ike->auth_method), "}");
  }
  if (o.child.has_value()) {
    absl::StrAppend(
        &out,
        ",\"child\":{\"spi_in\":", JsonString(absl::StrFormat("%08x", o.child->child_inbound_spi)),
        ",\"spi_out\":", JsonString(absl::StrFormat("%08x", o.child->child_outbound_spi)),
        ",\"algorithms\":", JsonString(SuiteName(o.child->algorithms, false)),
        ",\"local_ts\":", JsonSelectors(o.child->local_ts),
        ",\"remote_ts\":", JsonSelectors(o.child->remote_ts), "}");
  }
  absl::StrAppend(&out, ",\"ike_rekeys\":", o.ike_rekeys);
  absl::StrAppend(&out, ",\"counters\":", CountersJson(counters));
  return out + "}";
}

// Replaces `path` with `content` and a newline (write, then rename).
void WriteStatusFile(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << content << "\n";
    if (!f) {
      LOG_WARNING("cannot write the status file").With("path", tmp);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    LOG_WARNING("cannot replace the status file").With("path", path);
  }
}

// Folds the engine's events into the outcome; true once it is decided.
bool Absorb(std::vector<EngineEvent> events, Outcome* o) {
  bool decided = false;
  for (EngineEvent& e : events) {
    switch (e.kind) {
      case EngineEvent::Kind::kIkeSaEstablished:
        o->ike = std::move(e);
        break;
      case EngineEvent::Kind::kChildSaEstablished:
        o->established = true;
        o->child = std::move(e);
        decided = true;
        break;
      case EngineEvent::Kind::kIkeSaRekeyed:
        // The new IKE SA: its SPIs; identity and auth stay the old one's.
        if (o->ike.has_value()) {
          o->ike->ike_spi_i = e.ike_spi_i;
          o->ike->ike_spi_r = e.ike_spi_r;
          o->ike->algorithms = e.algorithms;
        }
        ++o->ike_rekeys;
        break;
      case EngineEvent::Kind::kChildSaDeleted:
      case EngineEvent::Kind::kChildSaRekeyFailed:
      case EngineEvent::Kind::kIkeSaRekeyFailed:
        break;
      case EngineEvent::Kind::kDeleted:
        e.reason = e.by_peer ? strait::ike::FailureReason::kDeletedByPeer
                             : strait::ike::FailureReason::kInternalError;
        [[fallthrough]];
      case EngineEvent::Kind::kFailed:
        o->established = false;
        o->child.reset();
        o->reason = strait::ike::FailureReasonName(e.reason);
        o->detail = e.detail;
        decided = true;
        break;
    }
  }
  return decided;
}

}  // namespace

int main(int argc, char** argv) {
  strait::ParsedFlags flags =
      strait::ParseFlags({kUsage, {"agent/ike/"}, "strait-ike (Strait)"},
                         strait::NormalizeFlagNames(std::vector<std::string>(argv, argv + argc)));
  if (flags.exit_now) return 0;
  if (!flags.positional.empty()) {
    return UsageError(absl::StrCat("unexpected argument \"", flags.positional[0], "\""));
  }
  if (absl::Status s = strait::SetLogLevelFromFlag(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    return UsageError(s.message());
  }

  strait::ike::EngineConfig config;
  absl::StatusOr<Bytes> local = strait::ike::ParseIpAddress(absl::GetFlag(FLAGS_local));
  if (!local.ok()) return UsageError(absl::StrCat("--local: ", local.status().message()));
  absl::StatusOr<Bytes> remote = strait::ike::ParseIpAddress(absl::GetFlag(FLAGS_remote));
  if (!remote.ok()) return UsageError(absl::StrCat("--remote: ", remote.status().message()));
  if (local->size() != remote->size()) {
    return UsageError("--local and --remote must be of the same address family");
  }
  const int port = absl::GetFlag(FLAGS_port);
  if (port <= 0 || port > 65535) return UsageError("--port must be 1..65535");
  config.local = {*local, static_cast<uint16_t>(port)};
  config.remote = {*remote, static_cast<uint16_t>(port)};
  const int nat_t_port = absl::GetFlag(FLAGS_nat_t_port);
  if (nat_t_port < 0 || nat_t_port > 65535 || nat_t_port == port) {
    return UsageError("--nat-t-port must be 0..65535 and differ from --port");
  }
  config.nat_t_port = static_cast<uint16_t>(nat_t_port);
  config.force_encapsulation = absl::GetFlag(FLAGS_force_encapsulation);
  const int fragment_size = absl::GetFlag(FLAGS_fragment_size);
  if (fragment_size != 0 && (fragment_size < 256 || fragment_size > 65535)) {
    return UsageError("--fragment-size must be 0 or 256..65535");
  }
  config.fragmentation = fragment_size != 0;
  if (fragment_size != 0) config.fragment_size = static_cast<size_t>(fragment_size);

  std::string local_id = absl::GetFlag(FLAGS_local_id);
  std::string remote_id = absl::GetFlag(FLAGS_remote_id);
  absl::StatusOr<strait::ike::Identity> lid =
      ParseIdentity(local_id.empty() ? absl::GetFlag(FLAGS_local) : local_id);
  absl::StatusOr<strait::ike::Identity> rid =
      ParseIdentity(remote_id.empty() ? absl::GetFlag(FLAGS_remote) : remote_id);
  if (!lid.ok() || !rid.ok()) return UsageError("--local-id/--remote-id: empty identity");
  config.local_id = *std::move(lid);
  config.remote_id = *std::move(rid);

  auto ike = ParseProposals(absl::GetFlag(FLAGS_ike_proposals), strait::intent::ProposalKind::kIke);
  if (!ike.ok()) return UsageError(absl::StrCat("--ike-proposals: ", ike.status().message()));
  auto esp = ParseProposals(absl::GetFlag(FLAGS_esp_proposals), strait::intent::ProposalKind::kEsp);
  if (!esp.ok()) return UsageError(absl::StrCat("--esp-proposals: ", esp.status().message()));
  config.ike_proposals = *std::move(ike);
  config.esp_proposals = *std::move(esp);
  auto lts = ParseSelectors(absl::GetFlag(FLAGS_local_ts));
  if (!lts.ok()) return UsageError(absl::StrCat("--local-ts: ", lts.status().message()));
  auto rts = ParseSelectors(absl::GetFlag(FLAGS_remote_ts));
  if (!rts.ok()) return UsageError(absl::StrCat("--remote-ts: ", rts.status().message()));
  config.local_ts = *std::move(lts);
  config.remote_ts = *std::move(rts);

  const std::string ca_file = absl::GetFlag(FLAGS_ca_file);
  if (ca_file.empty() == absl::GetFlag(FLAGS_psk_file).empty()) {
    return UsageError("give either --psk-file or --ca-file (with --cert-file and --key-file)");
  }
  if (!ca_file.empty()) {
    if (absl::GetFlag(FLAGS_cert_file).empty() || absl::GetFlag(FLAGS_key_file).empty()) {
      return UsageError("--ca-file needs --cert-file and --key-file");
    }
    absl::StatusOr<std::string> ca_pem = strait::ReadFile(ca_file);
    if (!ca_pem.ok()) return UsageError(absl::StrCat("--ca-file: ", ca_pem.status().message()));
    auto anchors = strait::ike::TrustAnchors::FromPem(*ca_pem);
    if (!anchors.ok()) return UsageError(absl::StrCat("--ca-file: ", anchors.status().message()));
    auto credentials = strait::ike::LocalCredentials::FromFiles(absl::GetFlag(FLAGS_cert_file),
                                                                absl::GetFlag(FLAGS_key_file));
    if (!credentials.ok()) {
      return UsageError(absl::StrCat("--cert-file/--key-file: ", credentials.status().message()));
    }
    config.trust_anchors = *std::move(anchors);
    config.credentials = *std::move(credentials);
  } else {
    absl::StatusOr<strait::Secret> psk = ReadPsk(absl::GetFlag(FLAGS_psk_file));
    if (!psk.ok()) return UsageError(absl::StrCat("--psk-file: ", psk.status().message()));
    config.psk = *std::move(psk);
  }
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
  const bool initiator = absl::GetFlag(FLAGS_initiate);
  const absl::Duration ike_lifetime = absl::GetFlag(FLAGS_ike_lifetime);
  if (ike_lifetime < absl::ZeroDuration()) return UsageError("--ike-lifetime must not be negative");
  config.ike_rekey_after = ike_lifetime;
  config.ike_rekey_fuzz = ike_lifetime / 10;
  const std::string status_file = absl::GetFlag(FLAGS_status_file);

  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnStopSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  strait::Clock& clock = strait::RealClock::Get();
  strait::ike::RandomSourcePtr random = strait::ike::CreateOpenSslRandomSource();
  RecordingSink sink;
  const strait::ike::Endpoint bind_to = config.local;
  absl::StatusOr<strait::ike::EnginePtr> engine =
      strait::ike::CreateEngine(std::move(config), clock, *random, sink);
  if (!engine.ok()) return UsageError(std::string(engine.status().message()));
  absl::StatusOr<strait::ike::UdpIoPtr> io =
      strait::ike::UdpIo::Create(bind_to, static_cast<uint16_t>(nat_t_port));
  if (!io.ok()) {
    LOG_ERROR("cannot bind the IKE socket").With("error", io.status().ToString());
    return kExitFailure;
  }

  strait::ike::CookieGeneratorPtr cookies;
  uint64_t cookies_sent = 0;
  if (!initiator && absl::GetFlag(FLAGS_require_cookie)) {
    cookies = strait::ike::CreateCookieGenerator(clock, *random);
    (*io)->SetFilter(
        strait::ike::ResponderCookieFilter(*cookies, **engine, *remote, &cookies_sent));
  }

  Outcome outcome;
  bool decided = false;
  if (initiator) {
    if (absl::Status s = (*engine)->Initiate(); !s.ok()) {
      decided = Absorb((*engine)->TakeEvents(), &outcome);
      if (!decided) outcome.reason = "INTERNAL_ERROR";
      decided = true;
    }
  }
  const absl::Time deadline = clock.Now() + timeout;
  if (!decided) {
    absl::Status run = (*io)->Run(**engine, clock, deadline, [&] {
      if (Absorb((*engine)->TakeEvents(), &outcome)) decided = true;
      return decided || g_stop.load();
    });
    if (!run.ok()) {
      outcome.reason = "INTERNAL_ERROR";
      outcome.detail = run.ToString();
    } else if (!decided) {
      outcome.reason = g_stop.load() ? "STOPPED" : "TIMEOUT";
      outcome.detail = absl::StrCat("no CHILD SA within ", absl::FormatDuration(timeout));
    }
  }
  const absl::Duration settle = absl::GetFlag(FLAGS_settle);
  if (outcome.established && settle > absl::ZeroDuration()) {
    const absl::Status run = (*io)->Run(**engine, clock, clock.Now() + settle, [&] {
      Absorb((*engine)->TakeEvents(), &outcome);
      return !outcome.established || g_stop.load();
    });
    if (!run.ok()) LOG_WARNING("settling failed").With("error", run.ToString());
  }
  if (cookies_sent > 0) LOG_INFO("cookies sent").With("count", cookies_sent);
  std::cout << OutcomeJson(outcome, initiator, (*engine)->counters()) << std::endl;
  if (!status_file.empty()) {
    WriteStatusFile(status_file, OutcomeJson(outcome, initiator, (*engine)->counters()));
  }

  if (absl::GetFlag(FLAGS_stay)) {
    // Keep answering (retransmitted requests) until told to stop.
    while (!g_stop.load()) {
      absl::Status run = (*io)->Run(**engine, clock, absl::InfiniteFuture(), [&] {
        std::vector<EngineEvent> events = (*engine)->TakeEvents();
        if (!events.empty()) {
          Absorb(std::move(events), &outcome);
          if (!status_file.empty()) {
            WriteStatusFile(status_file, OutcomeJson(outcome, initiator, (*engine)->counters()));
          }
        }
        return g_stop.load();
      });
      if (!run.ok()) break;
    }
  }
  return outcome.established ? 0 : kExitFailure;
}
