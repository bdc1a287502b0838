#ifndef STRAIT_CONTROLLER_SERVICE_TEST_UTIL_H_
#define STRAIT_CONTROLLER_SERVICE_TEST_UTIL_H_

// What the service tests share: a controller served in-process on
// 127.0.0.1:0 over the real Core and SQLite in TEST_TMPDIR, and tunnels.

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/controller_server.h"
#include "controller/listen_address.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/admin.grpc.pb.h"
#include "proto/strait/v1/agent.grpc.pb.h"

namespace strait::controller::testing {

inline std::string NewTestDir() {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/controller-", getpid(), "-", counter++);
}

inline strait::v1::Tunnel MakeTunnel(const std::string& name, const std::string& node,
                                     const std::string& local_ts, const std::string& remote_ts,
                                     const std::string& psk) {
  strait::v1::Tunnel t;
  t.set_kind("Tunnel");
  t.mutable_metadata()->set_name(name);
  strait::v1::TunnelSpec* spec = t.mutable_spec();
  spec->set_node(node);
  spec->mutable_local()->set_address("192.0.2.1");
  spec->mutable_local()->add_traffic_selectors(local_ts);
  spec->mutable_remote()->set_address("192.0.2.100");
  spec->mutable_remote()->add_traffic_selectors(remote_ts);
  spec->mutable_auth()->mutable_psk()->set_value(psk);
  spec->mutable_ike()->add_proposals("aes256gcm16-prfsha384-ecp384");
  spec->mutable_esp()->add_proposals("aes256gcm16-ecp384");
  return t;
}

inline strait::v1::ApplyTunnelRequest ApplyRequest(const strait::v1::Tunnel& tunnel) {
  strait::v1::ApplyTunnelRequest request;
  *request.mutable_tunnel() = tunnel;
  return request;
}

// The value of a counter or gauge sample in `registry`, 0 when absent.
inline double MetricValue(prometheus::Registry& registry, const std::string& name,
                          const std::map<std::string, std::string>& labels) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      bool match = true;
      for (const auto& [key, value] : labels) {
        bool found = false;
        for (const prometheus::ClientMetric::Label& label : metric.label) {
          found |= label.name == key && label.value == value;
        }
        match &= found;
      }
      if (!match) continue;
      if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
      if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
    }
  }
  return 0;
}

// Polls `condition` every 10 ms for up to 10 s.
inline bool Eventually(const std::function<bool()>& condition) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return condition();
}

// A controller on 127.0.0.1:0 with a fresh store, and stubs to it.
class ControllerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<ListenAddress>> listen = ParseListenAddresses("127.0.0.1:0");
    ASSERT_TRUE(listen.ok()) << listen.status();
    ControllerServerOptions options;
    options.listen = *listen;
    options.data_dir = NewTestDir();
    options.registry = &registry_;
    absl::StatusOr<std::unique_ptr<ControllerServer>> server = ControllerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_NE(server_->tcp_port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->tcp_port()),
                                   grpc::InsecureChannelCredentials());
    admin_ = strait::v1::AdminService::NewStub(channel_);
    agent_ = strait::v1::AgentService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }

  // Sets a deadline, so that a test fails rather than hangs.
  static void SetDeadline(grpc::ClientContext* context,
                          absl::Duration timeout = absl::Seconds(10)) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }

  grpc::Status Apply(const strait::v1::Tunnel& tunnel,
                     strait::v1::ApplyTunnelResponse* response = nullptr) {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::ApplyTunnelResponse ignored;
    return admin_->ApplyTunnel(&context, ApplyRequest(tunnel),
                               response != nullptr ? response : &ignored);
  }

  strait::v1::ListNodesResponse ListNodes() {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::ListNodesResponse response;
    grpc::Status status = admin_->ListNodes(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  prometheus::Registry registry_;
  std::unique_ptr<ControllerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<strait::v1::AdminService::Stub> admin_;
  std::unique_ptr<strait::v1::AgentService::Stub> agent_;
};

}  // namespace strait::controller::testing

#endif  // STRAIT_CONTROLLER_SERVICE_TEST_UTIL_H_
