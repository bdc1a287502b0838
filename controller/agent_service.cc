#include "controller/agent_service.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/intent/secrets.h"
#include "common/intent/validation.h"
#include "common/logging.h"
#include "common/secret.h"

namespace strait::controller {
namespace {

using strait::v1::AgentMessage;
using strait::v1::ControllerMessage;
using strait::v1::Snapshot;

constexpr absl::string_view kSession = "Session";

grpc::Status InvalidArgument(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// The revision in a "<revision>.<store id>" version, or -1 when it has none.
int64_t VersionRevision(absl::string_view version) {
  int64_t revision = 0;
  if (!absl::SimpleAtoi(version.substr(0, version.find('.')), &revision)) {
    return -1;
  }
  return revision;
}

std::string ValidateNodeName(const std::string& name) {
  if (name.empty()) {
    return "hello.node_name: required";
  }
  if (!intent::IsDnsLabel(name)) {
    return absl::StrCat("hello.node_name: \"", absl::CHexEscape(name),
                        "\" is not a DNS label (1-63 lowercase letters, digits and '-', "
                        "starting and ending with a letter or digit)");
  }
  return "";
}

// The snapshot in `message` holds PSK values: wipe them once gRPC is done
// with the message.
void WipeSnapshot(ControllerMessage* message) {
  if (!message->has_snapshot()) {
    return;
  }
  intent::WipeSnapshotSecrets(message->mutable_snapshot());
  message->Clear();
}

}  // namespace

// One agent's session. Reads are handled one at a time in OnReadDone, which
// calls Core (memory only: Core never waits for the disk outside Apply and
// Delete). Snapshots arrive through OnSnapshot from the committing thread
// and only queue: at most one write is in flight, and the latest snapshot
// not yet sent waits in `pending_`.
//
// Teardown: OnDone calls Core::Disconnect, after which Core makes no more
// OnSnapshot calls, and only then frees the reactor. OnSnapshot calls that
// race with the end of the stream find `finish_requested_` and drop the
// snapshot.
class AgentServiceImpl::SessionReactor
    : public grpc::ServerBidiReactor<AgentMessage, ControllerMessage>,
      public SnapshotListener {
 public:
  SessionReactor(AgentServiceImpl& service, grpc::CallbackServerContext* context)
      : service_(service), peer_(context->peer()) {
    absl::BitGen gen;
    nonce_prefix_ = absl::StrCat(absl::Hex(absl::Uniform<uint32_t>(gen), absl::kZeroPad8));
  }

  void Start() {
    absl::MutexLock lock(&mu_);
    if (!finish_requested_) {
      StartRead(&in_);
    }
  }

  // Ends the stream with `status` once the write in flight is done.
  void Close(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(std::move(status));
  }

  // SnapshotListener
  void OnSnapshot(std::shared_ptr<const Snapshot> snapshot) override {
    absl::MutexLock lock(&mu_);
    OfferLocked(std::move(snapshot));
  }

  // grpc::ServerBidiReactor
  void OnReadDone(bool ok) override {
    if (!ok) {
      // The agent closed its side (or the stream broke; OnCancel follows).
      Close(grpc::Status::OK);
      return;
    }
    grpc::Status status = Handle(in_);
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      LOG_WARNING("agent session refused")
          .With("node", node_)
          .With("peer", peer_)
          .With("code", GrpcCodeName(status.error_code()))
          .With("error", status.error_message());
      FinishLocked(std::move(status));
      return;
    }
    if (!finish_requested_) {
      StartRead(&in_);
    }
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    WipeSnapshot(&out_);
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "session: write failed"));
    }
    MaybeWriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    int64_t session_id = 0;
    bool connected = false;
    grpc::StatusCode code;
    {
      absl::MutexLock lock(&mu_);
      session_id = session_id_;
      connected = connected_;
      code = final_code_;
    }
    if (connected) {
      service_.core_.Disconnect(session_id);
      LOG_DEBUG("agent session ended")
          .With("node", node_)
          .With("peer", peer_)
          .With("code", GrpcCodeName(code));
    }
    service_.requests_.Count(kSession, code);
    service_.Unregister(this);
    delete this;
  }

 private:
  // Returns the error that ends the session, or OK.
  grpc::Status Handle(const AgentMessage& message) {
    bool connected;
    int64_t session_id;
    {
      absl::MutexLock lock(&mu_);
      connected = connected_;
      session_id = session_id_;
    }
    if (!connected && message.kind_case() != AgentMessage::kHello) {
      return InvalidArgument("hello: the first message of a session must be a hello");
    }
    switch (message.kind_case()) {
      case AgentMessage::kHello:
        if (connected) {
          return InvalidArgument("hello: sent twice in one session");
        }
        return HandleHello(message.hello());
      case AgentMessage::kAck:
        if (IsCurrentNonce(message.ack().nonce())) {
          service_.core_.OnAck(session_id, message.ack());
        } else {
          LOG_DEBUG("stale ack ignored")
              .With("node", node_)
              .With("version", message.ack().version())
              .With("nonce", message.ack().nonce());
        }
        return grpc::Status::OK;
      case AgentMessage::kNack:
        if (IsCurrentNonce(message.nack().nonce())) {
          // Core logs the NACK and counts it.
          LOG_DEBUG("nack")
              .With("node", node_)
              .With("version", message.nack().version())
              .With("error", message.nack().error());
          service_.core_.OnNack(session_id, message.nack());
        } else {
          LOG_DEBUG("stale nack ignored")
              .With("node", node_)
              .With("version", message.nack().version())
              .With("nonce", message.nack().nonce());
        }
        return grpc::Status::OK;
      case AgentMessage::kStatus:
        service_.core_.OnStatus(session_id, message.status());
        return grpc::Status::OK;
      case AgentMessage::KIND_NOT_SET:
        // A message kind this controller does not know (a newer agent).
        LOG_DEBUG("unknown agent message ignored").With("node", node_);
        return grpc::Status::OK;
    }
    return grpc::Status::OK;
  }

  grpc::Status HandleHello(const strait::v1::Hello& hello) {
    std::string error = ValidateNodeName(hello.node_name());
    if (!error.empty()) {
      return InvalidArgument(std::move(error));
    }
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) {
        return grpc::Status::OK;  // shutting down
      }
    }
    // Read by this reaction and by OnDone only, which never overlap.
    node_ = hello.node_name();
    int64_t session_id = 0;
    std::shared_ptr<const Snapshot> snapshot =
        service_.core_.Connect(node_, hello.last_applied_version(), peer_, this, &session_id);
    // Core logs the connection; this adds what only the session knows.
    LOG_DEBUG("agent session started")
        .With("node", node_)
        .With("peer", peer_)
        .With("agent_version", hello.agent_version())
        .With("last_applied_version", hello.last_applied_version())
        .With("push", snapshot != nullptr ? snapshot->version() : std::string("none"));
    absl::MutexLock lock(&mu_);
    session_id_ = session_id;
    connected_ = true;
    if (snapshot != nullptr) {
      OfferLocked(std::move(snapshot));
    }
    return grpc::Status::OK;
  }

  bool IsCurrentNonce(const std::string& nonce) {
    absl::MutexLock lock(&mu_);
    return !last_nonce_.empty() && nonce == last_nonce_;
  }

  // Makes `snapshot` the next one to send. Snapshots can reach the session
  // out of order (Connect's result races with the first OnSnapshot), so one
  // older than the last accepted is dropped.
  void OfferLocked(std::shared_ptr<const Snapshot> snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_ || snapshot == nullptr) {
      return;
    }
    int64_t revision = VersionRevision(snapshot->version());
    if (revision >= 0 && revision <= last_offered_revision_) {
      return;
    }
    if (revision >= 0) {
      last_offered_revision_ = revision;
    }
    pending_ = std::move(snapshot);
    MaybeWriteLocked();
  }

  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) {
      return;
    }
    finish_requested_ = true;
    final_status_ = std::move(status);
    pending_.reset();
    MaybeWriteLocked();
  }

  // Starts the next push, or the deferred Finish once no write is in
  // flight (Finish must not overlap a write).
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_) {
      return;
    }
    if (finish_requested_) {
      if (!finished_) {
        finished_ = true;
        final_code_ = final_status_.error_code();
        Finish(final_status_);
      }
      return;
    }
    if (pending_ == nullptr) {
      return;
    }
    Snapshot* snapshot = out_.mutable_snapshot();
    *snapshot = *pending_;
    pending_.reset();
    last_nonce_ = absl::StrCat(nonce_prefix_, "-", ++pushes_);
    snapshot->set_nonce(last_nonce_);
    LOG_DEBUG("snapshot pushed")
        .With("node", node_)
        .With("version", snapshot->version())
        .With("nonce", last_nonce_)
        .With("tunnels", snapshot->tunnels_size());
    writing_ = true;
    StartWrite(&out_);
  }

  AgentServiceImpl& service_;
  const std::string peer_;
  std::string nonce_prefix_;
  // Written by the Hello reaction before Connect; read by later reactions
  // (which the read loop orders after it) and by OnDone.
  std::string node_;
  // The message being read; only reactions touch it, one at a time.
  AgentMessage in_;

  absl::Mutex mu_;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  int64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const Snapshot> pending_ ABSL_GUARDED_BY(mu_);
  int64_t last_offered_revision_ ABSL_GUARDED_BY(mu_) = -1;
  // The message being written; gRPC reads it until OnWriteDone.
  ControllerMessage out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_nonce_ ABSL_GUARDED_BY(mu_);
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  grpc::StatusCode final_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
};

