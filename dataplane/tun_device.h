#ifndef STRAIT_DATAPLANE_TUN_DEVICE_H_
#define STRAIT_DATAPLANE_TUN_DEVICE_H_

// The userspace ESP backend's device: a layer-3 TUN interface (IFF_TUN |
// IFF_NO_PI, so reads and writes are bare IPv4/IPv6 packets), brought up
// with an MTU that leaves room for ESP-in-UDP, and routes for the remote
// selectors. Link and route changes go over rtnetlink with libmnl; the
// interface, its state and its routes belong to the network namespace of
// the thread that calls Create(). Closing the device removes the
// interface and with it every route through it.
//
// MTU: the default (InnerMtuForPath(1500, /*ipv6_outer=*/true) = 1390)
// fits the worst supported algorithm over an IPv6 path of 1500 bytes, so a
// full-size TCP segment (MSS = MTU - 40 or 60, which the host derives from
// the route's device) is never fragmented outside. For an IPv4-only path,
// 1406 is enough; smaller paths need a smaller MTU.
//
// Routing caveat (as with strongSwan's kernel-libipsec): a remote selector
// that covers the peer's own outer address would route the ESP-in-UDP
// packets into the device as well; such setups need a more specific route
// to the peer outside the device.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/packet_io.h"

namespace strait::dataplane {
namespace tun_internal {
class Rtnetlink;
}  // namespace tun_internal

// Routes made by the backend carry this rtnetlink protocol number, so
// that `ip route show proto 211` lists them.
inline constexpr uint8_t kStraitRouteProtocol = 211;

struct TunOptions {
  // Interface name (at most 15 bytes); may hold "%d". Empty: "strait%d".
  std::string name;
  int mtu = 1390;
  // Routing table for the routes (RT_TABLE_MAIN = 254).
  uint32_t route_table = 254;
};

class TunDevice : public PacketDevice, public RouteTable {
 public:
  // Creates, configures (MTU, up) and opens the interface. Errors carry
  // errno: PermissionDenied without CAP_NET_ADMIN, FailedPrecondition
  // without /dev/net/tun.
  static absl::StatusOr<std::unique_ptr<TunDevice>> Create(const TunOptions& options = {});
  ~TunDevice() override;
  TunDevice(const TunDevice&) = delete;
  TunDevice& operator=(const TunDevice&) = delete;

  const std::string& name() const { return name_; }
  int index() const { return index_; }
  int mtu() const { return mtu_; }

  // PacketDevice
  absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer, absl::Duration timeout) override;
  absl::Status Write(absl::Span<const uint8_t> packet) override;

  // RouteTable
  absl::Status AddRoute(const Selector& selector) override;
  absl::Status DeleteRoute(const Selector& selector) override;

  // An address of the device's network namespace inside `prefix`/`length`
  // (RTM_GETADDR dump); NotFound when there is none.
  absl::StatusOr<Address> FindLocalAddress(const Address& prefix, uint8_t length);

 private:
  TunDevice(int fd, std::string name, int index, int mtu, uint32_t table,
            std::unique_ptr<tun_internal::Rtnetlink> netlink);

  const int fd_;
  const std::string name_;
  const int index_;
  const int mtu_;
  const uint32_t table_;
  absl::Mutex netlink_mu_;
  // Opened in the namespace of Create(), whichever thread calls later.
  const std::unique_ptr<tun_internal::Rtnetlink> netlink_ ABSL_PT_GUARDED_BY(netlink_mu_);
};
using TunDevicePtr = std::unique_ptr<TunDevice>;

// Routes for the kernel XFRM dataplane: the kernel routes a packet before
// XFRM sees it, so the remote selectors need a route, along the path to
// the tunnel's peer (its gateway and device), with a preferred source
// inside the local selector. Routes carry protocol kStraitRouteProtocol.
// Thread-safe.
class PeerRouteTable {
 public:
  static absl::StatusOr<std::unique_ptr<PeerRouteTable>> Create();
  ~PeerRouteTable();
  PeerRouteTable(const PeerRouteTable&) = delete;
  PeerRouteTable& operator=(const PeerRouteTable&) = delete;

  // Routes selector.destination/prefix the way `peer` is routed (replacing
  // a route to the same prefix).
  absl::Status AddRoute(const Selector& selector, const Address& peer);
  absl::Status DeleteRoute(const Selector& selector);
  // Removes every route of protocol kStraitRouteProtocol in the main table
  // (IPv4 and IPv6), e.g. what an agent that was killed left: without its
  // policies, such a route would send a remote selector's traffic to the
  // peer unprotected. Returns how many were removed.
  absl::StatusOr<int> RemoveAll();

 private:
  PeerRouteTable();
  absl::Mutex mu_;
  std::unique_ptr<tun_internal::Rtnetlink> netlink_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_TUN_DEVICE_H_
