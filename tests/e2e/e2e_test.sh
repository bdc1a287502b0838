#!/usr/bin/env bash
# End to end: the real controller and two real agents as processes. Applies
# tunnels with straitctl, checks that each agent ACKs exactly its share,
# deletes a tunnel, restarts the controller and an agent, and checks that the
# agent resumes without a re-push and that nothing is lost.
source "$(dirname "$0")/lib.sh"

start_controller
start_agent node-a
start_agent node-b

cat >"$WORK/tunnels.yaml" <<YAML
kind: Tunnel
metadata: {name: a-to-gw, labels: {env: test}}
spec:
  node: node-a
  local: {address: 192.0.2.1, id: node-a.example.com, trafficSelectors: [10.1.0.0/24]}
  remote: {address: 192.0.2.100, id: gw.example.com, trafficSelectors: [10.100.0.0/16]}
  auth: {psk: "e2e secret number one 0123456789"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16-ecp384]}
---
kind: Tunnel
metadata: {name: b-to-gw}
spec:
  node: node-b
  local: {address: 192.0.2.2, trafficSelectors: [10.2.0.0/24]}
  remote: {address: 192.0.2.100, trafficSelectors: [10.101.0.0/16]}
  auth: {psk: "e2e secret number two 0123456789"}
  ike: {proposals: [aes256-sha256-modp2048]}
  esp: {proposals: [aes256-sha256]}
---
kind: Tunnel
metadata: {name: a-to-b}
spec:
  node: node-a
  local: {address: 192.0.2.1, trafficSelectors: [10.1.0.0/24]}
  remote: {node: node-b, address: 192.0.2.2, trafficSelectors: [10.2.0.0/24]}
  auth: {psk: "e2e secret number three 012345678"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16-ecp384]}
YAML
ctl apply -f "$WORK/tunnels.yaml" >"$WORK/apply.out" || fail "apply failed: $(cat "$WORK/apply.out")"
log "applied: $(tr '\n' ' ' <"$WORK/apply.out")"

wait_for "both agents in sync" nodes_in_sync 2

# Each agent ACKed exactly its share: it reports status for its tunnels only.
ends() { tunnel_eval "$1" '",".join(sorted(e["node"] for e in t.get("status", {}).get("ends", []) if e.get("phase")))'; }
ends_are() { [[ $(ends "$1") == "$2" ]]; }
wait_for "a-to-gw reported by node-a only" ends_are a-to-gw node-a
wait_for "b-to-gw reported by node-b only" ends_are b-to-gw node-b
wait_for "a-to-b reported by both" ends_are a-to-b node-a,node-b
[[ $(agent_metric node-a strait_agent_tunnels) == 2 ]] || fail "node-a should hold 2 tunnels"
[[ $(agent_metric node-b strait_agent_tunnels) == 2 ]] || fail "node-b should hold 2 tunnels"
[[ $(tunnel_eval a-to-b 't["status"]["ends"][0]["phase"]') == TUNNEL_PHASE_PENDING ]] ||
  fail "a-to-b should be PENDING"

# The PSK never comes back from a read API.
for fmt in json yaml table; do
  if ctl get tunnels -o "$fmt" | grep -q "e2e secret"; then fail "PSK returned by get -o $fmt"; fi
done
if ctl describe tunnel a-to-gw | grep -q "e2e secret"; then fail "PSK in describe"; fi

# What `get -o yaml` prints applies again unchanged: the redacted key names
# the stored one by its fingerprint.
ctl get tunnel a-to-gw -o yaml | ctl apply -f - | grep -q "tunnel/a-to-gw unchanged" ||
  fail "get -o yaml | apply -f - did not round-trip"

# Delete reaches the agent.
ctl delete tunnel b-to-gw >/dev/null || fail "delete failed"
wait_for "node-b in sync after delete" nodes_in_sync 2
wait_for "node-b dropped b-to-gw" agent_metric_is 1 node-b strait_agent_tunnels
if ctl get tunnel b-to-gw >/dev/null 2>&1; then fail "b-to-gw still readable after delete"; fi
before=$(ctl get tunnels -o json | python3 -c '
import json, sys
print(" ".join(sorted("%s@%s/%s" % (t["metadata"]["name"], t["metadata"]["generation"], t["metadata"]["revision"]) for t in json.load(sys.stdin)["tunnels"])))')
log "before restart: $before"

# Controller restart: the agents reconnect with their last applied version
# and get no push, because nothing changed.
stop controller
grep -q "controller stopped" "$WORK/controller.log" || fail "no clean-shutdown log line"
start_controller
wait_for "agents resumed" nodes_in_sync 2
after=$(ctl get tunnels -o json | python3 -c '
import json, sys
print(" ".join(sorted("%s@%s/%s" % (t["metadata"]["name"], t["metadata"]["generation"], t["metadata"]["revision"]) for t in json.load(sys.stdin)["tunnels"])))')
[[ $before == "$after" ]] || fail "tunnels changed across restart: '$before' vs '$after'"
[[ $(controller_metric strait_controller_snapshot_pushes_total) == 0 ]] ||
  fail "controller re-pushed after restart"

# Agent restart: it loads its persisted snapshot and resumes without a push.
stop agent-node-a
start_agent node-a
wait_for "node-a resumed" agent_metric_is 1 node-a strait_agent_session_state 'state="connected"'
wait_for "node-a in sync" nodes_in_sync 2
[[ $(agent_metric node-a strait_agent_tunnels) == 2 ]] || fail "node-a lost tunnels over restart"
[[ $(agent_metric node-a strait_agent_snapshots_applied_total) == 0 ]] ||
  fail "node-a got a re-push after restart"
[[ $(controller_metric strait_controller_snapshot_pushes_total) == 0 ]] ||
  fail "controller pushed to a resumed agent"

# With the controller down, a restarted agent keeps serving its last snapshot.
stop controller
stop agent-node-b
start_agent node-b
wait_for "node-b serves persisted intent" agent_metric_is 1 node-b strait_agent_tunnels

# And a new change after the controller returns is pushed to node-b only.
start_controller
wait_for "agents back" nodes_in_sync 2
ctl apply -f - >/dev/null <<YAML || fail "apply of a-to-b change failed"
$(python3 -c '
import sys
docs = open(sys.argv[1]).read().split("---\n")
print(docs[2].replace("trafficSelectors: [10.2.0.0/24]", "trafficSelectors: [10.2.0.0/24, 10.22.0.0/24]"))' "$WORK/tunnels.yaml")
YAML
wait_for "change acked" nodes_in_sync 2
[[ $(tunnel_eval a-to-b 't["metadata"]["generation"]') == 2 ]] || fail "a-to-b generation should be 2"
log "PASS"
