#!/usr/bin/env bash
# IKEv2 handshakes per second on this machine, in one run: Strait to Strait
# (handshake_bench) and strongSwan to strongSwan (two charons), both with
# ECDSA P-256 certificates from one CA, IKE aes128gcm16-prfsha256-x25519 and
# ESP aes128gcm16; then the ratio. See tests/bench/README.md.
#
# strongSwan: two network namespaces joined by a veth pair, "i" (192.0.2.1,
# the initiator) and "r" (192.0.2.2, the responder). Each charon runs under
# `unshare -m` with a private tmpfs /run, its own strongswan.conf, vici
# socket and a short plugin list; kernel-libipsec holds the CHILD SAs in
# userspace (this kernel has no ESP, so kernel-netlink cannot install them).
# DoS protection is off and the half-open limits high, `unique = never`,
# `uniqueids = no` and `reuse_ikesa = no`, so that every initiate is a new
# IKE SA. strongswan_driver.py keeps --window initiations in flight over vici.
# Before measuring, a few handshakes run with IKE logging on, and the log
# must show ECDSA certificate authentication and CURVE_25519 for each.
#
# Usage: handshake_bench.sh [--duration S] [--warmup S] [--window N]
#                           [--strongswan-window N] [--strongswan-threads N]
#                           [--strongswan-mode async|blocking]
#                           [--rounds N] [--json]
#                           [--only strait|strongswan] [--no-cpu-groups]
#                           [--bench PATH] [--driver PATH]
# Needs root (namespaces). Exit status 0 when both sides completed
# handshakes without failures.
set -uo pipefail

DURATION=10
WARMUP=2
WINDOW=
SS_WINDOW=
SS_THREADS=16
SS_MODE=async
ROUNDS=1
ONLY=
CPU_GROUPS=1
JSON=0
BENCH=
DRIVER=
KEEP=${HANDSHAKE_BENCH_KEEP:-}

usage() { sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//; /^set -uo/d'; exit "${1:-2}"; }
while (($#)); do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --strongswan-window) SS_WINDOW=$2; shift 2 ;;
    --strongswan-threads) SS_THREADS=$2; shift 2 ;;
    --strongswan-mode) SS_MODE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --no-cpu-groups) CPU_GROUPS=0; shift ;;
    --json) JSON=1; shift ;;
    --bench) BENCH=$2; shift 2 ;;
    --driver) DRIVER=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "handshake_bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
CORES=$(nproc)
[[ -n $WINDOW ]] || WINDOW=$((2 * CORES > 4 ? 2 * CORES : 4))
[[ -n $SS_WINDOW ]] || SS_WINDOW=$WINDOW
# charon keeps several threads busy with long-running jobs (receiver, sender,
# scheduler, vici, kernel events); with 8 it stopped answering here.
# In --strongswan-mode blocking each vici initiate holds a thread of the
# initiator until its handshake ends, so that charon gets
# --strongswan-window more.
if ((SS_THREADS < 16)); then
  echo "handshake_bench.sh: --strongswan-threads must be at least 16" >&2
  exit 2
fi

# The programs: beside this script in Bazel's runfiles, else in bazel-bin.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
find_file() {  # find_file NAME
  local d
  for d in "${RUNFILES_DIR:-/nonexistent}/strait/tests/bench" \
    "${TEST_SRCDIR:-/nonexistent}/strait/tests/bench" \
    "$0.runfiles/strait/tests/bench" "$HERE" "$HERE/../../bazel-bin/tests/bench"; do
    [[ -e $d/$1 ]] && { echo "$d/$1"; return 0; }
  done
  return 1
}
[[ -n $BENCH ]] || BENCH=$(find_file handshake_bench) || {
  echo "FAIL: handshake_bench not found (bazel build -c opt //tests/bench:handshake_bench)" >&2
  exit 1
}
[[ -n $DRIVER ]] || DRIVER=$(find_file strongswan_driver.py) || {
  echo "FAIL: strongswan_driver.py not found" >&2; exit 1; }

CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
for tool in "$CHARON" "$SWANCTL" ip unshare openssl python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)" >&2; exit 1; }
done
if [[ $(id -u) -ne 0 ]]; then
  echo "FAIL: needs root for network namespaces (sudo $0)" >&2
  exit 1
fi

# Unix socket paths are limited to 108 bytes: stay short.
WORK=$(mktemp -d /tmp/strait-hsb.XXXXXX)
TAG=$$
NS_I=strait-hsi-$TAG
NS_R=strait-hsr-$TAG
PID_I=
PID_R=

log() { echo "handshake_bench.sh: $*" >&2; }

# Equal CPU shares. The scheduler divides CPU time by thread, so on a busy
# machine charon's many threads would win a larger share of the cores than
# handshake_bench's two. Each contender (handshake_bench; both charons with
# the vici driver) runs in its own cpu cgroup with the weight of two busy
# threads instead, whatever its thread count. Without a writable cpu
# controller (or with --no-cpu-groups) everything stays where it is.
CG_STRAIT=
CG_SWAN=
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
in_group() {  # in_group GROUP COMMAND...: runs COMMAND in GROUP (if any)
  if [[ -n $1 ]]; then
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$@"
  else
    "${@:2}"
  fi
}
remove_cpu_groups() {
  local g
  for g in "$CG_STRAIT" "$CG_SWAN"; do [[ -n $g ]] && rmdir "$g" 2>/dev/null; done
}

stop_charons() {
  local p
  for p in $PID_I $PID_R; do kill "$p" 2>/dev/null; done
  for p in $PID_I $PID_R; do wait "$p" 2>/dev/null; done
  PID_I=
  PID_R=
  rm -f "$WORK"/i/charon.vici "$WORK"/r/charon.vici
}

