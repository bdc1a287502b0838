#include "dataplane/tun_device.h"

#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "dataplane/ip_packet.h"

namespace strait::dataplane {
namespace {

absl::Status ErrnoStatus(int err, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOENT:
    case ESRCH:
    case ENODEV:
    case ENETUNREACH:
    case EHOSTUNREACH:
      return absl::NotFoundError(message);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EINVAL:
    case ERANGE:
      return absl::InvalidArgumentError(message);
    case EAGAIN:
    case ENOBUFS:
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

struct MnlSocketDeleter {
  void operator()(mnl_socket* socket) const { mnl_socket_close(socket); }
};
using MnlSocketPtr = std::unique_ptr<mnl_socket, MnlSocketDeleter>;

}  // namespace

namespace tun_internal {

// An rtnetlink socket: requests and dumps, replies checked for sequence
// number and port id by mnl_cb_run. Not thread-safe.
class Rtnetlink {
 public:
  static constexpr int kReplyTimeoutSeconds = 5;

  static absl::StatusOr<std::unique_ptr<Rtnetlink>> Open() {
    MnlSocketPtr socket(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC));
    if (socket == nullptr) return ErrnoStatus(errno, "netlink socket");
    if (mnl_socket_bind(socket.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
      return ErrnoStatus(errno, "netlink bind");
    }
    // The kernel answers at once; a request that gets no end of answer
    // (no ack) must fail, not block its caller (the IKE event loop) for
    // good.
    const timeval timeout{kReplyTimeoutSeconds, 0};
    if (setsockopt(mnl_socket_get_fd(socket.get()), SOL_SOCKET, SO_RCVTIMEO, &timeout,
                   sizeof(timeout)) != 0) {
      return ErrnoStatus(errno, "netlink receive timeout");
    }
    return std::unique_ptr<Rtnetlink>(new Rtnetlink(std::move(socket)));
  }

  // A message header in the send buffer, with `extra` bytes of family
  // header zeroed after it.
  nlmsghdr* Start(uint16_t type, uint16_t flags, size_t extra) {
    std::fill(buffer_.begin(), buffer_.end(), 0);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buffer_.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = ++seq_;
    mnl_nlmsg_put_extra_header(nlh, extra);
    return nlh;
  }
  size_t capacity() const { return buffer_.size(); }

  // Sends `nlh` and runs `on_message` over the replies until the ack (or
  // the end of a dump); a netlink error comes back as its errno.
  absl::Status Run(nlmsghdr* nlh, absl::string_view what,
                   const std::function<void(const nlmsghdr*)>& on_message = nullptr) {
    if (mnl_socket_sendto(socket_.get(), nlh, nlh->nlmsg_len) < 0) {
      return ErrnoStatus(errno, absl::StrCat(what, ": send"));
    }
    const unsigned port = mnl_socket_get_portid(socket_.get());
    std::vector<char> reply(32768);
    while (true) {
      const ssize_t n = mnl_socket_recvfrom(socket_.get(), reply.data(), reply.size());
      if (n < 0) return ErrnoStatus(errno, absl::StrCat(what, ": receive"));
      const int result = mnl_cb_run(
          reply.data(), n, nlh->nlmsg_seq, port,
          [](const nlmsghdr* message, void* data) {
            auto* callback = static_cast<const std::function<void(const nlmsghdr*)>*>(data);
            if (*callback) (*callback)(message);
            return MNL_CB_OK;
          },
          const_cast<std::function<void(const nlmsghdr*)>*>(&on_message));
      if (result == MNL_CB_ERROR) return ErrnoStatus(errno, what);
      if (result == MNL_CB_STOP) return absl::OkStatus();
    }
  }

 private:
  explicit Rtnetlink(MnlSocketPtr socket)
      : socket_(std::move(socket)), buffer_(8192), seq_(static_cast<uint32_t>(time(nullptr))) {}

