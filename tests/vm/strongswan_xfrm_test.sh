#!/usr/bin/env bash
# Interop through the kernel's ESP: a Strait agent (standalone,
# --dataplane=xfrm) and Debian's strongSwan (charon with its kernel-netlink
# plugin, not kernel-libipsec) carry ping and TCP both ways between two LAN
# namespaces. This machine's kernel has no ESP, so the test runs in a VM on
# Debian's own kernel (tools/vm/run_in_vm.sh); the VM sees the host's /, so
# the host's strongSwan packages (tools/setup.sh) run there as they are.
#
# Four network namespaces: gateways "ss" (charon, 192.0.2.1) and "st" (the
# agent, 192.0.2.2) on a veth pair, and behind each a LAN namespace: "lss"
# (10.1.0.2, gateway 10.1.0.1) and "lst" (10.2.0.2, gateway 10.2.0.1). One
# tunnel joins 10.1.0.0/24 and 10.2.0.0/24 with a PSK; no NAT, so both ends
# install plain ESP (protocol 50) SAs in their namespace's kernel.
#
# Cases: Strait initiating with AES-GCM, charon initiating with AES-CBC +
# HMAC-SHA-256. Each starts a fresh charon and agent, waits for the CHILD SA
# at both ends, then:
#   - pings LAN to LAN both ways (small and 1300 bytes),
#   - runs iperf3 TCP for IPERF_SECONDS (3) each way,
#   - passes only if, in each gateway's kernel (`ip -s xfrm state`), the SA
#     from charon to Strait and the one back each counted at least the
#     bytes iperf3 received that way plus the pings, with no integrity or
#     replay failures; the SPIs of those kernel SAs are the ones swanctl
#     --list-sas shows for charon's CHILD SA and Strait's metrics for its
#     own; and the agent runs the "xfrm" dataplane.
#
# Usage: strongswan_xfrm_test.sh PATH/TO/strait-agent   (root; Bazel passes it)
#   IPERF_SECONDS=N; STRAIT_VM_KEEP=1 keeps the VM's run folder.
set -uo pipefail

if [[ ${1:-} != --inside-vm ]]; then
  agent=$(realpath "${1:?usage: $0 PATH/TO/strait-agent}") || exit 1
  exec tools/vm/run_in_vm.sh --timeout 600 -- "$0" --inside-vm "$agent"
fi
AGENT=${2:?}
echo "strongswan_xfrm_test: in a VM on kernel $(uname -r)"

CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
IPERF_SECONDS=${IPERF_SECONDS:-3}
for tool in "$CHARON" "$SWANCTL" ip python3 iperf3 ping curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)"; exit 1; }
done
[[ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-netlink.so ]] ||
  { echo "FAIL: strongSwan's kernel-netlink plugin is missing (tools/setup.sh)"; exit 1; }

# Unix sockets cannot live on the VM's 9p root: the work folder is on /run
# (a tmpfs of the VM's own), copied to the test's outputs at the end.
WORK=$(mktemp -d /run/sxt.XXXXXX)
# Neither can files be used after unlinking them there, which iperf3 does
# with its stream buffers in TMPDIR.
export TMPDIR=$WORK
NS_SS=sxt-ss NS_ST=sxt-st NS_LSS=sxt-lss NS_LST=sxt-lst
CHARON_PID=
AGENT_PID=
IPERF_PID=
METRICS=192.0.2.2:9444
TUNNEL=to-charon
PSK="strongswan xfrm interop key 0123456789"

