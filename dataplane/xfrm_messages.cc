#include "dataplane/xfrm_messages.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace strait::dataplane::xfrm {
namespace {

// IKEv2 transform IDs (IANA "Transform Type 1/3").
constexpr uint16_t kEncrAesCbc = 12;
constexpr uint16_t kEncrAesGcm16 = 20;
constexpr uint16_t kIntegHmacSha256 = 12;
constexpr uint16_t kIntegHmacSha384 = 13;
constexpr uint16_t kIntegHmacSha512 = 14;

constexpr char kAeadGcm[] = "rfc4106(gcm(aes))";
constexpr char kCryptCbc[] = "cbc(aes)";
constexpr int kGcmSaltBits = 32;
constexpr int kGcmIcvBits = 128;

// The legacy replay state is a 32-bit bitmap; larger windows (and ESN) need
// XFRMA_REPLAY_ESN_VAL, whose bitmap the kernel caps at 4096 bits.
constexpr uint32_t kLegacyReplayWindowMax = 32;
constexpr uint32_t kReplayWindowMax = XFRMA_REPLAY_ESN_MAX;

struct IntegAlgorithm {
  uint16_t id;
  const char* name;
  int key_bits;
  int truncation_bits;
};
// RFC 4868: HMAC-SHA2 keys are as long as the hash, ICVs half of it.
constexpr std::array<IntegAlgorithm, 3> kIntegAlgorithms = {{
    {kIntegHmacSha256, "hmac(sha256)", 256, 128},
    {kIntegHmacSha384, "hmac(sha384)", 384, 192},
    {kIntegHmacSha512, "hmac(sha512)", 512, 256},
}};

const IntegAlgorithm* FindInteg(uint16_t id) {
  for (const IntegAlgorithm& a : kIntegAlgorithms) {
    if (a.id == id) return &a;
  }
  return nullptr;
}

const IntegAlgorithm* FindIntegByName(const char* name) {
  for (const IntegAlgorithm& a : kIntegAlgorithms) {
    if (strcmp(a.name, name) == 0) return &a;
  }
  return nullptr;
}

bool IsAesKeyBits(int bits) { return bits == 128 || bits == 192 || bits == 256; }

int FamilyOf(const Address& address) { return address.size() == 4 ? AF_INET : AF_INET6; }

xfrm_address_t ToXfrmAddress(const Address& address) {
  xfrm_address_t out;
  memset(&out, 0, sizeof(out));
  memcpy(&out, address.data(), address.size());
  return out;
}

absl::StatusOr<Address> FromXfrmAddress(const xfrm_address_t& address, int family) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&address);
  switch (family) {
    case AF_INET:
      return Address(bytes, bytes + 4);
    case AF_INET6:
      return Address(bytes, bytes + 16);
    default:
      return absl::InvalidArgumentError(absl::StrCat("address family ", family));
  }
}

uint64_t LimitToKernel(uint64_t limit) { return limit == 0 ? XFRM_INF : limit; }
uint64_t LimitFromKernel(uint64_t limit) { return limit == XFRM_INF ? 0 : limit; }

absl::Status CheckAddress(const Address& address, absl::string_view field) {
  if (address.size() != 4 && address.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", address.size(), " bytes, want 4 (IPv4) or 16 (IPv6)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPrefix(const Address& address, uint8_t prefix, absl::string_view field) {
  RETURN_IF_ERROR(CheckAddress(address, field));
  size_t bits = address.size() * 8;
  if (prefix > bits) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": prefix length ", static_cast<int>(prefix), " > ", bits));
  }
  for (size_t i = prefix; i < bits; ++i) {
    if (address[i / 8] & (0x80 >> (i % 8))) {
      // The kernel keeps the bits and then names the policy by them, which
      // `ip xfrm` and a later delete by prefix would not.
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", AddressToString(address), "/",
                                                     static_cast<int>(prefix),
                                                     " has host bits set"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckReqid(uint32_t reqid, absl::string_view field) {
  if (!IsStraitReqid(reqid)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %u (0x%08x) is outside Strait's range [0x%08x, 0x%08x]", field, reqid,
                        reqid, kReqidFirst, kReqidLast));
  }
  return absl::OkStatus();
}