  MnlSocketPtr socket_;
  std::vector<char> buffer_;
  uint32_t seq_;
};

}  // namespace tun_internal

namespace {

using tun_internal::Rtnetlink;

absl::Status CheckedPut(bool ok) {
  return ok ? absl::OkStatus() : absl::InternalError("netlink message buffer too small");
}

absl::Status SetLinkUp(Rtnetlink& nl, int index, int mtu) {
  nlmsghdr* nlh = nl.Start(RTM_NEWLINK, NLM_F_ACK, sizeof(ifinfomsg));
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  ifi->ifi_change = IFF_UP;
  ifi->ifi_flags = IFF_UP;
  RETURN_IF_ERROR(
      CheckedPut(mnl_attr_put_u32_check(nlh, nl.capacity(), IFLA_MTU, static_cast<uint32_t>(mtu))));
  return nl.Run(nlh, "set link up and MTU");
}

absl::Status ChangeRoute(Rtnetlink& nl, uint16_t type, uint16_t flags, int index, uint32_t table,
                         const Address& destination, uint8_t length, const Address& source) {
  nlmsghdr* nlh = nl.Start(type, NLM_F_ACK | flags, sizeof(rtmsg));
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(nlh));
  rtm->rtm_family = destination.size() == 4 ? AF_INET : AF_INET6;
  rtm->rtm_dst_len = length;
  rtm->rtm_table = table < 256 ? static_cast<uint8_t>(table) : RT_TABLE_UNSPEC;
  rtm->rtm_protocol = kStraitRouteProtocol;
  rtm->rtm_scope = RT_SCOPE_LINK;
  rtm->rtm_type = RTN_UNICAST;
  const size_t cap = nl.capacity();
  if (length > 0) {
    RETURN_IF_ERROR(
        CheckedPut(mnl_attr_put_check(nlh, cap, RTA_DST, destination.size(), destination.data())));
  }
  RETURN_IF_ERROR(
      CheckedPut(mnl_attr_put_u32_check(nlh, cap, RTA_OIF, static_cast<uint32_t>(index))));
  if (table >= 256) RETURN_IF_ERROR(CheckedPut(mnl_attr_put_u32_check(nlh, cap, RTA_TABLE, table)));
  if (!source.empty()) {
    RETURN_IF_ERROR(
        CheckedPut(mnl_attr_put_check(nlh, cap, RTA_PREFSRC, source.size(), source.data())));
  }
  return nl.Run(nlh, type == RTM_NEWROUTE ? "add route" : "delete route");
}

// The network prefix bits of `a`, others cleared (the kernel refuses a
// route whose destination has host bits).
Address Masked(Address a, uint8_t length) {
  for (size_t i = 0; i < a.size(); ++i) {
    const int bits = static_cast<int>(length) - static_cast<int>(i * 8);
    if (bits >= 8) continue;
    a[i] &= bits <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits));
  }
  return a;
}

}  // namespace

namespace {

// An address of this host inside prefix/length (NotFound when none).
absl::StatusOr<Address> FindLocalAddressWith(Rtnetlink& nl, const Address& prefix, uint8_t length) {
  nlmsghdr* nlh = nl.Start(RTM_GETADDR, NLM_F_DUMP, sizeof(ifaddrmsg));
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
  ifa->ifa_family = prefix.size() == 4 ? AF_INET : AF_INET6;
  Selector probe;
  probe.source = prefix;
  probe.source_prefix = length;
  probe.destination = Address(prefix.size(), 0);
  std::optional<Address> found;
  RETURN_IF_ERROR(nl.Run(nlh, "dump addresses", [&](const nlmsghdr* message) {
    if (found.has_value() || message->nlmsg_type != RTM_NEWADDR) return;
    const auto* info = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(message));
    if (info->ifa_family != ifa->ifa_family) return;
    struct Found {
      size_t size;
      Address local;
      Address address;
    } attrs{prefix.size(), {}, {}};
    mnl_attr_parse(
        message, sizeof(ifaddrmsg),
        [](const nlattr* attr, void* data) {
          auto* out = static_cast<Found*>(data);
          const uint16_t type = mnl_attr_get_type(attr);
          if ((type == IFA_LOCAL || type == IFA_ADDRESS) &&
              mnl_attr_get_payload_len(attr) == out->size) {
            const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
            (type == IFA_LOCAL ? out->local : out->address).assign(bytes, bytes + out->size);
          }
          return MNL_CB_OK;
        },
        &attrs);
    const Address& local = attrs.local;
    const Address& address = attrs.address;
    // IFA_LOCAL is the address itself on point-to-point links.
    const Address& candidate = !local.empty() ? local : address;
    if (candidate.empty()) return;
    PacketFlow flow;
    flow.version = prefix.size() == 4 ? 4 : 6;
    std::copy(candidate.begin(), candidate.end(), flow.source.begin());
    if (SelectorMatches(probe, flow)) found = candidate;
  }));
  if (!found.has_value()) return absl::NotFoundError("no local address inside the prefix");
  return *found;
}

}  // namespace

