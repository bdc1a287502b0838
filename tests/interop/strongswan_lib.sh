# The plumbing the strongSwan interop tests share; sourced (not run) by
# tests/interop/strongswan_{datapath,lifecycle,fragmentation}_test.sh and
# tests/vm/strongswan_xfrm_test.sh, each of which lists it in its Bazel
# `data`. It holds no checks of its own: what a test checks stays in it.
#
# The sourcing script sets, before calling into it:
#   WORK        the work folder (short: it holds charon's vici socket)
#   CHARON, SWANCTL   the strongSwan binaries
#   NS_SS NS_ST (and NS_LSS NS_LST for the four-namespace topology)
#   for the agent: AGENT, METRICS, TUNNEL, PSK, C_IKE, C_ESP
# and may set these (defaults in brackets):
#   SWANCTL_TIMEOUT [30]   seconds any one swanctl call may take
#   CHARON_PRIVATE_RUN [1] run charon under `unshare -m` with a private
#                          tmpfs /run (empty: the VM, whose /run is its own)
#   CHARON_START_SECONDS [10]   how long charon may take to open vici
#   AGENT_DATAPLANE [userspace], METRICS_TIMEOUT [30] (curl --max-time)
#   INITIATE_TIMEOUT [20]  swanctl --initiate --timeout
#   PING_WAIT [2], IPERF_SECONDS [3], IPERF_SLACK [20] (seconds iperf3 may
#   run beyond IPERF_SECONDS), IPERF_CONNECT_MS [5000], IPERF_LABEL
#   CLEANUP_PIDS  names of the variables holding PIDs to stop on exit
#   CLEANUP_NAMESPACES  namespaces to delete on exit
#   KEEP          non-empty: keep WORK on exit
# and may redefine agent_settle (what the charon-initiates cases wait for
# before `swanctl --initiate`; half a second by default).

# --- preconditions ---

require_tools() {  # require_tools TOOL...
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)"; exit 1; }
  done
}

require_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "FAIL: needs root (network namespaces)"
    exit 1
  fi
}

# --- exit ---

CLEANUP_PIDS=()
CLEANUP_NAMESPACES=()
KEEP=

