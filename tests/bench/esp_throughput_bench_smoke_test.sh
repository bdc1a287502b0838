#!/usr/bin/env bash
# Runs esp_throughput_bench.sh briefly (iperf3 2 s per side) to prove that it
# works: exit status 0 (which includes the daemons' ESP counters covering
# what iperf3 received), both rates positive, the ratio printed.
set -euo pipefail

RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
OUT=$(mktemp "${TEST_TMPDIR:-/tmp}/esp_throughput_bench.XXXXXX")

rc=0
bash "$RUNFILES/tests/bench/esp_throughput_bench.sh" --duration 2 \
  --agent "$RUNFILES/agent/strait-agent" >"$OUT" 2>&1 || rc=$?
cat "$OUT"
if ((rc != 0)); then
  echo "FAIL: esp_throughput_bench.sh exited with $rc" >&2
  exit 1
fi

line=$(grep -E '^strait↔strait: [0-9.]+ Mbit/s \(.*\); strongswan↔strongswan: [0-9.]+ Mbit/s \(.*\); ratio strait/strongswan: [0-9.]+$' "$OUT") || {
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
echo "PASS: strait $strait Mbit/s, strongswan $swan Mbit/s"
