#ifndef STRAIT_DATAPLANE_FAKE_DATAPLANE_H_
#define STRAIT_DATAPLANE_FAKE_DATAPLANE_H_

// A Dataplane that keeps everything in memory (name "fake"): what the agent
// runs on until a real backend is wired in, and what tests inspect. It
// enforces the interface's AlreadyExists/NotFound contract, records every
// call, keeps the SAs' keys (so that a test can check that one end's
// inbound SA mirrors the other end's outbound SA), and lets a test inject
// errors and events. Thread-safe.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/dataplane.h"

namespace strait::dataplane {

class FakeDataplane : public Dataplane {
 public:
  // Keeps the last `max_calls` entries of the call log (the agent runs on
  // this backend for now, so the log must not grow without bound).
  explicit FakeDataplane(size_t max_calls = 10000) : max_calls_(max_calls) {}
  FakeDataplane(const FakeDataplane&) = delete;
  FakeDataplane& operator=(const FakeDataplane&) = delete;

  // Dataplane
  std::string name() const override { return "fake"; }
  absl::Status AddSa(const SaConfig& sa) override;
  absl::Status UpdateSa(const SaConfig& sa) override;
  absl::Status DeleteSa(const SaId& id) override;
  absl::Status AddPolicy(const PolicyConfig& policy) override;
  absl::Status AddPolicies(const std::vector<PolicyConfig>& policies) override;
  absl::Status DeletePolicy(const Selector& selector, Direction direction, uint32_t mark = 0,
                            uint32_t mark_mask = 0, uint32_t if_id = 0) override;
  absl::StatusOr<SaCounters> GetCounters(const SaId& id) override;
  absl::StatusOr<InstalledState> List() override;
  void Subscribe(std::function<void(const DataplaneEvent&)> callback) override;

  // For tests.

  // The installed SA with `id`, keys included.
  std::optional<SaConfig> GetSa(const SaId& id) const;
  // Every installed SA (keys included) and policy, in a stable order.
  std::vector<SaConfig> Sas() const;
  std::vector<PolicyConfig> Policies() const;
  // One line per call, in order: "AddSa 192.0.2.1/0x0000abcd", "DeleteSa ...",
  // "AddPolicy out 10.1.0.0/24->10.2.0.0/24 reqid=1", "DeletePolicy ...",
  // "UpdateSa ...", "GetCounters ...", "List", with " -> CODE" appended when
  // the call failed. The last max_calls only.
  std::vector<std::string> Calls() const;
  // Makes the next call to `method` ("AddSa", "AddPolicy", ...; AddPolicies
  // consumes AddPolicy errors) fail with `status` (not OK) and change
  // nothing. Several calls queue up.
  void FailNext(absl::string_view method, absl::Status status);
  // What GetCounters returns for `id` from now on (zeros until set).
  void SetCounters(const SaId& id, const SaCounters& counters);
  // Calls the subscriber (if any) with `event`, from the calling thread.
  void Emit(const DataplaneEvent& event);

 private:
  // The injected error for `method`, if any (consumed).
  std::optional<absl::Status> TakeFailure(absl::string_view method)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Record(std::string call, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AddPolicyLocked(const PolicyConfig& policy) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<SaId, SaConfig> sas_ ABSL_GUARDED_BY(mu_);
  std::map<SaId, SaCounters> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<PolicyConfig> policies_ ABSL_GUARDED_BY(mu_);  // In insertion order.
  const size_t max_calls_;
  std::deque<std::string> calls_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::deque<absl::Status>> failures_ ABSL_GUARDED_BY(mu_);
  std::function<void(const DataplaneEvent&)> subscriber_ ABSL_GUARDED_BY(mu_);
};

// "192.0.2.1" or "2001:db8::1"; "?" for anything else. For logs and tests.
std::string FormatAddress(const Address& address);
// "10.1.0.0/24->10.2.0.0/24", with "proto 6 port 80->443" when set.
std::string FormatSelector(const Selector& selector);

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_FAKE_DATAPLANE_H_
