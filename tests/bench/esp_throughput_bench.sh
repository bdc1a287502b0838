#!/usr/bin/env bash
# Userspace ESP throughput on this machine, in one run: iperf3 TCP through a
# Strait-to-Strait tunnel (two agents, standalone, --dataplane=userspace)
# and through a strongSwan-to-strongSwan tunnel (two charons with
# kernel-libipsec), same topology, same suite (IKE
# aes128gcm16-prfsha256-x25519, ESP aes128gcm16, PSK); then the ratio. See
# tests/bench/README.md.
#
# Four network namespaces: gateways "a" (192.0.2.1) and "b" (192.0.2.2) on a
# veth pair, and behind each a LAN namespace on its own veth: "la"
# (10.1.0.2, gateway 10.1.0.1) and "lb" (10.2.0.2, gateway 10.2.0.1). The
# tunnel joins 10.1.0.0/24 and 10.2.0.0/24; iperf3 runs from la to lb, so
# every byte crosses both gateways' userspace ESP (a encrypts, b decrypts).
# Both contenders run ESP in UDP on port 4500.
#
# Equal CPU: each contender (both agents; both charons) runs in its own cpu
# cgroup with the weight of two busy threads, and iperf3 in a third, so
# that neither thread counts nor other work on the machine tilt the result.
# Each side's CPU time (user + system of its two daemons, from /proc) over
# the measured interval gives its CPU seconds per GB carried.
#
# Usage: esp_throughput_bench.sh [--duration S] [--parallel N] [--rounds N]
#                                [--only strait|strongswan] [--no-cpu-groups]
#                                [--json] [--agent PATH]
# Needs root (namespaces). Exit status 0 when every run moved data through
# the SAs (the daemons' own ESP counters cover what iperf3 received).
set -uo pipefail

DURATION=10
PARALLEL=1
ROUNDS=1
ONLY=
CPU_GROUPS=1
JSON=0
AGENT=
KEEP=${ESP_BENCH_KEEP:-}

usage() { sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//; /^set -uo/d'; exit "${1:-2}"; }
while (($#)); do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --parallel) PARALLEL=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --no-cpu-groups) CPU_GROUPS=0; shift ;;
    --json) JSON=1; shift ;;
    --agent) AGENT=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "esp_throughput_bench.sh: unknown argument $1" >&2; usage ;;
  esac
done

# The agent: beside this script in Bazel's runfiles, else in bazel-bin.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z $AGENT && $ONLY != strongswan ]]; then
  for d in "${RUNFILES_DIR:-/nonexistent}/strait" "${TEST_SRCDIR:-/nonexistent}/strait" \
    "$0.runfiles/strait" "$HERE/../../bazel-bin"; do
    [[ -x $d/agent/strait-agent ]] && { AGENT=$d/agent/strait-agent; break; }
  done
  [[ -n $AGENT ]] || {
    echo "FAIL: strait-agent not found (bazel build -c opt //agent:strait-agent, or --agent)" >&2
    exit 1
  }
fi

CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
for tool in "$CHARON" "$SWANCTL" ip unshare python3 iperf3 curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)" >&2; exit 1; }
done
if [[ $(id -u) -ne 0 ]]; then
  echo "FAIL: needs root for network namespaces (sudo $0)" >&2
  exit 1
fi

# Unix socket paths are limited to 108 bytes: stay short.
WORK=$(mktemp -d /tmp/strait-espb.XXXXXX)
TAG=$$
NS_A=espb-a-$TAG NS_B=espb-b-$TAG NS_LA=espb-la-$TAG NS_LB=espb-lb-$TAG
declare -A NS=([a]=$NS_A [b]=$NS_B) UNDERLAY=([a]=192.0.2.1 [b]=192.0.2.2)
PIDS_A=()   # the contender's daemons, gateway a then b
IPERF_PID=
PSK="esp throughput bench key, not a secret"
IKE=aes128gcm16-prfsha256-x25519
ESP=aes128gcm16

log() { echo "esp_throughput_bench.sh: $*" >&2; }

# --- cpu cgroups, as in handshake_bench.sh ---

