#include "dataplane/testing/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

namespace strait::dataplane::testing {

Netns::Netns() {
  std::thread([this] {
    if (unshare(CLONE_NEWNET) == 0) fd_ = open("/proc/thread-self/ns/net", O_RDONLY);
  }).join();
}

Netns::~Netns() {
  if (fd_ >= 0) close(fd_);
}

std::string Netns::path() const {
  return "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd_);
}

void Netns::Run(const std::function<void()>& fn) const {
  std::thread([this, &fn] {
    if (setns(fd_, CLONE_NEWNET) != 0) std::abort();
    fn();
  }).join();
}

int Netns::Shell(const std::string& command) const {
  int status = -1;
  Run([&] { status = std::system(command.c_str()); });
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool Netns::Sysctl(const std::string& path, const std::string& value) const {
  bool ok = false;
  Run([&] {
    std::ofstream out("/proc/sys/" + path);
    out << value;
    ok = static_cast<bool>(out);
  });
  return ok;
}

}  // namespace strait::dataplane::testing
