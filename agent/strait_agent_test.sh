#!/usr/bin/env bash
# The strait-agent binary: flag checks and exit codes, standalone mode with
# SIGHUP reloads, a corrupt state file, and a clean exit on SIGTERM within
# 2 s (with and without a reachable controller).
set -euo pipefail

AGENT=${TEST_SRCDIR:-$PWD/..}/strait/agent/strait-agent
WORK=$(mktemp -d "${TEST_TMPDIR:-/tmp}/agent.XXXXXX")
PID=""
trap '[[ -n $PID ]] && kill -KILL "$PID" 2>/dev/null; true' EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "---- $f" >&2; cat "$f" >&2; }; done
  exit 1
}

# expect_exit CODE ARGS...: runs the agent and checks its exit status.
expect_exit() {
  local want=$1 rc=0
  shift
  "$AGENT" "$@" >"$WORK/out.log" 2>&1 || rc=$?
  [[ $rc == "$want" ]] || fail "strait-agent $* exited $rc, want $want"
}

# wait_log FILE PATTERN [COUNT]: waits up to 10 s for COUNT matching lines.
wait_log() {
  for _ in $(seq 100); do
    (($(grep -c -- "$2" "$1" || true) >= ${3:-1})) && return 0
    sleep 0.1
  done
  fail "no \"$2\" in $1"
}

# stop_within_2s: SIGTERM, then a clean exit (0, "agent stopped") in time.
stop_within_2s() {
  local log=$1 start rc=0
  start=$(date +%s%N)
  kill -TERM "$PID"
  wait "$PID" || rc=$?
  PID=""
  local ms=$((($(date +%s%N) - start) / 1000000))
  [[ $rc == 0 ]] || fail "exit status $rc after SIGTERM"
  ((ms < 2000)) || fail "took ${ms} ms to stop"
  grep -q 'msg="agent stopped"' "$log" || fail "no \"agent stopped\" line"
}

# Flags.
expect_exit 0 --help
grep -q -- "--node_name" "$WORK/out.log" || fail "--help does not list --node_name"
grep -q -- "--status_interval" "$WORK/out.log" || fail "--help does not list --status_interval"
if grep -q -- "--grpc\|flags/parse" "$WORK/out.log"; then fail "--help lists library flags"; fi
expect_exit 2 --insecure
grep -q "node-name is required" "$WORK/out.log" || fail "no clear message for a missing --node-name"
expect_exit 2 --node-name NodeA --insecure
expect_exit 2 --node-name node-a
grep -q "TLS is not supported yet" "$WORK/out.log" || fail "no clear message without --insecure"
expect_exit 2 --node-name node-a --insecure --log-level loud
expect_exit 1 --node-name node-a --intent-file "$WORK/missing.yaml" --metrics-listen=

# Standalone: start, reload on SIGHUP, keep the old intent on a bad reload.
cat >"$WORK/tunnels.yaml" <<'YAML'
kind: Tunnel
metadata: {name: a-to-b}
spec:
  node: node-a
  local: {address: 192.0.2.1, trafficSelectors: [10.1.0.0/24]}
  remote: {node: node-b, address: 192.0.2.2, trafficSelectors: [10.2.0.0/24]}
  auth: {psk: "a key of more than sixteen characters"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16-ecp384]}
YAML
"$AGENT" --node-name node-b --intent-file "$WORK/tunnels.yaml" --metrics-listen= \
  >"$WORK/standalone.log" 2>&1 &
PID=$!
wait_log "$WORK/standalone.log" 'msg="agent running standalone"'
grep -q 'msg="tunnel added" node=node-b tunnel=a-to-b' "$WORK/standalone.log" ||
  fail "node-b does not run its half of a-to-b"
sed -i 's#10.2.0.0/24#10.2.0.0/23#' "$WORK/tunnels.yaml"
kill -HUP "$PID"
wait_log "$WORK/standalone.log" 'msg="tunnel updated" node=node-b tunnel=a-to-b'
echo "  esp: {proposals: [3des-md5]}" >>"$WORK/tunnels.yaml"
kill -HUP "$PID"
wait_log "$WORK/standalone.log" 'msg="intent file not reloaded; the running intent stays"'
stop_within_2s "$WORK/standalone.log"
# The key never reaches a log line.
if grep -q "sixteen characters" "$WORK"/*.log; then fail "PSK in the log"; fi

# Invalid intent at start: a clear error and a non-zero exit.
expect_exit 1 --node-name node-a --intent-file "$WORK/tunnels.yaml" --metrics-listen=
grep -q "spec.esp" "$WORK/out.log" || fail "no reason given for the invalid intent file"

# Controller mode with no controller and a corrupt state file: runs empty,
# keeps retrying, and stops in time.
mkdir -p "$WORK/state"
printf 'not a snapshot' >"$WORK/state/snapshot.pb"
"$AGENT" --node-name node-a --insecure --controller 127.0.0.1:1 --state-dir "$WORK/state" \
  --metrics-listen= >"$WORK/controller-mode.log" 2>&1 &
PID=$!
wait_log "$WORK/controller-mode.log" 'msg="persisted snapshot unreadable; starting without intent"'
wait_log "$WORK/controller-mode.log" 'msg="cannot reach the controller"'
stop_within_2s "$WORK/controller-mode.log"
echo PASS
