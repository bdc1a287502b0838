#include "dataplane/testing/fake_io.h"

#include <cstring>
#include <utility>

namespace strait::dataplane::testing {

void FakeDevice::Inject(std::vector<uint8_t> packet) {
  absl::MutexLock lock(&mu_);
  inbox_.push_back(std::move(packet));
}

std::vector<std::vector<uint8_t>> FakeDevice::written() {
  absl::MutexLock lock(&mu_);
  return written_;
}

size_t FakeDevice::written_count() {
  absl::MutexLock lock(&mu_);
  return written_.size();
}

void FakeDevice::set_fail_writes(bool fail) {
  absl::MutexLock lock(&mu_);
  fail_writes_ = fail;
}

absl::StatusOr<size_t> FakeDevice::Read(absl::Span<uint8_t> buffer, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !inbox_.empty(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return 0;
  std::vector<uint8_t> packet = std::move(inbox_.front());
  inbox_.pop_front();
  if (packet.size() > buffer.size()) return absl::ResourceExhaustedError("buffer too small");
  std::memcpy(buffer.data(), packet.data(), packet.size());
  return packet.size();
}

absl::Status FakeDevice::Write(absl::Span<const uint8_t> packet) {
  absl::MutexLock lock(&mu_);
  if (fail_writes_) return absl::UnavailableError("device down");
  written_.emplace_back(packet.begin(), packet.end());
  return absl::OkStatus();
}

void FakeSocket::set_forward(Forward forward) {
  absl::MutexLock lock(&mu_);
  forward_ = std::move(forward);
}

void FakeSocket::set_fail(bool fail) {
  absl::MutexLock lock(&mu_);
  fail_ = fail;
}

std::vector<FakeSocket::Sent> FakeSocket::sent() {
  absl::MutexLock lock(&mu_);
  return sent_;
}

FakeSocket::Sent FakeSocket::last() {
  absl::MutexLock lock(&mu_);
  return sent_.back();
}

size_t FakeSocket::sent_count() {
  absl::MutexLock lock(&mu_);
  return sent_.size();
}

absl::Status FakeSocket::Send(absl::Span<const uint8_t> payload, const UdpEndpoint& local,
                              const UdpEndpoint& remote) {
  Sent sent{std::vector<uint8_t>(payload.begin(), payload.end()), local, remote};
  Forward forward;
  {
    absl::MutexLock lock(&mu_);
    if (fail_) return absl::UnavailableError("network unreachable");
    sent_.push_back(sent);
    forward = forward_;
  }
  if (forward) forward(sent);
  return absl::OkStatus();
}

absl::Status FakeRoutes::AddRoute(const Selector& selector) {
  if (fail) return absl::PermissionDeniedError("no CAP_NET_ADMIN");
  added.push_back(selector);
  return absl::OkStatus();
}

absl::Status FakeRoutes::DeleteRoute(const Selector& selector) {
  deleted.push_back(selector);
  return absl::OkStatus();
}

}  // namespace strait::dataplane::testing