AgentServiceImpl::AgentServiceImpl(Core& core, prometheus::Registry* registry)
    : core_(core), requests_(registry) {}

AgentServiceImpl::~AgentServiceImpl() {
  BeginShutdown();
  // grpc::Server::Shutdown returns only once every reactor is done, so this
  // does not wait in practice; it guards against a wrong order.
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(this, &AgentServiceImpl::NoSessions),
                            absl::Seconds(10))) {
    LOG_ERROR("agent sessions still open at service destruction")
        .With("count", static_cast<int64_t>(sessions_.size()));
  }
}

void AgentServiceImpl::BeginShutdown() {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    return;
  }
  shutting_down_ = true;
  for (SessionReactor* session : sessions_) {
    session->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller shutting down"));
  }
}

size_t AgentServiceImpl::SessionCount() {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

void AgentServiceImpl::Unregister(SessionReactor* session) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(session);
}

grpc::ServerBidiReactor<AgentMessage, ControllerMessage>* AgentServiceImpl::Session(
    grpc::CallbackServerContext* context) {
  auto* session = new SessionReactor(*this, context);
  bool refused = false;
  {
    absl::MutexLock lock(&mu_);
    sessions_.insert(session);
    refused = shutting_down_;
  }
  if (refused) {
    session->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller shutting down"));
  } else {
    session->Start();
  }
  return session;
}

}  // namespace strait::controller
