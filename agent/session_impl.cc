#include "agent/session_impl.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/backoff.h"
#include "agent/snapshot_secrets.h"
#include "common/logging.h"

namespace strait::agent {
namespace {

using strait::v1::AgentMessage;
using strait::v1::ControllerMessage;
using strait::v1::Snapshot;

constexpr int kKeepaliveTimeMs = 20 * 1000;
constexpr int kKeepaliveTimeoutMs = 10 * 1000;
// A node's share of a large fleet's intent can pass gRPC's default 4 MiB.
constexpr int kMaxSnapshotBytes = 64 * 1024 * 1024;
// While the controller cannot be reached, one attempt in this many is
// logged as a warning (the others at debug).
constexpr int64_t kFailureLogEvery = 10;

std::string CodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? absl::StrCat(static_cast<int>(code)) : name;
}

bool NotWriting(bool* writing) { return !*writing; }

}  // namespace

std::shared_ptr<grpc::Channel> CreateControllerChannel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The session stream may be quiet for long stretches; keep pinging.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(kMaxSnapshotBytes);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, credentials, args);
}

SessionImpl::SessionImpl(ChannelFactory channel_factory, SessionOptions options, Applier& applier,
                         StateStore& store, AgentMetrics* metrics)
    : channel_factory_(std::move(channel_factory)),
      options_(std::move(options)),
      applier_(applier),
      store_(store),
      metrics_(metrics) {
  applier_.SetStatusListener([this] {
    absl::MutexLock lock(&mu_);
    status_due_ = true;
    cv_.SignalAll();
  });
}

SessionImpl::~SessionImpl() {
  Shutdown();
  applier_.SetStatusListener(nullptr);
}

void SessionImpl::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || shutdown_) return;
  started_ = true;
  writer_thread_ = std::thread([this] { WriterLoop(); });
  session_thread_ = std::thread([this] { Run(); });
}

void SessionImpl::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_) {
      shutdown_ = true;
      cv_.SignalAll();
      if (context_ != nullptr && stream_ == nullptr) {
        // Still connecting: nothing to close cleanly.
        context_->TryCancel();
      }
      // The writer half-closes an open stream and the controller then ends
      // it; give it a moment before cutting it off.
      auto stream_gone = [this]()
                             ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return context_ == nullptr; };
      if (!mu_.AwaitWithTimeout(absl::Condition(&stream_gone), options_.shutdown_grace) &&
          context_ != nullptr) {
        context_->TryCancel();
      }
    }
  }
  if (session_thread_.joinable()) session_thread_.join();
  if (writer_thread_.joinable()) writer_thread_.join();
}

void SessionImpl::SetState(SessionState state) {
  if (metrics_ != nullptr) metrics_->SetSessionState(state);
}

void SessionImpl::Run() {
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  bool first = true;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) break;
    }
    if (!first && metrics_ != nullptr) metrics_->Reconnect();
    first = false;
    const bool healthy = RunOnce();
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) break;
    }
    SetState(SessionState::kDisconnected);
    if (healthy) backoff.Reset();
    const absl::Duration delay = backoff.Next(gen_);
    LOG_DEBUG("reconnecting to the controller")
        .With("node", options_.node_name)
        .With("controller", options_.controller)
        .With("delay", absl::FormatDuration(delay));
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), delay);
  }
  SetState(SessionState::kDisconnected);
}

