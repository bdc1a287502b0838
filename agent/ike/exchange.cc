#include "agent/ike/exchange.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strait::ike {

namespace {

constexpr size_t kNonceSize = 32;

uint32_t RandomSpi32(RandomSource& random) {
  uint32_t spi = 0;
  while (spi < 256) {  // 1-255 are reserved by IANA.
    uint8_t b[4];
    random.Fill(absl::MakeSpan(b));
    spi = static_cast<uint32_t>(b[0]) << 24 | b[1] << 16 | b[2] << 8 | b[3];
  }
  return spi;
}

Bytes Spi32Bytes(uint32_t spi) {
  return {static_cast<uint8_t>(spi >> 24), static_cast<uint8_t>(spi >> 16),
          static_cast<uint8_t>(spi >> 8), static_cast<uint8_t>(spi)};
}

// The DH group an INVALID_KE_PAYLOAD notify asks for (RFC 7296 §1.2, its
// two data bytes), when it is well formed and one of `proposals` offers it.
std::optional<uint16_t> RequestedGroup(const NotifyPayload& n,
                                       const std::vector<AlgorithmProposal>& proposals) {
  if (n.data.size() != 2) return std::nullopt;
  const uint16_t g = static_cast<uint16_t>(n.data[0] << 8 | n.data[1]);
  const bool ours = std::any_of(proposals.begin(), proposals.end(),
                                [g](const AlgorithmProposal& p) { return p.dh_group == g; });
  if (!ours) return std::nullopt;
  return g;
}

}  // namespace

uint64_t RandomSpi64(RandomSource& random) {
  uint64_t spi = 0;
  while (spi == 0) {
    uint8_t b[8];
    random.Fill(absl::MakeSpan(b));
    spi = 0;
    for (uint8_t x : b) spi = spi << 8 | x;
  }
  return spi;
}

// RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | port).
Bytes NatDetectionHash(uint64_t spi_i, uint64_t spi_r, const Endpoint& ep) {
  std::string input = SpiString(spi_i) + SpiString(spi_r);
  input.append(reinterpret_cast<const char*>(ep.address.data()), ep.address.size());
  input.push_back(static_cast<char>(ep.port >> 8));
  input.push_back(static_cast<char>(ep.port & 0xff));
  Bytes out(20);
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), out.data(), &len, EVP_sha1(), nullptr) != 1) {
    out.clear();
  }
  return out;
}

Payload MakePayload(uint8_t type, PayloadBody body) {
  Payload p;
  p.type = type;
  p.body = std::move(body);
  return p;
}

namespace {

Payload MakeNotify(uint16_t type, Bytes data = {}) {
  NotifyPayload n;
  n.type = type;
  n.data = std::move(data);
  return MakePayload(kPayloadNotify, std::move(n));
}

template <typename T>
const T* Find(const Message& m, uint8_t type) {
  for (const Payload& p : m.payloads) {
    if (p.type == type) return std::get_if<T>(&p.body);
  }
  return nullptr;
}

const NotifyPayload* FindNotify(const Message& m, uint16_t type) {
  for (const Payload& p : m.payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (p.type == kPayloadNotify && n != nullptr && n->type == type) return n;
  }
  return nullptr;
}

// The first error notify (types below 16384) of a message, if any.
const NotifyPayload* FindErrorNotify(const Message& m) {
  for (const Payload& p : m.payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (p.type == kPayloadNotify && n != nullptr && n->type < 16384) return n;
  }
  return nullptr;
}

// --- Proposals ---

Proposal ToWireProposal(const AlgorithmProposal& a, uint8_t number, bool ike, Bytes spi,
                        bool esp_dh = false) {
  Proposal p;
  p.number = number;
  p.protocol_id = ike ? kProtocolIke : kProtocolEsp;
  p.spi = std::move(spi);
  Transform encr;
  encr.type = kTransformEncr;
  encr.id = a.encr_id;
  if (a.key_bits != 0) encr.key_length = static_cast<uint16_t>(a.key_bits);
  p.transforms.push_back(encr);
  if (ike) {
    Transform prf;
    prf.type = kTransformPrf;
    prf.id = a.prf_id;
    p.transforms.push_back(prf);
  }
  if (a.integ_id != 0) {
    Transform integ;
    integ.type = kTransformInteg;
    integ.id = a.integ_id;
    p.transforms.push_back(integ);
  }
  if (ike) {
    Transform dh;
    dh.type = kTransformDh;
    dh.id = a.dh_group;
    p.transforms.push_back(dh);
  } else {
    if (esp_dh && a.dh_group != 0) {
      Transform dh;
      dh.type = kTransformDh;
      dh.id = a.dh_group;
      p.transforms.push_back(dh);
    }
    Transform esn;
    esn.type = kTransformEsn;
    esn.id = 0;
    p.transforms.push_back(esn);
  }
  return p;
}

// Whether `offered` (one wire proposal) allows the local proposal `a`.
bool Allows(const Proposal& offered, const AlgorithmProposal& a, bool ike, bool esp_dh = false) {
  if (offered.protocol_id != (ike ? kProtocolIke : kProtocolEsp)) return false;
  // ESP in CREATE_CHILD_SA (`esp_dh`): the DH group must match ours, and
  // without PFS no DH other than NONE may be offered.
  bool encr = false, prf = !ike, integ = a.integ_id == 0, dh = !ike && (!esp_dh || a.dh_group == 0),
       esn_seen = false, esn_none = false;
  for (const Transform& t : offered.transforms) {
    switch (t.type) {
      case kTransformEncr:
        if (t.id == a.encr_id &&
            (a.key_bits == 0 ? !t.key_length.has_value() : t.key_length == a.key_bits)) {
          encr = true;
        }
        break;
      case kTransformPrf:
        if (ike && t.id == a.prf_id) prf = true;
        break;
      case kTransformInteg:
        if (a.integ_id != 0 && t.id == a.integ_id) integ = true;
        break;
      case kTransformDh:
        if ((ike || esp_dh) && t.id == a.dh_group) dh = true;
        if (!ike && esp_dh && a.dh_group == 0 && t.id != 0) return false;
        break;
      case kTransformEsn:
        esn_seen = true;
        if (t.id == 0) esn_none = true;
        break;
      default:
        break;
    }
  }
  // An AEAD proposal must not be combined with a real integrity algorithm.
  if (a.integ_id == 0) {
    for (const Transform& t : offered.transforms) {
      if (t.type == kTransformInteg && t.id != 0) integ = false;
    }
  }
  if (!ike && esn_seen && !esn_none) return false;
  return encr && prf && integ && dh;
}

// A response proposal names exactly one transform of each type.
bool IsSingleChoice(const Proposal& p) {
  std::map<uint8_t, int> count;
  for (const Transform& t : p.transforms) {
    if (++count[t.type] > 1) return false;
  }
  return true;
}

}  // namespace

