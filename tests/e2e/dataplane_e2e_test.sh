#!/usr/bin/env bash
# Traffic through a tunnel, end to end: a controller and two agents (gateway
# namespaces gw-a and gw-b on an underlay veth), each site with a LAN
# namespace behind its gateway (10.1.0.0/24 and 10.2.0.0/24). One Tunnel
# applied with straitctl; the agents negotiate it with IKEv2 and program the
# dataplane (--dataplane, default userspace: this kernel has no ESP). Then:
# ping between the LANs, an iperf3 TCP stream that spans a CHILD SA rekey
# (child lifetime 40 s, margin 20 s), and the agents' per-SA counters prove
# the traffic went through ESP and the rekey happened. Needs root.
#
# Usage: dataplane_e2e_test.sh [--dataplane=userspace|xfrm]   (Bazel: no args)
set -euo pipefail
RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
CONTROLLER_BIN=${STRAIT_BIN_DIR:-$RUNFILES}/controller/strait-controller
AGENT_BIN=${STRAIT_BIN_DIR:-$RUNFILES}/agent/strait-agent
CTL_BIN=${STRAIT_BIN_DIR:-$RUNFILES}/cli/straitctl
DATAPLANE=userspace
for arg in "$@"; do
  case $arg in
    --dataplane=*) DATAPLANE=${arg#--dataplane=} ;;
    *) echo "usage: $0 [--dataplane=userspace|xfrm]" >&2; exit 2 ;;
  esac
done
IPERF_SECONDS=${IPERF_SECONDS:-30}
# Waits stretch in a VM (software emulation, tools/vm/run_in_vm.sh).
SLOW=1
[[ -n ${STRAIT_IN_VM:-} ]] && SLOW=6
# Progress on stderr, with the seconds since the start: in a VM nothing else
# shows until the end.
say() { echo "dataplane_e2e [$SECONDS s]: $*" >&2; }
# Polls COMMAND every 0.2 s until it succeeds or SECONDS seconds passed
# (a deadline, not a count: in a VM one try can take seconds).
wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

