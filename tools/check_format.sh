#!/usr/bin/env bash
# Fails when a tracked C++ file is not clang-formatted (.clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=()
while IFS= read -r f; do
  [[ -f $f ]] || continue
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.cc' '*.h' 2>/dev/null || find . -name '*.cc' -o -name '*.h')
if ((${#bad[@]})); then
  echo "not clang-formatted (run clang-format -i): ${bad[*]}" >&2
  exit 1
fi