absl::Status CheckLifetimes(const Lifetime& soft, const Lifetime& hard) {
  auto check = [](uint64_t s, uint64_t h, absl::string_view what) -> absl::Status {
    if (s != 0 && h != 0 && s > h) {
      return absl::InvalidArgumentError(
          absl::StrCat("soft ", what, " limit ", s, " exceeds the hard limit ", h));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check(soft.bytes, hard.bytes, "byte"));
  RETURN_IF_ERROR(check(soft.packets, hard.packets, "packet"));
  return check(soft.add_seconds, hard.add_seconds, "time");
}

xfrm_selector ToXfrmSelector(const Selector& s) {
  xfrm_selector sel;
  memset(&sel, 0, sizeof(sel));
  sel.family = FamilyOf(s.source);
  sel.saddr = ToXfrmAddress(s.source);
  sel.daddr = ToXfrmAddress(s.destination);
  sel.prefixlen_s = s.source_prefix;
  sel.prefixlen_d = s.destination_prefix;
  sel.proto = s.ip_protocol;
  if (s.source_port != 0) {
    sel.sport = htons(s.source_port);
    sel.sport_mask = 0xffff;
  }
  if (s.destination_port != 0) {
    sel.dport = htons(s.destination_port);
    sel.dport_mask = 0xffff;
  }
  return sel;
}

absl::StatusOr<Selector> FromXfrmSelector(const xfrm_selector& sel) {
  Selector s;
  ASSIGN_OR_RETURN(s.source, FromXfrmAddress(sel.saddr, sel.family));
  ASSIGN_OR_RETURN(s.destination, FromXfrmAddress(sel.daddr, sel.family));
  s.source_prefix = sel.prefixlen_s;
  s.destination_prefix = sel.prefixlen_d;
  s.ip_protocol = sel.proto;
  auto port = [](uint16_t value, uint16_t mask) -> absl::StatusOr<uint16_t> {
    if (mask == 0) return 0;
    if (mask != 0xffff) {
      return absl::InvalidArgumentError(absl::StrFormat("port mask 0x%04x", ntohs(mask)));
    }
    return ntohs(value);
  };
  ASSIGN_OR_RETURN(s.source_port, port(sel.sport, sel.sport_mask));
  ASSIGN_OR_RETURN(s.destination_port, port(sel.dport, sel.dport_mask));
  return s;
}

uint8_t ToXfrmDirection(Direction d) {
  switch (d) {
    case Direction::kIn:
      return XFRM_POLICY_IN;
    case Direction::kOut:
      return XFRM_POLICY_OUT;
    case Direction::kFwd:
      return XFRM_POLICY_FWD;
  }
  return XFRM_POLICY_OUT;
}

absl::StatusOr<Direction> FromXfrmDirection(uint8_t dir) {
  switch (dir) {
    case XFRM_POLICY_IN:
      return Direction::kIn;
    case XFRM_POLICY_OUT:
      return Direction::kOut;
    case XFRM_POLICY_FWD:
      return Direction::kFwd;
    default:
      return absl::InvalidArgumentError(absl::StrCat("policy direction ", static_cast<int>(dir)));
  }
}

// --- building ---

// A request under construction in a caller's buffer; every append is
// checked against the buffer's end.
class Request {
 public:
  explicit Request(absl::Span<uint8_t> buffer) : buffer_(buffer) {}

  // Puts the netlink header and a zeroed fixed part of `extra` bytes.
  // nullptr when they do not fit.
  void* Start(uint16_t type, uint16_t flags, uint32_t seq, size_t extra) {
    if (buffer_.size() < MNL_NLMSG_HDRLEN + MNL_ALIGN(extra)) return nullptr;
    nlh_ = mnl_nlmsg_put_header(buffer_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = flags;
    nlh_->nlmsg_seq = seq;
    return mnl_nlmsg_put_extra_header(nlh_, extra);
  }

  // Appends attribute `type` with `length` zeroed payload bytes and returns
  // the payload; nullptr (and the request fails) when it does not fit.
  void* Append(uint16_t type, size_t length) {
    size_t attribute = MNL_ATTR_HDRLEN + length;
    if (nlh_ == nullptr || attribute > UINT16_MAX ||
        nlh_->nlmsg_len + MNL_ALIGN(attribute) > buffer_.size()) {
      overflow_ = true;
      return nullptr;
    }
    auto* attr = static_cast<nlattr*>(mnl_nlmsg_get_payload_tail(nlh_));
    attr->nla_type = type;
    attr->nla_len = static_cast<uint16_t>(attribute);
    void* payload = mnl_attr_get_payload(attr);
    memset(payload, 0, MNL_ALIGN(attribute) - MNL_ATTR_HDRLEN);
    nlh_->nlmsg_len += MNL_ALIGN(attribute);
    return payload;
  }

  template <typename T>
  T* Append(uint16_t type) {
    return static_cast<T*>(Append(type, sizeof(T)));
  }

  void AppendU32(uint16_t type, uint32_t value) {
    if (auto* p = Append<uint32_t>(type)) *p = value;
  }

  void AppendMark(Mark mark) {
    if (mark.mask == 0) return;
    if (auto* m = Append<xfrm_mark>(XFRMA_MARK)) {
      m->v = mark.value;
      m->m = mark.mask;
    }
  }

  absl::StatusOr<size_t> Finish() const {
    if (nlh_ == nullptr || overflow_) {
      return absl::InternalError(
          absl::StrCat("XFRM request does not fit in ", buffer_.size(), " bytes"));
    }
    return nlh_->nlmsg_len;
  }

 private:
  absl::Span<uint8_t> buffer_;
  nlmsghdr* nlh_ = nullptr;
  bool overflow_ = false;
};

// Writes an algorithm attribute (xfrm_algo, xfrm_algo_auth or
// xfrm_algo_aead: name first, key last) with `key` behind the struct.
template <typename Algo>
Algo* AppendAlgorithm(Request& request, uint16_t type, const char* name, absl::string_view key) {
  auto* algo = static_cast<Algo*>(request.Append(type, sizeof(Algo) + key.size()));
  if (algo == nullptr) return nullptr;
  strncpy(algo->alg_name, name, sizeof(algo->alg_name) - 1);
  algo->alg_key_len = static_cast<unsigned int>(key.size() * 8);
  memcpy(algo->alg_key, key.data(), key.size());
  return algo;
}

// --- parsing ---

using Attributes = std::array<const nlattr*, XFRMA_MAX + 1>;

int CollectAttribute(const nlattr* attr, void* data) {
  if (mnl_attr_type_valid(attr, XFRMA_MAX) < 0) return MNL_CB_OK;  // Newer than us.
  (*static_cast<Attributes*>(data))[mnl_attr_get_type(attr)] = attr;
  return MNL_CB_OK;
}

// The fixed part of `message` and its attributes; InvalidArgument when the
// message is too short.
template <typename Fixed>
absl::StatusOr<const Fixed*> ParseFixed(const nlmsghdr& message, Attributes& attributes) {
  if (mnl_nlmsg_get_payload_len(&message) < sizeof(Fixed)) {
    return absl::InvalidArgumentError(absl::StrCat("XFRM message type ", message.nlmsg_type, ": ",
                                                   mnl_nlmsg_get_payload_len(&message),
                                                   " bytes, want ", sizeof(Fixed)));
  }
  attributes.fill(nullptr);
  if (mnl_attr_parse(&message, sizeof(Fixed), CollectAttribute, &attributes) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("XFRM message type ", message.nlmsg_type, ": malformed attributes"));
  }
  return static_cast<const Fixed*>(mnl_nlmsg_get_payload(&message));
}

// The payload of `attr` as a T, or nullptr when it is absent or short.
template <typename T>
const T* AttributeAs(const nlattr* attr, size_t extra = 0) {
  if (attr == nullptr || mnl_attr_get_payload_len(attr) < sizeof(T) + extra) return nullptr;
  return static_cast<const T*>(mnl_attr_get_payload(attr));
}

// alg_name is a fixed array that the kernel terminates; be safe anyway.
template <typename Algo>
std::string AlgorithmName(const Algo& algo) {
  return std::string(algo.alg_name, strnlen(algo.alg_name, sizeof(algo.alg_name)));
}

Mark ParseMark(const Attributes& attributes) {
  Mark mark;
  if (const auto* m = AttributeAs<xfrm_mark>(attributes[XFRMA_MARK])) {
    mark.value = m->v;
    mark.mask = m->m;
  }
  return mark;
}

uint32_t ParseIfId(const Attributes& attributes) {
  const auto* id = AttributeAs<uint32_t>(attributes[XFRMA_IF_ID]);
  return id == nullptr ? 0 : *id;
}

}  // namespace

