#ifndef STRAIT_DATAPLANE_TESTING_NETNS_H_
#define STRAIT_DATAPLANE_TESTING_NETNS_H_

// Network namespaces for tests, per thread: a namespace is created on a
// short-lived thread (unshare(CLONE_NEWNET) moves only the calling thread)
// and kept alive by a file descriptor; work runs in it on a thread that
// setns()es first. Sockets, TUN devices and netlink sockets stay in the
// namespace they were made in, whichever thread uses them later, so the
// test process itself never leaves the host's namespace.

#include <functional>
#include <string>

namespace strait::dataplane::testing {

class Netns {
 public:
  // A new, empty network namespace; invalid() when unshare() is refused
  // (not root, or a sandbox).
  Netns();
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  bool valid() const { return fd_ >= 0; }
  // A path other programs can open to enter or name this namespace
  // (e.g. `ip link set X netns PATH`).
  std::string path() const;

  // Runs `fn` on a thread inside the namespace and waits for it.
  void Run(const std::function<void()>& fn) const;
  // Runs a shell command inside the namespace; its exit status.
  int Shell(const std::string& command) const;
  // Writes `value` to a /proc/sys file of this namespace.
  bool Sysctl(const std::string& path, const std::string& value) const;

 private:
  int fd_ = -1;
};

}  // namespace strait::dataplane::testing

#endif  // STRAIT_DATAPLANE_TESTING_NETNS_H_