// The first local proposal the peer offers (local order wins).
std::optional<Selection> SelectProposal(const std::vector<AlgorithmProposal>& local,
                                        const SaPayload& sa, bool ike, bool esp_dh) {
  for (const AlgorithmProposal& a : local) {
    for (const Proposal& p : sa.proposals) {
      if (Allows(p, a, ike, esp_dh)) return Selection{a, &p};
    }
  }
  return std::nullopt;
}

namespace {

// --- Traffic selectors ---

TrafficSelector ToWire(const TrafficSelectorRange& r) {
  TrafficSelector ts;
  ts.ts_type = r.start_address.size() == 4 ? kTsIpv4AddrRange : kTsIpv6AddrRange;
  ts.ip_protocol = r.ip_protocol;
  ts.start_port = r.start_port;
  ts.end_port = r.end_port;
  ts.start_address = r.start_address;
  ts.end_address = r.end_address;
  return ts;
}

TrafficSelectorRange FromWire(const TrafficSelector& ts) {
  TrafficSelectorRange r;
  r.start_address = ts.start_address;
  r.end_address = ts.end_address;
  r.ip_protocol = ts.ip_protocol;
  r.start_port = ts.start_port;
  r.end_port = ts.end_port;
  return r;
}

Payload TsPayloadOf(uint8_t type, const std::vector<TrafficSelectorRange>& ranges) {
  TsPayload ts;
  for (const auto& r : ranges) ts.selectors.push_back(ToWire(r));
  return MakePayload(type, std::move(ts));
}

std::optional<TrafficSelectorRange> Intersect(const TrafficSelectorRange& a,
                                              const TrafficSelectorRange& b) {
  if (a.start_address.size() != b.start_address.size()) return std::nullopt;
  TrafficSelectorRange r;
  r.start_address = std::max(a.start_address, b.start_address);
  r.end_address = std::min(a.end_address, b.end_address);
  if (r.start_address > r.end_address) return std::nullopt;
  r.start_port = std::max(a.start_port, b.start_port);
  r.end_port = std::min(a.end_port, b.end_port);
  if (r.start_port > r.end_port) return std::nullopt;
  if (a.ip_protocol == 0 || b.ip_protocol == 0 || a.ip_protocol == b.ip_protocol) {
    r.ip_protocol = std::max(a.ip_protocol, b.ip_protocol);
  } else {
    return std::nullopt;
  }
  return r;
}

}  // namespace

// RFC 7296 §2.9 narrowing: every piece of an offered selector that our
// config also covers.
std::vector<TrafficSelectorRange> NarrowTrafficSelectors(
    const std::vector<TrafficSelector>& offered, const std::vector<TrafficSelectorRange>& config) {
  std::vector<TrafficSelectorRange> out;
  for (const TrafficSelector& ts : offered) {
    for (const TrafficSelectorRange& c : config) {
      auto r = Intersect(FromWire(ts), c);
      if (r.has_value() && std::find(out.begin(), out.end(), *r) == out.end()) {
        out.push_back(*std::move(r));
      }
    }
  }
  return out;
}

namespace {

bool ContainedIn(const TrafficSelectorRange& x, const std::vector<TrafficSelectorRange>& config) {
  for (const auto& c : config) {
    auto r = Intersect(x, c);
    if (r.has_value() && *r == x) return true;
  }
  return false;
}

}  // namespace

bool ValidTrafficSelector(const TrafficSelectorRange& r) {
  return (r.start_address.size() == 4 || r.start_address.size() == 16) &&
         r.start_address.size() == r.end_address.size() && r.start_address <= r.end_address &&
         r.start_port <= r.end_port;
}

namespace {

constexpr uint16_t kSupportedHashes[] = {kHashSha256, kHashSha384, kHashSha512};

// The peer's SIGNATURE_HASH_ALGORITHMS list, keeping the ones we support.
std::vector<uint16_t> PeerHashAlgorithms(const Message& m) {
  std::vector<uint16_t> out;
  const NotifyPayload* n = FindNotify(m, kNotifySignatureHashAlgorithms);
  if (n == nullptr) return out;
  for (size_t i = 0; i + 1 < n->data.size(); i += 2) {
    const uint16_t h = static_cast<uint16_t>(n->data[i] << 8 | n->data[i + 1]);
    if (std::find(std::begin(kSupportedHashes), std::end(kSupportedHashes), h) !=
            std::end(kSupportedHashes) &&
        std::find(out.begin(), out.end(), h) == out.end()) {
      out.push_back(h);
    }
  }
  // A list without any hash we support still says "RFC 7427 spoken here";
  // keep SHA-256, which RFC 8247 makes mandatory, so we sign with method 14.
  if (out.empty()) out.push_back(kHashSha256);
  return out;
}

IdPayload IdOf(const Identity& id) {
  IdPayload p;
  p.id_type = static_cast<uint8_t>(id.type);
  p.data = id.value;
  return p;
}

}  // namespace

// --- IKE_SA_INIT ---

absl::Status IkeSaInitTask::Build(Message& m) {
  if (!sa_.initiator && reject_notify_.has_value()) {
    m.payloads.push_back(MakeNotify(reject_notify_->first, reject_notify_->second));
    return absl::OkStatus();
  }
  if (sa_.initiator) {
    if (!cookie_.empty()) m.payloads.push_back(MakeNotify(kNotifyCookie, cookie_));
    if (sa_.ni.empty()) sa_.ni = RandomNonce();
    if (sa_.dh == nullptr || sa_.dh->group() != static_cast<DhGroup>(sa_.dh_group)) {
      ASSIGN_OR_RETURN(sa_.dh, CreateDiffieHellman(static_cast<DhGroup>(sa_.dh_group)));
    }
    SaPayload sa;
    for (size_t i = 0; i < config_.ike_proposals.size(); ++i) {
      sa.proposals.push_back(
          ToWireProposal(config_.ike_proposals[i], static_cast<uint8_t>(i + 1), true, {}));
    }
    m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
  } else {
    SaPayload sa;
    sa.proposals.push_back(ToWireProposal(sa_.algorithms, chosen_number_, true, {}));
    m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
  }
  KePayload ke;
  ke.dh_group = sa_.dh_group;
  ke.data = BytesOf(sa_.dh->public_value());
  m.payloads.push_back(MakePayload(kPayloadKe, std::move(ke)));
  m.payloads.push_back(MakePayload(kPayloadNonce, NoncePayload{sa_.initiator ? sa_.ni : sa_.nr}));
  if (!sa_.initiator && config_.trust_anchors != nullptr) {
    m.payloads.push_back(MakePayload(
        kPayloadCertReq,
        CertPayload{kCertEncodingX509Signature, config_.trust_anchors->certreq_data()}));
  }
  const uint64_t spi_r = sa_.initiator ? 0 : sa_.spi_r;
  Bytes source_hash = NatDetectionHash(sa_.spi_i, spi_r, config_.local);
  if (config_.force_encapsulation) {
    // A hash of nothing real: the peer sees a NAT in front of us.
    random_.Fill(absl::MakeSpan(source_hash));
  }
  m.payloads.push_back(MakeNotify(kNotifyNatDetectionSourceIp, std::move(source_hash)));
  m.payloads.push_back(MakeNotify(kNotifyNatDetectionDestinationIp,
                                  NatDetectionHash(sa_.spi_i, spi_r, config_.remote)));
  // RFC 7427 §4: the hashes we accept in Digital Signature AUTH. A
  // responder only answers an initiator that offered its own list.
  if (sa_.initiator || !sa_.peer_hash_algorithms.empty()) {
    Bytes hashes;
    for (uint16_t h : kSupportedHashes) {
      hashes.push_back(static_cast<uint8_t>(h >> 8));
      hashes.push_back(static_cast<uint8_t>(h));
    }
    m.payloads.push_back(MakeNotify(kNotifySignatureHashAlgorithms, std::move(hashes)));
  }
  // RFC 7383 §2.3: offered by the initiator, answered only when offered.
  if (config_.fragmentation && (sa_.initiator || sa_.fragmentation)) {
    m.payloads.push_back(MakeNotify(kNotifyFragmentationSupported));
  }
  return absl::OkStatus();
}

