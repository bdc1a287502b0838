#include "agent/session_impl.h"

#include <stdlib.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/applier_impl.h"
#include "agent/metrics.h"
#include "agent/state_store_impl.h"
#include "agent/test_util.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "proto/strait/v1/agent.grpc.pb.h"

namespace strait::agent {
namespace {

using ::strait::agent::testing::GatewayTunnel;
using ::strait::agent::testing::MakeSnapshot;
using ::strait::agent::testing::MetricValue;
using ::strait::agent::testing::NewTempDir;
using ::strait::v1::AgentMessage;
using ::strait::v1::ControllerMessage;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);

// Polls `pred`, for state that no lock announces (metrics).
bool Eventually(const std::function<bool()>& pred) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// A controller that records what agents send and pushes what the test says.
class FakeController final : public strait::v1::AgentService::Service {
 public:
  struct Received {
    int session;  // 1 for the first session
    AgentMessage message;
  };

  grpc::Status Session(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<ControllerMessage, AgentMessage>* stream) override {
    int session;
    {
      absl::MutexLock lock(&mu_);
      session = ++sessions_;
      stream_ = stream;
      context_ = context;
    }
    AgentMessage message;
    while (stream->Read(&message)) {
      absl::MutexLock lock(&mu_);
      received_.push_back({session, message});
    }
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
    context_ = nullptr;
    ++ended_;
    ended_cancelled_ += context->IsCancelled() ? 1 : 0;
    return grpc::Status::OK;
  }

  bool Push(const strait::v1::Snapshot& snapshot) {
    ControllerMessage message;
    *message.mutable_snapshot() = snapshot;
    absl::MutexLock lock(&mu_);
    return stream_ != nullptr && stream_->Write(message);
  }

  // Cuts the current session off, as a controller restart would.
  void EndSession() {
    absl::MutexLock lock(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }

  // Waits until `pred` (called under the lock) holds.
  bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&pred), timeout);
  }

  // The first message of `kind` in `session` at or after index `from`, or
  // nullptr.
  const AgentMessage* Find(AgentMessage::KindCase kind, int session = 0, size_t from = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (size_t i = from; i < received_.size(); ++i) {
      if (received_[i].message.kind_case() == kind &&
          (session == 0 || received_[i].session == session)) {
        return &received_[i].message;
      }
    }
    return nullptr;
  }

  // Waits for a message of `kind` and returns a copy.
  AgentMessage WaitForMessage(AgentMessage::KindCase kind, int session = 0, size_t from = 0) {
    AgentMessage out;
    WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      const AgentMessage* m = Find(kind, session, from);
      if (m != nullptr) out = *m;
      return m != nullptr;
    });
    return out;
  }

  size_t ReceivedCount() {
    absl::MutexLock lock(&mu_);
    return received_.size();
  }

  absl::Mutex mu_;
  int sessions_ ABSL_GUARDED_BY(mu_) = 0;
  int ended_ ABSL_GUARDED_BY(mu_) = 0;
  int ended_cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Received> received_ ABSL_GUARDED_BY(mu_);
  grpc::ServerReaderWriter<ControllerMessage, AgentMessage>* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ServerContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

