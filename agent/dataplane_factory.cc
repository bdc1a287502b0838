#include "agent/dataplane_factory.h"

#include <openssl/rand.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "dataplane/fake_dataplane.h"
#include "dataplane/reconcile.h"
#include "dataplane/tun_device.h"
#include "dataplane/userspace_dataplane.h"
#include "dataplane/xfrm_dataplane.h"

namespace strait::agent {

absl::StatusOr<DataplaneKind> ParseDataplaneKind(const std::string& text) {
  if (text == "auto") return DataplaneKind::kAuto;
  if (text == "xfrm") return DataplaneKind::kXfrm;
  if (text == "userspace") return DataplaneKind::kUserspace;
  if (text == "memory") return DataplaneKind::kMemory;
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\" is not auto, xfrm, userspace or memory"));
}

const char* DataplaneKindName(DataplaneKind kind) {
  switch (kind) {
    case DataplaneKind::kAuto:
      return "auto";
    case DataplaneKind::kXfrm:
      return "xfrm";
    case DataplaneKind::kUserspace:
      return "userspace";
    case DataplaneKind::kMemory:
      return "memory";
  }
  return "unknown";
}

bool KernelHasEsp(dataplane::Dataplane& xfrm) {
  dataplane::SaConfig sa;
  sa.id.destination = {127, 0, 0, 1};
  sa.source = {127, 0, 0, 1};
  uint8_t spi[4];
  if (RAND_bytes(spi, sizeof(spi)) != 1) return false;
  // High bit set: out of the way of SPIs peers pick from the low range.
  sa.id.spi = 0x80000000u | static_cast<uint32_t>(spi[0]) << 16 | spi[1] << 8 | spi[2];
  sa.reqid = dataplane::kReqidLast;
  sa.encr_id = 20;  // AES-GCM-16, the cipher tunnels use most.
  sa.key_bits = 128;
  sa.encr_key = Secret(std::string(20, '\x5a'));
  const absl::Status added = xfrm.AddSa(sa);
  if (added.ok()) {
    (void)xfrm.DeleteSa(sa.id);
    return true;
  }
  LOG_INFO("the kernel refuses ESP SAs").With("error", added.ToString());
  return false;
}

void EspSocketBridge::Connect(SendFunction send) {
  absl::MutexLock lock(&mu_);
  send_ = std::move(send);
}

void EspSocketBridge::Disconnect() {
  absl::MutexLock lock(&mu_);
  send_ = nullptr;
}

absl::Status EspSocketBridge::Send(absl::Span<const uint8_t> payload,
                                   const dataplane::UdpEndpoint& local,
                                   const dataplane::UdpEndpoint& remote) {
  absl::MutexLock lock(&mu_);
  if (!send_) return absl::UnavailableError("the IKE runner's sockets are not up");
  return send_(payload, local, remote);
}

absl::StatusOr<DataplaneSetup> CreateDataplane(DataplaneKind kind, const std::string& tun_name,
                                               EspSocketBridge& bridge) {
  DataplaneSetup setup;
  if (kind == DataplaneKind::kMemory) {
    setup.kind = kind;
    setup.dataplane = std::make_unique<dataplane::FakeDataplane>();
    setup.detail = "nothing is programmed: no traffic is protected";
    return setup;
  }
  if (kind == DataplaneKind::kAuto || kind == DataplaneKind::kXfrm) {
    absl::StatusOr<std::unique_ptr<dataplane::XfrmDataplane>> xfrm =
        dataplane::XfrmDataplane::Create();
    if (!xfrm.ok() && kind == DataplaneKind::kXfrm) {
      return absl::Status(xfrm.status().code(),
                          absl::StrCat("xfrm dataplane: ", xfrm.status().message()));
    }
    const bool esp = xfrm.ok() && KernelHasEsp(**xfrm);
    if (kind == DataplaneKind::kXfrm || esp) {
      if (!esp) {
        LOG_WARNING("--dataplane=xfrm on a kernel without ESP: CHILD SAs will fail to install");
      }
      // What an earlier run left: its SAs are useless without their IKE
      // SAs, which are gone. State of other daemons is never touched.
      absl::StatusOr<dataplane::ReconcileResult> cleaned =
          dataplane::Reconcile(**xfrm, dataplane::InstalledState{});
      if (!cleaned.ok()) {
        LOG_WARNING("cannot clean up earlier XFRM state")
            .With("error", cleaned.status().ToString());
      }
      setup.kind = DataplaneKind::kXfrm;
      setup.dataplane = *std::move(xfrm);
      setup.detail = kind == DataplaneKind::kAuto ? "auto: the kernel has ESP" : "";
      return setup;
    }
    setup.detail = xfrm.ok()
                       ? "auto: the kernel has no ESP"
                       : absl::StrCat("auto: no XFRM netlink (", xfrm.status().message(), ")");
  }
  dataplane::TunOptions tun_options;
  tun_options.name = tun_name;
  absl::StatusOr<std::unique_ptr<dataplane::TunDevice>> tun =
      dataplane::TunDevice::Create(tun_options);
  if (!tun.ok()) {
    return absl::Status(tun.status().code(),
                        absl::StrCat("userspace dataplane: TUN device: ", tun.status().message()));
  }
  dataplane::TunDevice* device = tun->get();
  const std::string device_name = device->name();
  dataplane::UserspaceDataplaneOptions options;
  options.routes = device;
  absl::StatusOr<std::unique_ptr<dataplane::UserspaceDataplane>> userspace =
      dataplane::UserspaceDataplane::Create(*std::move(tun), bridge, options);
  if (!userspace.ok()) {
    return absl::Status(userspace.status().code(),
                        absl::StrCat("userspace dataplane: ", userspace.status().message()));
  }
  (*userspace)->Start();
  dataplane::UserspaceDataplane* raw = userspace->get();
  setup.esp_input = [raw](absl::Span<const uint8_t> payload, const dataplane::UdpEndpoint& from,
                          const dataplane::Address& local) {
    raw->HandleEspDatagram(payload, from, local);
  };
  setup.kind = DataplaneKind::kUserspace;
  setup.dataplane = *std::move(userspace);
  setup.detail =
      absl::StrCat(setup.detail, setup.detail.empty() ? "" : "; ", "TUN device ", device_name);
  return setup;
}

}  // namespace strait::agent
