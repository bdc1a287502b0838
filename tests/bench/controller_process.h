#ifndef STRAIT_TESTS_BENCH_CONTROLLER_PROCESS_H_
#define STRAIT_TESTS_BENCH_CONTROLLER_PROCESS_H_

// The real controller binary as a child process on a loopback port, with a
// fresh data directory, for benchmarks.

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strait::bench {

class ControllerProcess {
 public:
  struct Options {
    // Path of strait-controller.
    std::string binary;
    // An existing, empty directory for the data dir, port file and log.
    std::string work_dir;
    std::string log_level = "warning";
  };

  // Starts the controller and waits (until `deadline`) for its port file.
  static absl::StatusOr<std::unique_ptr<ControllerProcess>> Start(const Options& options,
                                                                  absl::Time deadline);

  // Kills the controller (SIGKILL) if Stop() was not called.
  ~ControllerProcess();
  ControllerProcess(const ControllerProcess&) = delete;
  ControllerProcess& operator=(const ControllerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // "127.0.0.1:<port>".
  const std::string& address() const { return address_; }
  const std::string& log_path() const { return log_path_; }

  // SIGTERM, then waits up to `grace` for the exit (SIGKILL after that).
  // Not OK when the controller did not exit cleanly with status 0.
  absl::Status Stop(absl::Duration grace);

  // The last `lines` lines of the controller's stdout and stderr, indented; empty
  // when it wrote nothing.
  std::string LogTail(int lines) const;

 private:
  ControllerProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  pid_t pid_;
  bool exited_ = false;
  std::string log_path_;
  std::string address_;
};

using ControllerProcessPtr = std::unique_ptr<ControllerProcess>;

// The controller binary next to this program in its runfiles: RUNFILES_DIR,
// TEST_SRCDIR, <argv0>.runfiles, /proc/self/exe.runfiles, or the current
// directory (bazel run). NotFound lists where it looked.
absl::StatusOr<std::string> FindControllerInRunfiles(const char* argv0);

struct MemoryUsage {
  double rss_mib = 0;   // VmRSS
  double peak_mib = 0;  // VmHWM, the high-water mark of VmRSS
};

// Reads VmRSS and VmHWM from /proc/<pid>/status.
absl::StatusOr<MemoryUsage> ReadMemoryUsage(pid_t pid);

// User plus system CPU time the process has used, from /proc/<pid>/stat.
absl::StatusOr<absl::Duration> ReadCpuTime(pid_t pid);

}  // namespace strait::bench

#endif  // STRAIT_TESTS_BENCH_CONTROLLER_PROCESS_H_