TaskResult IkeSaInitTask::Process(const Message& m, const Endpoint& from) {
  return sa_.initiator ? ProcessResponse(m, from) : ProcessRequest(m, from);
}

Bytes IkeSaInitTask::RandomNonce() {
  Bytes n(kNonceSize);
  random_.Fill(absl::MakeSpan(n));
  return n;
}

void IkeSaInitTask::CheckNat(const Message& m, const Endpoint& from) {
  const uint64_t spi_r = sa_.initiator ? sa_.spi_r : 0;
  const Bytes expected_src = NatDetectionHash(sa_.spi_i, spi_r, from);
  const Bytes expected_dst = NatDetectionHash(sa_.spi_i, spi_r, config_.local);
  bool src_seen = false, src_match = false, dst_seen = false, dst_match = false;
  for (const Payload& p : m.payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (n == nullptr) continue;
    if (n->type == kNotifyNatDetectionSourceIp) {
      src_seen = true;
      src_match = src_match || n->data == expected_src;
    } else if (n->type == kNotifyNatDetectionDestinationIp) {
      dst_seen = true;
      dst_match = dst_match || n->data == expected_dst;
    }
  }
  sa_.remote_behind_nat = src_seen && !src_match;
  sa_.local_behind_nat = (dst_seen && !dst_match) || config_.force_encapsulation;
}

TaskResult IkeSaInitTask::ProcessRequest(const Message& m, const Endpoint& from) {
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  if (sa == nullptr || ke == nullptr || nonce == nullptr) {
    return TaskResult::Ignore();  // Not an IKE_SA_INIT request: dropped and counted.
  }
  auto selection = SelectProposal(config_.ike_proposals, *sa, /*ike=*/true);
  if (!selection.has_value()) {
    reject_notify_.emplace(kNotifyNoProposalChosen, Bytes{});
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "no IKE proposal acceptable");
  }
  if (ke->dh_group != selection->algorithms.dh_group) {
    const uint16_t g = selection->algorithms.dh_group;
    reject_notify_.emplace(kNotifyInvalidKePayload,
                           Bytes{static_cast<uint8_t>(g >> 8), static_cast<uint8_t>(g)});
    return TaskResult::Retry();  // Stateless: the initiator retries.
  }
  sa_.algorithms = selection->algorithms;
  chosen_number_ = selection->offered->number;
  sa_.dh_group = ke->dh_group;
  sa_.spi_i = m.header.spi_i;
  sa_.spi_r = RandomSpi64(random_);
  sa_.ni = nonce->data;
  sa_.nr = RandomNonce();
  auto dh = CreateDiffieHellman(static_cast<DhGroup>(sa_.dh_group));
  if (!dh.ok()) return TaskResult::Fail(FailureReason::kInternalError, dh.status().ToString());
  sa_.dh = *std::move(dh);
  // An invalid KE value (wrong length, not on the curve) is the peer's
  // garbage, not our failure.
  if (!DeriveSkKeys(sa_, AsStringView(ke->data)).ok()) return TaskResult::Ignore();
  CheckNat(m, from);
  sa_.peer_hash_algorithms = PeerHashAlgorithms(m);
  sa_.fragmentation =
      config_.fragmentation && FindNotify(m, kNotifyFragmentationSupported) != nullptr;
  return TaskResult::Done();
}

TaskResult IkeSaInitTask::ProcessResponse(const Message& m, const Endpoint& from) {
  if (const NotifyPayload* n = FindNotify(m, kNotifyCookie); n != nullptr) {
    // The responder is under load and wants proof of our address: send the
    // same request again with its cookie in front (a few times at most).
    if (n->data.empty() || n->data.size() > 64) return TaskResult::Ignore();
    if (n->data == cookie_) return TaskResult::Ignore();  // A late copy.
    if (++cookies_seen_ > 3) {
      return TaskResult::Fail(FailureReason::kPeerNotResponding,
                              "responder keeps asking for a new cookie");
    }
    cookie_ = n->data;
    return TaskResult::Retry();
  }
  if (const NotifyPayload* n = FindNotify(m, kNotifyInvalidKePayload); n != nullptr) {
    if (n->data.size() != 2) {
      return TaskResult::Fail(FailureReason::kNoProposalChosen, "malformed INVALID_KE_PAYLOAD");
    }
    const uint16_t g = static_cast<uint16_t>(n->data[0] << 8 | n->data[1]);
    // A late copy of the answer to our previous attempt.
    if (g == sa_.dh_group) return TaskResult::Ignore();
    if (!RequestedGroup(*n, config_.ike_proposals).has_value() || !tried_groups_.insert(g).second) {
      return TaskResult::Fail(FailureReason::kNoProposalChosen,
                              absl::StrCat("peer wants DH group ", g));
    }
    sa_.dh_group = g;
    return TaskResult::Retry();
  }
  if (const NotifyPayload* n = FindErrorNotify(m); n != nullptr) {
    return TaskResult::Fail(n->type == kNotifyNoProposalChosen ? FailureReason::kNoProposalChosen
                                                               : FailureReason::kInternalError,
                            absl::StrCat("peer sent ", NotifyTypeName(n->type)));
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  if (sa == nullptr || ke == nullptr || nonce == nullptr || sa->proposals.size() != 1 ||
      m.header.spi_r == 0) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "bad IKE_SA_INIT response");
  }
  const Proposal& chosen = sa->proposals[0];
  std::optional<AlgorithmProposal> match;
  if (IsSingleChoice(chosen)) {
    for (const auto& a : config_.ike_proposals) {
      if (Allows(chosen, a, true)) {
        match = a;
        break;
      }
    }
  }
  if (!match.has_value() || ke->dh_group != match->dh_group || ke->dh_group != sa_.dh_group) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen,
                            "responder chose a proposal we did not offer");
  }
  sa_.algorithms = *match;
  sa_.spi_r = m.header.spi_r;
  sa_.nr = nonce->data;
  if (absl::Status s = DeriveSkKeys(sa_, AsStringView(ke->data)); !s.ok()) {
    return TaskResult::Fail(FailureReason::kInternalError, s.ToString());
  }
  CheckNat(m, from);
  sa_.peer_hash_algorithms = PeerHashAlgorithms(m);
  sa_.fragmentation =
      config_.fragmentation && FindNotify(m, kNotifyFragmentationSupported) != nullptr;
  return TaskResult::Done();
}