uint32_t DefaultPriority(const Selector& selector) {
  uint32_t bits = static_cast<uint32_t>(selector.source.size() * 8);
  uint32_t host_bits = (bits - selector.source_prefix) + (bits - selector.destination_prefix);
  bool ports = selector.source_port != 0 || selector.destination_port != 0;
  return kDefaultPriorityBase + 4 * host_bits + (ports ? 0 : 2) + (selector.ip_protocol ? 0 : 1);
}

absl::Status ValidateMark(uint32_t value, uint32_t mask) {
  if (value & ~mask) {
    // The kernel matches (packet mark & mask) == value, never true here.
    return absl::InvalidArgumentError(
        absl::StrFormat("mark 0x%08x has bits outside its mask 0x%08x", value, mask));
  }
  return absl::OkStatus();
}

absl::Status ValidateSelector(const Selector& s) {
  RETURN_IF_ERROR(CheckPrefix(s.source, s.source_prefix, "selector source"));
  RETURN_IF_ERROR(CheckPrefix(s.destination, s.destination_prefix, "selector destination"));
  if (s.source.size() != s.destination.size()) {
    return absl::InvalidArgumentError("selector: source and destination of different families");
  }
  if ((s.source_port != 0 || s.destination_port != 0) && s.ip_protocol == 0) {
    return absl::InvalidArgumentError("selector: ports without a protocol");
  }
  return absl::OkStatus();
}

