#include "tests/bench/agent_fleet.h"

#include <deque>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "proto/strait/v1/agent.grpc.pb.h"
#include "proto/strait/v1/agent.pb.h"

namespace strait::bench {
namespace {

using strait::v1::AgentMessage;
using strait::v1::ControllerMessage;

// What the benchmark keeps of a snapshot: its tunnels' ESP lifetimes.
using SnapshotSummary = absl::flat_hash_map<std::string, int64_t>;

bool Satisfies(const SnapshotSummary& summary, const Expectation& want) {
  if (static_cast<int>(summary.size()) < want.min_tunnels) {
    return false;
  }
  if (want.tunnel.empty()) {
    return true;
  }
  auto it = summary.find(want.tunnel);
  return it != summary.end() && it->second == want.esp_lifetime_seconds;
}

// Callbacks from the sessions into the fleet.
class SessionObserver {
 public:
  virtual ~SessionObserver() = default;
  virtual void OnSnapshot(int node, SnapshotSummary summary, absl::Time acked_at) = 0;
  virtual void OnSessionDone(int node, const grpc::Status& status) = 0;
};

// One agent's session: Hello, then an ACK for every snapshot.
class Session : public grpc::ClientBidiReactor<AgentMessage, ControllerMessage> {
 public:
  Session(int node, std::string node_name, SessionObserver& observer)
      : node_(node), node_name_(std::move(node_name)), observer_(observer) {}

  void Start(strait::v1::AgentService::Stub& stub) {
    stub.async()->Session(&context_, this);
    AgentMessage hello;
    hello.mutable_hello()->set_node_name(node_name_);
    hello.mutable_hello()->set_agent_version("fanout_bench");
    Write(std::move(hello));
    StartRead(&incoming_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  // grpc::ClientBidiReactor
  void OnReadDone(bool ok) override {
    // Not ok: the stream ended; OnDone follows with its status.
    if (!ok) {
      return;
    }
    if (incoming_.has_snapshot()) {
      const strait::v1::Snapshot& snapshot = incoming_.snapshot();
      AgentMessage ack;
      ack.mutable_ack()->set_version(snapshot.version());
      ack.mutable_ack()->set_nonce(snapshot.nonce());
      const absl::Time acked_at = absl::Now();
      Write(std::move(ack));
      SnapshotSummary summary;
      summary.reserve(snapshot.tunnels_size());
      for (const strait::v1::NodeTunnel& tunnel : snapshot.tunnels()) {
        summary[tunnel.name()] = tunnel.spec().esp().lifetime().seconds();
      }
      observer_.OnSnapshot(node_, std::move(summary), acked_at);
    }
    StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    const AgentMessage* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      // Not ok: the stream is broken; OnDone reports why.
      if (!ok) {
        writes_.clear();
      }
      if (writes_.empty()) {
        writing_ = false;
      } else {
        next = &writes_.front();
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    }
  }

  void OnDone(const grpc::Status& status) override { observer_.OnSessionDone(node_, status); }

 private:
  // One write at a time on a stream: later ones queue.
  void Write(AgentMessage message) {
    const AgentMessage* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      writes_.push_back(std::move(message));
      if (!writing_) {
        writing_ = true;
        next = &writes_.front();
      }
    }
    // Outside the lock: a reaction may run before StartWrite returns.
    if (next != nullptr) {
      StartWrite(next);
    }
  }

  const int node_;
  const std::string node_name_;
  SessionObserver& observer_;
  grpc::ClientContext context_;
  ControllerMessage incoming_;
  absl::Mutex mu_;
  // The front element is being written while writing_; deque keeps its
  // address stable while others are appended.
  std::deque<AgentMessage> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
};

class AgentFleetImpl : public AgentFleet, public SessionObserver {
 public:
  AgentFleetImpl(std::vector<std::shared_ptr<grpc::Channel>> channels,
                 std::vector<std::string> node_names)
      : channels_(std::move(channels)), node_names_(std::move(node_names)) {
    nodes_.resize(node_names_.size());
    for (const auto& channel : channels_) {
      stubs_.push_back(strait::v1::AgentService::NewStub(channel));
    }
    for (int i = 0; i < static_cast<int>(node_names_.size()); ++i) {
      sessions_.push_back(std::make_unique<Session>(i, node_names_[i], *this));
    }
  }

  ~AgentFleetImpl() override {
    // Sessions must end before they are freed.
    if (started_ && !AllDone()) {
      Shutdown(absl::InfiniteFuture()).IgnoreError();
    }
  }