// --- IKE_AUTH ---

std::string AuthMethodName(uint8_t method, const Bytes& data) {
  switch (method) {
    case kAuthSharedKey:
      return "psk";
    case kAuthRsaSignature:
      return "rsa-pkcs1-sha1";
    case kAuthEcdsaSha256P256:
      return "ecdsa-sha256-p256";
    case kAuthEcdsaSha384P384:
      return "ecdsa-sha384-p384";
    case kAuthEcdsaSha512P521:
      return "ecdsa-sha512-p521";
    case kAuthDigitalSignature: {
      if (data.empty() || data[0] + 1u > data.size()) break;
      const unsigned char* p = data.data() + 1;
      X509_ALGOR* alg = d2i_X509_ALGOR(nullptr, &p, data[0]);
      if (alg == nullptr) break;
      const ASN1_OBJECT* oid = nullptr;
      X509_ALGOR_get0(&oid, nullptr, nullptr, alg);
      const int nid = OBJ_obj2nid(oid);
      std::string name = nid == NID_undef ? "digital-signature" : OBJ_nid2ln(nid);
      X509_ALGOR_free(alg);
      return name;
    }
    default:
      break;
  }
  return absl::StrCat("auth-method-", method);
}

absl::Status IkeAuthTask::Build(Message& m) {
  if (!sa_.initiator && auth_failed_) {
    m.payloads.push_back(MakeNotify(kNotifyAuthenticationFailed));
    return absl::OkStatus();
  }
  const IdPayload id = LocalIdPayload();
  m.payloads.push_back(MakePayload(sa_.initiator ? kPayloadIdi : kPayloadIdr, id));
  if (config_.credentials != nullptr) {
    for (const Bytes& der : config_.credentials->chain_der()) {
      m.payloads.push_back(MakePayload(kPayloadCert, CertPayload{kCertEncodingX509Signature, der}));
    }
  }
  if (sa_.initiator && config_.initial_contact) {
    m.payloads.push_back(MakeNotify(kNotifyInitialContact));
  }
  if (sa_.initiator && config_.trust_anchors != nullptr) {
    m.payloads.push_back(MakePayload(
        kPayloadCertReq,
        CertPayload{kCertEncodingX509Signature, config_.trust_anchors->certreq_data()}));
  }
  if (config_.credentials != nullptr) {
    ASSIGN_OR_RETURN(Bytes octets, SignedOctets(sa_, sa_.initiator, id));
    ASSIGN_OR_RETURN(AuthSignature sig,
                     config_.credentials->Sign(octets, sa_.peer_hash_algorithms));
    m.payloads.push_back(MakePayload(kPayloadAuth, AuthPayload{sig.method, std::move(sig.data)}));
  } else {
    ASSIGN_OR_RETURN(Secret auth, PskAuth(sa_, config_.psk, sa_.initiator, id));
    m.payloads.push_back(
        MakePayload(kPayloadAuth, AuthPayload{kAuthSharedKey, BytesOf(auth.view())}));
  }
  if (sa_.initiator) {
    if (child_.inbound_spi == 0) child_.inbound_spi = RandomSpi32(random_);
    SaPayload sa;
    for (size_t i = 0; i < config_.esp_proposals.size(); ++i) {
      sa.proposals.push_back(ToWireProposal(config_.esp_proposals[i], static_cast<uint8_t>(i + 1),
                                            false, Spi32Bytes(child_.inbound_spi)));
    }
    m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
    m.payloads.push_back(TsPayloadOf(kPayloadTsi, config_.local_ts));
    m.payloads.push_back(TsPayloadOf(kPayloadTsr, config_.remote_ts));
    return absl::OkStatus();
  }
  if (child_notify_ != 0) {
    m.payloads.push_back(MakeNotify(child_notify_));
    return absl::OkStatus();
  }
  SaPayload sa;
  sa.proposals.push_back(
      ToWireProposal(child_.algorithms, chosen_number_, false, Spi32Bytes(child_.inbound_spi)));
  m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
  m.payloads.push_back(TsPayloadOf(kPayloadTsi, child_.remote_ts));
  m.payloads.push_back(TsPayloadOf(kPayloadTsr, child_.local_ts));
  return absl::OkStatus();
}

TaskResult IkeAuthTask::Process(const Message& m) {
  return sa_.initiator ? ProcessResponse(m) : ProcessRequest(m);
}

IdPayload IkeAuthTask::LocalIdPayload() const {
  IdPayload id = IdOf(config_.local_id);
  // Send the DN exactly as our certificate spells it, so that peers that
  // compare DER (and not names) agree.
  if (config_.local_id.type == IdentityType::kDerAsn1Dn && config_.credentials != nullptr) {
    Bytes subject = config_.credentials->subject_der();
    if (SameDistinguishedName(subject, id.data)) id.data = std::move(subject);
  }
  return id;
}

TaskResult IkeAuthTask::Authenticate(const Message& m) {
  const auto* id = Find<IdPayload>(m, sa_.initiator ? kPayloadIdr : kPayloadIdi);
  const auto* auth = Find<AuthPayload>(m, kPayloadAuth);
  if (id == nullptr || auth == nullptr) {
    auth_failed_ = true;
    return TaskResult::Fail(FailureReason::kAuthenticationFailed, "no ID or AUTH payload");
  }
  const Identity peer{static_cast<IdentityType>(id->id_type), id->data};
  if (!(peer == config_.remote_id)) {
    auth_failed_ = true;
    return TaskResult::Fail(
        FailureReason::kPeerIdentityMismatch,
        absl::StrCat("peer identity \"", IdentityText(peer), "\" is not the configured \"",
                     IdentityText(config_.remote_id), "\""));
  }
  if (config_.trust_anchors != nullptr) {
    TaskResult r = AuthenticateSignature(m, *id, *auth);
    if (r.kind != TaskResult::Kind::kDone) {
      auth_failed_ = true;
      return r;
    }
  } else {
    auto expected = PskAuth(sa_, config_.psk, !sa_.initiator, *id);
    if (!expected.ok()) {
      auth_failed_ = true;
      return TaskResult::Fail(FailureReason::kInternalError, expected.status().ToString());
    }
    if (auth->method != kAuthSharedKey) {
      auth_failed_ = true;
      return TaskResult::Fail(
          FailureReason::kAuthenticationFailed,
          absl::StrCat("peer authenticated with ", AuthMethodName(auth->method, auth->data),
                       ", but this tunnel uses a PSK"));
    }
    if (auth->data.size() != expected->size() ||
        CRYPTO_memcmp(auth->data.data(), expected->view().data(), expected->size()) != 0) {
      auth_failed_ = true;
      return TaskResult::Fail(FailureReason::kAuthenticationFailed, "PSK AUTH does not verify");
    }
  }
  remote_identity_ = IdentityText(peer);
  auth_method_ = AuthMethodName(auth->method, auth->data);
  peer_initial_contact_ = !sa_.initiator && FindNotify(m, kNotifyInitialContact) != nullptr;
  authenticated_ = true;
  return TaskResult::Done();
}

