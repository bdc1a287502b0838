#ifndef STRAIT_AGENT_SESSION_H_
#define STRAIT_AGENT_SESSION_H_

// The agent's session with the controller (strait.v1.AgentService/Session):
// it says Hello with the version it runs, applies every pushed snapshot and
// ACKs or NACKs it, reports tunnel status, and reconnects whenever the
// stream ends, until it is shut down.

#include <memory>

namespace strait::agent {

class Session {
 public:
  virtual ~Session() = default;

  // Starts connecting in the background and returns at once. Call once.
  virtual void Start() = 0;

  // Ends the session: half-closes the stream so that the controller ends it
  // cleanly, cancels it when the controller does not within a short grace
  // period, and returns once the session's threads are done. Idempotent.
  virtual void Shutdown() = 0;
};

using SessionPtr = std::unique_ptr<Session>;

}  // namespace strait::agent

#endif  // STRAIT_AGENT_SESSION_H_
