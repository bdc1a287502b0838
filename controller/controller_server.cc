#include "controller/controller_server.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "controller/store.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace strait::controller {
namespace {

const char* const kHealthServices[] = {"", "strait.v1.AdminService", "strait.v1.AgentService"};

// The directory part of a socket path, or "" when it has none.
std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) {
    return "";
  }
  return path.substr(0, slash);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const ControllerServerOptions& options) {
  if (options.listen.empty()) {
    return absl::InvalidArgumentError("no listening address");
  }
  std::unique_ptr<ControllerServer> server(new ControllerServer());

  ASSIGN_OR_RETURN(StorePtr store, OpenSqliteStore(options.data_dir));
  CoreOptions core_options;
  core_options.policy = options.policy;
  core_options.registry = options.registry;
  ASSIGN_OR_RETURN(server->core_, CreateCore(std::move(store), core_options));
  server->admin_service_ = std::make_unique<AdminServiceImpl>(*server->core_, options.registry);
  server->agent_service_ = std::make_unique<AgentServiceImpl>(*server->core_, options.registry);

  // Both are process-wide settings that apply to servers built afterwards.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  std::vector<int> ports(options.listen.size(), 0);
  for (size_t i = 0; i < options.listen.size(); ++i) {
    const ListenAddress& address = options.listen[i];
    if (address.kind == ListenAddress::Kind::kUnix && !address.unix_path.empty()) {
      std::string dir = Dirname(address.unix_path);
      if (!dir.empty()) {
        RETURN_IF_ERROR(MakeDirs(dir, 0750));
      }
    }
    builder.AddListeningPort(address.uri, grpc::InsecureServerCredentials(), &ports[i]);
  }
  builder.RegisterService(server->admin_service_.get());
  builder.RegisterService(server->agent_service_.get());
  // Find agents that vanished without closing their connection (host down,
  // network partition), so that ListNodes stops calling them connected.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // And let agents do the same with their own pings, up to one per 10 s.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr) {
    std::string uris;
    for (const ListenAddress& address : options.listen) {
      absl::StrAppend(&uris, uris.empty() ? "" : ",", address.uri);
    }
    // gRPC logs the cause (address in use, permission denied) itself.
    return absl::UnavailableError(absl::StrCat("cannot listen on ", uris));
  }
  for (size_t i = 0; i < options.listen.size(); ++i) {
    const ListenAddress& address = options.listen[i];
    if (address.kind == ListenAddress::Kind::kTcp) {
      std::string host = absl::StrContains(address.host, ':') ? absl::StrCat("[", address.host, "]")
                                                              : address.host;
      server->bound_addresses_.push_back(absl::StrCat(host, ":", ports[i]));
      if (server->tcp_port_ == 0) {
        server->tcp_port_ = ports[i];
      }
    } else {
      server->bound_addresses_.push_back(address.uri);
    }
  }

  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  if (health != nullptr) {
    for (const char* name : kHealthServices) {
      health->SetServingStatus(name, true);
    }
  }
  return server;
}

ControllerServer::~ControllerServer() { Shutdown(kDefaultGrace); }

void ControllerServer::Shutdown(absl::Duration grace) {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    if (health != nullptr) {
      for (const char* name : kHealthServices) {
        health->SetServingStatus(name, false);
      }
    }
    // Streams never end on their own: end them now rather than at the
    // deadline. Unary calls get `grace` to finish.
    if (admin_service_ != nullptr) {
      admin_service_->BeginShutdown();
    }
    if (agent_service_ != nullptr) {
      agent_service_->BeginShutdown();
    }
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  }
  // Every reactor is done now; the worker may still hold a mutation whose
  // client was cancelled at the deadline: let it finish (it is durable).
  if (admin_service_ != nullptr) {
    admin_service_->Stop();
  }
  server_.reset();
  admin_service_.reset();
  agent_service_.reset();
  // Closes the store.
  core_.reset();
}

}  // namespace strait::controller
