#ifndef STRAIT_COMMON_STATUS_MACROS_H_
#define STRAIT_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function when `expr` yields a non-OK status.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status strait_status_ = (expr);          \
    if (!strait_status_.ok()) return strait_status_; \
  } while (0)

#define STRAIT_CONCAT_INNER_(a, b) a##b
#define STRAIT_CONCAT_(a, b) STRAIT_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(auto x, Foo()): declares/assigns `lhs` from the value of
// a StatusOr, or returns its status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  STRAIT_ASSIGN_OR_RETURN_IMPL_(STRAIT_CONCAT_(strait_statusor_, __LINE__), lhs, rexpr)

#define STRAIT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // STRAIT_COMMON_STATUS_MACROS_H_
