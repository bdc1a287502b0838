#include "controller/grpc_util.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace strait::controller {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) {
    return grpc::Status::OK;
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

std::string GrpcCodeName(grpc::StatusCode code) {
  // The numbering is the same (both are google.rpc.Code). Codes outside it
  // print as their number, so they still make a valid label.
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  if (name.empty()) {
    return absl::StrCat(static_cast<int>(code));
  }
  return name;
}

ApiRequestCounter::ApiRequestCounter(prometheus::Registry* registry) {
  if (registry == nullptr) {
    return;
  }
  family_ = &prometheus::BuildCounter()
                 .Name("strait_controller_api_requests_total")
                 .Help("gRPC requests served by the controller, by method and status code.")
                 .Register(*registry);
}

void ApiRequestCounter::Count(absl::string_view method, grpc::StatusCode code) {
  if (family_ == nullptr) {
    return;
  }
  family_->Add({{"method", std::string(method)}, {"code", GrpcCodeName(code)}}).Increment();
}

}  // namespace strait::controller