cleanup() {
  stop_charons
  ip netns del "$NS_I" 2>/dev/null
  ip netns del "$NS_R" 2>/dev/null
  remove_cpu_groups
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null; fi
  if [[ -n $KEEP ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- Strait <-> Strait ---

run_strait() {  # run_strait ROUND
  local out=$WORK/strait-$1.json
  if ! in_group "$CG_STRAIT" "$BENCH" --duration "${DURATION}s" --warmup "${WARMUP}s" --window "$WINDOW" --json \
    >"$out" 2>"$WORK/strait-$1.err"; then
    log "handshake_bench failed:"; cat "$out" "$WORK/strait-$1.err" >&2
    return 1
  fi
}

# --- strongSwan <-> strongSwan ---

make_pki() {
  local d=$WORK/pki
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null &&
    openssl req -x509 -new -key "$d/ca.key" -subj "/O=Strait Bench/CN=Strait Bench strongSwan CA" \
      -days 2 -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$d/ca.crt" || return 1
  local side name
  for side in i r; do
    name=$side.bench.strongswan.example
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nsubjectAltName=DNS:%s\n' \
      "$name" >"$d/$side.ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$side.key" 2>/dev/null &&
      openssl req -new -key "$d/$side.key" -subj "/O=Strait Bench/CN=$name" -out "$d/$side.csr" &&
      openssl x509 -req -in "$d/$side.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/$side.ext" -out "$d/$side.crt" 2>/dev/null || return 1
    chmod 0600 "$d/$side.key"
  done
}

make_netns() {
  ip netns add "$NS_I" && ip netns add "$NS_R" || { log "cannot create namespaces"; return 1; }
  ip link add "vhi$TAG" type veth peer name "vhr$TAG" || { log "cannot create veth"; return 1; }
  ip link set "vhi$TAG" netns "$NS_I"
  ip link set "vhr$TAG" netns "$NS_R"
  ip -n "$NS_I" addr add 192.0.2.1/24 dev "vhi$TAG"
  ip -n "$NS_R" addr add 192.0.2.2/24 dev "vhr$TAG"
  # Inner networks for the CHILD SAs' selectors: kernel-libipsec routes
  # them through its TUN device, which needs a local address in them.
  ip -n "$NS_I" addr add 10.1.0.1/24 dev lo
  ip -n "$NS_R" addr add 10.2.0.1/24 dev lo
  local ns
  for ns in "$NS_I" "$NS_R"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_I" link set "vhi$TAG" up
  ip -n "$NS_R" link set "vhr$TAG" up
}

# write_strongswan_conf SIDE IKE_LOGLEVEL
write_strongswan_conf() {
  local threads=$SS_THREADS
  [[ $1 == i && $SS_MODE == blocking ]] && threads=$((SS_THREADS + SS_WINDOW))
  cat >"$WORK/$1/strongswan.conf" <<CONF
charon {
  load = random nonce openssl x509 pem pkcs1 pkcs8 pubkey constraints curve25519 aes gcm sha2 hmac kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
  threads = $threads
  install_virtual_ip = no
  # Benchmark settings: every initiate is a new IKE SA, nothing throttles
  # one busy peer, and the IKE SA table is large enough for thousands.
  dos_protection = no
  block_threshold = 1000000
  cookie_threshold = 1000000
  init_limit_half_open = 0
  init_limit_job_load = 0
  uniqueids = no
  reuse_ikesa = no
  ikesa_table_size = 4096
  ikesa_table_segments = 16
  plugins {
    kernel-libipsec {
      raw_esp = yes
    }
    vici {
      socket = unix://$WORK/$1/charon.vici
    }
  }
  filelog {
    charon {
      path = $WORK/$1/charon.log
      default = 0
      ike = $2
      cfg = $2
      enc = 0
      net = 0
      knl = 0
      time_format = %T
      flush_line = $([[ $2 -ge 0 ]] && echo yes || echo no)
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

# write_swanctl_conf SIDE LOCAL_ADDR REMOTE_ADDR PEER_SIDE LOCAL_NET REMOTE_NET:
# swanctl.conf, and
# the credentials in the folders beside it where swanctl looks for them.
write_swanctl_conf() {
  local d=$WORK/$1
  mkdir -p "$d/x509" "$d/x509ca" "$d/private"
  cp "$WORK/pki/ca.crt" "$d/x509ca/"
  cp "$WORK/pki/$1.crt" "$d/x509/"
  cp "$WORK/pki/$1.key" "$d/private/"
  cat >"$d/swanctl.conf" <<CONF
connections {
  bench {
    version = 2
    local_addrs = $2
    remote_addrs = $3
    proposals = aes128gcm16-prfsha256-x25519
    unique = never
    mobike = no
    local {
      auth = pubkey
      certs = $1.crt
      id = $1.bench.strongswan.example
    }
    remote {
      auth = pubkey
      id = $4.bench.strongswan.example
    }
    children {
      net {
        local_ts = $5
        remote_ts = $6
        esp_proposals = aes128gcm16
        start_action = none
      }
    }
  }
}
CONF
}

swanctl_at() {  # swanctl_at SIDE COMMAND [ARGS]
  STRONGSWAN_CONF=$WORK/$1/strongswan.conf timeout "${SWANCTL_TIMEOUT:-20}" "$SWANCTL" "$2" --uri "unix://$WORK/$1/charon.vici" "${@:3}"
}

start_charon() {  # start_charon SIDE NAMESPACE; sets PID_I or PID_R
  : >"$WORK/$1/charon.log"
  # Not through in_group: $! must be charon itself (each step execs the next).
  local group=()
  [[ -n $CG_SWAN ]] && group=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG_SWAN")
  STRONGSWAN_CONF=$WORK/$1/strongswan.conf "${group[@]}" ip netns exec "$2" unshare -m sh -c \
    'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
    >"$WORK/$1/charon.stdout" 2>&1 &
  local pid=$!
  if [[ $1 == i ]]; then PID_I=$pid; else PID_R=$pid; fi
  local _
  for _ in $(seq 100); do
    if [[ -S $WORK/$1/charon.vici ]] && SWANCTL_TIMEOUT=2 swanctl_at "$1" --stats >/dev/null 2>&1; then
      swanctl_at "$1" --load-all --file "$WORK/$1/swanctl.conf" >"$WORK/$1/load.out" 2>&1 ||
        { log "swanctl --load-all ($1) failed:"; cat "$WORK/$1/load.out" >&2; return 1; }
      return 0
    fi
    sleep 0.1
  done
  log "charon ($1) did not start:"; tail -n 30 "$WORK/$1/charon.stdout" "$WORK/$1/charon.log" >&2
  return 1
}

# start_charons IKE_LOGLEVEL
start_charons() {
  write_strongswan_conf i "$1" && write_strongswan_conf r "$1" &&
    start_charon r "$NS_R" && start_charon i "$NS_I"
}

driver() {  # driver ARGS...
  in_group "$CG_SWAN" python3 "$DRIVER" --uri "$WORK/i/charon.vici" --peer-uri "$WORK/r/charon.vici" "$@"
}

# A few handshakes with IKE logging at level 1; the logs must show, for each,
# ECDSA certificate authentication both ways, CURVE_25519 and the CHILD SA.
verify_strongswan() {
  local n=8
  start_charons 1 || return 1
  if ! driver --count "$n" --window 2 >"$WORK/verify.json" 2>"$WORK/verify.err"; then
    log "strongSwan verification handshakes failed:"; cat "$WORK/verify.json" "$WORK/verify.err" >&2
    tail -n 40 "$WORK/i/charon.log" "$WORK/r/charon.log" >&2
    return 1
  fi
  stop_charons
  local side peer ok=0 count
  for side in i r; do
    [[ $side == i ]] && peer=r || peer=i
    local want=(
      "authentication of '$side.bench.strongswan.example' (myself) with ECDSA_WITH_SHA256_DER successful"
      "authentication of '$peer.bench.strongswan.example' with ECDSA_WITH_SHA256_DER successful"
      "selected proposal: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519"
      "CHILD_SA net{[0-9]*} established"
    )
    local w
    for w in "${want[@]}"; do
      count=$(grep -c -- "$w" "$WORK/$side/charon.log")
      if ((count != n)); then
        log "charon ($side) log: $count of $n handshakes show \"$w\""
        ok=1
      fi
    done
  done
  if ((ok != 0)); then
    tail -n 60 "$WORK/i/charon.log" >&2
    return 1
  fi
  cp "$WORK/i/charon.log" "$WORK/verify-i.log"
  cp "$WORK/r/charon.log" "$WORK/verify-r.log"
}

run_strongswan() {  # run_strongswan ROUND
  start_charons -1 || return 1
  local rc=0
  driver --mode "$SS_MODE" --window "$SS_WINDOW" --warmup "$WARMUP" --duration "$DURATION" \
    --pids "$PID_I,$PID_R" >"$WORK/strongswan-$1.json" 2>"$WORK/strongswan-$1.err" || rc=1
  stop_charons
  if ((rc != 0)); then
    log "strongSwan run failed:"; cat "$WORK/strongswan-$1.json" "$WORK/strongswan-$1.err" >&2
    tail -n 40 "$WORK/i/charon.log" "$WORK/r/charon.log" >&2
  fi
  return $rc
}

mkdir -p "$WORK/i" "$WORK/r"
if ((CPU_GROUPS)); then
  CG_STRAIT=$(make_cpu_group "strait-hsb-$TAG-strait") &&
    CG_SWAN=$(make_cpu_group "strait-hsb-$TAG-strongswan") ||
    { remove_cpu_groups; CG_STRAIT=; CG_SWAN=; log "no cpu cgroups here: CPU shares follow thread counts"; }
fi
if [[ $ONLY != strait ]]; then
  make_pki || { log "making certificates failed"; exit 1; }
  make_netns || exit 1
  write_swanctl_conf i 192.0.2.1 192.0.2.2 r 10.1.0.0/24 10.2.0.0/24
  write_swanctl_conf r 192.0.2.2 192.0.2.1 i 10.2.0.0/24 10.1.0.0/24
  verify_strongswan || exit 1
fi

for round in $(seq "$ROUNDS"); do
  if [[ $ONLY != strongswan ]]; then
    log "round $round/$ROUNDS: strait<->strait (window $WINDOW, ${WARMUP}s + ${DURATION}s)"
    run_strait "$round" || exit 1
  fi
  if [[ $ONLY != strait ]]; then
    log "round $round/$ROUNDS: strongswan<->strongswan (window $SS_WINDOW, ${WARMUP}s + ${DURATION}s)"
    run_strongswan "$round" || exit 1
  fi
done

# The summary: each side's median round (the lower one for an even count).
python3 - "$WORK" "$ROUNDS" "$JSON" <<'PY'
import json, os, sys
work, rounds, as_json = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

def load(name):
    paths = ["%s/%s-%d.json" % (work, name, r) for r in range(1, rounds + 1)]
    return [json.load(open(p)) for p in paths if os.path.exists(p)]

def median_run(runs):
    ranked = sorted(runs, key=lambda r: r["handshakes_per_second"])
    return ranked[(len(ranked) - 1) // 2]

def describe(label, runs):
    r = median_run(runs)
    lat, cpu = r["latency_ms"], r.get("cpu_ms_per_handshake") or {}
    parts = ["window %d" % r["window"], "%d handshakes in %gs" % (r["handshakes"], r["duration_s"]),
             "latency mean %.2f / p50 %.2f / p99 %.2f ms" % (lat["mean"], lat["p50"], lat["p99"])]
    if cpu:
        parts.append("CPU per handshake: initiator %.2f ms, responder %.2f ms"
                     % (cpu.get("initiator", 0), cpu.get("responder", 0)))
    series = r.get("per_second") or []
    if len(series) >= 2:
        held = (r.get("ikesas") or {}).get("responder", {}).get("total", "?")
        parts.append("first second %d, last %d, %s IKE SAs held at the end"
                     % (series[0], series[-1], held))
    if len(runs) > 1:
        parts.append("median of %d rounds: %s" % (
            len(runs), " ".join("%.1f" % x["handshakes_per_second"] for x in runs)))
    return "%s: %.1f handshakes/s (%s)" % (label, r["handshakes_per_second"], "; ".join(parts))

strait, swan = load("strait"), load("strongswan")
lines, summary = [], {"strait": strait, "strongswan": swan}
if strait:
    lines.append(describe("strait\u2194strait", strait))
    summary["strait_per_second"] = median_run(strait)["handshakes_per_second"]
if swan:
    lines.append(describe("strongswan\u2194strongswan", swan))
    summary["strongswan_per_second"] = median_run(swan)["handshakes_per_second"]
def cpu_both(runs):
    cpu = median_run(runs).get("cpu_ms_per_handshake") or {}
    return cpu.get("initiator", 0) + cpu.get("responder", 0)

if strait and swan:
    # CPU time per handshake depends less on what else the machine runs.
    if cpu_both(strait) and cpu_both(swan):
        summary["cpu_ms_per_handshake"] = {"strait": round(cpu_both(strait), 3),
                                           "strongswan": round(cpu_both(swan), 3)}
        lines.append("CPU per handshake, both sides: strait %.2f ms, strongswan %.2f ms"
                     % (cpu_both(strait), cpu_both(swan)))
    ratio = summary["strait_per_second"] / summary["strongswan_per_second"]
    summary["ratio"] = round(ratio, 3)
    lines.append("ratio strait/strongswan: %.2f" % ratio)
print(json.dumps(summary) if as_json else "; ".join(lines))
PY
