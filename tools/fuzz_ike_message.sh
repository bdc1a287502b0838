#!/usr/bin/env bash
# Builds the IKEv2 message decoder fuzz target with libFuzzer (clang-14,
# ASan + UBSan) against Debian's Abseil and runs it over the seed corpus.
#
# Usage: tools/fuzz_ike_message.sh [SECONDS]   (default 60)
# New inputs go to a scratch corpus under $OUT (default /tmp/strait-fuzz-ike);
# crashes are written there as crash-*. The committed seeds are read only.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
out=${OUT:-/tmp/strait-fuzz-ike}
mkdir -p "$out/corpus"

absl_libs=(
  -labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info -labsl_cord_internal
  -labsl_cordz_functions -labsl_cordz_handle -labsl_exponential_biased
  -labsl_synchronization -labsl_graphcycles_internal -labsl_stacktrace -labsl_symbolize
  -labsl_debugging_internal -labsl_demangle_internal -labsl_malloc_internal
  -labsl_time -labsl_civil_time -labsl_time_zone -labsl_str_format_internal
  -labsl_strerror -labsl_strings -labsl_strings_internal -labsl_throw_delegate
  -labsl_int128 -labsl_raw_logging_internal -labsl_base -labsl_spinlock_wait
  -labsl_log_severity -labsl_bad_optional_access
)

clang++-14 -std=c++17 -O1 -g -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
  agent/ike/message_fuzzer.cc agent/ike/message.cc \
  -o "$out/message_fuzzer" "${absl_libs[@]}" -lpthread

"$out/message_fuzzer" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$out/" "$out/corpus" agent/ike/testdata/message_corpus
