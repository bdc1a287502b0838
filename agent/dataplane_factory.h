#ifndef STRAIT_AGENT_DATAPLANE_FACTORY_H_
#define STRAIT_AGENT_DATAPLANE_FACTORY_H_

// The agent's choice of dataplane (--dataplane=auto|xfrm|userspace|memory)
// and its construction:
//   xfrm       the kernel's XFRM over netlink (ESP in the kernel);
//   userspace  Strait's own ESP over a TUN device, ESP in UDP on the IKE
//              runner's NAT-T sockets (for kernels without ESP);
//   memory     nothing is programmed (tests, or IKE without traffic);
//   auto       xfrm when the kernel accepts an ESP SA, else userspace.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "dataplane/dataplane.h"
#include "dataplane/packet_io.h"

namespace strait::agent {

enum class DataplaneKind { kAuto, kXfrm, kUserspace, kMemory };

// "auto", "xfrm", "userspace", "memory". InvalidArgument otherwise.
absl::StatusOr<DataplaneKind> ParseDataplaneKind(const std::string& text);
const char* DataplaneKindName(DataplaneKind kind);

// Whether the kernel installs ESP SAs: adds one SA (a Strait reqid, to
// 127.0.0.1, a random SPI) through `xfrm` and deletes it again.
bool KernelHasEsp(dataplane::Dataplane& xfrm);

// Where the userspace dataplane sends ESP in UDP: set once the IKE runner,
// which owns the NAT-T sockets, exists. Until then sending fails.
class EspSocketBridge : public dataplane::DatagramSocket {
 public:
  using SendFunction = std::function<absl::Status(absl::Span<const uint8_t> payload,
                                                  const dataplane::UdpEndpoint& local,
                                                  const dataplane::UdpEndpoint& remote)>;
  // Call once, before traffic.
  void Connect(SendFunction send);
  // After it, Send() fails; waits for a Send() in progress. Call before
  // what `send` uses goes away.
  void Disconnect();

  // DatagramSocket
  absl::Status Send(absl::Span<const uint8_t> payload, const dataplane::UdpEndpoint& local,
                    const dataplane::UdpEndpoint& remote) override;

 private:
  absl::Mutex mu_;
  SendFunction send_ ABSL_GUARDED_BY(mu_);
};

struct DataplaneSetup {
  DataplaneKind kind = DataplaneKind::kMemory;  // What was chosen (never kAuto).
  std::unique_ptr<dataplane::Dataplane> dataplane;
  // Userspace only: hand received ESP in UDP to it.
  std::function<void(absl::Span<const uint8_t> payload, const dataplane::UdpEndpoint& from,
                     const dataplane::Address& local)>
      esp_input;
  std::string detail;  // For the log: why auto chose, the TUN device's name.
};

// Builds the dataplane. For xfrm, removes what an earlier run of the agent
// left in the kernel (Strait-tagged state only). For userspace, creates the
// TUN device `tun_name` (may hold %d) and starts the backend's threads;
// `bridge` carries its ESP out. Errors say what failed (no CAP_NET_ADMIN, no
// /dev/net/tun, netlink refused).
absl::StatusOr<DataplaneSetup> CreateDataplane(DataplaneKind kind, const std::string& tun_name,
                                               EspSocketBridge& bridge);

}  // namespace strait::agent

#endif  // STRAIT_AGENT_DATAPLANE_FACTORY_H_