CG_STRAIT=
CG_SWAN=
CG_LOAD=
make_cpu_group() {  # make_cpu_group NAME: prints the group's folder
  local g
  if [[ -w /sys/fs/cgroup/cpu/cgroup.procs && -e /sys/fs/cgroup/cpu/cpu.shares ]]; then
    g=/sys/fs/cgroup/cpu/$1
    mkdir "$g" && echo 2048 >"$g/cpu.shares" || return 1
  elif [[ -w /sys/fs/cgroup/cgroup.procs ]] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    g=/sys/fs/cgroup/$1
    mkdir "$g" && echo 200 >"$g/cpu.weight" || return 1
  else
    return 1
  fi
  echo "$g"
}
# in_group GROUP: sets IN_GROUP to the command prefix that runs a command in
# GROUP (empty without cgroups). Each step execs the next, so that $! of a
# command started in the background is the command itself.
in_group() {
  IN_GROUP=()
  [[ -z $1 ]] || IN_GROUP=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$1")
}
remove_cpu_groups() {
  local g
  for g in "$CG_STRAIT" "$CG_SWAN" "$CG_LOAD"; do [[ -n $g ]] && rmdir "$g" 2>/dev/null; done
}

stop_daemons() {
  local p
  for p in "${PIDS_A[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS_A[@]}"; do wait "$p" 2>/dev/null; done
  PIDS_A=()
  rm -f "$WORK"/ss-*/charon.vici
}