TaskResult IkeAuthTask::AuthenticateSignature(const Message& m, const IdPayload& id,
                                              const AuthPayload& auth) {
  if (auth.method == kAuthSharedKey) {
    return TaskResult::Fail(FailureReason::kAuthenticationFailed,
                            "peer authenticated with a PSK, but this tunnel uses certificates");
  }
  std::vector<Bytes> chain;
  for (const Payload& p : m.payloads) {
    const auto* cert = std::get_if<CertPayload>(&p.body);
    if (p.type == kPayloadCert && cert != nullptr && cert->encoding == kCertEncodingX509Signature) {
      chain.push_back(cert->data);
    }
  }
  if (chain.empty()) {
    return TaskResult::Fail(FailureReason::kAuthenticationFailed, "peer sent no X.509 certificate");
  }
  absl::StatusOr<std::unique_ptr<PeerCertificate>> cert =
      config_.trust_anchors->Verify(chain, clock_.Now());
  if (!cert.ok()) {
    return TaskResult::Fail(
        FailureReason::kAuthenticationFailed,
        absl::StrCat("peer certificate not trusted: ", cert.status().message()));
  }
  if (absl::Status s = (*cert)->CheckIdentity(id.id_type, id.data); !s.ok()) {
    return TaskResult::Fail(FailureReason::kPeerIdentityMismatch, std::string(s.message()));
  }
  absl::StatusOr<Bytes> octets = SignedOctets(sa_, !sa_.initiator, id);
  if (!octets.ok()) {
    return TaskResult::Fail(FailureReason::kInternalError, octets.status().ToString());
  }
  if (absl::Status s = (*cert)->VerifyAuth(auth.method, auth.data, *octets); !s.ok()) {
    return TaskResult::Fail(FailureReason::kAuthenticationFailed,
                            absl::StrCat("AUTH signature of ", (*cert)->subject_text(),
                                         " does not verify: ", s.message()));
  }
  return TaskResult::Done();
}

TaskResult IkeAuthTask::DeriveChild() {
  const CipherSuite suite = CipherSuiteOf(child_.algorithms);
  auto keys = DeriveChildSaKeys(*sa_.prf, sa_.keys.sk_d, suite, "", AsStringView(sa_.ni),
                                AsStringView(sa_.nr));
  if (!keys.ok()) return TaskResult::Fail(FailureReason::kInternalError, "child keys");
  if (sa_.initiator) {
    child_.outbound_encr_key = keys->encr_i;
    child_.outbound_integ_key = keys->integ_i;
    child_.inbound_encr_key = keys->encr_r;
    child_.inbound_integ_key = keys->integ_r;
  } else {
    child_.outbound_encr_key = keys->encr_r;
    child_.outbound_integ_key = keys->integ_r;
    child_.inbound_encr_key = keys->encr_i;
    child_.inbound_integ_key = keys->integ_i;
  }
  return TaskResult::Done();
}

TaskResult IkeAuthTask::ProcessRequest(const Message& m) {
  TaskResult auth = Authenticate(m);
  if (auth.kind != TaskResult::Kind::kDone) return auth;
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* tsi = Find<TsPayload>(m, kPayloadTsi);
  const auto* tsr = Find<TsPayload>(m, kPayloadTsr);
  std::optional<Selection> selection;
  if (sa != nullptr) selection = SelectProposal(config_.esp_proposals, *sa, /*ike=*/false);
  if (!selection.has_value() || selection->offered->spi.size() != 4) {
    child_notify_ = kNotifyNoProposalChosen;
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "no ESP proposal acceptable");
  }
  if (tsi != nullptr && tsr != nullptr) {
    child_.remote_ts = NarrowTrafficSelectors(tsi->selectors, config_.remote_ts);
    child_.local_ts = NarrowTrafficSelectors(tsr->selectors, config_.local_ts);
  }
  if (child_.remote_ts.empty() || child_.local_ts.empty()) {
    child_notify_ = kNotifyTsUnacceptable;
    return TaskResult::Fail(FailureReason::kTsUnacceptable, "traffic selectors do not overlap");
  }
  child_.algorithms = selection->algorithms;
  chosen_number_ = selection->offered->number;
  const Bytes& spi = selection->offered->spi;
  child_.outbound_spi = static_cast<uint32_t>(spi[0]) << 24 | spi[1] << 16 | spi[2] << 8 | spi[3];
  child_.inbound_spi = RandomSpi32(random_);
  TaskResult keys = DeriveChild();
  if (keys.kind != TaskResult::Kind::kDone) child_notify_ = kNotifyNoProposalChosen;
  return keys;
}

