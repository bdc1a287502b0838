#ifndef STRAIT_COMMON_FLAGS_H_
#define STRAIT_COMMON_FLAGS_H_

// Command-line parsing shared by the Strait binaries, on Abseil flags.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace strait {

struct FlagsSetup {
  // absl::SetProgramUsageMessage text, shown first by --help.
  std::string usage;
  // --help lists the flags defined in files whose path holds one of these
  // (e.g. "agent/"), not the flags of the libraries we link.
  std::vector<std::string> help_paths;
  // What --version prints.
  std::string version;
};

// "--data-dir=x" -> "--data_dir=x": absl names flags with underscores, users
// write dashes. Stops at "--"; values are left alone.
std::vector<std::string> NormalizeFlagNames(std::vector<std::string> args);

struct ParsedFlags {
  // Arguments that are not flags, without the program name.
  std::vector<std::string> positional;
  // --help, --helpfull or --version was asked for and printed: exit 0.
  bool exit_now = false;
};

// Installs `setup` and parses `args` (argv, program name first, flag names
// already normalized). An unknown flag or bad value is reported by absl,
// which exits 1.
ParsedFlags ParseFlags(const FlagsSetup& setup, std::vector<std::string> args);

}  // namespace strait

#endif  // STRAIT_COMMON_FLAGS_H_
