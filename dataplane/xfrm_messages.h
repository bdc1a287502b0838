#ifndef STRAIT_DATAPLANE_XFRM_MESSAGES_H_
#define STRAIT_DATAPLANE_XFRM_MESSAGES_H_

// The XFRM netlink wire format of the Dataplane's types: validation that
// runs before anything is built, builders of the requests the kernel
// backend sends, parsers of what the kernel answers and announces, and the
// mapping of kernel errors onto Status. No I/O; xfrm_dataplane.cc does that.

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "dataplane/dataplane.h"

namespace strait::dataplane::xfrm {

// XFRMA_MARK: value and mask; a mask of 0 means no mark.
struct Mark {
  uint32_t value = 0;
  uint32_t mask = 0;
};

// Base of the default policy priorities (see DefaultPriority).
inline constexpr uint32_t kDefaultPriorityBase = 2000;

// The priority of a policy added with priority 0. XFRM prefers the lowest
// value, and among equal values the oldest policy, so a fixed default would
// let an older, wider policy shadow a narrower one. Instead:
//   2000 + 4 * (host bits of source + host bits of destination)
//        + 2 unless a port is given + 1 unless a protocol is given,
// which makes the more specific of two overlapping Strait policies win:
// 2000 (host to host, protocol and ports) to 2259 (IPv4 any to any) or
// 3027 (IPv6 any to any). The band sits behind hand-made policies
// (`ip xfrm policy add` defaults to 0, e.g. an operator's bypass) and well
// ahead of strongSwan's (68541 and up), so a co-resident charon cannot
// capture Strait's traffic by accident.
uint32_t DefaultPriority(const Selector& selector);

// InvalidArgument (or Unimplemented for transforms this backend does not
// know) naming the field, for what the kernel would refuse or misread.
absl::Status ValidateSelector(const Selector& selector);
absl::Status ValidatePolicy(const PolicyConfig& policy);
absl::Status ValidateSa(const SaConfig& sa);
absl::Status ValidateMark(uint32_t value, uint32_t mask);

// Builders. Each writes one request at the start of `buffer`, numbered
// `seq`, and returns its length; Internal when `buffer` is too small. All
// ask for an acknowledgement (NLM_F_ACK) except dumps. Inputs must have
// passed validation.
//
// XFRM_MSG_NEWSA or XFRM_MSG_UPDSA (`type`) for a tunnel-mode ESP SA. The
// buffer then holds key material: the caller wipes it.
absl::StatusOr<size_t> BuildAddSa(uint16_t type, const SaConfig& sa, uint32_t seq,
                                  absl::Span<uint8_t> buffer);
// XFRM_MSG_DELSA or XFRM_MSG_GETSA (`type`) of one SA.
absl::StatusOr<size_t> BuildSaById(uint16_t type, const SaId& id, Mark mark, uint32_t seq,
                                   absl::Span<uint8_t> buffer);
// XFRM_MSG_UPDPOLICY (add or replace) with one tunnel-mode ESP template;
// priority 0 becomes DefaultPriority(policy.selector).
absl::StatusOr<size_t> BuildAddPolicy(const PolicyConfig& policy, uint32_t seq,
                                      absl::Span<uint8_t> buffer);
// XFRM_MSG_DELPOLICY by selector, direction, mark and if_id.
absl::StatusOr<size_t> BuildDeletePolicy(const Selector& selector, Direction direction, Mark mark,
                                         uint32_t if_id, uint32_t seq, absl::Span<uint8_t> buffer);
// A dump (NLM_F_DUMP) of XFRM_MSG_GETSA or XFRM_MSG_GETPOLICY (`type`).
absl::StatusOr<size_t> BuildDump(uint16_t type, uint32_t seq, absl::Span<uint8_t> buffer);

// Parsers of the kernel's messages; InvalidArgument when a message is
// short or holds what the Dataplane types cannot say.
//
// An XFRM_MSG_NEWSA (dump entry or GETSA answer) without its keys, which
// are never read.
absl::StatusOr<SaConfig> ParseSa(const nlmsghdr& message);
absl::StatusOr<SaCounters> ParseSaCounters(const nlmsghdr& message);
// An XFRM_MSG_NEWPOLICY; tunnel addresses and reqid come from its first
// template (reqid 0 when it has none).
absl::StatusOr<PolicyConfig> ParsePolicy(const nlmsghdr& message);
// XFRM_MSG_EXPIRE and XFRM_MSG_ACQUIRE; nullopt for other types.
absl::StatusOr<std::optional<DataplaneEvent>> ParseEvent(const nlmsghdr& message);

// The kernel's `error` (a positive errno) for `operation` as a Status:
// EEXIST AlreadyExists, ESRCH/ENOENT NotFound, EINVAL InvalidArgument,
// EPERM/EACCES PermissionDenied, EPROTONOSUPPORT/ENOSYS/EAFNOSUPPORT
// Unimplemented (the kernel lacks ESP or the algorithm), others Internal.
// The message holds the operation, strerror and the kernel's own reason
// (extended ACK) when it gave one.
absl::Status KernelError(int error, absl::string_view operation, absl::string_view kernel_reason);

std::string AddressToString(const Address& address);
std::string SelectorToString(const Selector& selector);
// "spi 0x0000c001 dst 192.0.2.2".
std::string SaIdToString(const SaId& id);

}  // namespace strait::dataplane::xfrm

#endif  // STRAIT_DATAPLANE_XFRM_MESSAGES_H_