TaskResult IkeAuthTask::ProcessResponse(const Message& m) {
  if (FindNotify(m, kNotifyAuthenticationFailed) != nullptr) {
    return TaskResult::Fail(FailureReason::kAuthenticationFailed,
                            "peer sent AUTHENTICATION_FAILED");
  }
  TaskResult auth = Authenticate(m);
  if (auth.kind != TaskResult::Kind::kDone) return auth;
  if (FindNotify(m, kNotifyNoProposalChosen) != nullptr) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "peer refused our ESP proposals");
  }
  if (FindNotify(m, kNotifyTsUnacceptable) != nullptr) {
    return TaskResult::Fail(FailureReason::kTsUnacceptable, "peer refused our selectors");
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* tsi = Find<TsPayload>(m, kPayloadTsi);
  const auto* tsr = Find<TsPayload>(m, kPayloadTsr);
  if (sa == nullptr || sa->proposals.size() != 1 || sa->proposals[0].spi.size() != 4 ||
      !IsSingleChoice(sa->proposals[0])) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "bad child SA in response");
  }
  std::optional<AlgorithmProposal> match;
  for (const auto& a : config_.esp_proposals) {
    if (Allows(sa->proposals[0], a, false)) {
      match = a;
      break;
    }
  }
  if (!match.has_value()) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen,
                            "responder chose an ESP proposal we did not offer");
  }
  if (tsi == nullptr || tsr == nullptr || tsi->selectors.empty() || tsr->selectors.empty()) {
    return TaskResult::Fail(FailureReason::kTsUnacceptable, "no selectors in response");
  }
  child_.local_ts.clear();
  child_.remote_ts.clear();
  for (const auto& ts : tsi->selectors) child_.local_ts.push_back(FromWire(ts));
  for (const auto& ts : tsr->selectors) child_.remote_ts.push_back(FromWire(ts));
  for (const auto& r : child_.local_ts) {
    if (!ContainedIn(r, config_.local_ts)) {
      return TaskResult::Fail(FailureReason::kTsUnacceptable, "TSi wider than proposed");
    }
  }
  for (const auto& r : child_.remote_ts) {
    if (!ContainedIn(r, config_.remote_ts)) {
      return TaskResult::Fail(FailureReason::kTsUnacceptable, "TSr wider than proposed");
    }
  }
  child_.algorithms = *match;
  const Bytes& spi = sa->proposals[0].spi;
  child_.outbound_spi = static_cast<uint32_t>(spi[0]) << 24 | spi[1] << 16 | spi[2] << 8 | spi[3];
  return DeriveChild();
}

// --- CREATE_CHILD_SA: CHILD SA rekey ---

namespace {

uint32_t SpiOf(const Bytes& spi) {
  return static_cast<uint32_t>(spi[0]) << 24 | spi[1] << 16 | spi[2] << 8 | spi[3];
}

}  // namespace

absl::Status RekeyChildTask::Build(Message& m) {
  if (initiator_) {
    if (child_.inbound_spi == 0) child_.inbound_spi = RandomSpi32(random_);
    if (ni_.empty()) {
      ni_.resize(kNonceSize);
      random_.Fill(absl::MakeSpan(ni_));
    }
    if (dh_group_ != 0 && (dh_ == nullptr || dh_->group() != static_cast<DhGroup>(dh_group_))) {
      ASSIGN_OR_RETURN(dh_, CreateDiffieHellman(static_cast<DhGroup>(dh_group_)));
    }
    // An `old` without SPIs: a new CHILD SA in place of a deleted one.
    if (old_.inbound_spi != 0) {
      NotifyPayload rekey;
      rekey.protocol_id = kProtocolEsp;
      rekey.spi = Spi32Bytes(old_.inbound_spi);
      rekey.type = kNotifyRekeySa;
      m.payloads.push_back(MakePayload(kPayloadNotify, std::move(rekey)));
    }
    SaPayload sa;
    for (size_t i = 0; i < config_.esp_proposals.size(); ++i) {
      sa.proposals.push_back(ToWireProposal(config_.esp_proposals[i], static_cast<uint8_t>(i + 1),
                                            false, Spi32Bytes(child_.inbound_spi), true));
    }
    m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
    m.payloads.push_back(MakePayload(kPayloadNonce, NoncePayload{ni_}));
    if (dh_ != nullptr) {
      m.payloads.push_back(
          MakePayload(kPayloadKe, KePayload{dh_group_, BytesOf(dh_->public_value())}));
    }
    m.payloads.push_back(TsPayloadOf(kPayloadTsi, old_.local_ts));
    m.payloads.push_back(TsPayloadOf(kPayloadTsr, old_.remote_ts));
    return absl::OkStatus();
  }
  if (error_notify_ != 0) {
    m.payloads.push_back(MakeNotify(error_notify_, error_data_));
    return absl::OkStatus();
  }
  SaPayload sa;
  sa.proposals.push_back(ToWireProposal(child_.algorithms, chosen_number_, false,
                                        Spi32Bytes(child_.inbound_spi), true));
  m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
  m.payloads.push_back(MakePayload(kPayloadNonce, NoncePayload{nr_}));
  if (dh_ != nullptr) {
    m.payloads.push_back(
        MakePayload(kPayloadKe, KePayload{dh_group_, BytesOf(dh_->public_value())}));
    dh_.reset();  // The private value is not needed any more.
  }
  m.payloads.push_back(TsPayloadOf(kPayloadTsi, child_.remote_ts));
  m.payloads.push_back(TsPayloadOf(kPayloadTsr, child_.local_ts));
  return absl::OkStatus();
}

TaskResult RekeyChildTask::Process(const Message& m) {
  return initiator_ ? ProcessResponse(m) : ProcessRequest(m);
}

TaskResult RekeyChildTask::Refuse(uint16_t notify, FailureReason reason, std::string detail) {
  error_notify_ = notify;
  return TaskResult::Fail(reason, std::move(detail));
}