absl::StatusOr<Address> TunDevice::FindLocalAddress(const Address& prefix, uint8_t length) {
  absl::MutexLock lock(&netlink_mu_);
  return FindLocalAddressWith(*netlink_, prefix, length);
}

absl::StatusOr<std::unique_ptr<TunDevice>> TunDevice::Create(const TunOptions& options) {
  const std::string pattern = options.name.empty() ? "strait%d" : options.name;
  if (pattern.size() >= IFNAMSIZ) return absl::InvalidArgumentError("interface name too long");
  if (options.mtu < 576 || options.mtu > 65535) {
    return absl::InvalidArgumentError("MTU outside 576..65535");
  }
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::FailedPreconditionError("no /dev/net/tun");
    return ErrnoStatus(err, "open /dev/net/tun");
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, pattern.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "TUNSETIFF");
  }
  std::string name(ifr.ifr_name);
  // The interface index, through the same ioctl family (this netns).
  const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int index = -1;
  int err = errno;
  if (sock >= 0) {
    ifreq query{};
    std::strncpy(query.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(sock, SIOCGIFINDEX, &query) == 0) index = query.ifr_ifindex;
    err = errno;
    close(sock);
  }
  if (index <= 0) {
    close(fd);
    return ErrnoStatus(err, "interface index");
  }
  absl::StatusOr<std::unique_ptr<Rtnetlink>> netlink = Rtnetlink::Open();
  if (!netlink.ok()) {
    close(fd);
    return netlink.status();
  }
  std::unique_ptr<TunDevice> device(
      new TunDevice(fd, name, index, options.mtu, options.route_table, std::move(*netlink)));
  {
    absl::MutexLock lock(&device->netlink_mu_);
    RETURN_IF_ERROR(SetLinkUp(*device->netlink_, index, options.mtu));
  }
  return device;
}

TunDevice::TunDevice(int fd, std::string name, int index, int mtu, uint32_t table,
                     std::unique_ptr<tun_internal::Rtnetlink> netlink)
    : fd_(fd),
      name_(std::move(name)),
      index_(index),
      mtu_(mtu),
      table_(table),
      netlink_(std::move(netlink)) {}

TunDevice::~TunDevice() { close(fd_); }

absl::StatusOr<size_t> TunDevice::Read(absl::Span<uint8_t> buffer, absl::Duration timeout) {
  pollfd p{fd_, POLLIN, 0};
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  const int ready = poll(&p, 1, ms);
  if (ready < 0) {
    if (errno == EINTR) return 0;
    return ErrnoStatus(errno, "poll TUN");
  }
  if (ready == 0) return 0;
  const ssize_t n = read(fd_, buffer.data(), buffer.size());
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return 0;
    return ErrnoStatus(errno, "read TUN");
  }
  return static_cast<size_t>(n);
}

absl::Status TunDevice::Write(absl::Span<const uint8_t> packet) {
  const ssize_t n = write(fd_, packet.data(), packet.size());
  if (n < 0) return ErrnoStatus(errno, "write TUN");
  if (static_cast<size_t>(n) != packet.size()) return absl::InternalError("short TUN write");
  return absl::OkStatus();
}

absl::Status TunDevice::AddRoute(const Selector& selector) {
  RETURN_IF_ERROR(ValidateSelector(selector));
  // Locally sent packets should leave with a source inside the local
  // selector, or the out policy will not match them.
  Address source;
  if (selector.source_prefix > 0) {
    absl::StatusOr<Address> local = FindLocalAddress(selector.source, selector.source_prefix);
    if (local.ok()) source = *local;
  }
  absl::MutexLock lock(&netlink_mu_);
  return ChangeRoute(*netlink_, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, index_, table_,
                     Masked(selector.destination, selector.destination_prefix),
                     selector.destination_prefix, source);
}