absl::Status ValidatePolicy(const PolicyConfig& p) {
  RETURN_IF_ERROR(ValidateSelector(p.selector));
  RETURN_IF_ERROR(CheckAddress(p.tunnel_source, "tunnel source"));
  RETURN_IF_ERROR(CheckAddress(p.tunnel_destination, "tunnel destination"));
  if (p.tunnel_source.size() != p.tunnel_destination.size()) {
    return absl::InvalidArgumentError("tunnel source and destination of different families");
  }
  RETURN_IF_ERROR(CheckReqid(p.reqid, "policy reqid"));
  return ValidateMark(p.mark, p.mark_mask);
}

absl::Status ValidateSa(const SaConfig& sa) {
  RETURN_IF_ERROR(CheckAddress(sa.id.destination, "SA destination"));
  RETURN_IF_ERROR(CheckAddress(sa.source, "SA source"));
  if (sa.source.size() != sa.id.destination.size()) {
    return absl::InvalidArgumentError("SA source and destination of different families");
  }
  if (sa.id.spi == 0) return absl::InvalidArgumentError("SA SPI 0 is reserved");
  RETURN_IF_ERROR(CheckReqid(sa.reqid, "SA reqid"));
  if (!IsAesKeyBits(sa.key_bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SA key_bits ", sa.key_bits, ", want 128, 192 or 256"));
  }
  size_t key_bytes = static_cast<size_t>(sa.key_bits) / 8;
  switch (sa.encr_id) {
    case kEncrAesGcm16:
      if (sa.encr_key.size() != key_bytes + kGcmSaltBits / 8) {
        return absl::InvalidArgumentError(absl::StrCat("AES-GCM-16 key: ", sa.encr_key.size(),
                                                       " bytes, want ", key_bytes + 4,
                                                       " (key and 4-byte salt)"));
      }
      if (sa.integ_id != 0 || !sa.integ_key.empty()) {
        return absl::InvalidArgumentError("AES-GCM-16 takes no integrity transform");
      }
      break;
    case kEncrAesCbc: {
      if (sa.encr_key.size() != key_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("AES-CBC key: ", sa.encr_key.size(), " bytes, want ", key_bytes));
      }
      const IntegAlgorithm* integ = FindInteg(sa.integ_id);
      if (integ == nullptr) {
        return absl::UnimplementedError(absl::StrCat(
            "integrity transform ", sa.integ_id,
            " (supported: 12 HMAC-SHA2-256-128, 13 HMAC-SHA2-384-192, 14 HMAC-SHA2-512-256)"));
      }
      if (sa.integ_key.size() * 8 != static_cast<size_t>(integ->key_bits)) {
        return absl::InvalidArgumentError(absl::StrCat(integ->name, " key: ", sa.integ_key.size(),
                                                       " bytes, want ", integ->key_bits / 8));
      }
      break;
    }
    default:
      return absl::UnimplementedError(absl::StrCat("encryption transform ", sa.encr_id,
                                                   " (supported: 20 AES-GCM-16, 12 AES-CBC)"));
  }
  if (sa.replay_window > kReplayWindowMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("replay window ", sa.replay_window, " > ", kReplayWindowMax));
  }
  if (sa.encapsulation &&
      (sa.encapsulation->source_port == 0 || sa.encapsulation->destination_port == 0)) {
    return absl::InvalidArgumentError("UDP encapsulation with port 0");
  }
  RETURN_IF_ERROR(CheckLifetimes(sa.soft, sa.hard));
  return ValidateMark(sa.mark, sa.mark_mask);
}

