#include "agent/child_sa_install.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/numeric/int128.h"
#include "absl/strings/str_cat.h"

namespace strait::agent {
namespace {

using dataplane::Address;
using dataplane::Direction;
using dataplane::PolicyConfig;
using dataplane::SaConfig;
using dataplane::Selector;

absl::uint128 ToNumber(const Address& a) {
  absl::uint128 n = 0;
  for (uint8_t b : a) n = (n << 8) | b;
  return n;
}

Address FromNumber(absl::uint128 n, size_t size) {
  Address a(size);
  for (size_t i = size; i > 0; --i) {
    a[i - 1] = static_cast<uint8_t>(absl::Uint128Low64(n) & 0xff);
    n >>= 8;
  }
  return a;
}

// The low `bits` bits set; all of them for 128.
absl::uint128 LowMask(int bits) {
  return bits >= 128 ? absl::Uint128Max() : (absl::uint128(1) << bits) - 1;
}

// One port for the dataplane's selectors: 0 is any. Empty for a range that
// they cannot express.
std::optional<uint16_t> SinglePort(const ike::TrafficSelectorRange& r) {
  if (r.start_port == 0 && r.end_port == 0xffff) return 0;
  if (r.start_port == r.end_port && r.start_port != 0) return r.start_port;
  return std::nullopt;
}

struct SelectorSide {
  std::vector<std::pair<Address, uint8_t>> prefixes;
  uint8_t ip_protocol = 0;
  uint16_t port = 0;
};

absl::StatusOr<SelectorSide> Side(const ike::TrafficSelectorRange& r, const char* which) {
  SelectorSide side;
  side.prefixes = RangeToPrefixes(r.start_address, r.end_address);
  if (side.prefixes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(which, " traffic selector: bad address range"));
  }
  std::optional<uint16_t> port = SinglePort(r);
  if (!port.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(which, " traffic selector: port range ",
                                                   r.start_port, "-", r.end_port,
                                                   " is neither one port nor all ports"));
  }
  side.ip_protocol = r.ip_protocol;
  side.port = *port;
  return side;
}

SaConfig BaseSa(const ike::ChildSa& sa, const ChildSaParams& params) {
  SaConfig c;
  c.reqid = params.reqid;
  c.encr_id = sa.algorithms.encr_id;
  c.key_bits = sa.algorithms.key_bits;
  c.integ_id = sa.algorithms.integ_id;
  c.replay_window = params.replay_window;
  c.soft = params.soft;
  c.hard = params.hard;
  return c;
}

bool SamePolicyKey(const PolicyConfig& a, const PolicyConfig& b) {
  return a.selector == b.selector && a.direction == b.direction && a.mark == b.mark &&
         a.mark_mask == b.mark_mask;
}

}  // namespace

std::vector<std::pair<Address, uint8_t>> RangeToPrefixes(const Address& start, const Address& end) {
  std::vector<std::pair<Address, uint8_t>> out;
  if (start.size() != end.size() || (start.size() != 4 && start.size() != 16)) return out;
  const int bits = static_cast<int>(start.size() * 8);
  absl::uint128 s = ToNumber(start);
  const absl::uint128 e = ToNumber(end);
  if (s > e) return out;
  while (true) {
    // The largest aligned block at `s` that ends at or before `e`.
    int k = 0;
    while (k < bits && (s & LowMask(k + 1)) == 0 && e - s >= LowMask(k + 1)) ++k;
    out.emplace_back(FromNumber(s, start.size()), static_cast<uint8_t>(bits - k));
    const absl::uint128 last = s + LowMask(k);
    if (last >= e) break;
    s = last + 1;
  }
  return out;
}