absl::Status TunDevice::DeleteRoute(const Selector& selector) {
  RETURN_IF_ERROR(ValidateSelector(selector));
  absl::MutexLock lock(&netlink_mu_);
  return ChangeRoute(*netlink_, RTM_DELROUTE, 0, index_, table_,
                     Masked(selector.destination, selector.destination_prefix),
                     selector.destination_prefix, {});
}

// --- PeerRouteTable ---

PeerRouteTable::PeerRouteTable() = default;
PeerRouteTable::~PeerRouteTable() = default;

absl::StatusOr<std::unique_ptr<PeerRouteTable>> PeerRouteTable::Create() {
  std::unique_ptr<PeerRouteTable> table(new PeerRouteTable());
  ASSIGN_OR_RETURN(std::unique_ptr<Rtnetlink> nl, Rtnetlink::Open());
  absl::MutexLock lock(&table->mu_);
  table->netlink_ = std::move(nl);
  return table;
}

absl::Status PeerRouteTable::AddRoute(const Selector& selector, const Address& peer) {
  RETURN_IF_ERROR(ValidateSelector(selector));
  if (peer.size() != selector.destination.size()) {
    return absl::InvalidArgumentError("peer and selector differ in family");
  }
  absl::MutexLock lock(&mu_);
  Rtnetlink& nl = *netlink_;
  const int family = peer.size() == 4 ? AF_INET : AF_INET6;
  // How the kernel reaches the peer: its device and gateway. A route
  // lookup (not a dump) is answered with one RTM_NEWROUTE and nothing
  // after it: NLM_F_ACK makes the kernel end the answer with an ack, which
  // Run() waits for.
  nlmsghdr* get = nl.Start(RTM_GETROUTE, NLM_F_ACK, sizeof(rtmsg));
  auto* query = static_cast<rtmsg*>(mnl_nlmsg_get_payload(get));
  query->rtm_family = static_cast<uint8_t>(family);
  query->rtm_dst_len = static_cast<uint8_t>(peer.size() * 8);
  RETURN_IF_ERROR(
      CheckedPut(mnl_attr_put_check(get, nl.capacity(), RTA_DST, peer.size(), peer.data())));
  struct Path {
    size_t size;
    uint32_t oif = 0;
    Address gateway;
  } path{peer.size()};
  RETURN_IF_ERROR(nl.Run(get, "route to the peer", [&path](const nlmsghdr* message) {
    if (message->nlmsg_type != RTM_NEWROUTE) return;
    mnl_attr_parse(
        message, sizeof(rtmsg),
        [](const nlattr* attr, void* data) {
          auto* out = static_cast<Path*>(data);
          const uint16_t type = mnl_attr_get_type(attr);
          if (type == RTA_OIF && mnl_attr_get_payload_len(attr) == 4) {
            out->oif = mnl_attr_get_u32(attr);
          } else if (type == RTA_GATEWAY && mnl_attr_get_payload_len(attr) == out->size) {
            const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
            out->gateway.assign(bytes, bytes + out->size);
          }
          return MNL_CB_OK;
        },
        &path);
  }));
  if (path.oif == 0) return absl::NotFoundError("no route to the tunnel's peer");
  Address source;
  if (selector.source_prefix > 0) {
    absl::StatusOr<Address> local =
        FindLocalAddressWith(nl, selector.source, selector.source_prefix);
    if (local.ok()) source = *local;
  }
  nlmsghdr* nlh = nl.Start(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, sizeof(rtmsg));
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(nlh));
  rtm->rtm_family = static_cast<uint8_t>(family);
  rtm->rtm_dst_len = selector.destination_prefix;
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = kStraitRouteProtocol;
  rtm->rtm_scope = path.gateway.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  rtm->rtm_type = RTN_UNICAST;
  const size_t cap = nl.capacity();
  const Address destination = Masked(selector.destination, selector.destination_prefix);
  if (selector.destination_prefix > 0) {
    RETURN_IF_ERROR(
        CheckedPut(mnl_attr_put_check(nlh, cap, RTA_DST, destination.size(), destination.data())));
  }
  RETURN_IF_ERROR(CheckedPut(mnl_attr_put_u32_check(nlh, cap, RTA_OIF, path.oif)));
  if (!path.gateway.empty()) {
    RETURN_IF_ERROR(CheckedPut(
        mnl_attr_put_check(nlh, cap, RTA_GATEWAY, path.gateway.size(), path.gateway.data())));
  }
  if (!source.empty()) {
    RETURN_IF_ERROR(
        CheckedPut(mnl_attr_put_check(nlh, cap, RTA_PREFSRC, source.size(), source.data())));
  }
  return nl.Run(nlh, "add route to a remote selector");
}