absl::StatusOr<size_t> BuildAddSa(uint16_t type, const SaConfig& sa, uint32_t seq,
                                  absl::Span<uint8_t> buffer) {
  Request request(buffer);
  auto* info = static_cast<xfrm_usersa_info*>(
      request.Start(type, NLM_F_REQUEST | NLM_F_ACK, seq, sizeof(xfrm_usersa_info)));
  if (info == nullptr) return request.Finish();

  int family = FamilyOf(sa.id.destination);
  // Tunnel mode: no selector on the SA (the policies select), and
  // XFRM_STATE_AF_UNSPEC so that it carries either inner family.
  info->flags = XFRM_STATE_AF_UNSPEC;
  info->id.daddr = ToXfrmAddress(sa.id.destination);
  info->id.spi = htonl(sa.id.spi);
  info->id.proto = IPPROTO_ESP;
  info->saddr = ToXfrmAddress(sa.source);
  info->family = static_cast<uint16_t>(family);
  info->mode = XFRM_MODE_TUNNEL;
  info->reqid = sa.reqid;
  // Byte and packet limits of 0 mean none to the caller and "expire now" to
  // the kernel, hence XFRM_INF; time limits of 0 mean none to both (XFRM_INF
  // seconds would overflow the kernel's timer arithmetic into "expired").
  info->lft.soft_byte_limit = LimitToKernel(sa.soft.bytes);
  info->lft.hard_byte_limit = LimitToKernel(sa.hard.bytes);
  info->lft.soft_packet_limit = LimitToKernel(sa.soft.packets);
  info->lft.hard_packet_limit = LimitToKernel(sa.hard.packets);
  info->lft.soft_add_expires_seconds = sa.soft.add_seconds;
  info->lft.hard_add_expires_seconds = sa.hard.add_seconds;

  if (sa.esn || sa.replay_window > kLegacyReplayWindowMax) {
    // The kernel insists the legacy field is 0 when this attribute is there.
    uint32_t words = (sa.replay_window + 31) / 32;
    auto* replay = static_cast<xfrm_replay_state_esn*>(request.Append(
        XFRMA_REPLAY_ESN_VAL, sizeof(xfrm_replay_state_esn) + words * sizeof(uint32_t)));
    if (replay != nullptr) {
      replay->bmp_len = words;
      replay->replay_window = sa.replay_window;
    }
    if (sa.esn) info->flags |= XFRM_STATE_ESN;
  } else {
    info->replay_window = static_cast<uint8_t>(sa.replay_window);
  }

  if (sa.encr_id == kEncrAesGcm16) {
    auto* aead =
        AppendAlgorithm<xfrm_algo_aead>(request, XFRMA_ALG_AEAD, kAeadGcm, sa.encr_key.view());
    if (aead != nullptr) aead->alg_icv_len = kGcmIcvBits;
  } else {
    const IntegAlgorithm* integ = FindInteg(sa.integ_id);
    AppendAlgorithm<xfrm_algo>(request, XFRMA_ALG_CRYPT, kCryptCbc, sa.encr_key.view());
    auto* auth = AppendAlgorithm<xfrm_algo_auth>(request, XFRMA_ALG_AUTH_TRUNC, integ->name,
                                                 sa.integ_key.view());
    if (auth != nullptr) auth->alg_trunc_len = static_cast<unsigned int>(integ->truncation_bits);
  }

  if (sa.encapsulation) {
    if (auto* encap = request.Append<xfrm_encap_tmpl>(XFRMA_ENCAP)) {
      encap->encap_type = UDP_ENCAP_ESPINUDP;
      encap->encap_sport = htons(sa.encapsulation->source_port);
      encap->encap_dport = htons(sa.encapsulation->destination_port);
    }
  }
  request.AppendMark({sa.mark, sa.mark_mask});
  if (sa.if_id != 0) request.AppendU32(XFRMA_IF_ID, sa.if_id);
  return request.Finish();
}

