#!/usr/bin/env bash
# Runs handshake_bench.sh briefly (both sides, about 2 s each) to prove that
# it works: exit status 0, both rates positive, the ratio line printed.
set -euo pipefail

DIR=${TEST_SRCDIR:-$PWD/..}/strait/tests/bench
OUT=$(mktemp "${TEST_TMPDIR:-/tmp}/handshake_bench.XXXXXX")

rc=0
bash "$DIR/handshake_bench.sh" --duration 2 --warmup 0.5 --window 2 \
  --bench "$DIR/handshake_bench" --driver "$DIR/strongswan_driver.py" >"$OUT" 2>&1 || rc=$?
cat "$OUT"
if ((rc != 0)); then
  echo "FAIL: handshake_bench.sh exited with $rc" >&2
  exit 1
fi

line=$(grep -E '^strait↔strait: [0-9.]+ handshakes/s \(.*\); strongswan↔strongswan: [0-9.]+ handshakes/s \(.*\); (.*; )?ratio strait/strongswan: [0-9.]+$' "$OUT") || {
  echo "FAIL: no summary line with both rates and the ratio" >&2
  exit 1
}
strait=$(sed -E 's/^strait↔strait: ([0-9.]+) .*/\1/' <<<"$line")
swan=$(sed -E 's/.*strongswan↔strongswan: ([0-9.]+) .*/\1/' <<<"$line")
for rate in "$strait" "$swan"; do
  if ! awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
    echo "FAIL: a rate is not positive: strait $strait, strongswan $swan" >&2
    exit 1
  fi
done
echo "PASS: strait $strait/s, strongswan $swan/s"
