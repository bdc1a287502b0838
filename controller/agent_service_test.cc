#include "controller/agent_service.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/service_test_util.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/strait/v1/admin.grpc.pb.h"
#include "proto/strait/v1/agent.grpc.pb.h"

namespace strait::controller {
namespace {

using strait::v1::AgentMessage;
using strait::v1::ControllerMessage;
using strait::v1::Snapshot;
using testing::ControllerFixture;
using testing::Eventually;
using ::testing::HasSubstr;
using testing::MakeTunnel;
using ::testing::StartsWith;

constexpr char kPskA[] = "agent test secret a 0123456789";
constexpr char kPskB[] = "agent test secret b 0123456789";

strait::v1::Tunnel TunnelA() {
  return MakeTunnel("a-to-gw", "node-a", "10.1.0.0/24", "10.100.0.0/16", kPskA);
}

strait::v1::Tunnel TunnelB() {
  return MakeTunnel("b-to-gw", "node-b", "10.2.0.0/24", "10.101.0.0/16", kPskB);
}

// The version a node's snapshot has after a change committed at `revision`
// ("<revision>.<store id>").
std::string VersionPrefix(int64_t revision) { return absl::StrCat(revision, "."); }

// One agent's session, driven synchronously by the test.
class FakeAgent {
 public:
  explicit FakeAgent(strait::v1::AgentService::Stub& stub,
                     absl::Duration timeout = absl::Seconds(10)) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stream_ = stub.Session(&context_);
  }

  bool Hello(const std::string& node, const std::string& last_applied_version = "") {
    AgentMessage message;
    message.mutable_hello()->set_node_name(node);
    message.mutable_hello()->set_last_applied_version(last_applied_version);
    message.mutable_hello()->set_agent_version("test");
    return stream_->Write(message);
  }

  // The next snapshot, or nullopt when the stream ended.
  std::optional<Snapshot> Next() {
    ControllerMessage message;
    if (!stream_->Read(&message)) {
      return std::nullopt;
    }
    EXPECT_TRUE(message.has_snapshot());
    return message.snapshot();
  }

  bool Ack(const Snapshot& snapshot) {
    AgentMessage message;
    message.mutable_ack()->set_version(snapshot.version());
    message.mutable_ack()->set_nonce(snapshot.nonce());
    return stream_->Write(message);
  }

  bool Nack(const std::string& version, const std::string& nonce, const std::string& error) {
    AgentMessage message;
    message.mutable_nack()->set_version(version);
    message.mutable_nack()->set_nonce(nonce);
    message.mutable_nack()->set_error(error);
    return stream_->Write(message);
  }

  bool Write(const AgentMessage& message) { return stream_->Write(message); }