for tool in ip iperf3 ping jq curl python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)"; exit 1; }
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Unix socket paths must stay under 108 bytes, so not in TEST_TMPDIR.
# (In the VM /tmp is the host's 9p share, where sockets cannot live: /run.)
WORK=$(mktemp -d "${STRAIT_E2E_TMP:-/tmp}/sdp.XXXXXX")
P=sdp$$
GW_A=$P-gwa GW_B=$P-gwb LAN_A=$P-lana LAN_B=$P-lanb
PORT=$(free_port)
export STRAIT_CONTROLLER=127.0.0.1:$PORT STRAIT_INSECURE=1
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "$GW_A" "$GW_B" "$LAN_A" "$LAN_B"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  if [[ $DATAPLANE == xfrm ]]; then
    for ns in "$GW_A" "$GW_B"; do
      echo "---- $ns: ip -s xfrm state / policy, xfrm_stat" >&2
      ip -n "$ns" -s xfrm state | grep -vE '^\s+(aead|enc|auth|auth-trunc|comp) ' >&2 || true
      ip -n "$ns" xfrm policy >&2 || true
      ip netns exec "$ns" cat /proc/net/xfrm_stat 2>/dev/null | grep -v " 0$" >&2 || true
    done
  fi
  for f in "$WORK"/*.log; do
    echo "---- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}

for ns in "$GW_A" "$GW_B" "$LAN_A" "$LAN_B"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# Underlay between the gateways.
ip link add "$P-ua" netns "$GW_A" type veth peer name "$P-ub" netns "$GW_B"
ip -n "$GW_A" addr add 198.51.100.11/24 dev "$P-ua"
ip -n "$GW_B" addr add 198.51.100.12/24 dev "$P-ub"
ip -n "$GW_A" link set "$P-ua" up
ip -n "$GW_B" link set "$P-ub" up
# Each LAN behind its gateway.
ip link add "$P-la" netns "$LAN_A" type veth peer name "$P-ga" netns "$GW_A"
ip link add "$P-lb" netns "$LAN_B" type veth peer name "$P-gb" netns "$GW_B"
ip -n "$LAN_A" addr add 10.1.0.2/24 dev "$P-la"
ip -n "$GW_A" addr add 10.1.0.1/24 dev "$P-ga"
ip -n "$LAN_B" addr add 10.2.0.2/24 dev "$P-lb"
ip -n "$GW_B" addr add 10.2.0.1/24 dev "$P-gb"
for link in "$LAN_A $P-la" "$GW_A $P-ga" "$LAN_B $P-lb" "$GW_B $P-gb"; do
  read -r ns dev <<<"$link"
  ip -n "$ns" link set "$dev" up
done
ip -n "$LAN_A" route add default via 10.1.0.1
ip -n "$LAN_B" route add default via 10.2.0.1
for ns in "$GW_A" "$GW_B"; do
  ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv4/ip_forward"
done

# The kernel's own word (xfrm): `ip -s xfrm monitor` in each gateway prints
# every SA as it is added, updated and deleted, with its counters, so the
# SAs a rekey replaced still count; `ip -s xfrm state` adds the live ones.
if [[ $DATAPLANE == xfrm ]]; then
  for ns in "$GW_A" "$GW_B"; do
    ip -n "$ns" -s xfrm monitor nokeys SA >"$WORK/xfrm-monitor-$ns.txt" 2>&1 &
    PIDS+=($!)
  done
fi

"$CONTROLLER_BIN" --insecure --listen "127.0.0.1:$PORT,unix://$WORK/c.sock" \
  --data-dir "$WORK/controller" --metrics-listen "" >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
controller_up() { "$CTL_BIN" get nodes >/dev/null 2>&1; }
wait_for $((20 * SLOW)) controller_up || fail "controller did not come up"
say "controller up"

declare -A GW=([a]=$GW_A [b]=$GW_B) UNDERLAY=([a]=198.51.100.11 [b]=198.51.100.12)
for node in a b; do
  ip netns exec "${GW[$node]}" "$AGENT_BIN" --enable-ike --dataplane "$DATAPLANE" --insecure \
    --node-name "node-$node" --controller "unix://$WORK/c.sock" --state-dir "$WORK/agent-$node" \
    --metrics-listen "${UNDERLAY[$node]}:9444" --status-interval 1s >"$WORK/agent-$node.log" 2>&1 &
  PIDS+=($!)
done

"$CTL_BIN" apply -f - >"$WORK/apply.out" 2>&1 <<'YAML' || fail "apply failed: $(cat "$WORK/apply.out")"
kind: Tunnel
metadata:
  name: site-a-to-site-b
spec:
  node: node-a
  local:
    address: 198.51.100.11
    trafficSelectors: [10.1.0.0/24]
  remote:
    node: node-b
    address: 198.51.100.12
    trafficSelectors: [10.2.0.0/24]
  auth:
    psk: "dataplane e2e test key, not a secret"
  ike:
    proposals: [aes128gcm16-prfsha256-x25519]
  esp:
    proposals: [aes128gcm16]
    lifetime: 40s
    rekeyMargin: 20s
  startAction: start
YAML

phases() {
  "$CTL_BIN" get tunnel site-a-to-site-b -o json 2>/dev/null |
    jq -r '[.status.ends[]? | "\(.node)=\(.phase)"] | sort | join(" ")'
}
want="node-a=TUNNEL_PHASE_ESTABLISHED node-b=TUNNEL_PHASE_ESTABLISHED"
got=""
established() {
  got=$(phases || true)
  [[ $got == "$want" ]]
}
wait_for $((30 * SLOW)) established || fail "tunnel not ESTABLISHED within $((30 * SLOW)) s: \"$got\""
say "tunnel established"
"$CTL_BIN" get tunnel site-a-to-site-b -o json >"$WORK/tunnel.json"
backends=$(jq -r '[.status.ends[].dataplane] | unique | join(",")' "$WORK/tunnel.json")
[[ $backends == "$DATAPLANE" ]] || fail "status says dataplane \"$backends\", want $DATAPLANE"

# Sum of a per-SA counter of one agent, by direction.
sa_sum() { # NODE METRIC DIRECTION
  ip netns exec "${GW[$1]}" curl -fsS "http://${UNDERLAY[$1]}:9444/metrics" |
    awk -v m="$2" -v d="direction=\"$3\"" '$1 ~ "^"m"\\{" && index($1, d) { s += $2 } END { printf "%d\n", s }'
}

# Ping across, both ways.
ip netns exec "$LAN_A" ping -c 5 -i 0.2 -W 2 10.2.0.2 >"$WORK/ping-ab.log" 2>&1 ||
  fail "ping 10.1.0.2 -> 10.2.0.2 failed"
ip netns exec "$LAN_B" ping -c 5 -i 0.2 -W 2 10.1.0.2 >"$WORK/ping-ba.log" 2>&1 ||
  fail "ping 10.2.0.2 -> 10.1.0.2 failed"
ip netns exec "$LAN_A" ping -c 3 -s 1400 -W 2 10.2.0.2 >"$WORK/ping-big.log" 2>&1 ||
  fail "a 1400-byte ping did not pass"
# Each echo answered crossed A -> B once: the requests from A, the replies
# to B. (Not every one need be answered: a packet can be lost when a CHILD
# SA rekey races it.)
answered() { sed -n 's/.* \([0-9]\+\) received.*/\1/p' "$WORK/ping-$1.log"; }
pings_ab=$(( $(answered ab) + $(answered ba) + $(answered big) ))
say "pings passed ($pings_ab echoes answered)"
# The agents read SA counters every 2 s.
pings_counted() {
  packets_out_a=$(sa_sum a strait_agent_tunnel_esp_packets_total out)
  packets_in_b=$(sa_sum b strait_agent_tunnel_esp_packets_total in)
  ((packets_out_a >= pings_ab && packets_in_b >= pings_ab))
}
wait_for $((5 * SLOW)) pings_counted ||
  fail "ESP counters too low after $pings_ab answered pings: node-a out $packets_out_a, node-b in $packets_in_b"