absl::StatusOr<ChildSaState> MapChildSa(const ike::ChildSa& sa, const ChildSaParams& params) {
  const Address& local = params.local_address;
  const Address& remote = params.remote_address;
  if ((local.size() != 4 && local.size() != 16) || local.size() != remote.size()) {
    return absl::InvalidArgumentError("outer addresses must be IPv4 or IPv6, of one family");
  }
  ChildSaState state;
  state.inbound = BaseSa(sa, params);
  state.inbound.id = dataplane::SaId{local, sa.inbound_spi};
  state.inbound.source = remote;
  state.inbound.encr_key = sa.inbound_encr_key;
  state.inbound.integ_key = sa.inbound_integ_key;
  state.outbound = BaseSa(sa, params);
  state.outbound.id = dataplane::SaId{remote, sa.outbound_spi};
  state.outbound.source = local;
  state.outbound.encr_key = sa.outbound_encr_key;
  state.outbound.integ_key = sa.outbound_integ_key;
  if (sa.udp_encapsulation) {
    // ESP in UDP (RFC 3948); ports as seen from each SA's source.
    state.inbound.encapsulation = dataplane::UdpEncapsulation{sa.remote_port, sa.local_port};
    state.outbound.encapsulation = dataplane::UdpEncapsulation{sa.local_port, sa.remote_port};
  }
  if (sa.udp_encapsulation) {
    // ESP in UDP (RFC 3948); ports as seen from each SA's source.
    state.inbound.encapsulation = dataplane::UdpEncapsulation{sa.remote_port, sa.local_port};
    state.outbound.encapsulation = dataplane::UdpEncapsulation{sa.local_port, sa.remote_port};
  }

  std::vector<SelectorSide> locals;
  std::vector<SelectorSide> remotes;
  for (const ike::TrafficSelectorRange& r : sa.local_ts) {
    absl::StatusOr<SelectorSide> side = Side(r, "local");
    if (!side.ok()) return side.status();
    locals.push_back(*std::move(side));
  }
  for (const ike::TrafficSelectorRange& r : sa.remote_ts) {
    absl::StatusOr<SelectorSide> side = Side(r, "remote");
    if (!side.ok()) return side.status();
    remotes.push_back(*std::move(side));
  }
  for (const SelectorSide& l : locals) {
    for (const SelectorSide& r : remotes) {
      if (l.prefixes[0].first.size() != r.prefixes[0].first.size()) continue;
      // A policy has one protocol: both sides must allow it.
      if (l.ip_protocol != 0 && r.ip_protocol != 0 && l.ip_protocol != r.ip_protocol) continue;
      const uint8_t protocol = l.ip_protocol != 0 ? l.ip_protocol : r.ip_protocol;
      for (const auto& [l_address, l_prefix] : l.prefixes) {
        for (const auto& [r_address, r_prefix] : r.prefixes) {
          if (state.policies.size() + 3 > kMaxChildSaPolicies) {
            return absl::InvalidArgumentError(absl::StrCat("the traffic selectors need more than ",
                                                           kMaxChildSaPolicies, " policies"));
          }
          PolicyConfig out;
          out.selector =
              Selector{l_address, l_prefix, r_address, r_prefix, protocol, l.port, r.port};
          out.direction = Direction::kOut;
          out.tunnel_source = local;
          out.tunnel_destination = remote;
          out.reqid = params.reqid;
          PolicyConfig in;
          in.selector =
              Selector{r_address, r_prefix, l_address, l_prefix, protocol, r.port, l.port};
          in.direction = Direction::kIn;
          in.tunnel_source = remote;
          in.tunnel_destination = local;
          in.reqid = params.reqid;
          PolicyConfig fwd = in;
          fwd.direction = Direction::kFwd;
          state.policies.push_back(std::move(out));
          state.policies.push_back(std::move(in));
          state.policies.push_back(std::move(fwd));
        }
      }
    }
  }
  if (state.policies.empty()) {
    return absl::InvalidArgumentError(
        "no local and remote traffic selectors of one address family and protocol");
  }
  return state;
}

absl::StatusOr<InstalledChildSa> InstallChildSa(dataplane::Dataplane& dataplane,
                                                const ChildSaState& state, bool with_outbound) {
  if (absl::Status s = dataplane.AddSa(state.inbound); !s.ok()) return s;
  if (with_outbound) {
    if (absl::Status s = dataplane.AddSa(state.outbound); !s.ok()) {
      dataplane.DeleteSa(state.inbound.id).IgnoreError();
      return s;
    }
  }
  if (absl::Status s = dataplane.AddPolicies(state.policies); !s.ok()) {
    if (with_outbound) dataplane.DeleteSa(state.outbound.id).IgnoreError();
    dataplane.DeleteSa(state.inbound.id).IgnoreError();
    return s;
  }
  return InstalledChildSa{state.inbound.id, state.outbound.id, state.policies, with_outbound};
}

absl::Status InstallChildSaOutbound(dataplane::Dataplane& dataplane, const ChildSaState& state,
                                    InstalledChildSa& installed) {
  if (installed.outbound_installed) return absl::OkStatus();
  if (absl::Status s = dataplane.AddSa(state.outbound); !s.ok()) return s;
  installed.outbound = state.outbound.id;
  installed.outbound_installed = true;
  return absl::OkStatus();
}

absl::Status RemoveChildSa(dataplane::Dataplane& dataplane, const InstalledChildSa& installed,
                           const std::vector<dataplane::PolicyConfig>& keep) {
  absl::Status first;
  auto note = [&first](absl::Status s) {
    if (!s.ok() && !absl::IsNotFound(s) && first.ok()) first = std::move(s);
  };
  for (const PolicyConfig& p : installed.policies) {
    bool kept = false;
    for (const PolicyConfig& k : keep) kept = kept || SamePolicyKey(p, k);
    if (kept) continue;
    note(dataplane.DeletePolicy(p.selector, p.direction, p.mark, p.mark_mask, p.if_id));
  }
  if (installed.outbound_installed) note(dataplane.DeleteSa(installed.outbound));
  note(dataplane.DeleteSa(installed.inbound));
  return first;
}

}  // namespace strait::agent
