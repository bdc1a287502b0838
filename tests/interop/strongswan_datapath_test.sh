#!/usr/bin/env bash
# Interop data path: a Strait agent (standalone, --dataplane=userspace) and
# Debian's strongSwan (charon with kernel-libipsec) carry ping and TCP both
# ways through one tunnel.
#
# Six network namespaces: two gateways joined by a veth pair, "ss" runs
# charon (192.0.2.1) and "st" the agent (192.0.2.2); behind each a LAN
# namespace on a veth of its own: "lss" (10.1.0.2, gateway 10.1.0.1 on ss)
# and "lst" (10.2.0.2, gateway 10.2.0.1 on st). The tunnel joins
# 10.1.0.0/24 and 10.2.0.0/24 with a PSK. kernel-libipsec routes the remote
# selector through its TUN device with 10.1.0.1 as source (the address in
# its local selector that it needs); the agent does the same on its own TUN
# device. Both sides end up in ESP-in-UDP on port 4500: kernel-libipsec
# fakes a NAT, and Strait's userspace dataplane forces encapsulation.
#
# Cases: each ESP suite with Strait initiating (startAction: start) and with
# charon initiating (swanctl --initiate, the agent's tunnel startAction:
# add); and, for AES-GCM in both roles, charon deleting the CHILD SA and
# creating a new one in the same IKE SA before the traffic, and charon
# rekeying the IKE SA (Strait answers it, the CHILD SA moves to the new IKE
# SA) before the traffic. Each case starts
# a fresh charon and a fresh agent, waits for the CHILD SA on both sides,
# then:
#   - pings LAN to LAN both ways (small and 1300 bytes),
#   - runs iperf3 TCP for IPERF_SECONDS (3) each way,
#   - checks that Strait's per-tunnel ESP counters and swanctl --list-sas
#     byte counters both carried at least what iperf3 received each way,
#     that Strait's inbound SPI is charon's outbound one and vice versa,
#     and that no packet failed its ICV or replay check on Strait's side.
# Prints PASS/FAIL per case, and the agent's and charon's logs on failure.
#
# Usage: strongswan_datapath_test.sh PATH/TO/strait-agent   (needs root)
#   DATAPATH_ONLY=TEXT runs only the cases whose name contains TEXT;
#   DATAPATH_KEEP=1 keeps the work directory; IPERF_SECONDS=N.
set -uo pipefail

AGENT=$(realpath "${1:?usage: $0 PATH/TO/strait-agent}")
CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
IPERF_SECONDS=${IPERF_SECONDS:-3}
source "$(dirname "$0")/strongswan_lib.sh" || { echo "FAIL: no strongswan_lib.sh"; exit 1; }
require_tools "$CHARON" "$SWANCTL" ip unshare python3 iperf3 ping curl
require_root

# Unix socket paths are limited to 108 bytes, Bazel's TEST_TMPDIR is long.
WORK=$(mktemp -d /tmp/strait-sdp.XXXXXX)
TAG=$$
NS_SS=sdp-ss-$TAG NS_ST=sdp-st-$TAG NS_LSS=sdp-lss-$TAG NS_LST=sdp-lst-$TAG
CHARON_PID=
AGENT_PID=
IPERF_PID=
METRICS=192.0.2.2:9444
TUNNEL=to-charon
PSK="strongswan datapath interop key 0123456789"
CLEANUP_PIDS=(IPERF_PID AGENT_PID CHARON_PID)
KEEP=${DATAPATH_KEEP:-}
trap_cleanup

# --- charon ---

write_strongswan_conf \
  "random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 kernel-libipsec kernel-netlink socket-default vici" \
  "" \
  "default = 1
      ike = 2
      cfg = 1
      knl = 2
      esp = 1"

start_charon() { start_charon_daemon && load_psk_conn; }

stop_daemons() {
  kill_agent
  kill_charon
}

wait_installed() { wait_child_sa 30 0.2; }

show_logs() {
  echo "--- swanctl --initiate:"; cat "$WORK/initiate.out" 2>/dev/null
  echo "--- swanctl --list-sas:"; swanctl --list-sas 2>&1
  show_agent_logs
}

