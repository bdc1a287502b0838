#ifndef STRAIT_AGENT_SESSION_IMPL_H_
#define STRAIT_AGENT_SESSION_IMPL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/applier.h"
#include "agent/metrics.h"
#include "agent/session.h"
#include "agent/state_store.h"
#include "grpcpp/grpcpp.h"
#include "proto/strait/v1/agent.grpc.pb.h"

namespace strait::agent {

struct SessionOptions {
  // This agent's node (a DNS label), sent in Hello.
  std::string node_name;
  // Sent in Hello, for operators.
  std::string agent_version;
  // For log lines only: the channel already knows where to go.
  std::string controller;
  // A status report goes out this long after the previous one at the
  // latest (and at once after connecting, after each snapshot and whenever
  // the applier's status changes).
  absl::Duration status_interval = absl::Seconds(30);
  // Reconnect delays: exponential with full jitter (see Backoff).
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(30);
  // A session that lasted this long, or received a message, was good: the
  // next reconnect starts from `initial_backoff` again.
  absl::Duration healthy_session = absl::Seconds(10);
  // How long Shutdown waits for the controller to end a half-closed stream
  // before cancelling it.
  absl::Duration shutdown_grace = absl::Milliseconds(500);
};

// A new channel to the controller: `target` is "host:port" or
// "unix:///path"; keepalive pings every 20 s (10 s timeout) detect a
// controller that went away without closing the connection. The channel
// has its own subchannels, so that it connects at once instead of waiting
// out the reconnect backoff of an earlier channel to the same address.
std::shared_ptr<grpc::Channel> CreateControllerChannel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials);

// Makes a fresh channel for each connection attempt: the session's own
// backoff paces attempts, and gRPC's must not add to it.
using ChannelFactory = std::function<std::shared_ptr<grpc::Channel>()>;

// A synchronous bidirectional stream driven by two threads: the session
// thread connects, sends Hello and reads (applying each snapshot, which
// includes the disk write, on that thread); the writer thread sends what
// the session thread queues (ACK/NACK) and the status reports, one write at
// a time.
class SessionImpl : public Session {
 public:
  // `applier` and `store` hold the node's intent; `metrics` may be null. All
  // must outlive the session. Registers itself as the applier's status
  // listener.
  SessionImpl(ChannelFactory channel_factory, SessionOptions options, Applier& applier,
              StateStore& store, AgentMetrics* metrics);
  ~SessionImpl() override;

  // Session
  void Start() override;
  void Shutdown() override;

 private:
  using Stream = grpc::ClientReaderWriter<strait::v1::AgentMessage, strait::v1::ControllerMessage>;

  void Run();
  // One stream, from connecting to its end. Returns whether it was good
  // (see SessionOptions::healthy_session).
  bool RunOnce();
  void HandleSnapshot(const strait::v1::Snapshot& snapshot);
  void WriterLoop();
  bool HasWriteWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(SessionState state);

  const ChannelFactory channel_factory_;
  const SessionOptions options_;
  Applier& applier_;
  StateStore& store_;
  AgentMetrics* const metrics_;
  // Session thread only.
  absl::BitGen gen_;
  int64_t failed_attempts_ = 0;  // in a row

  absl::Mutex mu_;
  absl::CondVar cv_;  // wakes the writer
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  // The open stream's context, for TryCancel; null between streams.
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Set while the writer may write on the stream.
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  // No more writes on `stream_` (half-closed, or a write failed).
  bool writes_closed_ ABSL_GUARDED_BY(mu_) = false;
  // The writer is inside Write or WritesDone, outside the lock.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<strait::v1::AgentMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool status_due_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_status_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();

  std::thread session_thread_;
  std::thread writer_thread_;
};

}  // namespace strait::agent

#endif  // STRAIT_AGENT_SESSION_IMPL_H_