# A TCP stream across at least one CHILD SA rekey.
rekeys() {
  ip netns exec "${GW[$1]}" curl -fsS "http://${UNDERLAY[$1]}:9444/metrics" |
    awk '$1 ~ /^strait_agent_ike_rekeys_total\{/ && /result="success"/ && /role="initiator"/ { s += $2 } END { printf "%d\n", s }'
}
rekeys_before=$(( $(rekeys a) + $(rekeys b) ))
spi_before=$(jq -r '.status.ends[] | select(.node == "node-a") | .childSas[0].inboundSpi' "$WORK/tunnel.json")
ip netns exec "$LAN_B" iperf3 -s -1 -p 5201 >"$WORK/iperf-server.log" 2>&1 &
PIDS+=($!)
sleep 0.5
say "iperf3 for $IPERF_SECONDS s"
ip netns exec "$LAN_A" iperf3 -c 10.2.0.2 -p 5201 -t "$IPERF_SECONDS" -J >"$WORK/iperf.json" 2>"$WORK/iperf-client.log" ||
  fail "iperf3 failed: $(tail -5 "$WORK/iperf-client.log")"
error=$(jq -r '.error // empty' "$WORK/iperf.json" 2>/dev/null)
[[ -z $error ]] || fail "iperf3: $error"
say "iperf3 done"
rekeys_after=$(( $(rekeys a) + $(rekeys b) ))
"$CTL_BIN" get tunnel site-a-to-site-b -o json >"$WORK/tunnel-after.json"
spi_after=$(jq -r '.status.ends[] | select(.node == "node-a") | .childSas[0].inboundSpi' "$WORK/tunnel-after.json")
((rekeys_after > rekeys_before)) || fail "no CHILD SA rekey during the stream ($rekeys_before -> $rekeys_after)"
[[ $spi_after != "$spi_before" ]] || fail "the CHILD SA's SPI did not change"
read -r sent received retransmits mbps < <(jq -r '[.end.sum_sent.bytes, .end.sum_received.bytes,
  .end.sum_sent.retransmits, (.end.sum_received.bits_per_second / 1e6 | floor)] | @tsv' "$WORK/iperf.json")
((received > 0)) || fail "iperf3 received nothing"
# Every byte sent arrived (TCP), and the stream never stalled for a whole
# second: each interval moved data. In a VM (software emulation on a busy
# host) starved virtual CPUs stall it for a second now and then, whatever
# the SAs do: there it must not stall for 3 seconds in a row (a rekey that
# broke the tunnel would stop it until the next one, 10 s or more).
stalled=$(jq '[.intervals[].sum.bytes | select(. == 0)] | length' "$WORK/iperf.json")
longest_stall=$(jq '[foreach .intervals[].sum.bytes as $b (0; if $b == 0 then . + 1 else 0 end)] | max // 0' "$WORK/iperf.json")
if [[ -n ${STRAIT_IN_VM:-} ]]; then
  ((longest_stall < 3)) || fail "the TCP stream stalled for $longest_stall seconds in a row"
else
  ((stalled == 0)) || fail "the TCP stream stalled in $stalled one-second intervals"