cleanup() {
  local p
  for p in $IPERF_PID $AGENT_PID $CHARON_PID; do kill "$p" 2>/dev/null; done
  for p in $IPERF_PID $AGENT_PID $CHARON_PID; do wait "$p" 2>/dev/null; done
  for ns in "$NS_SS" "$NS_ST" "$NS_LSS" "$NS_LST"; do ip netns del "$ns" 2>/dev/null; done
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

setup_netns() {
  local ns link dev
  for ns in "$NS_SS" "$NS_ST" "$NS_LSS" "$NS_LST"; do
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
  done
  ip link add sxt-u netns "$NS_SS" type veth peer name sxt-v netns "$NS_ST" || return 1
  ip -n "$NS_SS" addr add 192.0.2.1/24 dev sxt-u
  ip -n "$NS_ST" addr add 192.0.2.2/24 dev sxt-v
  ip link add sxt-l netns "$NS_LSS" type veth peer name sxt-g netns "$NS_SS" || return 1
  ip link add sxt-m netns "$NS_LST" type veth peer name sxt-h netns "$NS_ST" || return 1
  ip -n "$NS_LSS" addr add 10.1.0.2/24 dev sxt-l
  ip -n "$NS_SS" addr add 10.1.0.1/24 dev sxt-g
  ip -n "$NS_LST" addr add 10.2.0.2/24 dev sxt-m
  ip -n "$NS_ST" addr add 10.2.0.1/24 dev sxt-h
  for link in "$NS_SS sxt-u" "$NS_ST sxt-v" "$NS_LSS sxt-l" "$NS_SS sxt-g" \
    "$NS_LST sxt-m" "$NS_ST sxt-h"; do
    read -r ns dev <<<"$link"
    ip -n "$ns" link set "$dev" up || return 1
  done
  ip -n "$NS_LSS" route add default via 10.1.0.1
  ip -n "$NS_LST" route add default via 10.2.0.1
  for ns in "$NS_SS" "$NS_ST"; do
    ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv4/ip_forward" || return 1
  done
}

# --- charon, with kernel-netlink: SAs, policies and its routes (table 220)
# go into the ss namespace's kernel ---

cat >"$WORK/strongswan.conf" <<CONF
charon {
  load = random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 kernel-netlink socket-default vici
  install_virtual_ip = no
  plugins {
    vici {
      socket = unix://$WORK/charon.vici
    }
  }
  filelog {
    charon {
      path = $WORK/charon.log
      default = 1
      ike = 2
      cfg = 1
      knl = 2
      time_format = %T
      flush_line = yes
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
CONF
export STRONGSWAN_CONF=$WORK/strongswan.conf

# The service URI is an option of each command, so it goes after the command.
swanctl() { timeout 60 "$SWANCTL" "$1" --uri "unix://$WORK/charon.vici" "${@:2}"; }

start_charon() {
  : >"$WORK/charon.log"
  # /run is the VM's own: charon's pid file and runtime folder go there.
  mkdir -p /run/strongswan
  ip netns exec "$NS_SS" "$CHARON" >"$WORK/charon.stdout" 2>&1 &
  CHARON_PID=$!
  local _
  for _ in $(seq 300); do
    if [[ -S $WORK/charon.vici ]] && swanctl --stats >/dev/null 2>&1; then
      # swanctl also reads the credential folders beside its file.
      mkdir -p "$WORK"/swanctl/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
      cat >"$WORK/swanctl/swanctl.conf" <<CONF
connections {
  strait {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = $C_IKE
    local {
      auth = psk
      id = charon.strait.test
    }
    remote {
      auth = psk
      id = strait.strait.test
    }
    children {
      net {
        local_ts = 10.1.0.0/24
        remote_ts = 10.2.0.0/24
        esp_proposals = $C_ESP
        start_action = none
      }
    }
  }
}
secrets {
  ike-strait {
    id-1 = charon.strait.test
    id-2 = strait.strait.test
    secret = "$PSK"
  }
}
CONF
      if ! swanctl --load-all --file "$WORK/swanctl/swanctl.conf" >"$WORK/swanctl-load.out" 2>&1 ||
        grep -qi "fail\|error" "$WORK/swanctl-load.out"; then
        echo "  swanctl --load-all failed:"; cat "$WORK/swanctl-load.out"; return 1
      fi
      grep -q "loaded plugins:.*kernel-netlink" "$WORK/charon.log" ||
        { echo "  charon did not load kernel-netlink:"; grep "loaded plugins" "$WORK/charon.log"; return 1; }
      if grep -q kernel-libipsec "$WORK/charon.log"; then
        echo "  charon loaded kernel-libipsec"; return 1
      fi
      return 0
    fi
    sleep 0.1
  done
  echo "  charon did not start:"; tail -n 30 "$WORK/charon.stdout" "$WORK/charon.log"
  return 1
}

# --- the Strait agent, standalone, kernel XFRM ---

start_agent() {  # start_agent START_ACTION
  cat >"$WORK/tunnels.yaml" <<YAML
kind: Tunnel
metadata:
  name: $TUNNEL
spec:
  node: strait-gw
  local:
    address: 192.0.2.2
    id: strait.strait.test
    trafficSelectors: [10.2.0.0/24]
  remote:
    address: 192.0.2.1
    id: charon.strait.test
    trafficSelectors: [10.1.0.0/24]
  auth:
    psk: "$PSK"
  ike:
    proposals: [$C_IKE]
  esp:
    proposals: [$C_ESP]
  startAction: $1
YAML
  chmod 0600 "$WORK/tunnels.yaml"
  ip netns exec "$NS_ST" "$AGENT" --node-name strait-gw --intent-file "$WORK/tunnels.yaml" \
    --enable-ike --dataplane xfrm --metrics-listen "$METRICS" --status-interval 1s \
    --log-level debug >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}

stop_daemons() {
  local p
  for p in $AGENT_PID $CHARON_PID; do kill "$p" 2>/dev/null; done
  for p in $AGENT_PID $CHARON_PID; do wait "$p" 2>/dev/null; done
  AGENT_PID=
  CHARON_PID=
  rm -f "$WORK/charon.vici"
  # What either daemon left in its kernel would mask the next case's.
  for ns in "$NS_SS" "$NS_ST"; do
    ip -n "$ns" xfrm state flush
    ip -n "$ns" xfrm policy flush
  done
}

metrics() { ip netns exec "$NS_ST" curl -fsS "http://$METRICS/metrics" 2>/dev/null; }

metric_sum() {  # metric_sum FILE NAME [LABEL=VALUE ...]
  awk -v name="$2" -v want="${*:3}" '
    BEGIN { n = split(want, w, " ") }
    $1 ~ "^" name "(\\{|$)" {
      ok = 1
      for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($1, kv[1] "=\"" kv[2] "\"") == 0) ok = 0 }
      if (ok) s += $2
    }
    END { printf "%d\n", s }' "$1"
}

# Both ends have the CHILD SA: the agent counts one, charon lists it
# INSTALLED.
wait_installed() {
  local _
  for _ in $(seq 300); do
    if metrics >"$WORK/metrics.txt" && (($(metric_sum "$WORK/metrics.txt" strait_agent_child_sas) >= 1)) &&
      swanctl --list-sas >"$WORK/list-sas.out" 2>&1 && grep -q "INSTALLED" "$WORK/list-sas.out"; then
      return 0
    fi
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "  the agent exited"; return 1; }
    sleep 0.3
  done
  echo "  no CHILD SA on both sides within 90 s"
  return 1
}

# `ip -s xfrm state` without the key lines.
xfrm_states() { ip -n "$1" -s xfrm state | grep -vE '^\s+(aead|enc|auth|auth-trunc|comp) '; }

show_logs() {
  echo "--- swanctl --initiate:"; cat "$WORK/initiate.out" 2>/dev/null
  echo "--- swanctl --list-sas:"; swanctl --list-sas 2>&1
  local ns
  for ns in "$NS_SS" "$NS_ST"; do
    echo "--- $ns: ip -s xfrm state (keys left out), policies, routes, xfrm_stat:"
    xfrm_states "$ns"
    ip -n "$ns" xfrm policy
    ip -n "$ns" route show table all | grep -v "^local\|^broadcast\|^multicast\|fe80\|ff00"
    ip netns exec "$ns" cat /proc/net/xfrm_stat | grep -v " 0$"
  done
  echo "--- agent metrics (ESP, SAs):"
  metrics | grep -E '^strait_agent_(tunnel_esp|sa_|child_sas|ike_sas|ike_handshakes|dataplane)' | grep -v ' 0$'
  echo "--- agent log (tail):"; tail -n 60 "$WORK/agent.log"
  echo "--- charon log (tail):"; tail -n 80 "$WORK/charon.log"
  local f
  for f in "$WORK"/ping-*.out "$WORK"/iperf-*.err; do
    [[ -s $f ]] && { echo "--- $(basename "$f"):"; tail -n 10 "$f"; }
  done
}

ping_from() {  # ping_from NAMESPACE ADDRESS NAME
  ip netns exec "$1" ping -c 4 -i 0.2 -W 5 "$2" >"$WORK/ping-$3.out" 2>&1 &&
    ip netns exec "$1" ping -c 2 -i 0.2 -W 5 -s 1300 "$2" >>"$WORK/ping-$3.out" 2>&1 ||
    { echo "  ping $3 ($2) failed"; return 1; }
}

# iperf3 TCP from CLIENT_NS to the server in SERVER_NS at ADDRESS; prints
# the bytes the server received and the rate.
iperf_to() {  # iperf_to CLIENT_NS SERVER_NS ADDRESS NAME
  ip netns exec "$2" iperf3 -s -1 -p 5201 >"$WORK/iperf-$4-server.out" 2>&1 &
  IPERF_PID=$!
  local _
  for _ in $(seq 100); do
    ip netns exec "$2" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  if ! ip netns exec "$1" timeout $((IPERF_SECONDS + 60)) iperf3 --connect-timeout 10000 -c "$3" -p 5201 -t "$IPERF_SECONDS" -J \
    >"$WORK/iperf-$4.json" 2>"$WORK/iperf-$4.err"; then
    echo "  iperf3 $4 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$WORK/iperf-$4.json" 2>/dev/null)" >&2
    kill "$IPERF_PID" 2>/dev/null; wait "$IPERF_PID" 2>/dev/null; IPERF_PID=
    return 1
  fi
  wait "$IPERF_PID" 2>/dev/null
  IPERF_PID=
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print(e["sum_received"]["bytes"], int(e["sum_received"]["bits_per_second"]/1e6))' "$WORK/iperf-$4.json"
}

