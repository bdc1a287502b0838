#!/usr/bin/env bash
# IKE_SA_INIT flood (acceptance test for responder cookies and half-open
# limits). In a network namespace of its own: a strait-agent answers for a
# tunnel 127.0.0.1 <-> 127.0.0.2; ike_flood sends spoofed IKE_SA_INIT
# requests (half claiming to be the real peer 127.0.0.2, half from random
# 127/8 addresses) for FLOOD_SECONDS; meanwhile strait-ike, the real peer,
# connects. Passes when the real peer's SA is established within
# BOUND_SECONDS, the agent sent cookies, its half-open IKE SAs stayed within
# the tunnel's bound, and it is still running. Prints the flood rate and the
# real handshake's latency without and with the flood. Needs root.
set -euo pipefail
RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
AGENT=$RUNFILES/agent/strait-agent
STRAIT_IKE=$RUNFILES/agent/ike/strait-ike
FLOOD=$RUNFILES/tests/flood/ike_flood
# The flood stops when the real handshake is done, else after FLOOD_SECONDS.
FLOOD_SECONDS=${FLOOD_SECONDS:-30}
FLOOD_MAX_RATE=${FLOOD_MAX_RATE:-20000}
BOUND_SECONDS=${BOUND_SECONDS:-20}
MAX_HALF_OPEN=4  # The runner's half-open slots per tunnel.