  // AgentFleet
  void Start() override {
    started_ = true;
    for (size_t i = 0; i < sessions_.size(); ++i) {
      sessions_[i]->Start(*stubs_[i % stubs_.size()]);
    }
  }

  void Expect(const std::vector<std::pair<int, Expectation>>& expectations) override {
    absl::MutexLock lock(&mu_);
    for (const auto& [node, want] : expectations) {
      NodeState& state = nodes_[node];
      if (state.want.has_value()) {
        --pending_;
      }
      if (Satisfies(state.summary, want)) {
        state.want.reset();
        state.met_at = absl::Now();
      } else {
        state.want = want;
        ++pending_;
      }
    }
  }

  absl::Status AwaitExpectations(absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    auto done = [this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ == 0 || !error_.ok(); };
    mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
    if (!error_.ok()) {
      return error_;
    }
    if (pending_ == 0) {
      return absl::OkStatus();
    }
    std::vector<std::string> waiting;
    for (size_t i = 0; i < nodes_.size() && waiting.size() < 5; ++i) {
      const NodeState& state = nodes_[i];
      if (!state.want.has_value()) {
        continue;
      }
      waiting.push_back(absl::StrCat(node_names_[i], " (", state.summary.size(), "/",
                                     state.want->min_tunnels, " tunnels, ", state.pushes,
                                     " pushes)"));
    }
    return absl::DeadlineExceededError(
        absl::StrCat(pending_, " nodes still wait for a snapshot: ", absl::StrJoin(waiting, ", "),
                     pending_ > 5 ? ", ..." : ""));
  }

  absl::Time MetAt(int node) const override {
    absl::MutexLock lock(&mu_);
    return nodes_[node].met_at;
  }

  int64_t Pushes(int node) const override {
    absl::MutexLock lock(&mu_);
    return nodes_[node].pushes;
  }

  int64_t TotalPushes() const override {
    absl::MutexLock lock(&mu_);
    return total_pushes_;
  }

  absl::Status Shutdown(absl::Time deadline) override {
    {
      absl::MutexLock lock(&mu_);
      shutting_down_ = true;
    }
    for (auto& session : sessions_) {
      session->Cancel();
    }
    absl::MutexLock lock(&mu_);
    auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ == static_cast<int>(sessions_.size());
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&all_done), deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat(sessions_.size() - done_, " sessions did not end after cancellation"));
    }
    return absl::OkStatus();
  }

  // SessionObserver
  void OnSnapshot(int node, SnapshotSummary summary, absl::Time acked_at) override {
    absl::MutexLock lock(&mu_);
    NodeState& state = nodes_[node];
    ++state.pushes;
    ++total_pushes_;
    state.summary = std::move(summary);
    if (state.want.has_value() && Satisfies(state.summary, *state.want)) {
      state.want.reset();
      state.met_at = acked_at;
      --pending_;
    }
  }

  void OnSessionDone(int node, const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    ++done_;
    if (!shutting_down_ && error_.ok()) {
      error_ = absl::UnavailableError(absl::StrCat(
          "session of ", node_names_[node], " ended early: ", static_cast<int>(status.error_code()),
          " ", status.error_message()));
    }
  }

 private:
  struct NodeState {
    int64_t pushes = 0;
    SnapshotSummary summary;
    std::optional<Expectation> want;
    absl::Time met_at;
  };

  bool AllDone() {
    absl::MutexLock lock(&mu_);
    return done_ == static_cast<int>(sessions_.size());
  }

  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<strait::v1::AgentService::Stub>> stubs_;
  const std::vector<std::string> node_names_;
  std::vector<std::unique_ptr<Session>> sessions_;
  bool started_ = false;

  mutable absl::Mutex mu_;
  std::vector<NodeState> nodes_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t total_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<AgentFleetPtr> CreateAgentFleet(const std::string& address,
                                               std::vector<std::string> node_names, int channels) {
  if (channels <= 0) {
    return absl::InvalidArgumentError("--channels must be positive");
  }
  if (node_names.empty()) {
    return absl::InvalidArgumentError("no nodes");
  }
  std::vector<std::shared_ptr<grpc::Channel>> out;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    // Separate connections: channels with equal arguments could share a
    // subchannel (and so one HTTP/2 connection) through the global pool.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("strait.bench.channel", i);
    out.push_back(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  return std::make_unique<AgentFleetImpl>(std::move(out), std::move(node_names));
}

}  // namespace strait::bench