# The kernel's own counters decide: each gateway's SA from charon to Strait
# must have counted at least TO_STRAIT bytes, the SA back TO_CHARON bytes;
# the SPIs must be charon's (swanctl) and Strait's (metrics).
check_counters() {  # check_counters BYTES_TO_STRAIT BYTES_TO_CHARON
  sleep 2.5 # The agent reads its SA counters every 2 s.
  metrics >"$WORK/metrics.txt" || { echo "  no metrics from the agent"; return 1; }
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  xfrm_states "$NS_SS" >"$WORK/xfrm-ss.out"
  xfrm_states "$NS_ST" >"$WORK/xfrm-st.out"
  python3 - "$WORK" "$TUNNEL" "$1" "$2" <<'PY'
import re, sys
work, tunnel = sys.argv[1], sys.argv[2]
to_strait, to_charon = int(sys.argv[3]), int(sys.argv[4])
read = lambda name: open("%s/%s" % (work, name)).read()
metrics, sas = read("metrics.txt"), read("list-sas.out")
errors = []
CHARON, STRAIT = "192.0.2.1", "192.0.2.2"

def kernel_sas(text):
    """(src, dst, spi) -> (bytes, packets, replay, integrity) from ip -s xfrm state."""
    out = {}
    for block in re.split(r'^(?=src )', text, flags=re.M):
        head = re.match(r'src (\S+) dst (\S+)\s+proto esp spi 0x([0-9a-f]{8})', block)
        if not head:
            continue
        cur = re.search(r'lifetime current:\s+(\d+)\(bytes\), (\d+)\(packets\)', block)
        stats = re.search(r'stats:\s+replay-window \d+ replay (\d+) failed (\d+)', block)
        out[head.groups()] = (int(cur.group(1)) if cur else -1, int(cur.group(2)) if cur else -1,
                              int(stats.group(1)) if stats else -1,
                              int(stats.group(2)) if stats else -1)
    return out

kernel = {"charon's gateway": kernel_sas(read("xfrm-ss.out")),
          "Strait's gateway": kernel_sas(read("xfrm-st.out"))}

# charon's CHILD SA: "in  SPI,  N bytes,  M packets" (plain ESP: TUNNEL).
child = re.search(r'net: #\d+, reqid \d+, INSTALLED, TUNNEL, ESP:(\S+)\n(.*?)(?=\n\S|\Z)', sas, re.S)
spis = {}
if not child:
    errors.append("swanctl --list-sas shows no INSTALLED plain-ESP (TUNNEL) CHILD SA")
else:
    for d in ("in", "out"):
        m = re.search(r'\n\s+%s\s+([0-9a-f]{8})[^,]*,\s+(\d+) bytes,\s+(\d+) packets' % d, child.group(2))
        if m:
            spis[d] = m.group(1)
        else:
            errors.append("swanctl --list-sas: no %s SPI" % d)

strait_sas = set()
for m in re.finditer(r'^strait_agent_sa_bytes_total\{([^}]*)\} (\S+)$', metrics, re.M):
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if labels.get("tunnel") == tunnel:
        strait_sas.add((labels["direction"], labels["spi"]))
if not re.search(r'^strait_agent_dataplane_info\{[^}]*backend="xfrm"[^}]*\} 1', metrics, re.M):
    errors.append("the agent does not report dataplane xfrm")

# (direction as charon sees it, src, dst, bytes iperf3 moved that way)
flows = (("out", CHARON, STRAIT, to_strait), ("in", STRAIT, CHARON, to_charon))
if len(spis) == 2:
    for charon_dir, src, dst, moved in flows:
        spi = spis[charon_dir]
        strait_dir = "in" if charon_dir == "out" else "out"
        if (strait_dir, spi) not in strait_sas:
            errors.append("Strait has no %s SA with SPI %s (charon's %s); its metrics have %s"
                          % (strait_dir, spi, charon_dir, sorted(strait_sas)))
        for where, table in kernel.items():
            got = table.get((src, dst, spi))
            if got is None:
                errors.append("%s's kernel has no SA %s -> %s SPI %s; it has %s"
                              % (where, src, dst, spi, sorted(table)))
                continue
            nbytes, packets, replay, integrity = got
            print("  %-16s kernel SA %s -> %s spi 0x%s: %d bytes, %d packets, replay %d, failed %d"
                  % (where, src, dst, spi, nbytes, packets, replay, integrity))
            # iperf3 counts TCP payload, the SA whole inner packets; the
            # pings add 4 + 2 packets each way.
            if nbytes < moved or packets < 6:
                errors.append("%s's SA %s -> %s counted %d bytes, %d packets: less than the %d "
                              "bytes iperf3 moved that way" % (where, src, dst, nbytes, packets, moved))
            if replay != 0 or integrity != 0:
                errors.append("%s's SA %s -> %s: %d replay, %d integrity failures"
                              % (where, src, dst, replay, integrity))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
}