WORK=$(mktemp -d /tmp/sflood.XXXXXX)
NS=sflood$$
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log "$WORK"/*.json; do
    [[ -f $f ]] || continue
    echo "---- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}
in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
in_ns ip link set lo up

PSK="flood test key, not a secret 0123456789"
printf '%s' "$PSK" >"$WORK/psk"
chmod 0600 "$WORK/psk"
cat >"$WORK/tunnels.yaml" <<YAML
kind: Tunnel
metadata:
  name: gw-peer
spec:
  node: gw
  local:
    address: 127.0.0.1
    trafficSelectors: [10.1.0.0/24]
  remote:
    address: 127.0.0.2
    trafficSelectors: [10.2.0.0/24]
  auth:
    psk: "$PSK"
  ike:
    proposals: [aes256gcm16-prfsha384-ecp384]
  esp:
    proposals: [aes256gcm16]
  startAction: add
YAML
chmod 0600 "$WORK/tunnels.yaml"

ip netns exec "$NS" "$AGENT" --node-name gw --intent-file "$WORK/tunnels.yaml" --state-dir "$WORK/agent" \
  --enable-ike --dataplane memory --metrics-listen 127.0.0.1:9444 --status-interval 1s \
  >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

metrics() { in_ns curl -fsS http://127.0.0.1:9444/metrics 2>/dev/null; }
# metric NAME [LABEL="VALUE" ...]: the sum of the samples with all the labels.
metric() {
  metrics | awk -v name="$1" -v want="${*:2}" '
    BEGIN { n = split(want, w, " ") }
    $1 ~ "^" name "(\\{|$)" {
      ok = 1
      for (i = 1; i <= n; i++) if (index($1, w[i]) == 0) ok = 0
      if (ok) s += $2
    }
    END { printf "%d\n", s }'
}
for _ in $(seq 100); do
  metrics >/dev/null && break
  sleep 0.1
done
metrics >/dev/null || fail "the agent's metrics endpoint did not come up"
for _ in $(seq 100); do
  grep -q '"AWAITING_PEER"\|AWAITING_PEER' "$WORK/agent.log" && break
  sleep 0.1
done

# connect NAME [RESPONDER]: strait-ike as the real peer (127.0.0.2) to the
# agent (127.0.0.1) or RESPONDER; prints the seconds it took.
connect() {
  local start end
  start=$(date +%s.%N)
  in_ns "$STRAIT_IKE" --local 127.0.0.2 --remote "${2:-127.0.0.1}" --psk-file "$WORK/psk" \
    --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24 --initiate --timeout "${BOUND_SECONDS}s" \
    --ike-proposals aes256gcm16-prfsha384-ecp384 --esp-proposals aes256gcm16 \
    >"$WORK/$1.json" 2>"$WORK/$1.log" || fail "$1: strait-ike did not establish"
  end=$(date +%s.%N)
  grep -q 'ESTABLISHED' "$WORK/$1.json" || fail "$1: not established: $(cat "$WORK/$1.json")"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

baseline=$(connect baseline)

# The agent's CPU time (user + system, seconds) from /proc.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$AGENT_PID/stat"
}
init_before=$(metric strait_agent_ike_messages_total 'exchange="IKE_SA_INIT"' 'direction="in"')
cpu_before=$(cpu_seconds)

# Half-open SAs, sampled while the flood runs.
(
  while true; do
    metric strait_agent_ike_half_open_sas >>"$WORK/half_open.samples" || true
    sleep 0.1
  done
) &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

ip netns exec "$NS" "$FLOOD" --target 127.0.0.1 --port 500 --peer 127.0.0.2 --peer_share 0.5 \
  --spoof_net 127.0.0.0/8 --duration "${FLOOD_SECONDS}s" --max_rate "$FLOOD_MAX_RATE" \
  --count 2000000 >"$WORK/flood.json" 2>"$WORK/flood.log" &
FLOOD_PID=$!
PIDS+=("$FLOOD_PID")
sleep 2  # Let the flood fill the half-open slots first.
kill -0 "$FLOOD_PID" 2>/dev/null || fail "ike_flood ended early"
under_flood=$(connect under_flood)
kill -0 "$FLOOD_PID" 2>/dev/null || fail "the flood ended before the real handshake did"
kill -TERM "$FLOOD_PID"
wait "$FLOOD_PID" || fail "ike_flood failed"
kill "$SAMPLER_PID" 2>/dev/null || true

kill -0 "$AGENT_PID" 2>/dev/null || fail "the agent died"
cpu_after=$(cpu_seconds)
cookies=$(metric strait_agent_ike_cookies_sent_total)
rejected=$(metric strait_agent_ike_cookies_rejected_total)
no_tunnel=$(metric strait_agent_ike_dropped_total 'reason="no_tunnel"')
source_limit=$(metric strait_agent_ike_dropped_total 'reason="source_limit"')
init_in=$(metric strait_agent_ike_messages_total 'exchange="IKE_SA_INIT"' 'direction="in"')
responder_ok=$(metric strait_agent_ike_handshakes_total 'role="responder"' 'result="success"')
max_half_open=$(sort -n "$WORK/half_open.samples" | tail -1)
samples=$(wc -l <"$WORK/half_open.samples")

echo "flood:                $(cat "$WORK/flood.json")"
echo "handshake, no flood:  ${baseline} s"
echo "handshake, flood:     ${under_flood} s"
cpu_per_request=$(awk -v c="$cpu_after" -v b="$cpu_before" -v n="$init_in" -v m="$init_before" \
  'BEGIN { if (n > m) printf "%.1f", (c - b) * 1e6 / (n - m); else print "n/a" }')
echo "agent CPU during the flood: $(awk -v c="$cpu_after" -v b="$cpu_before" 'BEGIN { printf "%.2f", c - b }') s," \
  "${cpu_per_request} us per IKE_SA_INIT received (metrics scrapes included)"
echo "agent: IKE_SA_INIT in ${init_in}, cookies sent ${cookies}, cookies rejected ${rejected}," \
  "dropped no_tunnel ${no_tunnel}, source_limit ${source_limit}, responder successes" \
  "${responder_ok}, half-open max ${max_half_open} (${samples} samples)"

((cookies > 0)) || fail "no cookies sent under the flood"
((no_tunnel > 0)) || fail "no spoofed request from other addresses was counted"
((responder_ok == 2)) || fail "want 2 responder handshakes, got ${responder_ok}"
((samples > 3)) || fail "too few half-open samples (${samples})"
((max_half_open <= MAX_HALF_OPEN)) ||
  fail "half-open IKE SAs reached ${max_half_open} (bound ${MAX_HALF_OPEN})"
awk -v t="$under_flood" -v b="$BOUND_SECONDS" 'BEGIN { exit !(t < b) }' ||
  fail "the real handshake took ${under_flood} s under the flood"

# strait-ike as responder: its own I/O loop and one engine, so one spoofed
# IKE_SA_INIT that claims to be the peer takes its only responder slot
# (shown first, without cookies); with --require-cookie it cannot. A lower
# rate than above: strait-ike is a debugging tool, and on this shared
# machine its two ends and the flooder share the CPU.
FLOOD_IKE_MAX_RATE=${FLOOD_IKE_MAX_RATE:-5000}
ike_responder() {  # ike_responder NAME [FLAG]
  ip netns exec "$NS" "$STRAIT_IKE" --local 127.0.0.3 --remote 127.0.0.2 --psk-file "$WORK/psk" \
    --local-ts 10.1.0.0/24 --remote-ts 10.2.0.0/24 --timeout "$((BOUND_SECONDS + 15))s" \
    --ike-proposals aes256gcm16-prfsha384-ecp384 --esp-proposals aes256gcm16 ${2:+"$2"} \
    --log-level info >"$WORK/$1.json" 2>"$WORK/$1.log" &
  RESPONDER_PID=$!
  PIDS+=("$RESPONDER_PID")
  sleep 0.3
}
start_ike_flood() {  # start_ike_flood NAME
  ip netns exec "$NS" "$FLOOD" --target 127.0.0.3 --port 500 --peer 127.0.0.2 --peer_share 0.5 \
    --spoof_net 127.0.0.0/8 --duration "${FLOOD_SECONDS}s" --max_rate "$FLOOD_IKE_MAX_RATE" \
    --count 2000000 >"$WORK/$1.json" 2>"$WORK/$1.log" &
  FLOOD_PID=$!
  PIDS+=("$FLOOD_PID")
  sleep 2
}
ike_responder ike-responder-baseline --require-cookie
ike_baseline=$(connect ike-initiator-baseline 127.0.0.3)
wait "$RESPONDER_PID" || fail "strait-ike responder (no flood) did not establish"

# Without cookies the flood takes the slot: the real peer fails.
ike_responder ike-responder-nocookie
start_ike_flood flood-ike-nocookie
if in_ns "$STRAIT_IKE" --local 127.0.0.2 --remote 127.0.0.3 --psk-file "$WORK/psk" \
  --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24 --initiate --timeout 5s \
  --ike-proposals aes256gcm16-prfsha384-ecp384 --esp-proposals aes256gcm16 \
  >"$WORK/ike-initiator-nocookie.json" 2>&1; then
  fail "without --require-cookie the flood should have taken strait-ike's responder slot"
fi
kill -TERM "$FLOOD_PID" "$RESPONDER_PID"
wait "$FLOOD_PID" || true
wait "$RESPONDER_PID" || true

ike_responder ike-responder-flood --require-cookie
start_ike_flood flood-ike
kill -0 "$RESPONDER_PID" 2>/dev/null || fail "strait-ike responder ended during the flood"
ike_flood=$(connect ike-initiator-flood 127.0.0.3)
kill -TERM "$FLOOD_PID"
wait "$FLOOD_PID" || fail "ike_flood failed"
wait "$RESPONDER_PID" || fail "strait-ike responder did not establish under the flood"
grep -q 'cookies sent' "$WORK/ike-responder-flood.log" ||
  fail "strait-ike sent no cookies under the flood"
echo "strait-ike responder --require-cookie: flood $(cat "$WORK/flood-ike.json")"
echo "  handshake, no flood: ${ike_baseline} s; flood: ${ike_flood} s;" \
  "$(grep -o 'count=[0-9]*' "$WORK/ike-responder-flood.log" | head -1 | sed 's/count=/cookies sent /');" \
  "without --require-cookie: $(grep -o '"reason":"[A-Z_]*"' "$WORK/ike-initiator-nocookie.json")"
echo PASS
