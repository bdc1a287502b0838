// straitctl: the operator's command-line client of the controller's
// AdminService. Flags and the channel live here; the commands themselves in
// commands.cc.

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "common/flags.h"
#include "grpcpp/grpcpp.h"
#include "proto/strait/v1/admin.grpc.pb.h"

namespace {

constexpr char kDefaultController[] = "127.0.0.1:7443";

std::string DefaultController() {
  const char* env = std::getenv("STRAIT_CONTROLLER");
  return env != nullptr && env[0] != '\0' ? env : kDefaultController;
}

}  // namespace

ABSL_FLAG(std::string, controller, DefaultController(),
          "Controller address: host:port or unix:///path/to/socket. Defaults to "
          "$STRAIT_CONTROLLER, else 127.0.0.1:7443.");
ABSL_FLAG(bool, insecure, false,
          "Talk plaintext gRPC to the controller. Required for now: TLS is not supported yet. "
          "STRAIT_INSECURE=1 in the environment has the same effect.");
ABSL_FLAG(std::string, output, "table",
          "Output format of get: table, yaml or json. Short form: -o FORMAT.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10),
          "Deadline of each RPC, for example 10s or 1m.");
ABSL_FLAG(std::string, filename, "",
          "apply: YAML file with one or more tunnels, or - for standard input. "
          "Short form: -f FILE.");
ABSL_FLAG(bool, dry_run, false,
          "apply: have the controller validate the tunnels and store nothing. Also spelt "
          "--dry-run.");

namespace {

using strait::cli::kExitFailure;
using strait::cli::kExitOk;
using strait::cli::kExitUsage;

constexpr char kUsage[] = R"(the operator's client of the Strait controller.

Usage:
  straitctl [flags] apply -f FILE|-        create or update the tunnels in FILE (YAML, - for stdin)
  straitctl [flags] get tunnels            list tunnels
  straitctl [flags] get tunnel NAME        show one tunnel
  straitctl [flags] describe tunnel NAME   show a tunnel's spec and each end's reported state
  straitctl [flags] delete tunnel NAME     delete a tunnel
  straitctl [flags] get nodes              list nodes and whether they run their current intent

Flags (before or after the command; --help lists them all):
  --controller ADDR      host:port or unix:///path (env STRAIT_CONTROLLER, default 127.0.0.1:7443)
  --insecure             plaintext gRPC, required until TLS is supported (env STRAIT_INSECURE=1)
  -o, --output FORMAT    table, yaml or json (default table)
  --timeout DURATION     deadline of each RPC (default 10s)
  -f, --filename FILE    apply: the YAML input, - for stdin
  --dry-run              apply: validate on the controller, store nothing

Exit status: 0 success; 1 failed request, unreachable controller or invalid input;
2 usage error.)";

int UsageError(absl::string_view message) {
  std::cerr << "error: " << message << "\n\nstraitctl: " << kUsage << "\n";
  return kExitUsage;
}

bool EnvEnabled(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return false;
  std::string v = absl::AsciiStrToLower(value);
  return v == "1" || v == "true" || v == "yes";
}

// absl reports a bad flag value and exits 1; a usage error here exits 2. So
// every `--name=value` is tried on its flag before absl parses the line.
absl::Status CheckFlagValues(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--")) continue;
    size_t eq = arg.find('=');
    if (eq == absl::string_view::npos) continue;
    absl::string_view name = arg.substr(0, eq);
    if (strait::cli::IsUsageFlag(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;  // NormalizeArgs let through only known flags.
    std::string error;
    if (!flag->ParseFrom(arg.substr(eq + 1), &error)) {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  strait::cli::FlagSyntax syntax;
  syntax.value_flags = {"controller", "output", "timeout", "filename"};
  syntax.bool_flags = {"insecure", "dry_run"};
  syntax.short_aliases = {{'o', "output"}, {'f', "filename"}};
  absl::StatusOr<std::vector<std::string>> args =
      strait::cli::NormalizeArgs(std::vector<std::string>(argv, argv + argc), syntax);
  if (!args.ok()) return UsageError(args.status().message());
  if (absl::Status s = CheckFlagValues(*args); !s.ok()) return UsageError(s.message());

  strait::ParsedFlags flags =
      strait::ParseFlags({kUsage, {"cli/"}, "straitctl (Strait) strait.v1"}, *std::move(args));
  if (flags.exit_now) return kExitOk;

  std::vector<std::string> words = std::move(flags.positional);
  if (words.empty()) return UsageError("no command given");
  absl::StatusOr<strait::cli::Command> command = strait::cli::ParseCommand(words);
  if (!command.ok()) return UsageError(command.status().message());
  if (command->verb == strait::cli::Verb::kHelp) {
    std::cout << "straitctl: " << kUsage << "\n";
    return kExitOk;
  }

  strait::cli::CommandOptions options;
  options.controller = absl::GetFlag(FLAGS_controller);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.dry_run = absl::GetFlag(FLAGS_dry_run);
  options.filename = absl::GetFlag(FLAGS_filename);
  absl::StatusOr<strait::cli::OutputFormat> format =
      strait::cli::ParseOutputFormat(absl::GetFlag(FLAGS_output));
  if (!format.ok()) return UsageError(format.status().message());
  options.output = *format;
  if (options.controller.empty()) return UsageError("--controller is empty");
  if (options.timeout <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
  if (command->verb == strait::cli::Verb::kApply && options.filename.empty()) {
    return UsageError("apply needs -f FILE, or -f - for standard input");
  }
  if (!absl::GetFlag(FLAGS_insecure) && !EnvEnabled("STRAIT_INSECURE")) {
    std::cerr << "error: TLS is not supported yet: pass --insecure (or set STRAIT_INSECURE=1) "
                 "to talk plaintext gRPC to the controller at "
              << options.controller << "\n";
    return kExitUsage;
  }

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(options.controller, grpc::InsecureChannelCredentials());
  std::unique_ptr<strait::v1::AdminService::Stub> stub = strait::v1::AdminService::NewStub(channel);
  strait::cli::Commands commands(*stub, std::move(options), std::cout, std::cerr);
  int exit_code = commands.Run(*command, std::cin);
  std::cout.flush();
  // Output lost (a full disk, a closed pipe) is a failure too.
  return std::cout ? exit_code : kExitFailure;
}
