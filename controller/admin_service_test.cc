#include "controller/admin_service.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/service_test_util.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/strait/v1/admin.grpc.pb.h"

namespace strait::controller {
namespace {

using strait::v1::WatchTunnelsEvent;
using testing::ControllerFixture;
using ::testing::HasSubstr;
using testing::MakeTunnel;
using testing::MetricValue;
using ::testing::Not;

constexpr char kPsk[] = "admin test secret 0123456789";

strait::v1::Tunnel TunnelA() {
  return MakeTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16", kPsk);
}

strait::v1::Tunnel TunnelB() {
  return MakeTunnel("b-to-gw", "node-b", "10.2.0.0/24", "10.101.0.0/16", kPsk);
}

class AdminServiceTest : public ControllerFixture {
 protected:
  double Requests(const std::string& method, const std::string& code) {
    return MetricValue(registry_, "strait_controller_api_requests_total",
                       {{"method", method}, {"code", code}});
  }

  grpc::Status Get(const std::string& name, strait::v1::Tunnel* tunnel) {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::GetTunnelRequest request;
    request.set_name(name);
    return admin_->GetTunnel(&context, request, tunnel);
  }

  grpc::Status Delete(const std::string& name, strait::v1::DeleteTunnelResponse* response) {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::DeleteTunnelRequest request;
    request.set_name(name);
    return admin_->DeleteTunnel(&context, request, response);
  }
};

TEST_F(AdminServiceTest, ApplyWithBadFieldIsInvalidArgumentNamingTheField) {
  strait::v1::Tunnel tunnel = TunnelA();
  tunnel.mutable_spec()->mutable_ike()->set_proposals(0, "3des-sha1-modp1024");
  grpc::Status status = Apply(tunnel);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.ike.proposals[0]"));
  EXPECT_EQ(Requests("ApplyTunnel", "INVALID_ARGUMENT"), 1);
  EXPECT_EQ(Requests("ApplyTunnel", "OK"), 0);

  // Nothing was stored.
  strait::v1::Tunnel got;
  EXPECT_EQ(Get("a-to-gw", &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminServiceTest, ApplyAndReadsNeverReturnThePsk) {
  strait::v1::ApplyTunnelResponse applied;
  grpc::Status status = Apply(TunnelA(), &applied);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(applied.changed());
  EXPECT_GT(applied.revision(), 0);
  EXPECT_EQ(applied.tunnel().spec().auth().psk().value(), "");
  EXPECT_THAT(applied.DebugString(), Not(HasSubstr(kPsk)));

  strait::v1::Tunnel got;
  status = Get("a-to-gw", &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got.metadata().name(), "a-to-gw");
  EXPECT_EQ(got.spec().auth().psk().value(), "");
  EXPECT_NE(got.spec().auth().psk().fingerprint(), "");
  EXPECT_THAT(got.DebugString(), Not(HasSubstr(kPsk)));

  grpc::ClientContext context;
  SetDeadline(&context);
  strait::v1::ListTunnelsResponse list;
  status = admin_->ListTunnels(&context, {}, &list);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(list.tunnels_size(), 1);
  EXPECT_THAT(list.DebugString(), Not(HasSubstr(kPsk)));
  EXPECT_EQ(list.revision(), applied.revision());

  EXPECT_EQ(Requests("ApplyTunnel", "OK"), 1);
  EXPECT_EQ(Requests("GetTunnel", "OK"), 1);
  EXPECT_EQ(Requests("ListTunnels", "OK"), 1);
}

TEST_F(AdminServiceTest, DryRunStoresNothing) {
  grpc::ClientContext context;
  SetDeadline(&context);
  strait::v1::ApplyTunnelRequest request = testing::ApplyRequest(TunnelA());
  request.set_dry_run(true);
  strait::v1::ApplyTunnelResponse response;
  grpc::Status status = admin_->ApplyTunnel(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(response.DebugString(), Not(HasSubstr(kPsk)));
  strait::v1::Tunnel got;
  EXPECT_EQ(Get("a-to-gw", &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminServiceTest, DeleteRemovesAndUnknownIsNotFound) {
  strait::v1::ApplyTunnelResponse applied;
  ASSERT_TRUE(Apply(TunnelA(), &applied).ok());
  strait::v1::DeleteTunnelResponse deleted;
  grpc::Status status = Delete("a-to-gw", &deleted);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(deleted.revision(), applied.revision());
  strait::v1::Tunnel got;
  EXPECT_EQ(Get("a-to-gw", &got).error_code(), grpc::StatusCode::NOT_FOUND);

  status = Delete("a-to-gw", &deleted);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Requests("DeleteTunnel", "OK"), 1);
  EXPECT_EQ(Requests("DeleteTunnel", "NOT_FOUND"), 1);
  EXPECT_EQ(Requests("GetTunnel", "NOT_FOUND"), 1);
}

TEST_F(AdminServiceTest, WatchSendsCurrentTunnelsThenChanges) {
  strait::v1::ApplyTunnelResponse applied_a;
  ASSERT_TRUE(Apply(TunnelA(), &applied_a).ok());

  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<grpc::ClientReader<WatchTunnelsEvent>> watch = admin_->WatchTunnels(&context, {});
  WatchTunnelsEvent event;
  ASSERT_TRUE(watch->Read(&event));
  EXPECT_EQ(event.type(), WatchTunnelsEvent::TYPE_ADDED);
  EXPECT_EQ(event.tunnel().metadata().name(), "a-to-gw");

  strait::v1::ApplyTunnelResponse applied_b;
  ASSERT_TRUE(Apply(TunnelB(), &applied_b).ok());
  ASSERT_TRUE(watch->Read(&event));
  EXPECT_EQ(event.type(), WatchTunnelsEvent::TYPE_ADDED);
  EXPECT_EQ(event.tunnel().metadata().name(), "b-to-gw");
  EXPECT_EQ(event.revision(), applied_b.revision());
  EXPECT_THAT(event.DebugString(), Not(HasSubstr(kPsk)));

  strait::v1::Tunnel changed = TunnelA();
  changed.mutable_spec()->mutable_local()->add_traffic_selectors("10.11.0.0/24");
  strait::v1::ApplyTunnelResponse applied_change;
  ASSERT_TRUE(Apply(changed, &applied_change).ok());
  ASSERT_TRUE(watch->Read(&event));
  EXPECT_EQ(event.type(), WatchTunnelsEvent::TYPE_MODIFIED);
  EXPECT_EQ(event.tunnel().metadata().name(), "a-to-gw");
  EXPECT_EQ(event.revision(), applied_change.revision());

  strait::v1::DeleteTunnelResponse deleted;
  ASSERT_TRUE(Delete("b-to-gw", &deleted).ok());
  ASSERT_TRUE(watch->Read(&event));
  EXPECT_EQ(event.type(), WatchTunnelsEvent::TYPE_DELETED);
  EXPECT_EQ(event.tunnel().metadata().name(), "b-to-gw");
  EXPECT_EQ(event.revision(), deleted.revision());
  EXPECT_THAT(event.DebugString(), Not(HasSubstr(kPsk)));

  context.TryCancel();
  while (watch->Read(&event)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(testing::Eventually([&] { return Requests("WatchTunnels", "CANCELLED") == 1; }));
}

TEST_F(AdminServiceTest, ShutdownEndsWatchesWithUnavailableWithoutWaitingForTheDeadline) {
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(30));
  std::unique_ptr<grpc::ClientReader<WatchTunnelsEvent>> watch = admin_->WatchTunnels(&context, {});
  // The watch is registered once the first event arrives.
  ASSERT_TRUE(Apply(TunnelA()).ok());
  WatchTunnelsEvent event;
  ASSERT_TRUE(watch->Read(&event));

  absl::Time start = absl::Now();
  server_->Shutdown(absl::Seconds(20));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  while (watch->Read(&event)) {
  }
  grpc::Status status = watch->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "controller shutting down");
}

TEST_F(AdminServiceTest, HealthIsServingForTheServerAndBothServices) {
  grpc::GenericStub generic(channel_);
  for (const std::string service : {"", "strait.v1.AdminService", "strait.v1.AgentService"}) {
    // grpc.health.v1.HealthCheckRequest{service}, encoded by hand.
    std::string encoded;
    if (!service.empty()) {
      encoded = absl::StrCat("\x0a", std::string(1, static_cast<char>(service.size())), service);
    }
    grpc::Slice slice(encoded);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Notification done;
    grpc::Status status;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                      &response, [&](grpc::Status s) {
                        status = std::move(s);
                        done.Notify();
                      });
    done.WaitForNotification();
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(s.begin(), s.end());
    }
    // HealthCheckResponse{status: SERVING (1)}.
    EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << service;
  }
}

TEST_F(AdminServiceTest, ReflectionListsTheServices) {
  grpc::GenericStub generic(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = generic.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&cq](void* tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(reinterpret_cast<void*>(1)));
  // ServerReflectionRequest{list_services: ""} (field 7), encoded by hand.
  grpc::Slice slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(reinterpret_cast<void*>(2)));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(reinterpret_cast<void*>(3)));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(s.begin(), s.end());
  }
  EXPECT_THAT(bytes, HasSubstr("strait.v1.AdminService"));
  EXPECT_THAT(bytes, HasSubstr("strait.v1.AgentService"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(reinterpret_cast<void*>(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(reinterpret_cast<void*>(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace strait::controller
