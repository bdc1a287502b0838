#include "dataplane/fake_dataplane.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strait::dataplane {
namespace {

std::string SaName(const SaId& id) {
  return absl::StrFormat("%s/0x%08x", FormatAddress(id.destination), id.spi);
}

bool SamePolicy(const PolicyConfig& p, const Selector& selector, Direction direction, uint32_t mark,
                uint32_t mark_mask) {
  return p.selector == selector && p.direction == direction && p.mark == mark &&
         p.mark_mask == mark_mask;
}

bool ValidAddress(const Address& a) { return a.size() == 4 || a.size() == 16; }

}  // namespace

std::string FormatAddress(const Address& address) {
  char buf[INET6_ADDRSTRLEN] = {};
  const int family = address.size() == 4 ? AF_INET : address.size() == 16 ? AF_INET6 : 0;
  if (family == 0 || inet_ntop(family, address.data(), buf, sizeof(buf)) == nullptr) return "?";
  return buf;
}

std::string FormatSelector(const Selector& s) {
  std::string out = absl::StrCat(FormatAddress(s.source), "/", s.source_prefix, "->",
                                 FormatAddress(s.destination), "/", s.destination_prefix);
  if (s.ip_protocol != 0) absl::StrAppend(&out, " proto ", s.ip_protocol);
  if (s.source_port != 0 || s.destination_port != 0) {
    absl::StrAppend(&out, " port ", s.source_port, "->", s.destination_port);
  }
  return out;
}

std::optional<absl::Status> FakeDataplane::TakeFailure(absl::string_view method) {
  auto it = failures_.find(method);
  if (it == failures_.end() || it->second.empty()) return std::nullopt;
  absl::Status status = std::move(it->second.front());
  it->second.pop_front();
  return status;
}

absl::Status FakeDataplane::Record(std::string call, absl::Status status) {
  if (!status.ok()) absl::StrAppend(&call, " -> ", absl::StatusCodeToString(status.code()));
  calls_.push_back(std::move(call));
  while (calls_.size() > max_calls_) calls_.pop_front();
  return status;
}

absl::Status FakeDataplane::AddSa(const SaConfig& sa) {
  absl::MutexLock lock(&mu_);
  std::string call = absl::StrCat("AddSa ", SaName(sa.id));
  if (std::optional<absl::Status> injected = TakeFailure("AddSa")) {
    return Record(std::move(call), *std::move(injected));
  }
  if (!ValidAddress(sa.id.destination) || sa.source.size() != sa.id.destination.size()) {
    return Record(std::move(call), absl::InvalidArgumentError("bad SA addresses"));
  }
  if (sas_.count(sa.id) != 0) {
    return Record(std::move(call), absl::AlreadyExistsError(SaName(sa.id)));
  }
  sas_.emplace(sa.id, sa);
  return Record(std::move(call), absl::OkStatus());
}

absl::Status FakeDataplane::UpdateSa(const SaConfig& sa) {
  absl::MutexLock lock(&mu_);
  std::string call = absl::StrCat("UpdateSa ", SaName(sa.id));
  if (std::optional<absl::Status> injected = TakeFailure("UpdateSa")) {
    return Record(std::move(call), *std::move(injected));
  }
  auto it = sas_.find(sa.id);
  if (it == sas_.end()) return Record(std::move(call), absl::NotFoundError(SaName(sa.id)));
  it->second.soft = sa.soft;
  it->second.hard = sa.hard;
  it->second.encapsulation = sa.encapsulation;
  return Record(std::move(call), absl::OkStatus());
}

absl::Status FakeDataplane::DeleteSa(const SaId& id) {
  absl::MutexLock lock(&mu_);
  std::string call = absl::StrCat("DeleteSa ", SaName(id));
  if (std::optional<absl::Status> injected = TakeFailure("DeleteSa")) {
    return Record(std::move(call), *std::move(injected));
  }
  if (sas_.erase(id) == 0) return Record(std::move(call), absl::NotFoundError(SaName(id)));
  counters_.erase(id);
  return Record(std::move(call), absl::OkStatus());
}

absl::Status FakeDataplane::AddPolicyLocked(const PolicyConfig& policy) {
  std::string call = absl::StrCat("AddPolicy ", DirectionName(policy.direction), " ",
                                  FormatSelector(policy.selector), " reqid=", policy.reqid);
  if (std::optional<absl::Status> injected = TakeFailure("AddPolicy")) {
    return Record(std::move(call), *std::move(injected));
  }
  const Selector& s = policy.selector;
  if (!ValidAddress(s.source) || s.source.size() != s.destination.size() ||
      s.source_prefix > s.source.size() * 8 || s.destination_prefix > s.destination.size() * 8 ||
      !ValidAddress(policy.tunnel_source) ||
      policy.tunnel_source.size() != policy.tunnel_destination.size()) {
    return Record(std::move(call), absl::InvalidArgumentError("bad policy"));
  }
  auto it = std::find_if(policies_.begin(), policies_.end(), [&](const PolicyConfig& p) {
    return SamePolicy(p, policy.selector, policy.direction, policy.mark, policy.mark_mask);
  });
  if (it != policies_.end()) {
    *it = policy;
  } else {
    policies_.push_back(policy);
  }
  return Record(std::move(call), absl::OkStatus());
}

