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
source "$(dirname "$0")/../interop/strongswan_lib.sh" || { echo "FAIL: no strongswan_lib.sh"; exit 1; }
require_tools "$CHARON" "$SWANCTL" ip python3 iperf3 ping curl
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
CLEANUP_PIDS=(IPERF_PID AGENT_PID CHARON_PID)
trap_cleanup
# Software emulation is slow: more time for each step.
SWANCTL_TIMEOUT=60 CHARON_START_SECONDS=30 INITIATE_TIMEOUT=60
PING_WAIT=5 IPERF_SLACK=60 IPERF_CONNECT_MS=10000
IPERF_LABEL=" through kernel ESP (emulated VM)"
AGENT_DATAPLANE=xfrm

# --- charon, with kernel-netlink: SAs, policies and its routes (table 220)
# go into the ss namespace's kernel; /run is the VM's own, so charon's pid
# file and runtime folder go there without `unshare -m` ---

CHARON_PRIVATE_RUN=
write_strongswan_conf \
  "random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 kernel-netlink socket-default vici" \
  "" \
  "default = 1
      ike = 2
      cfg = 1
      knl = 2"

start_charon() {
  start_charon_daemon && load_psk_conn || return 1
  grep -q "loaded plugins:.*kernel-netlink" "$WORK/charon.log" ||
    { echo "  charon did not load kernel-netlink:"; grep "loaded plugins" "$WORK/charon.log"; return 1; }
  if grep -q kernel-libipsec "$WORK/charon.log"; then
    echo "  charon loaded kernel-libipsec"; return 1
  fi
}

# --- the Strait agent, standalone, kernel XFRM (strongswan_lib.sh) ---

# The agent must be listening before charon initiates.
agent_settle() {
  local _
  for _ in $(seq 100); do metrics >/dev/null && break; sleep 0.2; done
}

stop_daemons() {
  kill_agent
  kill_charon
  # What either daemon left in its kernel would mask the next case's.
  for ns in "$NS_SS" "$NS_ST"; do
    ip -n "$ns" xfrm state flush
    ip -n "$ns" xfrm policy flush
  done
}

wait_installed() { wait_child_sa 90 0.3; }

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
  show_agent_logs
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

run_case() {  # run_case ROLE: Strait's role
  local role=$1 name="strait $1, ESP $C_ESP" status=0 start=$SECONDS
  echo "=== $name"
  rm -f "$WORK"/initiate.out "$WORK"/ping-*.out "$WORK"/iperf-*
  if ! start_charon; then record "$name" 1; stop_daemons; return; fi
  # Strait initiates (startAction: start) or charon does (add).
  start_agent_and_initiate "$([[ $role == initiator ]] && echo start || echo add)" || status=1
  [[ $status -eq 0 ]] && { wait_installed || status=1; }
  echo "  CHILD SA installed at both ends after $((SECONDS - start)) s"
  [[ $status -eq 0 ]] && { run_traffic || status=1; }
  [[ $status -eq 0 ]] && { check_counters "$TO_STRAIT" "$TO_CHARON" || status=1; }
  echo "  case took $((SECONDS - start)) s"
  record "$name" "$status"
  stop_daemons
}

setup_netns sxt- "" || { echo "FAIL: cannot set up the namespaces"; exit 1; }
START=$SECONDS
C_IKE=aes128gcm16-prfsha256-x25519 C_ESP=aes128gcm16
run_case initiator
C_IKE=aes256-sha256-modp2048 C_ESP=aes256-sha256
run_case responder

summary
