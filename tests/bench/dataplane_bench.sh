#!/usr/bin/env bash
# The dataplane benchmark of issue 5, in one run:
#   1. userspace-ESP throughput, iperf3 through Strait<->Strait (agents with
#      --dataplane=userspace) and through strongSwan<->strongSwan
#      (kernel-libipsec), side by side, and their ratio
#      (esp_throughput_bench.sh);
#   2. the XFRM policy install rate of Strait's batched netlink against a
#      loop of `ip xfrm policy add`, and their ratio (policy_install_bench).
# See tests/bench/README.md for how to read both.
#
# Usage: dataplane_bench.sh [--rounds N] [--policies N]
#   (root; `bazel run -c opt //tests/bench:dataplane_compare -- --rounds 3`)
set -uo pipefail
ROUNDS=1
POLICIES=5000
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --policies) POLICIES=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//; /^set -uo/d'; exit 0 ;;
    *) echo "dataplane_bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "FAIL: needs root (network namespaces, netlink)" >&2; exit 1; }
here=$(dirname "$(realpath "$0")")
find_data() {  # find_data RUNFILES_PATH FALLBACK
  local r=${RUNFILES_DIR:-$0.runfiles}
  for p in "$r/strait/$1" "$here/$2"; do
    [[ -x $p ]] && { echo "$p"; return; }
  done
  echo "FAIL: $1 not found (bazel run //tests/bench:dataplane_compare)" >&2
  exit 1
}
esp_bench=$(find_data tests/bench/esp_throughput_bench.sh esp_throughput_bench.sh)
agent=$(find_data agent/strait-agent ../../bazel-bin/agent/strait-agent)
policy_bench=$(find_data dataplane/policy_install_bench ../../bazel-bin/dataplane/policy_install_bench)

echo "== userspace ESP throughput (iperf3 TCP, $ROUNDS round(s))"
"$esp_bench" --rounds "$ROUNDS" --agent "$agent"
esp=$?
echo
echo "== XFRM policy install rate ($POLICIES policies)"
"$policy_bench" --policies="$POLICIES"
policy=$?
((esp == 0 && policy == 0))