TaskResult RekeyChildTask::ProcessRequest(const Message& m) {
  const NotifyPayload* rekey = FindNotify(m, kNotifyRekeySa);
  if (rekey == nullptr && !allow_new_child_) {
    return Refuse(kNotifyNoAdditionalSas, FailureReason::kNoProposalChosen,
                  "only one CHILD SA per IKE SA");
  }
  if (rekey != nullptr && (rekey->protocol_id != kProtocolEsp || rekey->spi.size() != 4 ||
                           SpiOf(rekey->spi) != old_.outbound_spi)) {
    error_data_.clear();
    return Refuse(kNotifyChildSaNotFound, FailureReason::kInternalError,
                  "rekey of a CHILD SA we do not have");
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  const auto* tsi = Find<TsPayload>(m, kPayloadTsi);
  const auto* tsr = Find<TsPayload>(m, kPayloadTsr);
  if (sa == nullptr || nonce == nullptr || tsi == nullptr || tsr == nullptr) {
    return Refuse(kNotifyInvalidSyntax, FailureReason::kInternalError,
                  "incomplete CREATE_CHILD_SA");
  }
  std::optional<Selection> selection =
      SelectProposal(config_.esp_proposals, *sa, /*ike=*/false, /*esp_dh=*/true);
  if (!selection.has_value() || selection->offered->spi.size() != 4) {
    return Refuse(kNotifyNoProposalChosen, FailureReason::kNoProposalChosen,
                  "no ESP proposal acceptable for the rekey");
  }
  dh_group_ = selection->algorithms.dh_group;
  if (dh_group_ != 0 && (ke == nullptr || ke->dh_group != dh_group_)) {
    error_data_ = {static_cast<uint8_t>(dh_group_ >> 8), static_cast<uint8_t>(dh_group_)};
    return Refuse(kNotifyInvalidKePayload, FailureReason::kNoProposalChosen,
                  absl::StrCat("rekey wants DH group ", dh_group_));
  }
  child_.remote_ts = NarrowTrafficSelectors(tsi->selectors, config_.remote_ts);
  child_.local_ts = NarrowTrafficSelectors(tsr->selectors, config_.local_ts);
  if (child_.remote_ts.empty() || child_.local_ts.empty()) {
    return Refuse(kNotifyTsUnacceptable, FailureReason::kTsUnacceptable,
                  "rekey selectors do not overlap");
  }
  child_.algorithms = selection->algorithms;
  chosen_number_ = selection->offered->number;
  child_.outbound_spi = SpiOf(selection->offered->spi);
  child_.inbound_spi = RandomSpi32(random_);
  ni_ = nonce->data;
  nr_.resize(kNonceSize);
  random_.Fill(absl::MakeSpan(nr_));
  Secret shared;
  if (dh_group_ != 0) {
    auto dh = CreateDiffieHellman(static_cast<DhGroup>(dh_group_));
    if (!dh.ok()) return Refuse(kNotifyNoProposalChosen, FailureReason::kInternalError, "DH");
    dh_ = *std::move(dh);
    auto s = dh_->ComputeSharedSecret(AsStringView(ke->data));
    if (!s.ok()) {
      return Refuse(kNotifyInvalidSyntax, FailureReason::kInternalError, "bad KE in the rekey");
    }
    shared = *std::move(s);
  }
  return DeriveKeys(shared);
}

TaskResult RekeyChildTask::ProcessResponse(const Message& m) {
  if (const NotifyPayload* n = FindNotify(m, kNotifyInvalidKePayload); n != nullptr) {
    const std::optional<uint16_t> g = RequestedGroup(*n, config_.esp_proposals);
    if (g.has_value() && !retried_group_ && *g != dh_group_) {
      retried_group_ = true;
      dh_group_ = *g;
      return TaskResult::Retry();
    }
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "peer wants another DH group");
  }
  if (const NotifyPayload* n = FindErrorNotify(m); n != nullptr) {
    temporary_failure_ = n->type == kNotifyTemporaryFailure;
    FailureReason reason = FailureReason::kInternalError;
    if (n->type == kNotifyNoProposalChosen) reason = FailureReason::kNoProposalChosen;
    if (n->type == kNotifyTsUnacceptable) reason = FailureReason::kTsUnacceptable;
    return TaskResult::Fail(reason, absl::StrCat("peer sent ", NotifyTypeName(n->type)));
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  const auto* tsi = Find<TsPayload>(m, kPayloadTsi);
  const auto* tsr = Find<TsPayload>(m, kPayloadTsr);
  if (sa == nullptr || nonce == nullptr || tsi == nullptr || tsr == nullptr ||
      sa->proposals.size() != 1 || sa->proposals[0].spi.size() != 4 ||
      !IsSingleChoice(sa->proposals[0])) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "bad CREATE_CHILD_SA response");
  }
  std::optional<AlgorithmProposal> match;
  for (const auto& a : config_.esp_proposals) {
    if (a.dh_group == dh_group_ && Allows(sa->proposals[0], a, false, true)) {
      match = a;
      break;
    }
  }
  if (!match.has_value()) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen,
                            "responder chose a rekey proposal we did not offer");
  }
  child_.local_ts.clear();
  child_.remote_ts.clear();
  for (const auto& ts : tsi->selectors) child_.local_ts.push_back(FromWire(ts));
  for (const auto& ts : tsr->selectors) child_.remote_ts.push_back(FromWire(ts));
  for (const auto& r : child_.local_ts) {
    if (!ContainedIn(r, old_.local_ts)) {
      return TaskResult::Fail(FailureReason::kTsUnacceptable, "rekeyed TSi wider than proposed");
    }
  }
  for (const auto& r : child_.remote_ts) {
    if (!ContainedIn(r, old_.remote_ts)) {
      return TaskResult::Fail(FailureReason::kTsUnacceptable, "rekeyed TSr wider than proposed");
    }
  }
  child_.algorithms = *match;
  child_.outbound_spi = SpiOf(sa->proposals[0].spi);
  nr_ = nonce->data;
  Secret shared;
  if (dh_group_ != 0) {
    if (ke == nullptr || ke->dh_group != dh_group_ || dh_ == nullptr) {
      return TaskResult::Fail(FailureReason::kNoProposalChosen, "no KE in the rekey response");
    }
    auto s = dh_->ComputeSharedSecret(AsStringView(ke->data));
    if (!s.ok()) return TaskResult::Fail(FailureReason::kInternalError, "bad KE in the response");
    shared = *std::move(s);
  }
  return DeriveKeys(shared);
}

TaskResult RekeyChildTask::DeriveKeys(const Secret& shared) {
  // RFC 7296 §2.17: KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr), keys of
  // the exchange's initiator first.
  const CipherSuite suite = CipherSuiteOf(child_.algorithms);
  auto keys = DeriveChildSaKeys(*sa_.prf, sa_.keys.sk_d, suite, shared.view(), AsStringView(ni_),
                                AsStringView(nr_));
  // The responder still sends its public value; Build() drops it then.
  if (initiator_) dh_.reset();
  if (!keys.ok()) return TaskResult::Fail(FailureReason::kInternalError, "rekey keys");
  child_.outbound_encr_key = initiator_ ? keys->encr_i : keys->encr_r;
  child_.outbound_integ_key = initiator_ ? keys->integ_i : keys->integ_r;
  child_.inbound_encr_key = initiator_ ? keys->encr_r : keys->encr_i;
  child_.inbound_integ_key = initiator_ ? keys->integ_r : keys->integ_i;
  child_.udp_encapsulation = old_.udp_encapsulation;
  child_.local_port = old_.local_port;
  child_.remote_port = old_.remote_port;
  return TaskResult::Done();
}

}  // namespace strait::ike