cleanup() {
  [[ -n $IPERF_PID ]] && { kill "$IPERF_PID" 2>/dev/null; wait "$IPERF_PID" 2>/dev/null; }
  stop_daemons
  local ns
  for ns in "$NS_A" "$NS_B" "$NS_LA" "$NS_LB"; do ip netns del "$ns" 2>/dev/null; done
  remove_cpu_groups
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null; fi
  if [[ -n $KEEP ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

make_netns() {
  local ns
  for ns in "$NS_A" "$NS_B" "$NS_LA" "$NS_LB"; do
    ip netns add "$ns" || { log "cannot create namespaces"; return 1; }
    ip -n "$ns" link set lo up
  done
  ip link add "ebu$TAG" netns "$NS_A" type veth peer name "ebv$TAG" netns "$NS_B" &&
    ip link add "ebl$TAG" netns "$NS_LA" type veth peer name "ebg$TAG" netns "$NS_A" &&
    ip link add "ebm$TAG" netns "$NS_LB" type veth peer name "ebh$TAG" netns "$NS_B" ||
    { log "cannot create veth pairs"; return 1; }
  ip -n "$NS_A" addr add 192.0.2.1/24 dev "ebu$TAG"
  ip -n "$NS_B" addr add 192.0.2.2/24 dev "ebv$TAG"
  ip -n "$NS_LA" addr add 10.1.0.2/24 dev "ebl$TAG"
  ip -n "$NS_A" addr add 10.1.0.1/24 dev "ebg$TAG"
  ip -n "$NS_LB" addr add 10.2.0.2/24 dev "ebm$TAG"
  ip -n "$NS_B" addr add 10.2.0.1/24 dev "ebh$TAG"
  local link dev
  for link in "$NS_A ebu$TAG" "$NS_B ebv$TAG" "$NS_LA ebl$TAG" "$NS_A ebg$TAG" \
    "$NS_LB ebm$TAG" "$NS_B ebh$TAG"; do
    read -r ns dev <<<"$link"
    ip -n "$ns" link set "$dev" up
  done
  ip -n "$NS_LA" route add default via 10.1.0.1
  ip -n "$NS_LB" route add default via 10.2.0.1
  for ns in "$NS_A" "$NS_B"; do ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv4/ip_forward"; done
}

# CPU time (user + system, all threads) of the given processes, in clock
# ticks.
cpu_ticks() {
  local p total=0 stat
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }  # fields after the command name, which may hold spaces
    read -r -a f <<<"$stat"
    total=$((total + f[11] + f[12]))  # utime and stime: fields 14 and 15
  done
  echo "$total"
}

# UDP datagrams a gateway dropped for a full receive buffer (ESP in UDP that
# its daemon did not read in time), summed over both gateways.
udp_rcvbuf_errors() {
  local ns total=0 n
  for ns in "$NS_A" "$NS_B"; do
    n=$(ip netns exec "$ns" awk '$1 == "Udp:" { if (!k++) { for (i = 2; i <= NF; i++) col[$i] = i } else print $col["RcvbufErrors"] }' /proc/net/snmp)
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

# --- Strait <-> Strait ---

start_agents() {
  cat >"$WORK/tunnels.yaml" <<YAML
kind: Tunnel
metadata:
  name: bench
spec:
  node: node-a
  local:
    address: 192.0.2.1
    trafficSelectors: [10.1.0.0/24]
  remote:
    node: node-b
    address: 192.0.2.2
    trafficSelectors: [10.2.0.0/24]
  auth:
    psk: "$PSK"
  ike:
    proposals: [$IKE]
  esp:
    proposals: [$ESP]
  startAction: start
YAML
  chmod 0600 "$WORK/tunnels.yaml"
  local side
  in_group "$CG_STRAIT"
  for side in a b; do
    "${IN_GROUP[@]}" ip netns exec "${NS[$side]}" "$AGENT" --node-name "node-$side" \
      --intent-file "$WORK/tunnels.yaml" --enable-ike --dataplane userspace \
      --metrics-listen "${UNDERLAY[$side]}:9444" --log-level info >"$WORK/agent-$side.log" 2>&1 &
    PIDS_A+=($!)
  done
}

agent_metrics() { ip netns exec "${NS[$1]}" curl -fsS "http://${UNDERLAY[$1]}:9444/metrics" 2>/dev/null; }

agent_counter() {  # agent_counter SIDE METRIC DIRECTION
  agent_metrics "$1" | awk -v m="$2" -v d="direction=\"$3\"" \
    '$1 ~ "^"m"\\{" && index($1, d) { s += $2 } END { printf "%d\n", s }'
}

strait_ready() {
  local side n
  for side in a b; do
    n=$(agent_metrics "$side" | awk '$1 == "strait_agent_child_sas" { print int($2) }')
    [[ ${n:-0} -ge 1 ]] || return 1
  done
}

# Bytes through the ESP SAs: a's outbound and b's inbound.
strait_esp_bytes() {
  sleep 2.5  # The agents read their SA counters every 2 s.
  echo "$(agent_counter a strait_agent_tunnel_esp_bytes_total out)" \
    "$(agent_counter b strait_agent_tunnel_esp_bytes_total in)"
}

strait_logs() { tail -n 30 "$WORK/agent-a.log" "$WORK/agent-b.log" >&2; }

# --- strongSwan <-> strongSwan ---

write_strongswan_conf() {  # write_strongswan_conf SIDE
  mkdir -p "$WORK/ss-$1"
  cat >"$WORK/ss-$1/strongswan.conf" <<CONF
charon {
  load = random nonce openssl aes gcm sha2 hmac kdf curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  plugins {
    kernel-libipsec {
      raw_esp = yes
    }
    vici {
      socket = unix://$WORK/ss-$1/charon.vici
    }
  }
  filelog {
    charon {
      path = $WORK/ss-$1/charon.log
      default = 1
      time_format = %T
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
CONF
}

write_swanctl_conf() {  # write_swanctl_conf SIDE LOCAL REMOTE LOCAL_NET REMOTE_NET START
  cat >"$WORK/ss-$1/swanctl.conf" <<CONF
connections {
  bench {
    version = 2
    local_addrs = $2
    remote_addrs = $3
    proposals = $IKE
    local {
      auth = psk
      id = $2
    }
    remote {
      auth = psk
      id = $3
    }
    children {
      net {
        local_ts = $4
        remote_ts = $5
        esp_proposals = $ESP
        start_action = $6
      }
    }
  }
}
secrets {
  ike-bench {
    id-1 = 192.0.2.1
    id-2 = 192.0.2.2
    secret = "$PSK"
  }
}
CONF
}

swanctl_at() {  # swanctl_at SIDE COMMAND [ARGS]
  STRONGSWAN_CONF=$WORK/ss-$1/strongswan.conf timeout 20 "$SWANCTL" "$2" --uri "unix://$WORK/ss-$1/charon.vici" "${@:3}"
}

start_charon() {  # start_charon SIDE
  : >"$WORK/ss-$1/charon.log"
  in_group "$CG_SWAN"
  STRONGSWAN_CONF=$WORK/ss-$1/strongswan.conf "${IN_GROUP[@]}" ip netns exec "${NS[$1]}" unshare -m sh -c \
    'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
    >"$WORK/ss-$1/charon.stdout" 2>&1 &
  PIDS_A+=($!)
  local _
  for _ in $(seq 100); do
    if [[ -S $WORK/ss-$1/charon.vici ]] && swanctl_at "$1" --stats >/dev/null 2>&1; then
      swanctl_at "$1" --load-all --file "$WORK/ss-$1/swanctl.conf" >"$WORK/ss-$1/load.out" 2>&1 ||
        { log "swanctl --load-all ($1) failed:"; cat "$WORK/ss-$1/load.out" >&2; return 1; }
      return 0
    fi
    sleep 0.1
  done
  log "charon ($1) did not start:"; tail -n 30 "$WORK/ss-$1/charon.stdout" "$WORK/ss-$1/charon.log" >&2
  return 1
}

start_charons() {
  write_strongswan_conf a && write_strongswan_conf b &&
    write_swanctl_conf a 192.0.2.1 192.0.2.2 10.1.0.0/24 10.2.0.0/24 none &&
    write_swanctl_conf b 192.0.2.2 192.0.2.1 10.2.0.0/24 10.1.0.0/24 none &&
    start_charon b && start_charon a &&
    swanctl_at a --initiate --ike bench --child net >"$WORK/initiate.out" 2>&1 ||
    { log "swanctl --initiate failed:"; tail -n 5 "$WORK/initiate.out" >&2; return 1; }
}

strongswan_ready() {
  swanctl_at a --list-sas 2>/dev/null | grep -q INSTALLED &&
    swanctl_at b --list-sas 2>/dev/null | grep -q INSTALLED
}

# Bytes through the CHILD SA: a's outbound and b's inbound.
strongswan_esp_bytes() {
  local a b
  a=$(swanctl_at a --list-sas 2>/dev/null | sed -nE 's/^ +out +[0-9a-f]{8}[^,]*, +([0-9]+) bytes.*/\1/p' | head -n 1)
  b=$(swanctl_at b --list-sas 2>/dev/null | sed -nE 's/^ +in +[0-9a-f]{8}[^,]*, +([0-9]+) bytes.*/\1/p' | head -n 1)
  echo "${a:-0} ${b:-0}"
}

strongswan_logs() { tail -n 30 "$WORK/ss-a/charon.log" "$WORK/ss-b/charon.log" >&2; }

# --- one measured run ---

# run_side NAME ROUND: starts NAME's daemons, waits for the SA, warms up
# with a ping, measures iperf3 and the daemons' CPU, checks the ESP
# counters and writes NAME-ROUND.json.
run_side() {
  local name=$1 round=$2 _
  if [[ $name == strait ]]; then start_agents; else start_charons || { strongswan_logs; return 1; }; fi
  for _ in $(seq 150); do
    "${name}_ready" 2>/dev/null && break
    sleep 0.2
  done
  "${name}_ready" || { log "$name: no CHILD SA within 30 s"; "${name}_logs"; return 1; }
  ip netns exec "$NS_LA" ping -c 3 -i 0.2 -W 2 10.2.0.2 >"$WORK/$name-ping.out" 2>&1 ||
    { log "$name: ping through the tunnel failed"; cat "$WORK/$name-ping.out" >&2; "${name}_logs"; return 1; }
  local before_esp after_esp
  read -r -a before_esp <<<"$("${name}_esp_bytes")"

  in_group "$CG_LOAD"
  "${IN_GROUP[@]}" ip netns exec "$NS_LB" iperf3 -s -1 -p 5201 >"$WORK/$name-$round-server.out" 2>&1 &
  IPERF_PID=$!
  for _ in $(seq 50); do
    ip netns exec "$NS_LB" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  local t0 t1 c0 c1 d0 d1
  d0=$(udp_rcvbuf_errors)
  c0=$(cpu_ticks "${PIDS_A[@]}")
  t0=$(date +%s.%N)
  if ! "${IN_GROUP[@]}" ip netns exec "$NS_LA" timeout $((DURATION + 30)) iperf3 -c 10.2.0.2 -p 5201 \
    -t "$DURATION" -P "$PARALLEL" -J >"$WORK/$name-$round.iperf.json" 2>"$WORK/$name-$round.iperf.err"; then
    log "$name: iperf3 failed:"; tail -n 20 "$WORK/$name-$round.iperf.json" "$WORK/$name-$round.iperf.err" >&2
    "${name}_logs"
    return 1
  fi
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "${PIDS_A[@]}")
  d1=$(udp_rcvbuf_errors)
  # For the record (ESP_BENCH_KEEP=1): the gateways' links and their drops.
  local ns
  for ns in "$NS_A" "$NS_B"; do
    echo "== $ns"; ip -n "$ns" -s link; ip netns exec "$ns" cat /proc/net/snmp
  done >"$WORK/$name-$round.links" 2>&1
  wait "$IPERF_PID" 2>/dev/null
  IPERF_PID=
  read -r -a after_esp <<<"$("${name}_esp_bytes")"
  python3 - "$WORK/$name-$round.iperf.json" "$name" "$((c1 - c0))" "$(getconf CLK_TCK)" \
    "$t0" "$t1" "$((d1 - d0))" "${before_esp[@]}" "${after_esp[@]}" >"$WORK/$name-$round.json" <<'PY'
import json, sys
iperf = json.load(open(sys.argv[1]))
name, ticks, hz, t0, t1 = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
udp_drops = int(sys.argv[7])
enc0, dec0, enc1, dec1 = map(int, sys.argv[8:12])
end = iperf["end"]
received = end["sum_received"]["bytes"]
cpu_s = ticks / hz
out = {
    "side": name,
    "mbit_per_s": end["sum_received"]["bits_per_second"] / 1e6,
    "bytes": received,
    "seconds": end["sum_received"]["seconds"],
    "retransmits": end["sum_sent"].get("retransmits", 0),
    "cpu_s": cpu_s,
    # Over the whole iperf3 run (wall t1 - t0), both daemons together.
    "cpu_cores": cpu_s / (t1 - t0),
    "cpu_s_per_gb": cpu_s / (received / 1e9) if received else None,
    "esp_bytes": {"encrypting": enc1 - enc0, "decrypting": dec1 - dec0},
    "udp_rcvbuf_drops": udp_drops,
}
print(json.dumps(out))
# Every byte iperf3 received crossed both SAs (inner bytes, headers included).
if min(enc1 - enc0, dec1 - dec0) < received:
    print("%s: the SAs carried %d/%d bytes, less than the %d iperf3 received"
          % (name, enc1 - enc0, dec1 - dec0, received), file=sys.stderr)
    sys.exit(1)
PY
  local rc=$?
  ((rc == 0)) || "${name}_logs"
  return $rc
}

if ((CPU_GROUPS)); then
  CG_STRAIT=$(make_cpu_group "strait-espb-$TAG-strait") &&
    CG_SWAN=$(make_cpu_group "strait-espb-$TAG-strongswan") &&
    CG_LOAD=$(make_cpu_group "strait-espb-$TAG-iperf3") ||
    { remove_cpu_groups; CG_STRAIT=; CG_SWAN=; CG_LOAD=; log "no cpu cgroups here: CPU shares follow thread counts"; }
fi
make_netns || exit 1

for round in $(seq "$ROUNDS"); do
  for side in strait strongswan; do
    [[ -z $ONLY || $ONLY == "$side" ]] || continue
    log "round $round/$ROUNDS: $side<->$side, iperf3 ${DURATION}s -P $PARALLEL"
    run_side "$side" "$round" || { stop_daemons; exit 1; }
    stop_daemons
  done
done

# The summary: each side's median round (the lower one for an even count).
python3 - "$WORK" "$ROUNDS" "$JSON" <<'PY'
import json, os, sys
work, rounds, as_json = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

def load(name):
    paths = ["%s/%s-%d.json" % (work, name, r) for r in range(1, rounds + 1)]
    return [json.load(open(p)) for p in paths if os.path.exists(p)]

def median_run(runs):
    return sorted(runs, key=lambda r: r["mbit_per_s"])[(len(runs) - 1) // 2]

def describe(label, runs):
    r = median_run(runs)
    parts = ["%.2f GB in %.1f s" % (r["bytes"] / 1e9, r["seconds"]),
             "%d TCP retransmits, %d ESP datagrams dropped by a full UDP receive buffer"
             % (r["retransmits"], r["udp_rcvbuf_drops"]),
             "daemons' CPU %.2f cores, %.1f CPU-s/GB" % (r["cpu_cores"], r["cpu_s_per_gb"] or 0)]
    if len(runs) > 1:
        parts.append("median of %d rounds: %s" % (len(runs), " ".join("%.0f" % x["mbit_per_s"] for x in runs)))
    return "%s: %.0f Mbit/s (%s)" % (label, r["mbit_per_s"], "; ".join(parts))

strait, swan = load("strait"), load("strongswan")
lines, summary = [], {"strait": strait, "strongswan": swan}
if strait:
    lines.append(describe("strait\u2194strait", strait))
    summary["strait_mbit_per_s"] = round(median_run(strait)["mbit_per_s"], 1)
if swan:
    lines.append(describe("strongswan\u2194strongswan", swan))
    summary["strongswan_mbit_per_s"] = round(median_run(swan)["mbit_per_s"], 1)
if strait and swan:
    ratio = summary["strait_mbit_per_s"] / summary["strongswan_mbit_per_s"]
    summary["ratio"] = round(ratio, 3)
    lines.append("ratio strait/strongswan: %.2f" % ratio)
print(json.dumps(summary) if as_json else "; ".join(lines))
PY
