#!/usr/bin/env bash
# Kills the controller with SIGKILL at random moments while tunnels are being
# applied and deleted, then checks that every acknowledged write survived:
# every tunnel whose Apply returned OK exists, every acknowledged Delete
# stays deleted.
source "$(dirname "$0")/lib.sh"
ROUNDS=${CRASH_ROUNDS:-20}
: >"$WORK/acked-applies"
: >"$WORK/acked-deletes"
: >"$WORK/attempted-deletes"

tunnel_yaml() {
  local i=$1
  cat <<YAML
kind: Tunnel
metadata: {name: crash-$i}
spec:
  node: crash-node-$((i % 3))
  local: {address: 192.0.2.1, trafficSelectors: [10.$((i / 250)).$((i % 250)).0/24]}
  remote: {address: 192.0.2.2, trafficSelectors: [172.16.0.0/16]}
  auth: {psk: "crash test key 0123456789abcdef"}
  ike: {proposals: [aes256gcm16-prfsha384-ecp384]}
  esp: {proposals: [aes256gcm16-ecp384]}
YAML
}

# Applies tunnels (and deletes every fourth) until the controller dies,
# recording only the writes the controller acknowledged.
writer() {
  local i=$1
  while true; do
    tunnel_yaml "$i" | "$CTL_BIN" apply -f - >/dev/null 2>&1 || return 0
    echo "crash-$i" >>"$WORK/acked-applies"
    if ((i % 4 == 3)); then
      # A delete that was cut off may or may not have committed.
      echo "crash-$((i - 1))" >>"$WORK/attempted-deletes"
      "$CTL_BIN" delete tunnel "crash-$((i - 1))" >/dev/null 2>&1 || return 0
      echo "crash-$((i - 1))" >>"$WORK/acked-deletes"
    fi
    i=$((i + 1))
  done
}

next=0
for round in $(seq "$ROUNDS"); do
  start_controller
  writer "$next" &
  writer_pid=$!
  sleep "0.$((RANDOM % 8 + 2))"
  kill -KILL "${PIDS[controller]}"
  wait "${PIDS[controller]}" 2>/dev/null || true
  unset "PIDS[controller]"
  wait "$writer_pid"
  next=$((next + 1000))
  log "round $round: $(wc -l <"$WORK/acked-applies") applies, $(wc -l <"$WORK/acked-deletes") deletes acknowledged so far"
done

start_controller
ctl get tunnels -o json >"$WORK/final.json"
python3 - "$WORK" <<'PY' || fail "acknowledged writes lost"
import json, sys
work = sys.argv[1]
stored = {t["metadata"]["name"] for t in json.load(open(work + "/final.json")).get("tunnels", [])}
applied = [l.strip() for l in open(work + "/acked-applies") if l.strip()]
deleted = {l.strip() for l in open(work + "/acked-deletes") if l.strip()}
attempted = {l.strip() for l in open(work + "/attempted-deletes") if l.strip()}
missing = [n for n in applied if n not in attempted and n not in stored]
resurrected = [n for n in deleted if n in stored]
print(f"acknowledged applies={len(applied)} deletes={len(deleted)} stored={len(stored)} "
      f"missing={len(missing)} resurrected={len(resurrected)}", file=sys.stderr)
if len(applied) < 20:
    print("too few writes acknowledged to mean anything", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if missing or resurrected else 0)
PY
log "PASS"
