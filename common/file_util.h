#ifndef STRAIT_COMMON_FILE_UTIL_H_
#define STRAIT_COMMON_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strait {

// Writes `contents` to `path` atomically and durably: a temporary file in the
// same directory with `mode`, fsync, rename, fsync of the directory. A crash
// leaves either the old or the new file, never a torn one.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents, int mode);

// Reads a whole file. NotFound when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Creates `path` (and parents) with `mode` when missing.
absl::Status MakeDirs(const std::string& path, int mode);

// Maps errno to a canonical status with `context` and strerror in the message.
absl::Status ErrnoToStatus(int err, absl::string_view context);

}  // namespace strait

#endif  // STRAIT_COMMON_FILE_UTIL_H_
