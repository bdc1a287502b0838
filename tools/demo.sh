#!/usr/bin/env bash
# Strait's main job on embedded defaults: a controller on its SQLite store,
# two agents in network namespaces (node-a, node-b) joined by a bridge, the
# example tunnels applied, status and metrics URLs printed. Runs in the
# foreground; Ctrl-C (or `tools/demo.sh stop` from another shell) stops
# everything and removes the namespaces. Needs root.
#
#   sudo tools/demo.sh          # start, wait for Ctrl-C
#   sudo tools/demo.sh stop     # stop a running demo
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=${STRAIT_DEMO_RUN:-/run/strait-demo}
DATA=${STRAIT_DEMO_DATA:-/var/lib/strait-demo}
PREFIX=${STRAIT_DEMO_PREFIX:-strait}
BRIDGE=$PREFIX-br0
NODES=(node-a node-b)
declare -A ADDR=([node-a]=198.51.100.11 [node-b]=198.51.100.12)
declare -A INNER=([node-a]=10.1.0.1/24 [node-b]=10.2.0.1/24)
API=${STRAIT_DEMO_API:-127.0.0.1:7443}
METRICS=${STRAIT_DEMO_METRICS:-127.0.0.1:9443}

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root for network namespaces (sudo tools/demo.sh)" >&2
  exit 1
fi

stop() {
  # Claim the pid list first, so that a `stop` from another shell and the
  # foreground script's own exit never both work on it.
  local pids=$RUN/pids.stopping.$$
  if mv "$RUN/pids" "$pids" 2>/dev/null; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$pids"
    for _ in $(seq 50); do
      alive=0
      while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$pids"
      ((alive)) || break
      sleep 0.1
    done
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$pids"
    rm -f "$pids"
  fi
  for n in "${NODES[@]}"; do ip netns del "$PREFIX-$n" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
}

if [[ ${1:-} == stop ]]; then
  stop
  echo "demo: stopped"
  exit 0
fi

# STRAIT_DEMO_BIN_DIR: use these binaries instead of building (tests do).
if [[ -z ${STRAIT_DEMO_BIN_DIR:-} ]]; then
  tools/setup.sh
  bazel build -c opt //controller:strait-controller //agent:strait-agent //cli:straitctl
fi
SRC=${STRAIT_DEMO_BIN_DIR:-bazel-bin}
BIN=$RUN/bin
stop
mkdir -p "$RUN/logs" "$BIN" "$DATA"
# Copies, so that a later `bazel build` cannot swap binaries under the demo.
install -m 0755 "$SRC/controller/strait-controller" "$SRC/agent/strait-agent" \
  "$SRC/cli/straitctl" "$BIN/"

trap 'echo; echo "demo: stopping"; stop; echo "demo: stopped"' EXIT
trap 'exit 0' INT TERM

# Underlay: a bridge on the host and one namespace per node.
ip link add "$BRIDGE" type bridge
ip addr add 198.51.100.1/24 dev "$BRIDGE"
ip link set "$BRIDGE" up
for n in "${NODES[@]}"; do
  ns=$PREFIX-$n
  ip netns add "$ns"
  ip link add "$PREFIX-$n" type veth peer name eth0 netns "$ns"
  ip link set "$PREFIX-$n" master "$BRIDGE" up
  ip -n "$ns" addr add "${ADDR[$n]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # The network behind the node, which its tunnels carry. (On the loopback
  # device: some kernels, this sandbox's among them, lack the dummy driver.)
  ip -n "$ns" addr add "${INNER[$n]}" dev lo
done

"$BIN/strait-controller" --insecure --data-dir "$DATA/controller" \
  --listen "$API,unix://$RUN/controller.sock" --metrics-listen "$METRICS" \
  >"$RUN/logs/controller.log" 2>&1 &
echo $! >>"$RUN/pids"

for _ in $(seq 100); do [[ -S $RUN/controller.sock ]] && break; sleep 0.1; done
[[ -S $RUN/controller.sock ]] || { echo "demo: controller did not start:"; tail "$RUN/logs/controller.log"; exit 1; }

for n in "${NODES[@]}"; do
  # Agents reach the controller over its Unix socket, which crosses network
  # namespaces; their metrics listen on the underlay address.
  ip netns exec "$PREFIX-$n" "$BIN/strait-agent" --insecure --enable-ike --node-name "$n" \
    --controller "unix://$RUN/controller.sock" --state-dir "$DATA/$n" \
    --metrics-listen "${ADDR[$n]}:9444" >"$RUN/logs/$n.log" 2>&1 &
  echo $! >>"$RUN/pids"
done

export STRAIT_CONTROLLER=$API STRAIT_INSECURE=1
"$BIN/straitctl" apply -f deploy/examples/tunnels.yaml

# Wait until every agent has acknowledged its share.
in_sync() {
  "$BIN/straitctl" get nodes -o json | python3 -c '
import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
sys.exit(0 if len(nodes) == 2 and all(
    n.get("connected") and n.get("ackedVersion") == n.get("currentVersion") for n in nodes) else 1)'
}
for _ in $(seq 100); do in_sync && break; sleep 0.1; done

# And until the node-to-node tunnel is up at both ends (IKEv2 between the
# agents; branch-to-vpc has no gateway behind it and keeps retrying).
established() {
  "$BIN/straitctl" get tunnel a-to-b -o json | python3 -c '
import json, sys
ends = json.load(sys.stdin).get("status", {}).get("ends", [])
sys.exit(0 if len(ends) == 2 and all(e.get("phase") == "TUNNEL_PHASE_ESTABLISHED" for e in ends) else 1)'
}
for _ in $(seq 150); do established && break; sleep 0.2; done

echo
"$BIN/straitctl" get nodes
echo
"$BIN/straitctl" get tunnels
cat <<INFO

Strait demo is running.
  status:     $BIN/straitctl --controller $API --insecure get tunnels   (or: describe tunnel a-to-b)
  API:        grpc://$API (health: grpc.health.v1, reflection enabled)
  metrics:    http://$METRICS/metrics (controller)
              http://${ADDR[node-a]}:9444/metrics (agent node-a)
              http://${ADDR[node-b]}:9444/metrics (agent node-b)
  logs:       $RUN/logs/
  stop:       Ctrl-C here, or: sudo tools/demo.sh stop
INFO

# Stay up until interrupted or until a daemon dies.
while true; do
  [[ -f $RUN/pids ]] || exit 0 # stopped from another shell
  while read -r pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: process $pid exited; logs in $RUN/logs" >&2
      exit 1
    fi
  done <"$RUN/pids"
  sleep 1
done