# Stops the processes, deletes the namespaces, copies WORK to Bazel's
# undeclared outputs and removes it (unless KEEP).
cleanup() {
  local v p ns pids=()
  for v in "${CLEANUP_PIDS[@]}"; do [[ -n ${!v:-} ]] && pids+=("${!v}"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "${CLEANUP_NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null; fi
  if [[ -n $KEEP ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}

trap_cleanup() {
  trap cleanup EXIT
  trap 'exit 1' INT TERM
}

stop_pid() {  # stop_pid VAR [SIGNAL]: stops the process whose PID VAR holds, empties VAR
  local pid=${!1:-}
  [[ -n $pid ]] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  printf -v "$1" '%s' ""
}

# --- topology ---

# Two gateways on a veth pair, "ss" (charon, 192.0.2.1) and "st" (Strait,
# 192.0.2.2), and behind each a LAN namespace on a veth of its own: "lss"
# (10.1.0.2, gateway 10.1.0.1 on ss) and "lst" (10.2.0.2, gateway 10.2.0.1
# on st). The links are named PREFIX{u,v,l,g,m,h}SUFFIX.
setup_netns() {  # setup_netns PREFIX SUFFIX
  local ns link dev u=$1u$2 v=$1v$2 l=$1l$2 g=$1g$2 lm=$1m$2 h=$1h$2
  for ns in "$NS_SS" "$NS_ST" "$NS_LSS" "$NS_LST"; do
    ip netns add "$ns" || return 1
    CLEANUP_NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
  done
  ip link add "$u" netns "$NS_SS" type veth peer name "$v" netns "$NS_ST" || return 1
  ip -n "$NS_SS" addr add 192.0.2.1/24 dev "$u"
  ip -n "$NS_ST" addr add 192.0.2.2/24 dev "$v"
  ip link add "$l" netns "$NS_LSS" type veth peer name "$g" netns "$NS_SS" || return 1
  ip link add "$lm" netns "$NS_LST" type veth peer name "$h" netns "$NS_ST" || return 1
  ip -n "$NS_LSS" addr add 10.1.0.2/24 dev "$l"
  ip -n "$NS_SS" addr add 10.1.0.1/24 dev "$g"
  ip -n "$NS_LST" addr add 10.2.0.2/24 dev "$lm"
  ip -n "$NS_ST" addr add 10.2.0.1/24 dev "$h"
  for link in "$NS_SS $u" "$NS_ST $v" "$NS_LSS $l" "$NS_SS $g" "$NS_LST $lm" "$NS_ST $h"; do
    read -r ns dev <<<"$link"
    ip -n "$ns" link set "$dev" up || return 1
  done
  ip -n "$NS_LSS" route add default via 10.1.0.1
  ip -n "$NS_LST" route add default via 10.2.0.1
  for ns in "$NS_SS" "$NS_ST"; do
    ip netns exec "$ns" sh -c "echo 1 >/proc/sys/net/ipv4/ip_forward" || return 1
  done
}

# --- charon ---

# WORK/strongswan.conf (and STRONGSWAN_CONF pointing at it): PLUGINS
# loaded, more `charon` settings, and the filelog levels, one a line. With
# kernel-libipsec, ESP goes through its TUN device (ipsec0) in raw sockets:
# it fakes a NAT to get ESP in UDP and routes the remote selectors there.
write_strongswan_conf() {  # write_strongswan_conf PLUGINS CHARON_SETTINGS LOG_LEVELS
  local libipsec=
  [[ " $1 " == *" kernel-libipsec "* ]] && libipsec="kernel-libipsec {
      raw_esp = yes
    }"
  cat >"$WORK/strongswan.conf" <<CONF
charon {
  load = $1
  install_virtual_ip = no
  $2
  plugins {
    $libipsec
    vici {
      socket = unix://$WORK/charon.vici
    }
  }
  filelog {
    charon {
      path = $WORK/charon.log
      $3
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
}

# The service URI is an option of each command, so it goes after the command.
swanctl() { timeout "${SWANCTL_TIMEOUT:-30}" "$SWANCTL" "$1" --uri "unix://$WORK/charon.vici" "${@:2}"; }

# Starts charon in NS_SS and waits until it answers on vici; "append" keeps
# its log. Under `unshare -m` charon gets a private /run for its pid file.
start_charon_daemon() {  # start_charon_daemon [append]
  [[ ${1:-} == append ]] || : >"$WORK/charon.log"
  rm -f "$WORK/charon.vici"
  if [[ -n ${CHARON_PRIVATE_RUN-1} ]]; then
    ip netns exec "$NS_SS" unshare -m sh -c \
      'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
      >>"$WORK/charon.stdout" 2>&1 &
  else
    mkdir -p /run/strongswan
    ip netns exec "$NS_SS" "$CHARON" >>"$WORK/charon.stdout" 2>&1 &
  fi
  CHARON_PID=$!
  local _
  for _ in $(seq $((${CHARON_START_SECONDS:-10} * 10))); do
    [[ -S $WORK/charon.vici ]] && swanctl --stats >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "  charon did not start:"; tail -n 30 "$WORK/charon.stdout" "$WORK/charon.log"
  return 1
}

kill_charon() {  # kill_charon [SIGNAL]
  stop_pid CHARON_PID "${1:-TERM}"
  rm -f "$WORK/charon.vici"
}

# swanctl reads the credential folders beside its file: DIR gets them.
make_swanctl_dirs() {  # make_swanctl_dirs DIR
  mkdir -p "$1"/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
}

load_swanctl_conf() {  # load_swanctl_conf FILE
  if ! swanctl --load-all --file "$1" >"$WORK/swanctl-load.out" 2>&1 ||
    grep -qi "fail\|error" "$WORK/swanctl-load.out"; then
    echo "  swanctl --load-all failed:"; cat "$WORK/swanctl-load.out"; return 1
  fi
}

# Loads charon's side of the tunnel: connection "strait" with CHILD "net"
# (10.1.0.0/24 - 10.2.0.0/24), PSK, C_IKE and C_ESP, and the settings in
# C_CONN_EXTRA and C_CHILD_EXTRA (one a line) if set.
load_psk_conn() {
  make_swanctl_dirs "$WORK/swanctl"
  cat >"$WORK/swanctl/swanctl.conf" <<CONF
connections {
  strait {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = $C_IKE
    ${C_CONN_EXTRA:-}
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
        ${C_CHILD_EXTRA:-}
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
  load_swanctl_conf "$WORK/swanctl/swanctl.conf"
}

# --- the Strait agent, standalone with an intent file ---

# The tunnel to charon (or, with NAME and REMOTE, one elsewhere), with
# A_ESP_EXTRA (more esp: settings), A_DPD and A_NAT where set.
write_intent() {  # write_intent FILE START_ACTION [NAME REMOTE]
  cat >"$1" <<YAML
kind: Tunnel
metadata:
  name: ${3:-$TUNNEL}
spec:
  node: strait-gw
  local:
    address: 192.0.2.2
    id: strait.strait.test
    trafficSelectors: [10.2.0.0/24]
  remote:
    address: ${4:-192.0.2.1}
    id: charon.strait.test
    trafficSelectors: [10.1.0.0/24]
  auth:
    psk: "$PSK"
  ike:
    proposals: [$C_IKE]
  esp:
    proposals: [$C_ESP]
    ${A_ESP_EXTRA:-}
${A_DPD:+  dpd: $A_DPD}
${A_NAT:+  natTraversal: $A_NAT}
  startAction: $2
YAML
  chmod 0600 "$1"
}

start_agent() {  # start_agent START_ACTION
  write_intent "$WORK/tunnels.yaml" "$1"
  ip netns exec "$NS_ST" "$AGENT" --node-name strait-gw --intent-file "$WORK/tunnels.yaml" \
    --enable-ike --dataplane "${AGENT_DATAPLANE:-userspace}" --metrics-listen "$METRICS" \
    --status-interval 1s --log-level debug >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}

kill_agent() {  # kill_agent [SIGNAL]
  stop_pid AGENT_PID "${1:-TERM}"
}

agent_settle() { sleep 0.5; }

# Starts the agent with START_ACTION; with "add" charon initiates once
# agent_settle returns.
start_agent_and_initiate() {  # start_agent_and_initiate start|add
  start_agent "$1"
  [[ $1 == add ]] || return 0
  agent_settle
  swanctl --initiate --ike strait --child net --timeout "${INITIATE_TIMEOUT:-20}" \
    >"$WORK/initiate.out" 2>&1 ||
    { echo "  swanctl --initiate failed:"; tail -n 5 "$WORK/initiate.out"; return 1; }
}

metrics() { ip netns exec "$NS_ST" curl -fsS --max-time "${METRICS_TIMEOUT:-30}" "http://$METRICS/metrics" 2>/dev/null; }

# Sum of a metric's samples whose labels contain all the given label pairs.
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
# INSTALLED; polled every INTERVAL for SECONDS.
wait_child_sa() {  # wait_child_sa SECONDS INTERVAL
  local _
  for _ in $(seq "$(awk -v s="$1" -v i="$2" 'BEGIN { print int(s / i) }')"); do
    if metrics >"$WORK/metrics.txt" && (($(metric_sum "$WORK/metrics.txt" strait_agent_child_sas) >= 1)) &&
      swanctl --list-sas >"$WORK/list-sas.out" 2>&1 && grep -q "INSTALLED" "$WORK/list-sas.out"; then
      return 0
    fi
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "  the agent exited"; return 1; }
    sleep "$2"
  done
  echo "  no CHILD SA on both sides within $1 s"
  return 1
}

# --- traffic between the LANs ---

ping_from() {  # ping_from NAMESPACE ADDRESS NAME
  ip netns exec "$1" ping -c 4 -i 0.2 -W "${PING_WAIT:-2}" "$2" >"$WORK/ping-$3.out" 2>&1 &&
    ip netns exec "$1" ping -c 2 -i 0.2 -W "${PING_WAIT:-2}" -s 1300 "$2" >>"$WORK/ping-$3.out" 2>&1 ||
    { echo "  ping $3 ($2) failed"; return 1; }
}

# iperf3 TCP from CLIENT_NS to the server in SERVER_NS at ADDRESS; prints
# the bytes the server received and the rate in Mbit/s.
iperf_to() {  # iperf_to CLIENT_NS SERVER_NS ADDRESS NAME
  ip netns exec "$2" iperf3 -s -1 -p 5201 >"$WORK/iperf-$4-server.out" 2>&1 &
  IPERF_PID=$!
  local _
  for _ in $(seq $((${IPERF_SLACK:-20} * 5 / 2))); do
    ip netns exec "$2" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  if ! ip netns exec "$1" timeout $((IPERF_SECONDS + ${IPERF_SLACK:-20})) iperf3 \
    --connect-timeout "${IPERF_CONNECT_MS:-5000}" -c "$3" -p 5201 -t "$IPERF_SECONDS" -J \
    >"$WORK/iperf-$4.json" 2>"$WORK/iperf-$4.err"; then
    echo "  iperf3 $4 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$WORK/iperf-$4.json" 2>/dev/null)" >&2
    stop_pid IPERF_PID
    return 1
  fi
  wait "$IPERF_PID" 2>/dev/null
  IPERF_PID=
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print(e["sum_received"]["bytes"], int(e["sum_received"]["bits_per_second"]/1e6))' "$WORK/iperf-$4.json"
}

# Pings both ways, then iperf3 each way; sets TO_STRAIT and TO_CHARON to
# the bytes iperf3 received behind Strait and behind charon.
run_traffic() {
  local out mbps_a=0 mbps_b=0 status=0
  TO_STRAIT=0 TO_CHARON=0
  ping_from "$NS_LSS" 10.2.0.2 charon-side || status=1
  ping_from "$NS_LST" 10.1.0.2 strait-side || status=1
  [[ $status -eq 0 ]] || return 1
  if out=$(iperf_to "$NS_LSS" "$NS_LST" 10.2.0.2 to-strait); then
    read -r TO_STRAIT mbps_a <<<"$out"
  else
    status=1
  fi
  if out=$(iperf_to "$NS_LST" "$NS_LSS" 10.1.0.2 to-charon); then
    read -r TO_CHARON mbps_b <<<"$out"
  else
    status=1
  fi
  ((TO_STRAIT > 0 && TO_CHARON > 0)) || { echo "  iperf3 moved nothing one way"; status=1; }
  echo "  iperf3 ${IPERF_SECONDS}s${IPERF_LABEL:-}: charon side -> strait side $TO_STRAIT bytes" \
    "($mbps_a Mbit/s), strait side -> charon side $TO_CHARON bytes ($mbps_b Mbit/s)"
  return $status
}

# The end of show_logs for the agent tests: metrics, logs, ping and iperf3.
show_agent_logs() {
  echo "--- agent metrics (ESP, SAs):"
  metrics | grep -E '^strait_agent_(tunnel_esp|sa_|child_sas|ike_sas|ike_handshakes|dataplane)' | grep -v ' 0$'
  echo "--- agent log (tail):"; tail -n 60 "$WORK/agent.log"
  echo "--- charon log (tail):"; tail -n 80 "$WORK/charon.log"
  local f
  for f in "$WORK"/ping-*.out "$WORK"/iperf-*.err; do
    [[ -s $f ]] && { echo "--- $(basename "$f"):"; tail -n 10 "$f"; }
  done
}

# --- results; the script defines show_logs ---

FAILED=()
PASSED=()
START=$SECONDS
record() {  # record NAME STATUS [SECONDS]
  local took=${3:+ (${3}s)}
  if [[ $2 -eq 0 ]]; then
    PASSED+=("$1"); echo "PASS: $1$took"
  else
    FAILED+=("$1"); echo "FAIL: $1$took"; show_logs
  fi
}

# Prints the totals; succeeds when nothing failed and at least MIN_PASSED
# (default 1) cases passed.
summary() {  # summary [MIN_PASSED]
  local f
  echo
  echo "passed: ${#PASSED[@]}, failed: ${#FAILED[@]}, $((SECONDS - START)) s"
  for f in "${FAILED[@]}"; do echo "  failed: $f"; done
  [[ ${#FAILED[@]} -eq 0 && ${#PASSED[@]} -ge ${1:-1} ]]
}
