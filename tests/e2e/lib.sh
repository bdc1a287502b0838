# Helpers shared by the end-to-end tests: real binaries as processes on
# loopback, in a per-test temporary directory.
set -euo pipefail

RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
CONTROLLER_BIN=$RUNFILES/controller/strait-controller
AGENT_BIN=$RUNFILES/agent/strait-agent
CTL_BIN=$RUNFILES/cli/straitctl
WORK=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e.XXXXXX")
declare -A PIDS=()

log() { echo "[$(date +%H:%M:%S.%N | cut -c1-12)] $*" >&2; }
fail() {
  log "FAIL: $*"
  for f in "$WORK"/*.log; do
    [[ -f $f ]] || continue
    echo "---- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

cleanup() {
  for name in "${!PIDS[@]}"; do kill -KILL "${PIDS[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A free TCP port on loopback. The controller keeps its port across restarts
# (agents reconnect to it), so port 0 cannot be used for it.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

CTRL_PORT=$(free_port)
CTRL_METRICS_PORT=$(free_port)
export STRAIT_CONTROLLER=127.0.0.1:$CTRL_PORT STRAIT_INSECURE=1

start_controller() {
  "$CONTROLLER_BIN" --insecure --listen "127.0.0.1:$CTRL_PORT" --data-dir "$WORK/controller" \
    --metrics-listen "127.0.0.1:$CTRL_METRICS_PORT" "$@" >>"$WORK/controller.log" 2>&1 &
  PIDS[controller]=$!
  wait_for "controller health" ctl get nodes
}

# stop NAME [SIGNAL]: stops a daemon and checks a clean exit for SIGTERM.
stop() {
  local name=$1 sig=${2:-TERM} pid=${PIDS[$1]} rc=0
  kill "-$sig" "$pid"
  wait "$pid" || rc=$?
  unset "PIDS[$name]"
  if [[ $sig == TERM && $rc -ne 0 ]]; then fail "$name exited with $rc after SIGTERM"; fi
  return 0
}

declare -A AGENT_METRICS_PORT=()
start_agent() {
  local node=$1
  shift
  [[ -n ${AGENT_METRICS_PORT[$node]:-} ]] || AGENT_METRICS_PORT[$node]=$(free_port)
  "$AGENT_BIN" --insecure --node-name "$node" --controller "127.0.0.1:$CTRL_PORT" \
    --state-dir "$WORK/agent-$node" --metrics-listen "127.0.0.1:${AGENT_METRICS_PORT[$node]}" \
    --status-interval 1s "$@" >>"$WORK/agent-$node.log" 2>&1 &
  PIDS[agent-$node]=$!
}

ctl() { "$CTL_BIN" "$@" 2>>"$WORK/straitctl.log"; }

# wait_for DESCRIPTION COMMAND...: retries COMMAND for up to 20 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "timed out waiting for $what"
}

# metric URL NAME [LABELS]: prints a sample's value (0 when absent).
metric() {
  curl -fsS "$1" | python3 -c '
import sys
name, labels = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
total = 0.0
for line in sys.stdin:
    if line.startswith("#"):
        continue
    key, _, value = line.rstrip().rpartition(" ")
    metric = key.split("{")[0]
    if metric == name and all(l in key for l in labels.split(",") if l):
        total += float(value)
print(int(total) if total == int(total) else total)' "$2" "${3:-}"
}
# metric_is WANT URL-KIND... : for wait_for, re-reads the metric each try.
agent_metric_is() { [[ $(agent_metric "${@:2}") == "$1" ]]; }
controller_metric() { metric "http://127.0.0.1:$CTRL_METRICS_PORT/metrics" "$@"; }
agent_metric() { metric "http://127.0.0.1:${AGENT_METRICS_PORT[$1]}/metrics" "${@:2}"; }

# nodes_in_sync N: every one of N nodes is connected and has ACKed its
# current version.
nodes_in_sync() {
  ctl get nodes -o json | python3 -c '
import json, sys
want = int(sys.argv[1])
nodes = json.load(sys.stdin).get("nodes", [])
ok = [n for n in nodes if n.get("connected") and n.get("ackedVersion") == n.get("currentVersion")]
sys.exit(0 if len(ok) == want else 1)' "$1"
}

# tunnel_json NAME EXPR: evaluates a Python expression over the tunnel `t`.
tunnel_eval() {
  ctl get tunnel "$1" -o json | python3 -c '
import json, sys
t = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2"
}