absl::Status FakeDataplane::AddPolicy(const PolicyConfig& policy) {
  absl::MutexLock lock(&mu_);
  return AddPolicyLocked(policy);
}

absl::Status FakeDataplane::AddPolicies(const std::vector<PolicyConfig>& policies) {
  absl::MutexLock lock(&mu_);
  // All or nothing, as a batch would be.
  const std::vector<PolicyConfig> before = policies_;
  for (const PolicyConfig& p : policies) {
    if (absl::Status s = AddPolicyLocked(p); !s.ok()) {
      policies_ = before;
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FakeDataplane::DeletePolicy(const Selector& selector, Direction direction,
                                         uint32_t mark, uint32_t mark_mask, uint32_t /*if_id*/) {
  absl::MutexLock lock(&mu_);
  std::string call =
      absl::StrCat("DeletePolicy ", DirectionName(direction), " ", FormatSelector(selector));
  if (std::optional<absl::Status> injected = TakeFailure("DeletePolicy")) {
    return Record(std::move(call), *std::move(injected));
  }
  auto it = std::find_if(policies_.begin(), policies_.end(), [&](const PolicyConfig& p) {
    return SamePolicy(p, selector, direction, mark, mark_mask);
  });
  if (it == policies_.end()) {
    return Record(std::move(call), absl::NotFoundError(FormatSelector(selector)));
  }
  policies_.erase(it);
  return Record(std::move(call), absl::OkStatus());
}

absl::StatusOr<SaCounters> FakeDataplane::GetCounters(const SaId& id) {
  absl::MutexLock lock(&mu_);
  std::string call = absl::StrCat("GetCounters ", SaName(id));
  if (std::optional<absl::Status> injected = TakeFailure("GetCounters")) {
    return Record(std::move(call), *std::move(injected));
  }
  if (sas_.count(id) == 0) return Record(std::move(call), absl::NotFoundError(SaName(id)));
  Record(std::move(call), absl::OkStatus()).IgnoreError();
  auto it = counters_.find(id);
  return it == counters_.end() ? SaCounters{} : it->second;
}

absl::StatusOr<InstalledState> FakeDataplane::List() {
  absl::MutexLock lock(&mu_);
  if (std::optional<absl::Status> injected = TakeFailure("List")) {
    return Record("List", *std::move(injected));
  }
  InstalledState state;
  for (const auto& [id, sa] : sas_) {
    SaConfig copy = sa;
    copy.encr_key = Secret();
    copy.integ_key = Secret();
    state.sas.push_back(std::move(copy));
  }
  state.policies = policies_;
  Record("List", absl::OkStatus()).IgnoreError();
  return state;
}

void FakeDataplane::Subscribe(std::function<void(const DataplaneEvent&)> callback) {
  absl::MutexLock lock(&mu_);
  subscriber_ = std::move(callback);
}

std::optional<SaConfig> FakeDataplane::GetSa(const SaId& id) const {
  absl::MutexLock lock(&mu_);
  auto it = sas_.find(id);
  if (it == sas_.end()) return std::nullopt;
  return it->second;
}

std::vector<SaConfig> FakeDataplane::Sas() const {
  absl::MutexLock lock(&mu_);
  std::vector<SaConfig> out;
  for (const auto& [id, sa] : sas_) out.push_back(sa);
  return out;
}

std::vector<PolicyConfig> FakeDataplane::Policies() const {
  absl::MutexLock lock(&mu_);
  return policies_;
}

std::vector<std::string> FakeDataplane::Calls() const {
  absl::MutexLock lock(&mu_);
  return std::vector<std::string>(calls_.begin(), calls_.end());
}

void FakeDataplane::FailNext(absl::string_view method, absl::Status status) {
  if (status.ok()) return;  // Nothing to inject.
  absl::MutexLock lock(&mu_);
  failures_[method].push_back(std::move(status));
}

void FakeDataplane::SetCounters(const SaId& id, const SaCounters& counters) {
  absl::MutexLock lock(&mu_);
  counters_[id] = counters;
}

void FakeDataplane::Emit(const DataplaneEvent& event) {
  std::function<void(const DataplaneEvent&)> subscriber;
  {
    absl::MutexLock lock(&mu_);
    subscriber = subscriber_;
  }
  if (subscriber) subscriber(event);
}

}  // namespace strait::dataplane