# The counters after the traffic: Strait's per-tunnel and per-SA ESP
# counters and charon's CHILD SA byte counters must both cover what iperf3
# moved each way, and the SPIs must pair up.
check_counters() {  # check_counters BYTES_TO_STRAIT BYTES_TO_CHARON
  sleep 2.5  # The agent reads its SA counters every 2 s.
  metrics >"$WORK/metrics.txt" || { echo "  no metrics from the agent"; return 1; }
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  python3 - "$WORK/metrics.txt" "$WORK/list-sas.out" "$TUNNEL" "$1" "$2" <<'PY'
import re, sys
metrics, sas, tunnel = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
to_strait, to_charon = int(sys.argv[4]), int(sys.argv[5])
errors = []

def samples(name):
    for m in re.finditer(r'^%s\{([^}]*)\} (\S+)$' % name, metrics, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("tunnel") == tunnel:
            yield labels, float(m.group(2))

tunnel_bytes = {l["direction"]: v for l, v in samples("strait_agent_tunnel_esp_bytes_total")}
tunnel_packets = {l["direction"]: v for l, v in samples("strait_agent_tunnel_esp_packets_total")}
sa_bytes = {(l["direction"], l["spi"]): v for l, v in samples("strait_agent_sa_bytes_total")}
failures = sum(v for name in ("strait_agent_sa_integrity_failures_total",
                              "strait_agent_sa_replay_failures_total")
               for _, v in samples(name))

# charon's CHILD SA: "in  SPI[ (...)],  N bytes,  M packets".
child = re.search(r'net: #\d+, reqid \d+, INSTALLED, TUNNEL-in-UDP, ESP:(\S+)\n(.*?)(?=\n\S|\Z)',
                  sas, re.S)
if not child:
    errors.append("swanctl --list-sas shows no INSTALLED TUNNEL-in-UDP CHILD SA")
else:
    body = child.group(2)
    ss = {}
    for d in ("in", "out"):
        m = re.search(r'\n\s+%s\s+([0-9a-f]{8})[^,]*,\s+(\d+) bytes,\s+(\d+) packets' % d, body)
        if m:
            ss[d] = (m.group(1), int(m.group(2)), int(m.group(3)))
        else:
            errors.append("swanctl --list-sas: no %s SPI with counters" % d)
    if len(ss) == 2:
        # charon's inbound SA is Strait's outbound one, and the other way.
        for ss_dir, st_dir in (("in", "out"), ("out", "in")):
            spi = ss[ss_dir][0]
            if (st_dir, spi) not in sa_bytes:
                errors.append("Strait has no %s SA with SPI %s (charon's %s); it has %s"
                              % (st_dir, spi, ss_dir, sorted(sa_bytes)))
        if ss["in"][1] < to_charon:
            errors.append("charon's inbound SA carried %d bytes, less than the %d iperf3 received "
                          "behind charon" % (ss["in"][1], to_charon))
        if ss["out"][1] < to_strait:
            errors.append("charon's outbound SA carried %d bytes, less than the %d iperf3 "
                          "received behind Strait" % (ss["out"][1], to_strait))
        print("  charon (swanctl --list-sas): in %s %d bytes %d packets, out %s %d bytes %d packets"
              % (ss["in"] + ss["out"]))
if tunnel_bytes.get("out", 0) < to_charon:
    errors.append("Strait's tunnel ESP out bytes %d < %d iperf3 received behind charon"
                  % (tunnel_bytes.get("out", 0), to_charon))
if tunnel_bytes.get("in", 0) < to_strait:
    errors.append("Strait's tunnel ESP in bytes %d < %d iperf3 received behind Strait"
                  % (tunnel_bytes.get("in", 0), to_strait))
if failures:
    errors.append("Strait counted %d integrity or replay failures" % failures)
print("  strait (metrics): in %d bytes %d packets, out %d bytes %d packets"
      % (tunnel_bytes.get("in", 0), tunnel_packets.get("in", 0),
         tunnel_bytes.get("out", 0), tunnel_packets.get("out", 0)))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
}

udp_rcvbuf_errors() {  # udp_rcvbuf_errors NAMESPACE
  ip netns exec "$1" awk '$1 == "Udp:" { if (!n++) { for (i = 2; i <= NF; i++) col[$i] = i } else print $col["RcvbufErrors"] }' /proc/net/snmp
}

# charon deletes the CHILD SA and creates a new one in the same IKE SA
# (CREATE_CHILD_SA without REKEY_SA), as it does after a CHILD SA's hard
# expiry or on `swanctl --terminate --child` and `--initiate --child`.
recreate_child() {
  local _ n
  swanctl --terminate --child net --timeout 10 >"$WORK/terminate.out" 2>&1 ||
    { echo "  swanctl --terminate --child failed:"; tail -n 5 "$WORK/terminate.out"; return 1; }
  for _ in $(seq 50); do
    metrics >"$WORK/metrics.txt" && n=$(metric_sum "$WORK/metrics.txt" strait_agent_child_sas)
    ((${n:-1} == 0)) && break
    sleep 0.2
  done
  ((${n:-1} == 0)) || { echo "  Strait still has a CHILD SA after charon deleted it"; return 1; }
  swanctl --initiate --child net --timeout 20 >"$WORK/initiate.out" 2>&1 ||
    { echo "  swanctl --initiate --child (a new CHILD SA in the IKE SA) failed:"
      tail -n 5 "$WORK/initiate.out"; return 1; }
  wait_installed
}

# charon rekeys the IKE SA (RFC 7296 §1.3.2): Strait answers the
# CREATE_CHILD_SA, and both ends move to the new IKE SA with the CHILD SA
# untouched. Passes when charon logs the rekey, swanctl lists one IKE SA
# with the new SPIs and the same CHILD SA, and the agent reports the same
# new SPIs and one answered IKE rekey. The traffic that follows goes
# through the same CHILD SA, now under the new IKE SA.
rekey_ike() {
  local _ settled= child_before child_after new_spis
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  child_before=$(awk '$1 == "in" || $1 == "out" { print $1, $2 }' "$WORK/list-sas.out" | tr -d ,)
  swanctl --rekey --ike strait >"$WORK/rekey.out" 2>&1 ||
    { echo "  swanctl --rekey --ike failed:"; tail -n 5 "$WORK/rekey.out"; return 1; }
  for _ in $(seq 100); do
    sleep 0.2
    grep -q "rekeyed between" "$WORK/charon.log" || continue
    swanctl --list-sas >"$WORK/list-sas.out" 2>&1 || continue
    metrics >"$WORK/metrics.txt" || continue
    # "strait: #2, ESTABLISHED, IKEv2, <spi_i>_i* <spi_r>_r": the new SA.
    new_spis=$(awk '/, ESTABLISHED, IKEv2, / { print $5, $6 }' "$WORK/list-sas.out" |
      tr -d '*' | sed 's/_i / /; s/_r$//')
    if (($(grep -c ", ESTABLISHED, IKEv2" "$WORK/list-sas.out") == 1 &&
      $(grep -c ", INSTALLED, " "$WORK/list-sas.out") == 1 &&
      $(metric_sum "$WORK/metrics.txt" strait_agent_ike_sas state=established) == 1 &&
      $(metric_sum "$WORK/metrics.txt" strait_agent_child_sas) == 1 &&
      $(metric_sum "$WORK/metrics.txt" strait_agent_ike_rekeys_total kind=ike role=responder \
        result=success) == 1)) &&
      grep -q "IKE SA rekeyed\".* spi_i=${new_spis% *} spi_r=${new_spis#* } " "$WORK/agent.log"; then
      settled=1
      break
    fi
  done
  [[ -n $settled ]] || {
    echo "  after charon's IKE SA rekey the ends did not settle on one new IKE SA (SPIs ${new_spis:-?}) with the CHILD SA:"
    sed 's/^/  | /' "$WORK/list-sas.out"; grep "IKE SA rekeyed" "$WORK/agent.log" | sed 's/^/  | /'
    return 1; }
  grep "rekeyed between" "$WORK/charon.log" | tail -n 1 | sed 's/^/  charon: /'
  echo "  new IKE SA: ${new_spis/ /_i }_r"
  child_after=$(awk '$1 == "in" || $1 == "out" { print $1, $2 }' "$WORK/list-sas.out" | tr -d ,)
  [[ $child_after == "$child_before" ]] || {
    echo "  the CHILD SA changed with the IKE SA rekey: before [$child_before], after [$child_after]"
    return 1; }
  # Traffic goes on; what went before the rekey is not counted.
  sleep 2.5
}

run_case() {  # run_case ROLE NAME [recreate|ike-rekey]: Strait's role
  local role=$1 name="strait $1, $2" status=0
  [[ $name == *"${DATAPATH_ONLY:-}"* ]] || return 0
  echo "=== $name"
  rm -f "$WORK"/initiate.out "$WORK"/ping-*.out "$WORK"/iperf-*
  if ! start_charon; then record "$name" 1; stop_daemons; return; fi
  # Strait initiates (startAction: start) or charon does (add).
  start_agent_and_initiate "$([[ $role == initiator ]] && echo start || echo add)" || status=1
  [[ $status -eq 0 ]] && { wait_installed || status=1; }
  [[ $status -eq 0 && ${3:-} == recreate ]] && { recreate_child || status=1; }
  [[ $status -eq 0 && ${3:-} == ike-rekey ]] && { rekey_ike || status=1; }
  [[ $status -eq 0 ]] && { run_traffic || status=1; }
  [[ $status -eq 0 ]] && { check_counters "$TO_STRAIT" "$TO_CHARON" || status=1; }
  # Where the packets that the SA counters miss went: UDP receive buffer
  # overflows on each gateway (ESP in UDP arrives there).
  echo "  UDP receive buffer errors: charon's gateway $(udp_rcvbuf_errors "$NS_SS")," \
    "Strait's gateway $(udp_rcvbuf_errors "$NS_ST")"
  record "$name" "$status"
  stop_daemons
}

setup_netns sd "$TAG" || { echo "FAIL: cannot set up the namespaces"; exit 1; }
START=$SECONDS
for suite in gcm cbc; do
  case $suite in
    gcm) C_IKE=aes128gcm16-prfsha256-x25519 C_ESP=aes128gcm16 ;;
    cbc) C_IKE=aes256-sha256-modp2048 C_ESP=aes256-sha256 ;;
  esac
  for role in initiator responder; do
    run_case "$role" "ESP $C_ESP"
  done
done
C_IKE=aes128gcm16-prfsha256-x25519 C_ESP=aes128gcm16
for role in initiator responder; do
  run_case "$role" "ESP $C_ESP, CHILD SA deleted and re-created by charon" recreate
  run_case "$role" "ESP $C_ESP, IKE SA rekeyed by charon" ike-rekey
done

summary