namespace strait::ike {

// --- CREATE_CHILD_SA: IKE SA rekey ---

namespace {

uint64_t Spi64Of(const Bytes& spi) {
  uint64_t v = 0;
  for (uint8_t b : spi) v = v << 8 | b;
  return v;
}

}  // namespace

bool IsIkeRekeyRequest(const Message& m) {
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  return sa != nullptr && !sa->proposals.empty() && sa->proposals[0].protocol_id == kProtocolIke;
}

RekeyIkeTask::RekeyIkeTask(const IkeSa& old, const EngineConfig& config, RandomSource& random,
                           bool initiator)
    : old_(old), config_(config), random_(random) {
  new_.initiator = initiator;
  new_.local_behind_nat = old.local_behind_nat;
  new_.remote_behind_nat = old.remote_behind_nat;
  new_.peer_hash_algorithms = old.peer_hash_algorithms;
  new_.fragmentation = old.fragmentation;  // RFC 7383: negotiated once, in IKE_SA_INIT.
  // The group the old SA agreed on is the one the peer most likely takes.
  dh_group_ =
      old.algorithms.dh_group != 0 ? old.algorithms.dh_group : config.ike_proposals[0].dh_group;
}

absl::Status RekeyIkeTask::Build(Message& m) {
  if (new_.initiator) {
    if (new_.spi_i == 0) new_.spi_i = RandomSpi64(random_);
    if (new_.ni.empty()) {
      new_.ni.resize(kNonceSize);
      random_.Fill(absl::MakeSpan(new_.ni));
    }
    if (new_.dh == nullptr || new_.dh->group() != static_cast<DhGroup>(dh_group_)) {
      ASSIGN_OR_RETURN(new_.dh, CreateDiffieHellman(static_cast<DhGroup>(dh_group_)));
    }
    SaPayload sa;
    for (size_t i = 0; i < config_.ike_proposals.size(); ++i) {
      sa.proposals.push_back(ToWireProposal(config_.ike_proposals[i], static_cast<uint8_t>(i + 1),
                                            true, BytesOf(SpiString(new_.spi_i))));
    }
    m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
    m.payloads.push_back(MakePayload(kPayloadNonce, NoncePayload{new_.ni}));
    m.payloads.push_back(
        MakePayload(kPayloadKe, KePayload{dh_group_, BytesOf(new_.dh->public_value())}));
    return absl::OkStatus();
  }
  if (error_notify_ != 0) {
    m.payloads.push_back(MakeNotify(error_notify_, error_data_));
    return absl::OkStatus();
  }
  if (new_.dh == nullptr) return absl::FailedPreconditionError("no DH value to answer with");
  SaPayload sa;
  sa.proposals.push_back(
      ToWireProposal(new_.algorithms, chosen_number_, true, BytesOf(SpiString(new_.spi_r))));
  m.payloads.push_back(MakePayload(kPayloadSa, std::move(sa)));
  m.payloads.push_back(MakePayload(kPayloadNonce, NoncePayload{new_.nr}));
  m.payloads.push_back(
      MakePayload(kPayloadKe, KePayload{dh_group_, BytesOf(new_.dh->public_value())}));
  new_.dh.reset();  // The private value is not needed any more.
  return absl::OkStatus();
}

TaskResult RekeyIkeTask::Process(const Message& m) {
  return new_.initiator ? ProcessResponse(m) : ProcessRequest(m);
}

TaskResult RekeyIkeTask::Refuse(uint16_t notify, FailureReason reason, std::string detail) {
  error_notify_ = notify;
  return TaskResult::Fail(reason, std::move(detail));
}

TaskResult RekeyIkeTask::ProcessRequest(const Message& m) {
  if (error_notify_ != 0) {
    return TaskResult::Fail(FailureReason::kInternalError, "IKE SA rekey refused for now");
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  if (sa == nullptr || nonce == nullptr) {
    return Refuse(kNotifyInvalidSyntax, FailureReason::kInternalError, "incomplete IKE SA rekey");
  }
  std::optional<Selection> selection = SelectProposal(config_.ike_proposals, *sa, /*ike=*/true);
  if (!selection.has_value() || selection->offered->spi.size() != 8 ||
      Spi64Of(selection->offered->spi) == 0) {
    return Refuse(kNotifyNoProposalChosen, FailureReason::kNoProposalChosen,
                  "no IKE proposal acceptable for the rekey");
  }
  dh_group_ = selection->algorithms.dh_group;
  if (ke == nullptr || ke->dh_group != dh_group_) {
    error_data_ = {static_cast<uint8_t>(dh_group_ >> 8), static_cast<uint8_t>(dh_group_)};
    return Refuse(kNotifyInvalidKePayload, FailureReason::kNoProposalChosen,
                  absl::StrCat("IKE SA rekey wants DH group ", dh_group_));
  }
  new_.algorithms = selection->algorithms;
  new_.dh_group = dh_group_;
  chosen_number_ = selection->offered->number;
  new_.spi_i = Spi64Of(selection->offered->spi);
  new_.spi_r = RandomSpi64(random_);
  new_.ni = nonce->data;
  new_.nr.resize(kNonceSize);
  random_.Fill(absl::MakeSpan(new_.nr));
  auto dh = CreateDiffieHellman(static_cast<DhGroup>(dh_group_));
  if (!dh.ok()) return Refuse(kNotifyNoProposalChosen, FailureReason::kInternalError, "DH");
  new_.dh = *std::move(dh);
  if (!DeriveRekeyedSkKeys(new_, old_, AsStringView(ke->data)).ok()) {
    new_.dh.reset();
    return Refuse(kNotifyInvalidSyntax, FailureReason::kInternalError,
                  "bad KE in the IKE SA rekey");
  }
  return TaskResult::Done();
}

TaskResult RekeyIkeTask::ProcessResponse(const Message& m) {
  if (const NotifyPayload* n = FindNotify(m, kNotifyInvalidKePayload); n != nullptr) {
    const std::optional<uint16_t> g = RequestedGroup(*n, config_.ike_proposals);
    if (g.has_value() && !retried_group_ && *g != dh_group_) {
      retried_group_ = true;
      dh_group_ = *g;
      return TaskResult::Retry();
    }
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "peer wants another DH group");
  }
  if (const NotifyPayload* n = FindErrorNotify(m); n != nullptr) {
    temporary_failure_ = n->type == kNotifyTemporaryFailure;
    return TaskResult::Fail(n->type == kNotifyNoProposalChosen ? FailureReason::kNoProposalChosen
                                                               : FailureReason::kInternalError,
                            absl::StrCat("peer sent ", NotifyTypeName(n->type)));
  }
  const auto* sa = Find<SaPayload>(m, kPayloadSa);
  const auto* nonce = Find<NoncePayload>(m, kPayloadNonce);
  const auto* ke = Find<KePayload>(m, kPayloadKe);
  if (sa == nullptr || nonce == nullptr || ke == nullptr || sa->proposals.size() != 1 ||
      sa->proposals[0].spi.size() != 8 || Spi64Of(sa->proposals[0].spi) == 0 ||
      !IsSingleChoice(sa->proposals[0])) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen, "bad IKE SA rekey response");
  }
  std::optional<AlgorithmProposal> match;
  for (const auto& a : config_.ike_proposals) {
    if (a.dh_group == dh_group_ && Allows(sa->proposals[0], a, true)) {
      match = a;
      break;
    }
  }
  if (!match.has_value() || ke->dh_group != dh_group_ || new_.dh == nullptr) {
    return TaskResult::Fail(FailureReason::kNoProposalChosen,
                            "responder chose an IKE rekey proposal we did not offer");
  }
  new_.algorithms = *match;
  new_.dh_group = dh_group_;
  new_.spi_r = Spi64Of(sa->proposals[0].spi);
  new_.nr = nonce->data;
  absl::Status s = DeriveRekeyedSkKeys(new_, old_, AsStringView(ke->data));
  new_.dh.reset();
  if (!s.ok()) return TaskResult::Fail(FailureReason::kInternalError, "bad KE in the response");
  return TaskResult::Done();
}

}  // namespace strait::ike
