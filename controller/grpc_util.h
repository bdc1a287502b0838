#ifndef STRAIT_CONTROLLER_GRPC_UTIL_H_
#define STRAIT_CONTROLLER_GRPC_UTIL_H_

// Small pieces shared by the controller's gRPC services: status mapping and
// the per-request counter.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace strait::controller {

// Same code, same message (gRPC and Abseil share the canonical codes).
grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "INVALID_ARGUMENT", ...: the canonical name of a gRPC code.
std::string GrpcCodeName(grpc::StatusCode code);

// strait_controller_api_requests_total{method,code}: one sample per finished
// RPC, labelled with the method name ("ApplyTunnel") and the gRPC code name.
class ApiRequestCounter {
 public:
  // Counts nothing when `registry` is null.
  explicit ApiRequestCounter(prometheus::Registry* registry);

  void Count(absl::string_view method, grpc::StatusCode code);

 private:
  prometheus::Family<prometheus::Counter>* family_ = nullptr;
};

}  // namespace strait::controller

#endif  // STRAIT_CONTROLLER_GRPC_UTIL_H_