class SessionImplTest : public ::testing::Test {
 protected:
  SessionImplTest() : metrics_(registry_), applier_("node-a", clock_, &metrics_) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&controller_);
    server_ = builder.BuildAndStart();
    auto store = FileStateStore::Create(NewTempDir() + "/state");
    EXPECT_TRUE(store.ok());
    store_ = std::move(*store);
    options_.node_name = "node-a";
    options_.agent_version = "test";
    options_.controller = absl::StrCat("127.0.0.1:", port_);
    options_.status_interval = absl::Seconds(60);
    options_.initial_backoff = absl::Milliseconds(10);
    options_.max_backoff = absl::Milliseconds(50);
  }

  ~SessionImplTest() override {
    if (session_ != nullptr) session_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  void StartSession(const std::string& target = "") {
    const std::string address = target.empty() ? options_.controller : target;
    session_ = std::make_unique<SessionImpl>(
        [address] { return CreateControllerChannel(address, grpc::InsecureChannelCredentials()); },
        options_, applier_, *store_, &metrics_);
    session_->Start();
  }

  strait::v1::Snapshot Valid(const std::string& version, const std::string& nonce) {
    return MakeSnapshot(
        version, {GatewayTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16", 2)}, nonce);
  }

  FakeClock clock_;
  prometheus::Registry registry_;
  AgentMetrics metrics_;
  ApplierImpl applier_;
  std::unique_ptr<FileStateStore> store_;
  FakeController controller_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  SessionOptions options_;
  std::unique_ptr<SessionImpl> session_;
};

TEST_F(SessionImplTest, HelloCarriesNodeAndLastVersionThenStatus) {
  ASSERT_TRUE(applier_.Apply(Valid("5.s", "")).ok());
  StartSession();
  AgentMessage hello = controller_.WaitForMessage(AgentMessage::kHello);
  EXPECT_EQ(hello.hello().node_name(), "node-a");
  EXPECT_EQ(hello.hello().last_applied_version(), "5.s");
  EXPECT_EQ(hello.hello().agent_version(), "test");

  AgentMessage status = controller_.WaitForMessage(AgentMessage::kStatus);
  ASSERT_EQ(status.status().tunnels_size(), 1);
  EXPECT_EQ(status.status().tunnels(0).name(), "a-to-gw");
  EXPECT_EQ(status.status().tunnels(0).status().phase(), strait::v1::TUNNEL_PHASE_PENDING);
  EXPECT_EQ(status.status().tunnels(0).status().reason(), "AWAITING_IKE");
  EXPECT_EQ(status.status().tunnels(0).status().observed_generation(), 2);
  {
    absl::MutexLock lock(&controller_.mu_);
    ASSERT_FALSE(controller_.received_.empty());
    EXPECT_TRUE(controller_.received_[0].message.has_hello());
  }
  EXPECT_TRUE(Eventually([this] {
    return MetricValue(registry_, "strait_agent_session_state", {{"state", "connected"}}) == 1;
  }));
}

TEST_F(SessionImplTest, AcksPushPersistsAndReportsStatus) {
  StartSession();
  EXPECT_EQ(controller_.WaitForMessage(AgentMessage::kHello).hello().last_applied_version(), "");
  const size_t before = controller_.ReceivedCount();
  ASSERT_TRUE(controller_.Push(Valid("8.s", "n-1")));

  AgentMessage ack = controller_.WaitForMessage(AgentMessage::kAck);
  EXPECT_EQ(ack.ack().version(), "8.s");
  EXPECT_EQ(ack.ack().nonce(), "n-1");
  // A status report follows the ACK, with the new tunnel.
  EXPECT_TRUE(controller_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(controller_.mu_) {
    for (size_t i = before; i < controller_.received_.size(); ++i) {
      if (!controller_.received_[i].message.has_ack()) continue;
      const AgentMessage* status = controller_.Find(AgentMessage::kStatus, 1, i);
      return status != nullptr && status->status().tunnels_size() == 1;
    }
    return false;
  }));

  EXPECT_EQ(applier_.AppliedVersion(), "8.s");
  absl::StatusOr<SnapshotPtr> stored = store_->Load();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_NE(*stored, nullptr);
  EXPECT_EQ((*stored)->version(), "8.s");
  EXPECT_EQ((*stored)->tunnels(0).name(), "a-to-gw");
  EXPECT_EQ(MetricValue(registry_, "strait_agent_snapshots_applied_total"), 1);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_applied_revision"), 8);
}

TEST_F(SessionImplTest, NacksBadPushWithTheErrorAndKeepsPrevious) {
  StartSession();
  controller_.WaitForMessage(AgentMessage::kHello);
  ASSERT_TRUE(controller_.Push(Valid("8.s", "n-1")));
  controller_.WaitForMessage(AgentMessage::kAck);

  ASSERT_TRUE(controller_.Push(MakeSnapshot(
      "9.s", {GatewayTunnel("b-to-gw", "node-b", "10.2.0.0/24", "10.100.0.0/16")}, "n-2")));
  AgentMessage nack = controller_.WaitForMessage(AgentMessage::kNack);
  EXPECT_EQ(nack.nack().version(), "9.s");
  EXPECT_EQ(nack.nack().nonce(), "n-2");
  EXPECT_THAT(nack.nack().error(), HasSubstr("tunnel \"b-to-gw\": spec.node: is \"node-b\""));

  EXPECT_EQ(applier_.AppliedVersion(), "8.s");
  absl::StatusOr<SnapshotPtr> stored = store_->Load();
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ((*stored)->version(), "8.s");
  EXPECT_EQ(MetricValue(registry_, "strait_agent_snapshots_rejected_total"), 1);
}

TEST_F(SessionImplTest, ReconnectResumesFromLastAppliedVersion) {
  StartSession();
  controller_.WaitForMessage(AgentMessage::kHello, 1);
  ASSERT_TRUE(controller_.Push(Valid("8.s", "n-1")));
  controller_.WaitForMessage(AgentMessage::kAck, 1);

  controller_.EndSession();
  AgentMessage hello = controller_.WaitForMessage(AgentMessage::kHello, 2);
  EXPECT_EQ(hello.hello().node_name(), "node-a");
  EXPECT_EQ(hello.hello().last_applied_version(), "8.s");
  // The new session gets its status report too.
  controller_.WaitForMessage(AgentMessage::kStatus, 2);
  EXPECT_GE(MetricValue(registry_, "strait_agent_reconnects_total"), 1);
}

TEST_F(SessionImplTest, ReportsStatusPeriodically) {
  options_.status_interval = absl::Milliseconds(20);
  StartSession();
  EXPECT_TRUE(controller_.WaitFor([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(controller_.mu_) {
    int reports = 0;
    for (const auto& r : controller_.received_) reports += r.message.has_status() ? 1 : 0;
    return reports >= 4;
  }));
}

TEST_F(SessionImplTest, ShutdownHalfClosesPromptly) {
  StartSession();
  controller_.WaitForMessage(AgentMessage::kStatus);
  const absl::Time start = absl::Now();
  session_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_TRUE(controller_.WaitFor(
      [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(controller_.mu_) { return controller_.ended_ == 1; }));
  absl::MutexLock lock(&controller_.mu_);
  // The controller saw the agent close its side, not a cancelled call.
  EXPECT_EQ(controller_.ended_cancelled_, 0);
  EXPECT_EQ(MetricValue(registry_, "strait_agent_session_state", {{"state", "connected"}}), 0);
}

TEST_F(SessionImplTest, ReconnectsAsSoonAsTheControllerIsBack) {
  StartSession();
  controller_.WaitForMessage(AgentMessage::kHello, 1);
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  // Attempts fail while the controller is away...
  EXPECT_TRUE(
      Eventually([this] { return MetricValue(registry_, "strait_agent_reconnects_total") >= 5; }));
  // ...and the next one after it is back succeeds: no reconnect backoff of
  // gRPC's own (1 s and more) comes on top of the session's (50 ms here).
  FakeController restarted;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.controller, grpc::InsecureServerCredentials());
  builder.RegisterService(&restarted);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const absl::Time back = absl::Now();
  restarted.WaitForMessage(AgentMessage::kHello, 1);
  EXPECT_LT(absl::Now() - back, absl::Milliseconds(500));
  session_->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

TEST_F(SessionImplTest, ConnectsOverUnixSocket) {
  // Socket paths are short (108 bytes): not under TEST_TMPDIR.
  char dir[] = "/tmp/strait-agent-test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string target = absl::StrCat("unix://", dir, "/controller.sock");
  FakeController local;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(target, grpc::InsecureServerCredentials());
  builder.RegisterService(&local);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  StartSession(target);
  EXPECT_EQ(local.WaitForMessage(AgentMessage::kHello).hello().node_name(), "node-a");
  session_->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  ::unlink(absl::StrCat(dir, "/controller.sock").c_str());
  ::rmdir(dir);
}

TEST_F(SessionImplTest, RetriesAnUnreachableControllerAndStopsPromptly) {
  // A port that nothing listens on: the fake's, once it is gone.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  StartSession();
  EXPECT_TRUE(
      Eventually([this] { return MetricValue(registry_, "strait_agent_reconnects_total") >= 3; }));
  EXPECT_EQ(MetricValue(registry_, "strait_agent_session_state", {{"state", "connected"}}), 0);
  const absl::Time start = absl::Now();
  session_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

}  // namespace
}  // namespace strait::agent