absl::StatusOr<size_t> BuildSaById(uint16_t type, const SaId& id, Mark mark, uint32_t seq,
                                   absl::Span<uint8_t> buffer) {
  Request request(buffer);
  auto* sa_id = static_cast<xfrm_usersa_id*>(
      request.Start(type, NLM_F_REQUEST | NLM_F_ACK, seq, sizeof(xfrm_usersa_id)));
  if (sa_id == nullptr) return request.Finish();
  sa_id->daddr = ToXfrmAddress(id.destination);
  sa_id->spi = htonl(id.spi);
  sa_id->family = static_cast<uint16_t>(FamilyOf(id.destination));
  sa_id->proto = IPPROTO_ESP;
  request.AppendMark(mark);
  return request.Finish();
}

absl::StatusOr<size_t> BuildAddPolicy(const PolicyConfig& p, uint32_t seq,
                                      absl::Span<uint8_t> buffer) {
  Request request(buffer);
  auto* info = static_cast<xfrm_userpolicy_info*>(request.Start(
      XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, sizeof(xfrm_userpolicy_info)));
  if (info == nullptr) return request.Finish();
  info->sel = ToXfrmSelector(p.selector);
  // Policies never expire; the kernel reads byte/packet limits of 0 as
  // reached.
  info->lft.soft_byte_limit = XFRM_INF;
  info->lft.hard_byte_limit = XFRM_INF;
  info->lft.soft_packet_limit = XFRM_INF;
  info->lft.hard_packet_limit = XFRM_INF;
  info->priority = p.priority != 0 ? p.priority : DefaultPriority(p.selector);
  info->dir = ToXfrmDirection(p.direction);
  info->action = XFRM_POLICY_ALLOW;
  info->share = XFRM_SHARE_ANY;

  if (auto* tmpl = request.Append<xfrm_user_tmpl>(XFRMA_TMPL)) {
    tmpl->id.daddr = ToXfrmAddress(p.tunnel_destination);
    tmpl->id.proto = IPPROTO_ESP;
    tmpl->family = static_cast<uint16_t>(FamilyOf(p.tunnel_destination));
    tmpl->saddr = ToXfrmAddress(p.tunnel_source);
    tmpl->reqid = p.reqid;
    tmpl->mode = XFRM_MODE_TUNNEL;
    tmpl->share = XFRM_SHARE_ANY;
    // Any algorithm: the SA with this reqid decides.
    tmpl->aalgos = ~0u;
    tmpl->ealgos = ~0u;
    tmpl->calgos = ~0u;
  }
  request.AppendMark({p.mark, p.mark_mask});
  if (p.if_id != 0) request.AppendU32(XFRMA_IF_ID, p.if_id);
  return request.Finish();
}

absl::StatusOr<size_t> BuildDeletePolicy(const Selector& selector, Direction direction, Mark mark,
                                         uint32_t if_id, uint32_t seq, absl::Span<uint8_t> buffer) {
  Request request(buffer);
  auto* id = static_cast<xfrm_userpolicy_id*>(request.Start(
      XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, sizeof(xfrm_userpolicy_id)));
  if (id == nullptr) return request.Finish();
  id->sel = ToXfrmSelector(selector);
  id->dir = ToXfrmDirection(direction);
  request.AppendMark(mark);
  if (if_id != 0) request.AppendU32(XFRMA_IF_ID, if_id);
  return request.Finish();
}

