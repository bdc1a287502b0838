#ifndef STRAIT_CLI_COMMANDS_H_
#define STRAIT_CLI_COMMANDS_H_

// straitctl's commands, apart from flag parsing and channel setup (main.cc)
// so that tests drive them against an in-process AdminService.

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cli/output.h"
#include "common/clock.h"
#include "grpcpp/grpcpp.h"
#include "proto/strait/v1/admin.grpc.pb.h"

namespace strait::cli {

// Exit codes.
inline constexpr int kExitOk = 0;
// An RPC failed, the controller is unreachable, or the input is invalid.
inline constexpr int kExitFailure = 1;
// The command line itself is wrong; the usage text is printed.
inline constexpr int kExitUsage = 2;

enum class Verb {
  kHelp,
  kApply,           // apply -f FILE|-
  kGetTunnels,      // get tunnels | get tunnel
  kGetTunnel,       // get tunnel NAME
  kDescribeTunnel,  // describe tunnel NAME
  kDeleteTunnel,    // delete tunnel NAME
  kGetNodes,        // get nodes
};

struct Command {
  Verb verb = Verb::kHelp;
  // The tunnel, for the verbs that take one.
  std::string name;
};

// Parses the positional words of a command line ("get", "tunnel", "x").
// "tunnel" and "tunnels", "node" and "nodes" are interchangeable.
// InvalidArgument, saying what is wrong, for anything else.
absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& words);

// What NormalizeArgs needs to know about the program's flags (names with
// underscores, as absl defines them).
struct FlagSyntax {
  // Flags that take a value: `--name VALUE` becomes `--name=VALUE`.
  absl::flat_hash_set<std::string> value_flags;
  // Boolean flags: `--name`, `--noname`, `--name=true|false`.
  absl::flat_hash_set<std::string> bool_flags;
  // One-letter aliases of value flags: "o" -> "output" lets users write
  // `-o yaml`, `-o=yaml` and `-oyaml`.
  absl::flat_hash_map<char, std::string> short_aliases;
};

// Rewrites argv (argv[0] first) into the one form absl's parser takes
// without guessing: every flag as `--name` or `--name=value`, dashes in names
// turned into underscores (`--dry-run` is `--dry_run`), `-h` as `--help`.
// Positional words stay where they are; everything after `--` is left
// alone. absl's own usage flags (--help, --helpfull, --version, ...) pass
// through. InvalidArgument for an unknown flag or a missing value, so that
// main can print the usage text and exit 2 where absl would exit 1.
absl::StatusOr<std::vector<std::string>> NormalizeArgs(const std::vector<std::string>& args,
                                                       const FlagSyntax& syntax);

// Whether `name` (without dashes) is one of absl's built-in usage flags.
bool IsUsageFlag(absl::string_view name);

struct CommandOptions {
  // The controller's address, for error messages only.
  std::string controller;
  OutputFormat output = OutputFormat::kTable;
  // Deadline of each RPC.
  absl::Duration timeout = absl::Seconds(10);
  // apply: validate on the server, store nothing.
  bool dry_run = false;
  // apply: the YAML file, or "-" for `in`.
  std::string filename;
};

// Runs commands against `stub`, writing results to `out` and diagnostics
// ("error: ...") to `err`. Each method returns the process exit code.
class Commands {
 public:
  Commands(strait::v1::AdminService::StubInterface& stub, CommandOptions options, std::ostream& out,
           std::ostream& err, Clock& clock = RealClock::Get());

  // Dispatches `command`; `in` is read for `apply -f -`.
  int Run(const Command& command, std::istream& in);

  // Applies every tunnel in `yaml` (read from `source`, named in messages).
  // Goes on after a rejected tunnel and fails at the end; stops at once when
  // the controller cannot be reached. YAML errors fail before any RPC.
  int Apply(absl::string_view source, std::string yaml);
  int GetTunnels();
  int GetTunnel(const std::string& name);
  int DescribeTunnel(const std::string& name);
  int DeleteTunnel(const std::string& name);
  int GetNodes();

 private:
  // A context with the per-RPC deadline.
  void SetDeadline(grpc::ClientContext* context) const;
  // GetTunnel RPC; prints the error and returns false when it fails.
  bool FetchTunnel(const std::string& name, strait::v1::Tunnel* tunnel);
  // Prints a failed RPC as "error: [context: ]CODE: message", or as
  // "error: cannot reach controller at ADDR: ..." when it never got there.
  void PrintRpcError(const grpc::Status& status, absl::string_view context);
  // Prints `text` to `out`, or its error.
  int PrintOutput(const absl::StatusOr<std::string>& text);

  strait::v1::AdminService::StubInterface& stub_;
  const CommandOptions options_;
  std::ostream& out_;
  std::ostream& err_;
  Clock& clock_;
};

}  // namespace strait::cli

#endif  // STRAIT_CLI_COMMANDS_H_
