#include "common/flags.h"

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace strait {

std::vector<std::string> NormalizeFlagNames(std::vector<std::string> args) {
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") {
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      continue;
    }
    size_t start = arg.find_first_not_of('-');
    if (start == std::string::npos) {
      continue;
    }
    size_t end = arg.find('=');
    if (end == std::string::npos) {
      end = arg.size();
    }
    for (size_t j = start; j < end; ++j) {
      if (arg[j] == '-') {
        arg[j] = '_';
      }
    }
  }
  return args;
}

ParsedFlags ParseFlags(const FlagsSetup& setup, std::vector<std::string> args) {
  absl::SetProgramUsageMessage(setup.usage);
  absl::FlagsUsageConfig config;
  auto ours = [paths = setup.help_paths](absl::string_view file) {
    for (const std::string& path : paths) {
      if (absl::StrContains(file, path)) {
        return true;
      }
    }
    return false;
  };
  config.contains_help_flags = ours;
  config.contains_helpshort_flags = ours;
  config.version_string = [version = setup.version] { return version + "\n"; };
  absl::SetFlagsUsageConfig(config);

  std::vector<char*> c_args;
  c_args.reserve(args.size() + 1);
  for (std::string& arg : args) {
    c_args.push_back(arg.data());
  }
  c_args.push_back(nullptr);
  // The internal entry point, because absl 20220623 has no public one that
  // lets --help exit 0 (absl::ParseCommandLine exits 1). Newer Abseil has
  // absl::ParseAbseilFlagsOnly and absl::HandleUsageFlags for this.
  std::vector<char*> rest = absl::flags_internal::ParseCommandLineImpl(
      static_cast<int>(c_args.size() - 1), c_args.data(),
      absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  ParsedFlags parsed;
  parsed.exit_now =
      absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) != -1;
  for (size_t i = 1; i < rest.size(); ++i) {
    parsed.positional.emplace_back(rest[i]);
  }
  return parsed;
}

}  // namespace strait