absl::StatusOr<size_t> BuildDump(uint16_t type, uint32_t seq, absl::Span<uint8_t> buffer) {
  // No fixed part: the kernel's dumps take none (and would read one as
  // attributes).
  Request request(buffer);
  request.Start(type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0);
  return request.Finish();
}

absl::StatusOr<SaConfig> ParseSa(const nlmsghdr& message) {
  Attributes attrs;
  ASSIGN_OR_RETURN(const xfrm_usersa_info* info, ParseFixed<xfrm_usersa_info>(message, attrs));
  SaConfig sa;
  ASSIGN_OR_RETURN(sa.id.destination, FromXfrmAddress(info->id.daddr, info->family));
  ASSIGN_OR_RETURN(sa.source, FromXfrmAddress(info->saddr, info->family));
  sa.id.spi = ntohl(info->id.spi);
  sa.reqid = info->reqid;

  if (const auto* aead = AttributeAs<xfrm_algo_aead>(attrs[XFRMA_ALG_AEAD])) {
    if (AlgorithmName(*aead) == kAeadGcm && aead->alg_icv_len == kGcmIcvBits) {
      sa.encr_id = kEncrAesGcm16;
      sa.key_bits = static_cast<int>(aead->alg_key_len) - kGcmSaltBits;
    }
  }
  if (const auto* crypt = AttributeAs<xfrm_algo>(attrs[XFRMA_ALG_CRYPT])) {
    if (AlgorithmName(*crypt) == kCryptCbc) {
      sa.encr_id = kEncrAesCbc;
      sa.key_bits = static_cast<int>(crypt->alg_key_len);
    }
  }
  if (const auto* auth = AttributeAs<xfrm_algo_auth>(attrs[XFRMA_ALG_AUTH_TRUNC])) {
    const IntegAlgorithm* integ = FindIntegByName(AlgorithmName(*auth).c_str());
    if (integ != nullptr && auth->alg_trunc_len == static_cast<unsigned>(integ->truncation_bits)) {
      sa.integ_id = integ->id;
    }
  }

  if (const auto* replay = AttributeAs<xfrm_replay_state_esn>(attrs[XFRMA_REPLAY_ESN_VAL])) {
    sa.replay_window = replay->replay_window;
  } else {
    sa.replay_window = info->replay_window;
  }
  sa.esn = (info->flags & XFRM_STATE_ESN) != 0;
  if (const auto* encap = AttributeAs<xfrm_encap_tmpl>(attrs[XFRMA_ENCAP])) {
    sa.encapsulation = UdpEncapsulation{ntohs(encap->encap_sport), ntohs(encap->encap_dport)};
  }
  sa.soft = {LimitFromKernel(info->lft.soft_byte_limit),
             LimitFromKernel(info->lft.soft_packet_limit), info->lft.soft_add_expires_seconds};
  sa.hard = {LimitFromKernel(info->lft.hard_byte_limit),
             LimitFromKernel(info->lft.hard_packet_limit), info->lft.hard_add_expires_seconds};
  Mark mark = ParseMark(attrs);
  sa.mark = mark.value;
  sa.mark_mask = mark.mask;
  sa.if_id = ParseIfId(attrs);
  return sa;
}

absl::StatusOr<SaCounters> ParseSaCounters(const nlmsghdr& message) {
  Attributes attrs;
  ASSIGN_OR_RETURN(const xfrm_usersa_info* info, ParseFixed<xfrm_usersa_info>(message, attrs));
  SaCounters counters;
  counters.bytes = info->curlft.bytes;
  counters.packets = info->curlft.packets;
  // `replay` counts replayed packets, `replay_window` those left of the
  // window.
  counters.replay_failures = static_cast<uint64_t>(info->stats.replay) + info->stats.replay_window;
  counters.integrity_failures = info->stats.integrity_failed;
  return counters;
}