absl::Status PeerRouteTable::DeleteRoute(const Selector& selector) {
  RETURN_IF_ERROR(ValidateSelector(selector));
  absl::MutexLock lock(&mu_);
  Rtnetlink& nl = *netlink_;
  nlmsghdr* nlh = nl.Start(RTM_DELROUTE, NLM_F_ACK, sizeof(rtmsg));
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(nlh));
  rtm->rtm_family = selector.destination.size() == 4 ? AF_INET : AF_INET6;
  rtm->rtm_dst_len = selector.destination_prefix;
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = kStraitRouteProtocol;
  rtm->rtm_scope = RT_SCOPE_NOWHERE;
  const Address destination = Masked(selector.destination, selector.destination_prefix);
  if (selector.destination_prefix > 0) {
    RETURN_IF_ERROR(CheckedPut(
        mnl_attr_put_check(nlh, nl.capacity(), RTA_DST, destination.size(), destination.data())));
  }
  return nl.Run(nlh, "delete route to a remote selector");
}

absl::StatusOr<int> PeerRouteTable::RemoveAll() {
  absl::MutexLock lock(&mu_);
  Rtnetlink& nl = *netlink_;
  struct Route {
    uint8_t family;
    uint8_t dst_len;
    Address destination;
  };
  std::vector<Route> found;
  for (const uint8_t family : {AF_INET, AF_INET6}) {
    nlmsghdr* dump = nl.Start(RTM_GETROUTE, NLM_F_DUMP, sizeof(rtmsg));
    static_cast<rtmsg*>(mnl_nlmsg_get_payload(dump))->rtm_family = family;
    RETURN_IF_ERROR(nl.Run(dump, "dump routes", [&found](const nlmsghdr* message) {
      if (message->nlmsg_type != RTM_NEWROUTE) return;
      const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(message));
      if (rtm->rtm_protocol != kStraitRouteProtocol || rtm->rtm_table != RT_TABLE_MAIN) return;
      Route route{rtm->rtm_family, rtm->rtm_dst_len, {}};
      mnl_attr_parse(
          message, sizeof(rtmsg),
          [](const nlattr* attr, void* data) {
            auto* out = static_cast<Route*>(data);
            const size_t size = out->family == AF_INET ? 4 : 16;
            if (mnl_attr_get_type(attr) == RTA_DST && mnl_attr_get_payload_len(attr) == size) {
              const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
              out->destination.assign(bytes, bytes + size);
            }
            return MNL_CB_OK;
          },
          &route);
      if (route.destination.empty() && route.dst_len != 0) return;
      found.push_back(std::move(route));
    }));
  }
  int removed = 0;
  for (const Route& route : found) {
    nlmsghdr* nlh = nl.Start(RTM_DELROUTE, NLM_F_ACK, sizeof(rtmsg));
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_get_payload(nlh));
    rtm->rtm_family = route.family;
    rtm->rtm_dst_len = route.dst_len;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = kStraitRouteProtocol;
    rtm->rtm_scope = RT_SCOPE_NOWHERE;
    if (!route.destination.empty()) {
      RETURN_IF_ERROR(CheckedPut(mnl_attr_put_check(
          nlh, nl.capacity(), RTA_DST, route.destination.size(), route.destination.data())));
    }
    absl::Status deleted = nl.Run(nlh, "delete a left-over route");
    if (deleted.ok()) {
      ++removed;
    } else if (!absl::IsNotFound(deleted)) {
      return deleted;
    }
  }
  return removed;
}

}  // namespace strait::dataplane