fi
stream_counted() {
  bytes_out_a=$(sa_sum a strait_agent_tunnel_esp_bytes_total out)
  ((bytes_out_a >= received))
}
wait_for $((5 * SLOW)) stream_counted ||
  fail "node-a's ESP SAs carried $bytes_out_a bytes, less than the $received iperf3 received"
integrity=$(( $(sa_sum b strait_agent_sa_integrity_failures_total in) + $(sa_sum a strait_agent_sa_integrity_failures_total in) ))
((integrity == 0)) || fail "$integrity ESP integrity failures"

kernel=
if [[ $DATAPLANE == xfrm ]]; then
  for ns in "$GW_A" "$GW_B"; do
    ip -n "$ns" -s xfrm state | grep -vE '^\s+(aead|enc|auth|auth-trunc|comp) ' >"$WORK/xfrm-state-$ns.txt" || fail "ip xfrm state in $ns failed"
  done
  sleep 0.5 # The monitors' last lines.
  # Per SA (source, destination, SPI) the highest counters the kernel
  # showed; per direction their sum. A -> B carried the answered pings and
  # every byte iperf3 received; B -> A the answered pings and TCP's ACKs. Both
  # gateways must agree on the SPIs and have no integrity or replay failures.
  kernel=$(python3 - "$WORK" "$GW_A" "$GW_B" "$received" "$pings_ab" <<'PY'
import re, sys
work, gw_a, gw_b, received = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pings_ab = int(sys.argv[5])
A, B = "198.51.100.11", "198.51.100.12"
errors, summary = [], []
def sas(text):
    out = {}
    for block in re.split(r'^(?=(?:Deleted |Updated |Expired )?src )', text, flags=re.M):
        head = re.match(r'(?:Deleted |Updated |Expired )?src (\S+) dst (\S+)\s+proto esp spi 0x([0-9a-f]+)', block)
        if not head:
            continue
        cur = re.search(r'lifetime current:\s+(\d+)\(bytes\), (\d+)\(packets\)', block)
        stats = re.search(r'stats:\s+replay-window \d+ replay (\d+) failed (\d+)', block)
        if not cur:
            continue
        now = (int(cur.group(1)), int(cur.group(2)),
               int(stats.group(1)) + int(stats.group(2)) if stats else 0)
        old = out.get(head.groups(), (0, 0, 0))
        out[head.groups()] = tuple(max(x, y) for x, y in zip(old, now))
    return out
for ns in (gw_a, gw_b):
    table = sas(open("%s/xfrm-monitor-%s.txt" % (work, ns)).read() + "\n" +
                open("%s/xfrm-state-%s.txt" % (work, ns)).read())
    for src, dst, want_packets, want_bytes in ((A, B, pings_ab, received), (B, A, pings_ab, 0)):
        rows = {k[2]: v for k, v in table.items() if k[0] == src and k[1] == dst}
        nbytes = sum(v[0] for v in rows.values())
        packets = sum(v[1] for v in rows.values())
        failures = sum(v[2] for v in rows.values())
        summary.append("%s %s->%s %d SAs %d bytes %d packets" % (ns[-3:], src[-3:], dst[-3:],
                                                                 len(rows), nbytes, packets))
        if packets < want_packets or nbytes < want_bytes:
            errors.append("%s: kernel SAs %s -> %s (SPIs %s) counted %d bytes, %d packets; want at "
                          "least %d bytes, %d packets" % (ns, src, dst, sorted(rows), nbytes,
                                                          packets, want_bytes, want_packets))
        if failures:
            errors.append("%s: %d replay/integrity failures on %s -> %s" % (ns, failures, src, dst))
    sas_of = lambda t: sorted(k for k in t if {k[0], k[1]} == {A, B})
    if ns == gw_a:
        spis_a = sas_of(table)
    elif sas_of(table) != spis_a:
        errors.append("the gateways saw different SAs: %s vs %s" % (spis_a, sas_of(table)))
print("kernel ESP: " + "; ".join(summary))
for e in errors:
    print("ERROR " + e)
sys.exit(1 if errors else 0)
PY
  ) || fail "$kernel"
  say "$kernel"
fi

echo "dataplane=$DATAPLANE ping ok; iperf3 ${IPERF_SECONDS}s: sent=$sent received=$received" \
  "retransmits=$retransmits ${mbps} Mbit/s, ${stalled} stalled s; rekeys $rekeys_before -> $rekeys_after;" \
  "CHILD SA $spi_before -> $spi_after; node-a ESP out bytes=$bytes_out_a"
echo PASS
