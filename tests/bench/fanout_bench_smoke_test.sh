#!/usr/bin/env bash
# Runs the fan-out benchmark small, against the real controller, to prove
# that it works: exit status 0 and every line of the report.
set -euo pipefail

BENCH=${TEST_SRCDIR:-$PWD/..}/strait/tests/bench/fanout_bench
OUT=$(mktemp "${TEST_TMPDIR:-/tmp}/fanout_bench.XXXXXX")

rc=0
"$BENCH" --nodes 20 --tunnels 100 --rounds 3 --all_rounds 1 --timeout 50s >"$OUT" 2>&1 || rc=$?
cat "$OUT"
if ((rc != 0)); then
  echo "FAIL: fanout_bench exited with $rc" >&2
  exit 1
fi

expect() {
  if ! grep -Eq "$1" "$OUT"; then
    echo "FAIL: no line matching /$1/ in the report" >&2
    exit 1
  fi
}
expect '^fanout_bench: nodes=20 tunnels=100 channels=8'
expect '^setup: 100 applies \+ 20 initial snapshots acked in [0-9.]+ s'
expect '^one-node change -> last ACK: median [0-9.]+ ms, p90 [0-9.]+ ms \(3 rounds\); unrelated pushes: 0'
expect '^all-node change \(20 applies\) -> last ACK: median [0-9.]+ ms \(1 round\), [0-9.]+ ms/node'
expect '^controller RSS: [0-9.]+ MiB after setup, [0-9.]+ MiB at end \(peak [0-9.]+ MiB\)'
echo PASS
