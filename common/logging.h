#ifndef STRAIT_COMMON_LOGGING_H_
#define STRAIT_COMMON_LOGGING_H_

// Leveled, structured logging: one line per event, in logfmt, on stderr:
//
//   ts=2026-11-27T02:44:29.123Z level=info msg="tunnel applied" tunnel=a node=b
//
// Usage:
//   LOG_INFO("tunnel applied").With("tunnel", name).With("node", node);
//
// The line is written when the temporary is destroyed, at the end of the
// full expression. Secrets must never be passed to With().

#include <cstdint>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace strait {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning"/"warn" or "error".
bool ParseLogLevel(absl::string_view text, LogLevel* level);
void SetLogLevel(LogLevel level);
// Parses and sets the level from a --log-level value; InvalidArgument naming
// the accepted levels otherwise.
absl::Status SetLogLevelFromFlag(absl::string_view text);
LogLevel GetLogLevel();
bool LogEnabled(LogLevel level);

class LogLine {
 public:
  LogLine(LogLevel level, absl::string_view msg);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  LogLine& With(absl::string_view key, absl::string_view value);
  LogLine& With(absl::string_view key, const char* value) {
    return With(key, absl::string_view(value));
  }
  LogLine& With(absl::string_view key, const std::string& value) {
    return With(key, absl::string_view(value));
  }
  LogLine& With(absl::string_view key, int64_t value);
  LogLine& With(absl::string_view key, uint64_t value);
  LogLine& With(absl::string_view key, int value) { return With(key, static_cast<int64_t>(value)); }
  LogLine& With(absl::string_view key, bool value);

 private:
  bool enabled_;
  std::string line_;
};

// Quotes `value` for logfmt when it holds spaces, quotes or '='.
std::string LogfmtValue(absl::string_view value);

}  // namespace strait

#define LOG_DEBUG(msg) ::strait::LogLine(::strait::LogLevel::kDebug, msg)
#define LOG_INFO(msg) ::strait::LogLine(::strait::LogLevel::kInfo, msg)
#define LOG_WARNING(msg) ::strait::LogLine(::strait::LogLevel::kWarning, msg)
#define LOG_ERROR(msg) ::strait::LogLine(::strait::LogLevel::kError, msg)

#endif  // STRAIT_COMMON_LOGGING_H_