  // Reads until the end and returns the RPC's status.
  grpc::Status Finish() {
    ControllerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

  // Closes the agent's side and returns the RPC's status.
  grpc::Status Close() {
    stream_->WritesDone();
    return Finish();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, ControllerMessage>> stream_;
};

class AgentServiceTest : public ControllerFixture {
 protected:
  // Whether ListNodes shows `name` with these connected and acked values.
  bool NodeIs(const std::string& name, bool connected, const std::string& acked_version) {
    strait::v1::ListNodesResponse nodes = ListNodes();
    for (const strait::v1::Node& node : nodes.nodes()) {
      if (node.name() == name) {
        return node.connected() == connected && node.acked_version() == acked_version;
      }
    }
    return false;
  }

  bool NodeConnected(const std::string& name) {
    strait::v1::ListNodesResponse nodes = ListNodes();
    for (const strait::v1::Node& node : nodes.nodes()) {
      if (node.name() == name) {
        return node.connected();
      }
    }
    return false;
  }

  std::string NodeLastError(const std::string& name) {
    strait::v1::ListNodesResponse nodes = ListNodes();
    for (const strait::v1::Node& node : nodes.nodes()) {
      if (node.name() == name) {
        return node.last_error();
      }
    }
    return "<no such node>";
  }
};

TEST_F(AgentServiceTest, SessionGetsItsSnapshotAcksAndShowsInListNodes) {
  strait::v1::ApplyTunnelResponse applied;
  ASSERT_TRUE(Apply(TunnelA(), &applied).ok());
  ASSERT_TRUE(Apply(TunnelB()).ok());

  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a"));
  std::optional<Snapshot> snapshot = agent.Next();
  ASSERT_TRUE(snapshot.has_value());
  EXPECT_THAT(snapshot->version(), StartsWith(VersionPrefix(applied.revision())));
  EXPECT_FALSE(snapshot->nonce().empty());
  // Only node-a's share, with its key.
  ASSERT_EQ(snapshot->tunnels_size(), 1);
  EXPECT_EQ(snapshot->tunnels(0).name(), "a-to-gw");
  EXPECT_EQ(snapshot->tunnels(0).spec().auth().psk().value(), kPskA);

  ASSERT_TRUE(agent.Ack(*snapshot));
  EXPECT_TRUE(Eventually([&] { return NodeIs("node-a", true, snapshot->version()); }));
  strait::v1::ListNodesResponse nodes = ListNodes();
  for (const strait::v1::Node& node : nodes.nodes()) {
    if (node.name() != "node-a") {
      continue;
    }
    EXPECT_EQ(node.current_version(), snapshot->version());
    EXPECT_THAT(node.peer(), HasSubstr("127.0.0.1"));
  }

  EXPECT_TRUE(agent.Close().ok());
  EXPECT_TRUE(Eventually([&] { return NodeIs("node-a", false, snapshot->version()); }));
  EXPECT_TRUE(Eventually([&] {
    return testing::MetricValue(registry_, "strait_controller_api_requests_total",
                                {{"method", "Session"}, {"code", "OK"}}) == 1;
  }));
}

TEST_F(AgentServiceTest, ChangesArePushedWithFreshNonces) {
  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a"));
  // A node without tunnels gets its (empty) share first.
  std::optional<Snapshot> first = agent.Next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->tunnels_size(), 0);
  ASSERT_TRUE(agent.Ack(*first));

  strait::v1::ApplyTunnelResponse applied;
  ASSERT_TRUE(Apply(TunnelA(), &applied).ok());
  std::optional<Snapshot> second = agent.Next();
  ASSERT_TRUE(second.has_value());
  EXPECT_THAT(second->version(), StartsWith(VersionPrefix(applied.revision())));
  EXPECT_EQ(second->tunnels_size(), 1);
  EXPECT_NE(second->nonce(), first->nonce());
  ASSERT_TRUE(agent.Ack(*second));

  strait::v1::DeleteTunnelResponse deleted;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::DeleteTunnelRequest request;
    request.set_name("a-to-gw");
    ASSERT_TRUE(admin_->DeleteTunnel(&context, request, &deleted).ok());
  }
  std::optional<Snapshot> third = agent.Next();
  ASSERT_TRUE(third.has_value());
  EXPECT_THAT(third->version(), StartsWith(VersionPrefix(deleted.revision())));
  EXPECT_EQ(third->tunnels_size(), 0);
  EXPECT_NE(third->nonce(), second->nonce());
  ASSERT_TRUE(agent.Ack(*third));
  EXPECT_TRUE(Eventually([&] { return NodeIs("node-a", true, third->version()); }));
}

TEST_F(AgentServiceTest, ResumeWithCurrentVersionGetsNoPush) {
  ASSERT_TRUE(Apply(TunnelA()).ok());
  ASSERT_TRUE(Apply(TunnelB()).ok());
  std::string version;
  {
    FakeAgent agent(*agent_);
    ASSERT_TRUE(agent.Hello("node-a"));
    std::optional<Snapshot> snapshot = agent.Next();
    ASSERT_TRUE(snapshot.has_value());
    version = snapshot->version();
    ASSERT_TRUE(agent.Ack(*snapshot));
    ASSERT_TRUE(agent.Close().ok());
  }

  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a", version));
  EXPECT_TRUE(Eventually([&] { return NodeIs("node-a", true, version); }));
  // A change to another node's share is not node-a's business...
  strait::v1::Tunnel b = TunnelB();
  b.mutable_spec()->mutable_local()->add_traffic_selectors("10.22.0.0/24");
  ASSERT_TRUE(Apply(b).ok());
  // ...and a change to node-a's share is pushed. Had the resume been
  // pushed, or node-b's change, the first message would carry an older
  // version than this change's.
  strait::v1::Tunnel a = TunnelA();
  a.mutable_spec()->mutable_local()->add_traffic_selectors("10.11.0.0/24");
  strait::v1::ApplyTunnelResponse applied;
  ASSERT_TRUE(Apply(a, &applied).ok());
  std::optional<Snapshot> next = agent.Next();
  ASSERT_TRUE(next.has_value());
  EXPECT_THAT(next->version(), StartsWith(VersionPrefix(applied.revision())));
  ASSERT_EQ(next->tunnels_size(), 1);
  EXPECT_EQ(next->tunnels(0).spec().local().traffic_selectors_size(), 2);
}

TEST_F(AgentServiceTest, ResumeWithStaleVersionGetsThePush) {
  strait::v1::ApplyTunnelResponse applied;
  ASSERT_TRUE(Apply(TunnelA(), &applied).ok());
  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a", "1.some-other-store"));
  std::optional<Snapshot> snapshot = agent.Next();
  ASSERT_TRUE(snapshot.has_value());
  EXPECT_THAT(snapshot->version(), StartsWith(VersionPrefix(applied.revision())));
}

TEST_F(AgentServiceTest, HelloWithBadNodeNameIsInvalidArgument) {
  for (const std::string& name :
       std::vector<std::string>{"", "Node_A", "-node", std::string(64, 'a')}) {
    FakeAgent agent(*agent_);
    ASSERT_TRUE(agent.Hello(name));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_THAT(status.error_message(), StartsWith("hello.node_name: ")) << name;
  }
  EXPECT_TRUE(ListNodes().nodes().empty());
}

TEST_F(AgentServiceTest, FirstMessageMustBeHello) {
  FakeAgent agent(*agent_);
  AgentMessage ack;
  ack.mutable_ack()->set_version("1.x");
  ASSERT_TRUE(agent.Write(ack));
  grpc::Status status = agent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("hello"));
}

