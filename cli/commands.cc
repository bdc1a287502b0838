#include "cli/commands.h"

#include <chrono>
#include <istream>
#include <iterator>
#include <ostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "common/intent/secrets.h"
#include "common/intent/yaml_codec.h"
#include "common/secret.h"

namespace strait::cli {
namespace {

using strait::v1::Tunnel;

bool IsTunnelNoun(absl::string_view word) { return word == "tunnel" || word == "tunnels"; }
bool IsNodeNoun(absl::string_view word) { return word == "node" || word == "nodes"; }

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC and absl share the canonical code numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// One line per diagnostic: a server message with newlines would otherwise
// look like several errors.
std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(absl::StripTrailingAsciiWhitespace(text), {{"\n", " "}});
}

}  // namespace

absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& words) {
  if (words.empty()) return absl::InvalidArgumentError("no command given");
  const std::string& verb = words[0];
  auto expect_count = [&](size_t min, size_t max) -> absl::Status {
    if (words.size() < min) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", absl::StrJoin(words, " "), "\": missing argument"));
    }
    if (words.size() > max) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", absl::StrJoin(words, " "), "\": unexpected argument \"", words[max], "\""));
    }
    return absl::OkStatus();
  };

  Command command;
  if (verb == "help") {
    command.verb = Verb::kHelp;
    return command;
  }
  if (verb == "apply") {
    if (absl::Status s = expect_count(1, 1); !s.ok()) return s;
    command.verb = Verb::kApply;
    return command;
  }
  if (verb == "get" || verb == "describe" || verb == "delete") {
    if (words.size() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", verb, "\" needs a resource type: ",
                       verb == "get" ? "tunnels, tunnel NAME or nodes" : "tunnel NAME"));
    }
    const std::string& noun = words[1];
    if (verb == "get" && IsNodeNoun(noun)) {
      if (absl::Status s = expect_count(2, 2); !s.ok()) return s;
      command.verb = Verb::kGetNodes;
      return command;
    }
    if (!IsTunnelNoun(noun)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown resource type \"", noun, "\" for \"", verb, "\"; want ",
                       verb == "get" ? "tunnels or nodes" : "tunnel"));
    }
    if (verb == "get") {
      if (absl::Status s = expect_count(2, 3); !s.ok()) return s;
      command.verb = words.size() == 3 ? Verb::kGetTunnel : Verb::kGetTunnels;
    } else {
      if (absl::Status s = expect_count(3, 3); !s.ok()) return s;
      command.verb = verb == "describe" ? Verb::kDescribeTunnel : Verb::kDeleteTunnel;
    }
    if (words.size() == 3) {
      command.name = words[2];
      if (command.name.empty()) return absl::InvalidArgumentError("empty tunnel name");
    }
    return command;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown command \"", verb, "\""));
}

bool IsUsageFlag(absl::string_view name) {
  return name == "help" || name == "helpfull" || name == "helpshort" || name == "helppackage" ||
         name == "helpon" || name == "helpmatch" || name == "version" || name == "only_check_args";
}

absl::StatusOr<std::vector<std::string>> NormalizeArgs(const std::vector<std::string>& args,
                                                       const FlagSyntax& syntax) {
  std::vector<std::string> result;
  if (args.empty()) return result;
  result.push_back(args[0]);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      result.insert(result.end(), args.begin() + i, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {  // positional, including "-"
      result.push_back(arg);
      continue;
    }
    if (arg == "-h") {
      result.push_back("--help");
      continue;
    }
    const bool single_dash = arg[1] != '-';
    absl::string_view body = absl::string_view(arg).substr(single_dash ? 1 : 2);
    absl::string_view raw_name = body.substr(0, body.find('='));
    std::string name = absl::StrReplaceAll(raw_name, {{"-", "_"}});
    bool has_value = raw_name.size() < body.size();
    std::string value = has_value ? std::string(body.substr(raw_name.size() + 1)) : "";

    if (name.size() == 1 || (single_dash && !syntax.value_flags.contains(name) &&
                             !syntax.bool_flags.contains(name) && !IsUsageFlag(name))) {
      auto alias = syntax.short_aliases.find(body[0]);
      if (alias != syntax.short_aliases.end()) {
        if (name.size() > 1) {  // "-oyaml": the value is attached.
          has_value = true;
          value = std::string(body.substr(1));
        }
        name = alias->second;
      }
    }

    if (syntax.value_flags.contains(name)) {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag ", arg, " needs a value"));
        }
        value = args[++i];
      }
      result.push_back(absl::StrCat("--", name, "=", value));
    } else if (syntax.bool_flags.contains(name) || IsUsageFlag(name)) {
      result.push_back(has_value ? absl::StrCat("--", name, "=", value) : absl::StrCat("--", name));
    } else if (!has_value && absl::StartsWith(name, "no") &&
               syntax.bool_flags.contains(name.substr(2))) {
      result.push_back(absl::StrCat("--", name));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
  }
  return result;
}

Commands::Commands(strait::v1::AdminService::StubInterface& stub, CommandOptions options,
                   std::ostream& out, std::ostream& err, Clock& clock)
    : stub_(stub), options_(std::move(options)), out_(out), err_(err), clock_(clock) {}