bool SessionImpl::RunOnce() {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return false;
    context_ = &context;
  }
  SetState(SessionState::kConnecting);
  const absl::Time start = absl::Now();
  std::unique_ptr<strait::v1::AgentService::Stub> stub =
      strait::v1::AgentService::NewStub(channel_factory_());
  std::unique_ptr<Stream> stream = stub->Session(&context);

  const std::string last_version = applier_.AppliedVersion();
  AgentMessage hello;
  hello.mutable_hello()->set_node_name(options_.node_name);
  hello.mutable_hello()->set_last_applied_version(last_version);
  hello.mutable_hello()->set_agent_version(options_.agent_version);
  const bool connected = stream->Write(hello);
  if (connected) {
    absl::MutexLock lock(&mu_);
    if (shutdown_) context.TryCancel();  // Shutdown started while connecting.
    stream_ = stream.get();
    writes_closed_ = false;
    outbox_.clear();
    status_due_ = true;
    next_status_ = absl::Now() + options_.status_interval;
    cv_.SignalAll();
  }
  if (connected) {
    SetState(SessionState::kConnected);
    LOG_INFO("connected to the controller")
        .With("node", options_.node_name)
        .With("controller", options_.controller)
        .With("last_applied_version", last_version)
        .With("failed_attempts", failed_attempts_);
  }

  bool got_message = false;
  ControllerMessage message;
  while (connected && stream->Read(&message)) {
    got_message = true;
    if (message.has_snapshot()) {
      HandleSnapshot(message.snapshot());
      WipeSnapshotSecrets(message.mutable_snapshot());
    } else {
      // A message kind this agent does not know (a newer controller).
      LOG_DEBUG("unknown controller message ignored").With("node", options_.node_name);
    }
    message.Clear();
  }

  bool shutting_down;
  {
    // No more writes on this stream; wait for one in flight (a stream
    // whose reads have ended fails its writes at once, but cancel if not).
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
    outbox_.clear();
    status_due_ = false;
    if (!mu_.AwaitWithTimeout(absl::Condition(&NotWriting, &writing_), options_.shutdown_grace)) {
      context.TryCancel();
      mu_.Await(absl::Condition(&NotWriting, &writing_));
    }
    shutting_down = shutdown_;
  }
  const grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
  }
  const absl::Duration lasted = absl::Now() - start;
  if (shutting_down) {
    LOG_DEBUG("session closed")
        .With("node", options_.node_name)
        .With("code", CodeName(status.error_code()));
  } else if (connected) {
    LOG_WARNING("session with the controller ended")
        .With("node", options_.node_name)
        .With("controller", options_.controller)
        .With("code", CodeName(status.error_code()))
        .With("error", status.error_message())
        .With("duration", absl::FormatDuration(lasted));
  } else {
    // Logged when it starts and then every kFailureLogEvery attempts, not
    // at every retry of a long outage.
    ++failed_attempts_;
    const bool warn = failed_attempts_ == 1 || failed_attempts_ % kFailureLogEvery == 0;
    LogLine(warn ? LogLevel::kWarning : LogLevel::kDebug, "cannot reach the controller")
        .With("node", options_.node_name)
        .With("controller", options_.controller)
        .With("attempts", failed_attempts_)
        .With("code", CodeName(status.error_code()))
        .With("error", status.error_message());
  }
  if (connected) failed_attempts_ = 0;
  return got_message || lasted > options_.healthy_session;
}

void SessionImpl::HandleSnapshot(const Snapshot& snapshot) {
  AgentMessage reply;
  absl::Status status = applier_.Apply(snapshot);
  if (status.ok()) {
    if (metrics_ != nullptr) metrics_->SnapshotApplied();
    // Persisted before the ACK: what the controller sees acknowledged
    // survives a restart. A failed write is not a reason to refuse what
    // already runs; the next start resumes from an older version, and the
    // controller pushes again.
    if (absl::Status saved = store_.Save(snapshot); !saved.ok()) {
      if (metrics_ != nullptr) metrics_->StateWriteFailed();
      LOG_ERROR("cannot persist the applied snapshot")
          .With("node", options_.node_name)
          .With("version", snapshot.version())
          .With("error", saved.ToString());
    }
    reply.mutable_ack()->set_version(snapshot.version());
    reply.mutable_ack()->set_nonce(snapshot.nonce());
  } else {
    if (metrics_ != nullptr) metrics_->SnapshotRejected();
    LOG_WARNING("snapshot rejected")
        .With("node", options_.node_name)
        .With("version", snapshot.version())
        .With("kept_version", applier_.AppliedVersion())
        .With("error", status.message());
    reply.mutable_nack()->set_version(snapshot.version());
    reply.mutable_nack()->set_nonce(snapshot.nonce());
    reply.mutable_nack()->set_error(std::string(status.message()));
  }
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  outbox_.push_back(std::move(reply));
  status_due_ = true;
  cv_.SignalAll();
}

bool SessionImpl::HasWriteWork() const {
  if (stream_ == nullptr || writes_closed_) return false;
  return !outbox_.empty() || status_due_ || absl::Now() >= next_status_;
}

void SessionImpl::WriterLoop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    while (!shutdown_ && !HasWriteWork()) {
      const bool open = stream_ != nullptr && !writes_closed_;
      cv_.WaitWithDeadline(&mu_, open ? next_status_ : absl::InfiniteFuture());
    }
    Stream* stream = stream_;
    if (shutdown_) {
      if (stream != nullptr && !writes_closed_) {
        // Half-close: the controller ends the stream, and the session
        // thread's Read returns.
        writes_closed_ = true;
        writing_ = true;
        mu_.Unlock();
        stream->WritesDone();
        mu_.Lock();
        writing_ = false;
      }
      return;
    }
    AgentMessage message;
    if (!outbox_.empty()) {
      message = std::move(outbox_.front());
      outbox_.pop_front();
    } else {
      *message.mutable_status() = applier_.BuildStatusReport();
      status_due_ = false;
      next_status_ = absl::Now() + options_.status_interval;
    }
    writing_ = true;
    mu_.Unlock();
    const bool ok = stream->Write(message);
    mu_.Lock();
    writing_ = false;
    if (!ok && stream_ == stream) {
      // The stream is over; the session thread's Read sees it too.
      writes_closed_ = true;
    }
  }
}

}  // namespace strait::agent