TEST_F(AgentServiceTest, SecondHelloIsAnError) {
  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a"));
  ASSERT_TRUE(agent.Next().has_value());
  agent.Hello("node-b");
  grpc::Status status = agent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("hello"));
  EXPECT_TRUE(Eventually([&] { return !NodeConnected("node-a"); }));
}

TEST_F(AgentServiceTest, NackIsRecordedAndStaleNoncesAreIgnored) {
  ASSERT_TRUE(Apply(TunnelA()).ok());
  FakeAgent agent(*agent_);
  ASSERT_TRUE(agent.Hello("node-a"));
  std::optional<Snapshot> snapshot = agent.Next();
  ASSERT_TRUE(snapshot.has_value());

  // A NACK with a nonce this session never sent is ignored. Messages are
  // handled in order, so once the valid NACK after it shows, it was seen.
  ASSERT_TRUE(agent.Nack(snapshot->version(), "not-a-nonce", "stale error"));
  ASSERT_TRUE(agent.Nack(snapshot->version(), snapshot->nonce(), "cannot apply"));
  EXPECT_TRUE(Eventually([&] { return NodeLastError("node-a") == "cannot apply"; }));

  ASSERT_TRUE(agent.Ack(*snapshot));
  ASSERT_TRUE(agent.Nack(snapshot->version(), "not-a-nonce", "stale error"));
  EXPECT_TRUE(Eventually([&] { return NodeIs("node-a", true, snapshot->version()); }));
  // Still no error after the ignored NACK: a status report after it makes
  // a barrier (the tunnel's status shows once it was handled).
  AgentMessage report;
  strait::v1::TunnelEndReport* end = report.mutable_status()->add_tunnels();
  end->set_name("a-to-gw");
  end->mutable_status()->set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
  ASSERT_TRUE(agent.Write(report));
  EXPECT_TRUE(Eventually([&] {
    grpc::ClientContext context;
    SetDeadline(&context);
    strait::v1::GetTunnelRequest request;
    request.set_name("a-to-gw");
    strait::v1::Tunnel tunnel;
    if (!admin_->GetTunnel(&context, request, &tunnel).ok()) return false;
    for (const auto& e : tunnel.status().ends()) {
      if (e.node() == "node-a" && e.phase() == strait::v1::TUNNEL_PHASE_ESTABLISHED) return true;
    }
    return false;
  }));
  EXPECT_EQ(NodeLastError("node-a"), "");
}

TEST_F(AgentServiceTest, ShutdownEndsSessionsWithUnavailable) {
  FakeAgent agent(*agent_, absl::Seconds(30));
  ASSERT_TRUE(agent.Hello("node-a"));
  ASSERT_TRUE(agent.Next().has_value());
  absl::Time start = absl::Now();
  server_->Shutdown(absl::Seconds(20));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  grpc::Status status = agent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "controller shutting down");
}

// Many sessions and concurrent changes: every session ends on its node's
// latest version, and shutdown ends them all.
TEST_F(AgentServiceTest, ManySessionsConvergeOnTheLatestVersion) {
  constexpr int kNodes = 8;
  constexpr int kChanges = 5;
  std::vector<std::unique_ptr<FakeAgent>> agents;
  for (int i = 0; i < kNodes; ++i) {
    agents.push_back(std::make_unique<FakeAgent>(*agent_, absl::Seconds(30)));
    ASSERT_TRUE(agents.back()->Hello(absl::StrCat("node-", i)));
  }
  std::vector<std::string> latest(kNodes);
  std::vector<std::thread> writers;
  writers.reserve(kNodes);
  for (int i = 0; i < kNodes; ++i) {
    writers.emplace_back([&, i] {
      for (int c = 0; c < kChanges; ++c) {
        strait::v1::Tunnel t =
            MakeTunnel(absl::StrCat("t-", i), absl::StrCat("node-", i), "10.1.0.0/24",
                       absl::StrCat("10.100.", c, ".0/24"), kPskA);
        strait::v1::ApplyTunnelResponse applied;
        ASSERT_TRUE(Apply(t, &applied).ok());
        latest[i] = VersionPrefix(applied.revision());
      }
    });
  }
  for (std::thread& t : writers) {
    t.join();
  }
  for (int i = 0; i < kNodes; ++i) {
    // Read until the latest version arrives; versions only go up.
    int64_t last_revision = -1;
    for (;;) {
      std::optional<Snapshot> snapshot = agents[i]->Next();
      ASSERT_TRUE(snapshot.has_value()) << "node-" << i;
      int64_t revision = std::stoll(snapshot->version().substr(0, snapshot->version().find('.')));
      EXPECT_GT(revision, last_revision);
      last_revision = revision;
      ASSERT_TRUE(agents[i]->Ack(*snapshot));
      if (absl::StartsWith(snapshot->version(), latest[i])) {
        break;
      }
    }
  }
  server_->Shutdown(absl::Seconds(20));
  for (auto& agent : agents) {
    EXPECT_EQ(agent->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
}

}  // namespace
}  // namespace strait::controller
