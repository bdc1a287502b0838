#include "tests/bench/controller_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace strait::bench {
namespace {

constexpr char kControllerRunfile[] = "strait/controller/strait-controller";

absl::Status ErrnoStatus(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

bool IsExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) {
    return absl::StrCat("exited with status ", WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status));
  }
  return absl::StrCat("ended with wait status ", status);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerProcess>> ControllerProcess::Start(const Options& options,
                                                                            absl::Time deadline) {
  if (!IsExecutable(options.binary)) {
    return absl::NotFoundError(
        absl::StrCat("controller binary ", options.binary, " is not an executable file"));
  }
  const std::string data_dir = options.work_dir + "/data";
  const std::string port_file = options.work_dir + "/port";
  const std::string log_path = options.work_dir + "/controller.log";

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> args = {
      options.binary,     "--listen",   "127.0.0.1:0", "--port-file",
      port_file,          "--data-dir", data_dir,      "--insecure",
      "--metrics-listen", "",           "--log-level", options.log_level};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);

  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return ErrnoStatus(absl::StrCat("open ", log_path));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return ErrnoStatus("fork");
  }
  if (pid == 0) {
    // Do not outlive the benchmark, whatever happens to it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
      _exit(127);
    }
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  std::unique_ptr<ControllerProcess> process(new ControllerProcess(pid, log_path));

  // The controller writes the port it bound once it listens.
  while (true) {
    std::ifstream in(port_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    int port = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) && port > 0 && port < 65536) {
      process->address_ = absl::StrCat("127.0.0.1:", port);
      return process;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      process->exited_ = true;
      return absl::FailedPreconditionError(
          absl::StrCat("controller ", DescribeExit(status),
                       " before writing its port file; its output:\n", process->LogTail(20)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("controller did not write its port file ",
                                                      port_file, " in time; log:\n",
                                                      process->LogTail(20)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

ControllerProcess::~ControllerProcess() {
  if (exited_) {
    return;
  }
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
}

absl::Status ControllerProcess::Stop(absl::Duration grace) {
  if (exited_) {
    return absl::FailedPreconditionError("controller already exited");
  }
  if (kill(pid_, SIGTERM) != 0) {
    return ErrnoStatus("kill(SIGTERM)");
  }
  const absl::Time give_up = absl::Now() + grace;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      break;
    }
    if (r < 0 && errno != EINTR) {
      return ErrnoStatus("waitpid");
    }
    if (absl::Now() > give_up) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      exited_ = true;
      return absl::DeadlineExceededError(absl::StrCat(
          "controller did not exit within ", absl::FormatDuration(grace), " of SIGTERM; killed"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  exited_ = true;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("controller ", DescribeExit(status), " after SIGTERM; log:\n", LogTail(20)));
  }
  return absl::OkStatus();
}

std::string ControllerProcess::LogTail(int lines) const {
  std::ifstream in(log_path_);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) {
      tail.pop_front();
    }
  }
  if (tail.empty()) {
    return "";
  }
  return absl::StrCat("  ", absl::StrJoin(tail, "\n  "));
}

absl::StatusOr<std::string> FindControllerInRunfiles(const char* argv0) {
  std::vector<std::string> candidates;
  for (const char* env : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    const char* dir = getenv(env);
    if (dir != nullptr && *dir != '\0') {
      candidates.push_back(absl::StrCat(dir, "/", kControllerRunfile));
    }
  }
  if (argv0 != nullptr && *argv0 != '\0') {
    candidates.push_back(absl::StrCat(argv0, ".runfiles/", kControllerRunfile));
  }
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    candidates.push_back(
        absl::StrCat(absl::string_view(self, n), ".runfiles/", kControllerRunfile));
  }
  // `bazel run` starts the program in <runfiles>/strait.
  candidates.push_back("controller/strait-controller");
  for (const std::string& path : candidates) {
    if (IsExecutable(path)) {
      return path;
    }
  }
  return absl::NotFoundError(absl::StrCat("strait-controller not found in the runfiles (looked at ",
                                          absl::StrJoin(candidates, ", "),
                                          "); pass --controller_binary"));
}

absl::StatusOr<MemoryUsage> ReadMemoryUsage(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  MemoryUsage usage;
  bool have_rss = false;
  bool have_hwm = false;
  std::string line;
  while (std::getline(in, line)) {
    // "VmRSS:\t   12345 kB"
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 3 || fields[2] != "kB") {
      continue;
    }
    double kib = 0;
    if (!absl::SimpleAtod(fields[1], &kib)) {
      continue;
    }
    if (fields[0] == "VmRSS:") {
      usage.rss_mib = kib / 1024;
      have_rss = true;
    } else if (fields[0] == "VmHWM:") {
      usage.peak_mib = kib / 1024;
      have_hwm = true;
    }
  }
  if (!have_rss || !have_hwm) {
    return absl::NotFoundError(absl::StrCat(path, " has no VmRSS/VmHWM"));
  }
  return usage;
}

absl::StatusOr<absl::Duration> ReadCpuTime(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(text).substr(paren + 1), ' ', absl::SkipEmpty());
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after comm.
  int64_t utime = 0;
  int64_t stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError(absl::StrCat("cannot parse ", path));
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return absl::Seconds((utime + stime) / ticks);
}

}  // namespace strait::bench