absl::StatusOr<PolicyConfig> ParsePolicy(const nlmsghdr& message) {
  Attributes attrs;
  ASSIGN_OR_RETURN(const xfrm_userpolicy_info* info,
                   ParseFixed<xfrm_userpolicy_info>(message, attrs));
  PolicyConfig p;
  ASSIGN_OR_RETURN(p.selector, FromXfrmSelector(info->sel));
  ASSIGN_OR_RETURN(p.direction, FromXfrmDirection(info->dir));
  p.priority = info->priority;
  if (const auto* tmpl = AttributeAs<xfrm_user_tmpl>(attrs[XFRMA_TMPL])) {
    ASSIGN_OR_RETURN(p.tunnel_source, FromXfrmAddress(tmpl->saddr, tmpl->family));
    ASSIGN_OR_RETURN(p.tunnel_destination, FromXfrmAddress(tmpl->id.daddr, tmpl->family));
    p.reqid = tmpl->reqid;
  }
  Mark mark = ParseMark(attrs);
  p.mark = mark.value;
  p.mark_mask = mark.mask;
  p.if_id = ParseIfId(attrs);
  return p;
}

absl::StatusOr<std::optional<DataplaneEvent>> ParseEvent(const nlmsghdr& message) {
  Attributes attrs;
  DataplaneEvent event;
  switch (message.nlmsg_type) {
    case XFRM_MSG_EXPIRE: {
      ASSIGN_OR_RETURN(const xfrm_user_expire* expire,
                       ParseFixed<xfrm_user_expire>(message, attrs));
      event.kind =
          expire->hard ? DataplaneEvent::Kind::kHardExpire : DataplaneEvent::Kind::kSoftExpire;
      ASSIGN_OR_RETURN(event.sa.destination,
                       FromXfrmAddress(expire->state.id.daddr, expire->state.family));
      event.sa.spi = ntohl(expire->state.id.spi);
      event.reqid = expire->state.reqid;
      return event;
    }
    case XFRM_MSG_ACQUIRE: {
      ASSIGN_OR_RETURN(const xfrm_user_acquire* acquire,
                       ParseFixed<xfrm_user_acquire>(message, attrs));
      event.kind = DataplaneEvent::Kind::kAcquire;
      ASSIGN_OR_RETURN(event.selector, FromXfrmSelector(acquire->sel));
      // The reqid is the policy template's, the first being the one that
      // found no SA for a single-template policy.
      if (const auto* tmpl = AttributeAs<xfrm_user_tmpl>(attrs[XFRMA_TMPL])) {
        event.reqid = tmpl->reqid;
      }
      return event;
    }
    default:
      return std::nullopt;
  }
}

absl::Status KernelError(int error, absl::string_view operation, absl::string_view kernel_reason) {
  std::string message = absl::StrCat(operation, ": ", strerror(error));
  if (!kernel_reason.empty()) absl::StrAppend(&message, " (kernel: ", kernel_reason, ")");
  switch (error) {
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ESRCH:
    case ENOENT:
      return absl::NotFoundError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EPROTONOSUPPORT:
    case ENOSYS:
    case EAFNOSUPPORT:
      return absl::UnimplementedError(absl::StrCat(
          message,
          "; this kernel lacks ESP (CONFIG_INET_ESP / CONFIG_INET6_ESP, modules esp4/esp6), "
          "the algorithm (crypto modules) or the address family: use the userspace dataplane "
          "or a kernel with ESP"));
    default:
      return absl::InternalError(message);
  }
}

std::string AddressToString(const Address& address) {
  char text[INET6_ADDRSTRLEN] = {};
  int family = address.size() == 4 ? AF_INET : address.size() == 16 ? AF_INET6 : 0;
  if (family == 0 || inet_ntop(family, address.data(), text, sizeof(text)) == nullptr) {
    return absl::StrCat("<", address.size(), "-byte address>");
  }
  return text;
}

std::string SelectorToString(const Selector& s) {
  std::string text =
      absl::StrCat(AddressToString(s.source), "/", static_cast<int>(s.source_prefix), " -> ",
                   AddressToString(s.destination), "/", static_cast<int>(s.destination_prefix));
  if (s.ip_protocol != 0) absl::StrAppend(&text, " proto ", static_cast<int>(s.ip_protocol));
  if (s.source_port != 0) absl::StrAppend(&text, " sport ", s.source_port);
  if (s.destination_port != 0) absl::StrAppend(&text, " dport ", s.destination_port);
  return text;
}

std::string SaIdToString(const SaId& id) {
  return absl::StrFormat("spi 0x%08x dst %s", id.spi, AddressToString(id.destination));
}

}  // namespace strait::dataplane::xfrm