int Commands::Run(const Command& command, std::istream& in) {
  switch (command.verb) {
    case Verb::kHelp:
      return kExitOk;
    case Verb::kApply: {
      std::string text;
      if (options_.filename == "-") {
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        if (in.bad()) {
          err_ << "error: cannot read standard input\n";
          return kExitFailure;
        }
        return Apply("<stdin>", std::move(text));
      }
      absl::StatusOr<std::string> contents = ReadFile(options_.filename);
      if (!contents.ok()) {
        err_ << "error: cannot read " << options_.filename << ": " << contents.status().message()
             << "\n";
        return kExitFailure;
      }
      return Apply(options_.filename, *std::move(contents));
    }
    case Verb::kGetTunnels:
      return GetTunnels();
    case Verb::kGetTunnel:
      return GetTunnel(command.name);
    case Verb::kDescribeTunnel:
      return DescribeTunnel(command.name);
    case Verb::kDeleteTunnel:
      return DeleteTunnel(command.name);
    case Verb::kGetNodes:
      return GetNodes();
  }
  return kExitUsage;
}

int Commands::Apply(absl::string_view source, std::string yaml) {
  absl::StatusOr<std::vector<Tunnel>> parsed = intent::ParseTunnelsYaml(yaml);
  WipeString(&yaml);
  if (!parsed.ok()) {
    err_ << "error: " << source << ": " << OneLine(parsed.status().message()) << "\n";
    return kExitFailure;
  }
  std::vector<Tunnel> tunnels = *std::move(parsed);
  if (tunnels.empty()) {
    err_ << "error: " << source << ": no tunnels found\n";
    return kExitFailure;
  }

  int exit_code = kExitOk;
  int index = 0;
  for (Tunnel& tunnel : tunnels) {
    ++index;
    const std::string label = tunnel.metadata().name().empty()
                                  ? absl::StrCat("tunnel #", index, " (no name)")
                                  : absl::StrCat("tunnel/", tunnel.metadata().name());
    strait::v1::ApplyTunnelRequest request;
    request.set_dry_run(options_.dry_run);
    request.mutable_tunnel()->Swap(&tunnel);
    strait::v1::ApplyTunnelResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    grpc::Status status = stub_.ApplyTunnel(&context, request, &response);
    intent::WipeSpecSecrets(request.mutable_tunnel()->mutable_spec());
    if (!status.ok()) {
      PrintRpcError(status, label);
      exit_code = kExitFailure;
      // Every further document would fail the same way.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) break;
      continue;
    }
    if (options_.dry_run) {
      out_ << label << " valid (dry run)" << std::endl;
      continue;
    }
    const char* outcome = !response.changed()                              ? "unchanged"
                          : response.tunnel().metadata().generation() <= 1 ? "created"
                                                                           : "configured";
    // Flushed per tunnel so that results and errors interleave in order.
    out_ << label << " " << outcome << " (revision " << response.revision() << ")" << std::endl;
  }
  for (Tunnel& tunnel : tunnels) intent::WipeSpecSecrets(tunnel.mutable_spec());
  return exit_code;
}

int Commands::GetTunnels() {
  strait::v1::ListTunnelsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_.ListTunnels(&context, strait::v1::ListTunnelsRequest(), &response);
  if (!status.ok()) {
    PrintRpcError(status, "");
    return kExitFailure;
  }
  if (response.tunnels().empty() && options_.output == OutputFormat::kTable) {
    err_ << "No tunnels found.\n";
    return kExitOk;
  }
  return PrintOutput(FormatTunnelList(response, options_.output, clock_.Now()));
}

bool Commands::FetchTunnel(const std::string& name, Tunnel* tunnel) {
  strait::v1::GetTunnelRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_.GetTunnel(&context, request, tunnel);
  if (!status.ok()) {
    PrintRpcError(status, "");
    return false;
  }
  return true;
}

int Commands::GetTunnel(const std::string& name) {
  Tunnel tunnel;
  if (!FetchTunnel(name, &tunnel)) return kExitFailure;
  return PrintOutput(FormatTunnel(tunnel, options_.output, clock_.Now()));
}

int Commands::DescribeTunnel(const std::string& name) {
  Tunnel tunnel;
  if (!FetchTunnel(name, &tunnel)) return kExitFailure;
  out_ << cli::DescribeTunnel(tunnel, clock_.Now());
  return kExitOk;
}

int Commands::DeleteTunnel(const std::string& name) {
  strait::v1::DeleteTunnelRequest request;
  request.set_name(name);
  strait::v1::DeleteTunnelResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_.DeleteTunnel(&context, request, &response);
  if (!status.ok()) {
    PrintRpcError(status, "");
    return kExitFailure;
  }
  out_ << "tunnel/" << name << " deleted (revision " << response.revision() << ")\n";
  return kExitOk;
}

int Commands::GetNodes() {
  strait::v1::ListNodesResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_.ListNodes(&context, strait::v1::ListNodesRequest(), &response);
  if (!status.ok()) {
    PrintRpcError(status, "");
    return kExitFailure;
  }
  if (response.nodes().empty() && options_.output == OutputFormat::kTable) {
    err_ << "No nodes found.\n";
    return kExitOk;
  }
  return PrintOutput(FormatNodeList(response, options_.output));
}

void Commands::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoNanoseconds(options_.timeout));
}

void Commands::PrintRpcError(const grpc::Status& status, absl::string_view context) {
  const std::string message = OneLine(status.error_message());
  err_ << "error: ";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    err_ << "cannot reach controller at " << options_.controller << ": " << message << "\n";
    return;
  }
  if (!context.empty()) err_ << context << ": ";
  err_ << StatusCodeName(status.error_code()) << ": " << message;
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    err_ << " (no answer from " << options_.controller << " within "
         << absl::FormatDuration(options_.timeout) << "; see --timeout)";
  }
  err_ << "\n";
}

int Commands::PrintOutput(const absl::StatusOr<std::string>& text) {
  if (!text.ok()) {
    err_ << "error: " << text.status().message() << "\n";
    return kExitFailure;
  }
  out_ << *text;
  out_.flush();
  return kExitOk;
}

}  // namespace strait::cli