FAILED=()
PASSED=()
record() {  # record NAME STATUS
  if [[ $2 -eq 0 ]]; then
    PASSED+=("$1"); echo "PASS: $1"
  else
    FAILED+=("$1"); echo "FAIL: $1"; show_logs
  fi
}

run_case() {  # run_case ROLE: Strait's role
  local role=$1 name="strait $1, ESP $C_ESP" status=0 out start=$SECONDS
  echo "=== $name"
  rm -f "$WORK"/initiate.out "$WORK"/ping-*.out "$WORK"/iperf-*
  if ! start_charon; then record "$name" 1; stop_daemons; return; fi
  if [[ $role == initiator ]]; then
    start_agent start
  else
    start_agent add
    # The agent must be listening before charon initiates.
    local _
    for _ in $(seq 100); do metrics >/dev/null && break; sleep 0.2; done
    swanctl --initiate --ike strait --child net --timeout 60 >"$WORK/initiate.out" 2>&1 ||
      { echo "  swanctl --initiate failed"; status=1; }
  fi
  [[ $status -eq 0 ]] && { wait_installed || status=1; }
  echo "  CHILD SA installed at both ends after $((SECONDS - start)) s"
  if [[ $status -eq 0 ]]; then
    ping_from "$NS_LSS" 10.2.0.2 charon-side || status=1
    ping_from "$NS_LST" 10.1.0.2 strait-side || status=1
  fi
  local to_strait=0 to_charon=0 mbps_a=0 mbps_b=0
  if [[ $status -eq 0 ]]; then
    if out=$(iperf_to "$NS_LSS" "$NS_LST" 10.2.0.2 to-strait); then
      read -r to_strait mbps_a <<<"$out"
    else
      status=1
    fi
    if out=$(iperf_to "$NS_LST" "$NS_LSS" 10.1.0.2 to-charon); then
      read -r to_charon mbps_b <<<"$out"
    else
      status=1
    fi
    ((to_strait > 0 && to_charon > 0)) || { echo "  iperf3 moved nothing one way"; status=1; }
    echo "  iperf3 ${IPERF_SECONDS}s through kernel ESP (emulated VM): charon side -> strait side" \
      "$to_strait bytes ($mbps_a Mbit/s), strait side -> charon side $to_charon bytes ($mbps_b Mbit/s)"
  fi
  [[ $status -eq 0 ]] && { check_counters "$to_strait" "$to_charon" || status=1; }
  echo "  case took $((SECONDS - start)) s"
  record "$name" "$status"
  stop_daemons
}

setup_netns || { echo "FAIL: cannot set up the namespaces"; exit 1; }
START=$SECONDS
C_IKE=aes128gcm16-prfsha256-x25519 C_ESP=aes128gcm16
run_case initiator
C_IKE=aes256-sha256-modp2048 C_ESP=aes256-sha256
run_case responder

echo
echo "passed: ${#PASSED[@]}, failed: ${#FAILED[@]}, $((SECONDS - START)) s"
for f in "${FAILED[@]}"; do echo "  failed: $f"; done
[[ ${#FAILED[@]} -eq 0 && ${#PASSED[@]} -gt 0 ]]
