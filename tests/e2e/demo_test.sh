#!/usr/bin/env bash
# The README's main command, tools/demo.sh, on the built binaries: agents in
# network namespaces come up, ACK their share, metrics are served, and a stop
# removes every namespace. Needs root.
set -euo pipefail
RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Unix socket paths must stay under 108 bytes, so not in TEST_TMPDIR.
WORK=$(mktemp -d /tmp/strait-demo-test.XXXXXX)
API=127.0.0.1:$(free_port)
METRICS=127.0.0.1:$(free_port)
PREFIX=sdt$$
export STRAIT_DEMO_BIN_DIR=$RUNFILES STRAIT_DEMO_PREFIX=$PREFIX STRAIT_DEMO_RUN=$WORK/run \
  STRAIT_DEMO_DATA=$WORK/data STRAIT_DEMO_API=$API STRAIT_DEMO_METRICS=$METRICS

"$RUNFILES/tools/demo.sh" >"$WORK/demo.out" 2>&1 &
demo=$!
cleanup() {
  kill -TERM "$demo" 2>/dev/null || true
  wait "$demo" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  cat "$WORK/demo.out" >&2
  tail -n 20 "$WORK"/run/logs/*.log >&2 || true
  exit 1
}

for _ in $(seq 300); do
  grep -q "Strait demo is running" "$WORK/demo.out" && break
  kill -0 "$demo" 2>/dev/null || fail "demo exited early"
  sleep 0.1
done
grep -q "Strait demo is running" "$WORK/demo.out" || fail "demo did not come up in 30 s"

controller_metrics=$(curl -fsS "http://$METRICS/metrics") || fail "no controller metrics"
grep -Eq '^strait_controller_agents_connected 2(\.0+)?$' <<<"$controller_metrics" ||
  fail "controller does not report 2 agents"
# Fetched whole first: grep -q closing the pipe early would fail curl.
for addr in 198.51.100.11 198.51.100.12; do
  metrics=$(curl -fsS "http://$addr:9444/metrics") || fail "no agent metrics at $addr"
  grep -q '^strait_agent_tunnels' <<<"$metrics" || fail "agent metrics at $addr missing"
done
grep -q "a-to-b" "$WORK/demo.out" || fail "tunnels not listed"
grep -Eq "^a-to-b .*ESTABLISHED/ESTABLISHED" "$WORK/demo.out" || fail "a-to-b is not ESTABLISHED at both ends"
metrics=$(curl -fsS "http://198.51.100.11:9444/metrics") || fail "no agent metrics at node-a"
grep -Eq '^strait_agent_ike_sas\{state="established"\} 1(\.0+)?$' <<<"$metrics" ||
  fail "node-a does not report its IKE SA"

kill -TERM "$demo"
wait "$demo" || true
if ip netns list | grep -q "^$PREFIX-"; then fail "namespaces left behind"; fi
if ip link show "$PREFIX-br0" >/dev/null 2>&1; then fail "bridge left behind"; fi
echo PASS
