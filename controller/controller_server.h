#ifndef STRAIT_CONTROLLER_CONTROLLER_SERVER_H_
#define STRAIT_CONTROLLER_CONTROLLER_SERVER_H_

// The controller as a whole, minus flags and signals: SQLite store, Core,
// the admin and agent services, gRPC health checking and reflection on the
// listening addresses. main.cc and the tests start it the same way.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/intent/validation.h"
#include "controller/admin_service.h"
#include "controller/agent_service.h"
#include "controller/core.h"
#include "controller/listen_address.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"

namespace strait::controller {

struct ControllerServerOptions {
  // Plaintext only for now: the caller checks --insecure and loopback.
  std::vector<ListenAddress> listen;
  // Holds the SQLite store; created (0700) when missing.
  std::string data_dir;
  intent::ValidationPolicy policy;
  // Shared by Core and the services; may be null. Must outlive the server.
  prometheus::Registry* registry = nullptr;
};

class ControllerServer {
 public:
  // Opens the store, loads Core, binds every address (making a Unix
  // socket's directory when missing) and starts serving; health checking
  // then reports SERVING for "", strait.v1.AdminService and
  // strait.v1.AgentService.
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(
      const ControllerServerOptions& options);

  // Shutdown(kDefaultGrace).
  ~ControllerServer();
  ControllerServer(const ControllerServer&) = delete;
  ControllerServer& operator=(const ControllerServer&) = delete;

  // The addresses as bound: a TCP port 0 replaced by the chosen port.
  const std::vector<std::string>& bound_addresses() const { return bound_addresses_; }
  // The port of the first TCP address, or 0 without one.
  int tcp_port() const { return tcp_port_; }

  grpc::Server& grpc_server() { return *server_; }
  AgentServiceImpl& agent_service() { return *agent_service_; }

  // Health NOT_SERVING; ends watches and agent sessions with UNAVAILABLE
  // (agents reconnect and keep their tunnels meanwhile); lets unary calls
  // in flight finish for up to `grace`, then cancels them; stops the
  // workers; closes Core and the store. Idempotent.
  void Shutdown(absl::Duration grace);

  static constexpr absl::Duration kDefaultGrace = absl::Seconds(5);

 private:
  ControllerServer() = default;

  CorePtr core_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> bound_addresses_;
  int tcp_port_ = 0;
  bool stopped_ = false;
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_CONTROLLER_SERVER_H_
