#!/usr/bin/env bash
# Interop, the life of a tunnel after it is up: a Strait agent (standalone,
# --dataplane=userspace) against Debian's strongSwan (charon with
# kernel-libipsec), with ping between the LANs behind them.
#
# The namespaces are those of strongswan_datapath_test.sh: "ss" runs charon
# (192.0.2.1, LAN namespace "lss" 10.1.0.2 behind it), "st" runs the agent
# (192.0.2.2, LAN "lst" 10.2.0.2). The tunnel joins 10.1.0.0/24 and
# 10.2.0.0/24 with a PSK. Each case starts a fresh charon and a fresh agent
# with the case's settings and waits for the CHILD SA on both ends.
#
# What Strait reports is read from its metrics (strait_agent_sa_bytes_total
# has one series per installed ESP SA, by SPI; strait_agent_tunnels by
# phase; the rekey, DPD and DELETE counters) and its log ("tunnel state"
# lines with the phase and reason); what charon does from swanctl
# --list-sas and its log. Cases:
#   - CHILD SA rekey, started by charon (short rekey_time) or by Strait
#     (short esp.lifetime and rekeyMargin), without and with PFS (an ESP
#     proposal with x25519): charon lists new SPIs INSTALLED and the old
#     ones gone, Strait's installed SAs are exactly the new pair, each log
#     shows the rekey, the rekey counter of the right role went up, with
#     PFS charon names CURVE_25519 for the new CHILD SA, and a ping running
#     across the rekey loses at most one packet; pings both ways after it.
#   - DPD: charon killed with SIGKILL, Strait (interval 2s, timeout 6s,
#     action restart) declares PEER_DEAD within interval + timeout (+ slack)
#     and counts DPD probes and the dead peer; charon started again, the
#     tunnel comes back and carries traffic. And charon's DPD (dpd_delay 2s,
#     short retransmits) notices a killed agent and drops its SAs.
#   - DELETE: swanctl --terminate --ike makes Strait report DELETED_BY_PEER,
#     and Strait (the initiator) connects again; the agent's tunnel removal
#     (SIGHUP with a new intent) and shutdown (SIGTERM) make charon log the
#     DELETE and list no SA; swanctl --terminate --child makes Strait drop
#     the CHILD SA and leave ESTABLISHED, then (initiator) create a new one
#     in the same IKE SA with CREATE_CHILD_SA, which traffic uses.
#   - NAT-T: natTraversal: force makes charon see Strait "behind NAT", both
#     ends on UDP 4500 with ESP in UDP; charon's encap = yes makes Strait see
#     charon behind a NAT. Traffic goes through the encapsulated SA.
# Prints PASS/FAIL and the seconds per case; logs on failure.
#
# Usage: strongswan_lifecycle_test.sh PATH/TO/strait-agent   (needs root)
#   INTEROP_ONLY=TEXT runs only the cases whose name contains TEXT;
#   INTEROP_KEEP=1 keeps the work directory.
set -uo pipefail

AGENT=$(realpath "${1:?usage: $0 PATH/TO/strait-agent}")
CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
source "$(dirname "$0")/strongswan_lib.sh" || { echo "FAIL: no strongswan_lib.sh"; exit 1; }
require_tools "$CHARON" "$SWANCTL" ip unshare python3 ping curl
require_root

# Unix socket paths are limited to 108 bytes, Bazel's TEST_TMPDIR is long.
WORK=$(mktemp -d /tmp/strait-slc.XXXXXX)
TAG=$$
NS_SS=slc-ss-$TAG NS_ST=slc-st-$TAG NS_LSS=slc-lss-$TAG NS_LST=slc-lst-$TAG
CHARON_PID=
AGENT_PID=
PING_PID=
METRICS=192.0.2.2:9444
METRICS_TIMEOUT=5
TUNNEL=to-charon
PSK="strongswan lifecycle interop key 0123456789"
CLEANUP_PIDS=(PING_PID AGENT_PID CHARON_PID)
KEEP=${INTEROP_KEEP:-}
trap_cleanup

# --- charon ---

# Short retransmissions (1, 1.4, 2 s, then give up) so that charon's DPD
# notices a dead agent within seconds. A rekeyed CHILD SA lingers (DELETED,
# inbound only) delete_rekeyed_delay for late packets; 5 s by default.
write_strongswan_conf \
  "random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 kernel-libipsec kernel-netlink socket-default vici" \
  "retransmit_timeout = 1.0
  retransmit_base = 1.4
  retransmit_tries = 2
  delete_rekeyed_delay = 1" \
  "append = yes
      default = 1
      ike = 2
      cfg = 1
      knl = 1"

# The case's settings; new_case sets the defaults.
new_case() {
  C_IKE=aes128gcm16-prfsha256-x25519
  C_ESP=aes128gcm16
  C_CONN_EXTRA=   # more swanctl.conf connection settings, one a line
  C_CHILD_EXTRA=  # more swanctl.conf CHILD settings
  A_START=start   # the agent's startAction
  A_ESP_EXTRA=    # more esp: settings (lifetime, rekeyMargin)
  A_DPD="{interval: 30s, timeout: 150s, action: restart}"
  A_NAT=auto
}

start_charon() {  # start_charon [append]: "append" keeps the log
  start_charon_daemon "${1:-}" && load_psk_conn
}

# --- the Strait agent (start_agent, kill_agent: strongswan_lib.sh) ---

m() {  # m NAME [LABEL=VALUE ...]: from a fresh scrape
  metrics >"$WORK/metrics.txt" || { echo -1; return; }
  metric_sum "$WORK/metrics.txt" "$@"
}

# Strait's installed ESP SAs as "in:SPI out:SPI ..." (sorted), from the
# per-SA series that the agent keeps for installed SAs only.
strait_spis() {
  metrics | sed -n 's/^strait_agent_sa_bytes_total{\(.*\)} .*/\1/p' |
    awk -v t="$TUNNEL" '{ d = s = tn = ""
      n = split($0, kv, ",")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); gsub(/"/, "", p[2])
        if (p[1] == "direction") d = p[2]; if (p[1] == "spi") s = p[2]; if (p[1] == "tunnel") tn = p[2] }
      if (tn == t) print d ":" s }' | sort | tr '\n' ' ' | sed 's/ $//'
}

# charon's INSTALLED CHILD SAs as "in:SPI out:SPI ..." seen from Strait (charon's
# inbound SA is Strait's outbound one), and the full listing in list-sas.out.
charon_spis() {
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  awk '$1 == "net:" { installed = ($5 == "INSTALLED,") }
    installed && ($1 == "in" || $1 == "out") { sub(/[,(].*/, "", $2); print ($1 == "in" ? "out" : "in") ":" $2 }' \
    "$WORK/list-sas.out" | sort | tr '\n' ' ' | sed 's/ $//'
}

# Both ends have exactly one CHILD SA and agree on its SPIs; prints them.
wait_installed() {  # wait_installed [SECONDS]
  local _ mine theirs
  for _ in $(seq $((${1:-30} * 4))); do
    theirs=$(charon_spis)
    mine=$(strait_spis)
    if [[ -n $theirs && $theirs == "$mine" && $(grep -c ", INSTALLED, " "$WORK/list-sas.out") -eq 1 ]]; then
      echo "$mine"
      return 0
    fi
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "  the agent exited" >&2; return 1; }
    sleep 0.25
  done
  echo "  no single CHILD SA with the same SPIs on both ends within ${1:-30} s" \
    "(charon: '$theirs', Strait: '$mine')" >&2
  return 1
}

ping_ok() {  # ping_ok NAME: both ways, LAN to LAN
  ip netns exec "$NS_LSS" ping -c 3 -i 0.2 -W 2 10.2.0.2 >"$WORK/ping-$1-a.out" 2>&1 &&
    ip netns exec "$NS_LST" ping -c 3 -i 0.2 -W 2 10.1.0.2 >"$WORK/ping-$1-b.out" 2>&1 ||
    { echo "  ping $1 failed"; tail -n 3 "$WORK/ping-$1-a.out" "$WORK/ping-$1-b.out"; return 1; }
}

# A ping that runs across an event; stop_ping prints "SENT RECEIVED".
start_ping() {
  ip netns exec "$NS_LSS" ping -i 0.2 -W 1 10.2.0.2 >"$WORK/ping-across.out" 2>&1 &
  PING_PID=$!
}
stop_ping() {
  kill -INT "$PING_PID" 2>/dev/null
  wait "$PING_PID" 2>/dev/null
  PING_PID=
  sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' "$WORK/ping-across.out"
}

# Waits until COMMAND succeeds (polling every 0.25 s) or SECONDS pass.
wait_for() {  # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)) _
  shift
  while ((SECONDS < deadline)); do
    "$@" && return 0
    sleep 0.25
  done
  "$@"
}

agent_logged() { grep -qE "$1" "$WORK/agent.log"; }
charon_logged() { grep -qE "$1" "$WORK/charon.log"; }
charon_no_sa() { swanctl --list-sas >"$WORK/list-sas.out" 2>&1 && ! grep -q "IKEv2" "$WORK/list-sas.out"; }
phase_is() { (($(m strait_agent_tunnels phase="$1") == 1)); }

show_logs() {
  echo "--- swanctl --list-sas:"; swanctl --list-sas 2>&1
  echo "--- agent metrics (IKE, SAs):"
  metrics | grep -E '^strait_agent_(sa_bytes|child_sas|ike_sas|ike_rekeys|ike_dpd|ike_dead|ike_deletes|tunnels\{)' | grep -v ' 0$'
  echo "--- agent log (tail):"; tail -n 40 "$WORK/agent.log"
  echo "--- charon log (tail):"; tail -n 60 "$WORK/charon.log"
}

# Brings the tunnel up: Strait initiating (A_START=start) or charon.
establish() {
  start_charon || return 1
  start_agent_and_initiate "$A_START" || return 1
  BEFORE=$(wait_installed) || return 1
  echo "  up: $BEFORE"
  ping_ok before
}

# --- cases ---

# rekey_case WHO PFS: WHO (charon or strait) rekeys the CHILD SA.
rekey_case() {
  local who=$1 pfs=$2 after sent received
  if [[ $pfs == pfs ]]; then C_ESP=aes128gcm16-x25519; fi
  if [[ $who == charon ]]; then
    C_CHILD_EXTRA="rekey_time = 8s
        life_time = 60s
        rand_time = 0"
  else
    A_ESP_EXTRA="lifetime: 30s
    rekeyMargin: 20s"
  fi
  establish || return 1
  local before=$BEFORE
  start_ping
  # Strait rekeys 5 to 10 s after the CHILD SA is up, charon after 8 s.
  after=$(wait_for 20 rekeyed_from "$before") || {
    stop_ping >/dev/null; echo "  no rekey within 20 s: charon '$(charon_spis)', Strait '$(strait_spis)'"; return 1; }
  sleep 1.5
  read -r sent received <<<"$(stop_ping)"
  echo "  rekeyed: $after; ping across the rekey: $received of $sent"
  local status=0 spi
  # charon keeps the old SA for delete_rekeyed_delay, then it is gone.
  wait_for 4 old_spis_gone "$before" || status=1
  ((${sent:-0} >= 5 && ${received:-0} + 1 >= ${sent:-0})) ||
    { echo "  the ping across the rekey lost more than one packet"; status=1; }
  if [[ $who == charon ]]; then
    charon_logged "generating CREATE_CHILD_SA request [0-9]+ \[ N\(REKEY_SA\)" ||
      { echo "  charon's log does not show its CREATE_CHILD_SA request"; status=1; }
    (($(m strait_agent_ike_rekeys_total kind=child role=responder result=success) >= 1)) ||
      { echo "  Strait counted no answered rekey"; status=1; }
    agent_logged "CHILD SA rekeyed" || { echo "  the agent's log does not show the rekey"; status=1; }
  else
    charon_logged "parsed CREATE_CHILD_SA request [0-9]+ \[ N\(REKEY_SA\)" ||
      { echo "  charon's log does not show Strait's CREATE_CHILD_SA request"; status=1; }
    (($(m strait_agent_ike_rekeys_total kind=child role=initiator result=success) >= 1)) ||
      { echo "  Strait counted no rekey of its own"; status=1; }
  fi
  charon_logged "CHILD_SA net\{[0-9]+\} established with SPIs $(spi_of out "$after")_i $(spi_of in "$after")_o" ||
    { echo "  charon's log does not show the new CHILD SA $after"; status=1; }
  charon_logged "closing CHILD_SA net\{[0-9]+\} with SPIs $(spi_of out "$before")_i" ||
    { echo "  charon's log does not show the old CHILD SA closed"; status=1; }
  if [[ $pfs == pfs ]]; then
    grep -q "ESP:AES_GCM_16-128/CURVE_25519" "$WORK/list-sas.out" ||
      { echo "  charon does not name CURVE_25519 for the rekeyed CHILD SA (no PFS?)"; status=1; }
  fi
  # With the old SAs gone from both ends, traffic can only take new ones
  # (further rekeys may have come since: the ends must still agree).
  ping_ok after || status=1
  wait_installed 10 >/dev/null || status=1
  return $status
}

old_spis_gone() {  # old_spis_gone "in:X out:Y": from charon's list and Strait's SAs
  local spi mine
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  mine=$(strait_spis)
  for spi in $1; do
    if grep -q "${spi#*:}" "$WORK/list-sas.out" || [[ $mine == *"${spi#*:}"* ]]; then
      echo "  the old SPI ${spi#*:} is still there (charon or Strait: $mine)"
      return 1
    fi
  done
}

spi_of() {  # spi_of in|out "in:X out:Y"
  local s
  for s in $2; do [[ ${s%%:*} == "$1" ]] && echo "${s#*:}"; done
}

# Succeeds (printing the new SPIs) once both ends agree on one CHILD SA
# whose SPIs are not those of $1.
rekeyed_from() {
  local theirs mine
  theirs=$(charon_spis)
  [[ -n $theirs && $theirs != "$1" && $(grep -c ", INSTALLED, " "$WORK/list-sas.out") -eq 1 ]] || return 1
  [[ $(spi_of in "$theirs") != "$(spi_of in "$1")" && $(spi_of out "$theirs") != "$(spi_of out "$1")" ]] || return 1
  mine=$(strait_spis)
  [[ $mine == "$theirs" ]] || return 1
  echo "$mine"
}

dpd_strait_case() {
  A_DPD="{interval: 2s, timeout: 6s, action: restart}"
  establish || return 1
  local status=0 killed=$SECONDS
  kill_charon KILL
  # Nothing comes from charon any more: the agent probes after 2 s of
  # silence and gives up 6 s later.
  wait_for 14 agent_logged 'reason.{0,6}PEER_DEAD' ||
    { echo "  Strait did not report PEER_DEAD within 14 s"; return 1; }
  local took=$((SECONDS - killed))
  echo "  PEER_DEAD after ${took}s"
  (($(m strait_agent_ike_dead_peers_total action=restart) == 1)) ||
    { echo "  strait_agent_ike_dead_peers_total{action=restart} is not 1"; status=1; }
  (($(m strait_agent_ike_dpd_probes_total) >= 1)) || { echo "  no DPD probe counted"; status=1; }
  (($(m strait_agent_child_sas) == 0)) || { echo "  Strait still counts a CHILD SA"; status=1; }
  # restart: Strait connects again and keeps trying until charon is back.
  start_charon append || return 1
  BEFORE=$(wait_installed 30) || return 1
  echo "  back up: $BEFORE"
  ping_ok restarted || status=1
  return $status
}

dpd_charon_case() {
  C_CONN_EXTRA="dpd_delay = 2s"
  establish || return 1
  local killed=$SECONDS
  kill_agent KILL
  # charon probes after 2 s and gives up after 1 + 1.4 + 2 s.
  wait_for 15 charon_logged "giving up after [0-9]+ retransmits" ||
    { echo "  charon did not give up on the killed agent within 15 s"; return 1; }
  echo "  charon gave up after $((SECONDS - killed))s"
  wait_for 3 charon_no_sa || { echo "  charon still lists an SA"; return 1; }
}

delete_ike_by_charon_case() {
  establish || return 1
  local status=0 old_spi
  old_spi=$(sed -n 's/.*#[0-9]*, ESTABLISHED, IKEv2, \([0-9a-f]*\)_i.*/\1/p' "$WORK/list-sas.out")
  swanctl --terminate --ike strait --timeout 10 >"$WORK/terminate.out" 2>&1 ||
    { echo "  swanctl --terminate --ike failed"; return 1; }
  charon_logged "sending DELETE for IKE_SA|generating INFORMATIONAL request .* D \]" ||
    { echo "  charon's log shows no DELETE sent"; status=1; }
  wait_for 5 agent_logged 'reason.{0,6}DELETED_BY_PEER' ||
    { echo "  Strait did not report DELETED_BY_PEER"; return 1; }
  (($(m strait_agent_ike_deletes_total direction=received) >= 1)) ||
    { echo "  Strait counted no received DELETE"; status=1; }
  # Strait initiates the tunnel: it connects again.
  AFTER=$(wait_installed 20) || return 1
  local new_spi
  new_spi=$(sed -n 's/.*#[0-9]*, ESTABLISHED, IKEv2, \([0-9a-f]*\)_i.*/\1/p' "$WORK/list-sas.out")
  [[ -n $new_spi && $new_spi != "$old_spi" ]] ||
    { echo "  no new IKE SA after the delete (initiator SPI $old_spi -> $new_spi)"; status=1; }
  echo "  re-established: IKE ${old_spi}_i -> ${new_spi}_i, CHILD $AFTER"
  ping_ok reestablished || status=1
  return $status
}

delete_child_by_charon_case() {
  establish || return 1
  local status=0 ike_before ike_after
  ike_before=$(sed -n 's/.*#[0-9]*, ESTABLISHED, IKEv2, \([0-9a-f]*_i[^ ]* [0-9a-f]*_r\).*/\1/p' "$WORK/list-sas.out")
  swanctl --terminate --child net --timeout 10 >"$WORK/terminate.out" 2>&1 ||
    { echo "  swanctl --terminate --child failed"; return 1; }
  # Strait drops the CHILD SA and no longer reports the tunnel ESTABLISHED.
  wait_for 5 eval '(($(m strait_agent_child_sas) == 0))' ||
    { echo "  Strait still has a CHILD SA after charon deleted it"; return 1; }
  wait_for 3 eval '! phase_is established' ||
    { echo "  Strait still reports the tunnel ESTABLISHED without a CHILD SA"; status=1; }
  agent_logged 'reason.{0,6}CHILD_SA_DELETED' ||
    { echo "  the agent's log has no CHILD_SA_DELETED state"; status=1; }
  # Strait, the initiator, creates a new CHILD SA in the same IKE SA.
  AFTER=$(wait_installed 15) || return 1
  ike_after=$(sed -n 's/.*#[0-9]*, ESTABLISHED, IKEv2, \([0-9a-f]*_i[^ ]* [0-9a-f]*_r\).*/\1/p' "$WORK/list-sas.out")
  [[ $ike_after == "$ike_before" ]] ||
    { echo "  the IKE SA changed ($ike_before -> $ike_after): not CREATE_CHILD_SA in the same IKE SA"; status=1; }
  # A new CHILD SA, not a rekey: no REKEY_SA.
  charon_logged "parsed CREATE_CHILD_SA request [0-9]+ \[ SA " ||
    { echo "  charon's log shows no CREATE_CHILD_SA request (without REKEY_SA) from Strait"; status=1; }
  echo "  new CHILD SA in IKE SA $ike_before: $AFTER"
  wait_for 3 phase_is established || { echo "  Strait does not report ESTABLISHED again"; status=1; }
  ping_ok recreated || status=1
  return $status
}

delete_by_strait_case() {  # delete_by_strait_case remove|shutdown
  establish || return 1
  local status=0
  if [[ $1 == remove ]]; then
    write_intent "$WORK/tunnels.yaml" add elsewhere 192.0.2.9
    kill -HUP "$AGENT_PID"
    wait_for 5 agent_logged "tunnel stopped" || { echo "  the agent did not stop the tunnel"; return 1; }
  else
    kill_agent TERM
  fi
  wait_for 5 charon_logged "received DELETE for IKE_SA strait\[[0-9]+\]" ||
    { echo "  charon's log shows no DELETE received for the IKE SA"; return 1; }
  wait_for 3 charon_no_sa || { echo "  charon still lists an SA:"; cat "$WORK/list-sas.out"; status=1; }
  if [[ $1 == remove ]]; then
    (($(m strait_agent_ike_deletes_total direction=sent) >= 1)) ||
      { echo "  Strait counted no DELETE sent"; status=1; }
    (($(m strait_agent_child_sas) == 0)) || { echo "  Strait still counts a CHILD SA"; status=1; }
  fi
  return $status
}

nat_force_case() {
  A_NAT=force
  establish || return 1
  local status=0
  charon_logged "remote host is behind NAT" ||
    { echo "  charon's log does not see Strait behind a NAT"; status=1; }
  swanctl --list-sas --raw >"$WORK/list-sas-raw.out" 2>&1
  grep -q "nat-remote=yes" "$WORK/list-sas-raw.out" ||
    { echo "  charon's IKE SA is not marked nat-remote"; status=1; }
  grep -qE "remote +'strait.strait.test' @ 192.0.2.2\[4500\]" "$WORK/list-sas.out" ||
    { echo "  charon does not list Strait on UDP 4500"; status=1; }
  grep -qE "local +'charon.strait.test' @ 192.0.2.1\[4500\]" "$WORK/list-sas.out" ||
    { echo "  charon's own end of the IKE SA is not on UDP 4500"; status=1; }
  grep -q ", INSTALLED, TUNNEL-in-UDP, " "$WORK/list-sas.out" ||
    { echo "  charon's CHILD SA is not TUNNEL-in-UDP"; status=1; }
  agent_logged 'IKE SA established.*local_behind_nat=true' ||
    { echo "  the agent's log does not see itself behind a NAT"; status=1; }
  (($(m strait_agent_ike_nat_detected_total) >= 1)) ||
    { echo "  Strait counted no NAT"; status=1; }
  return $status
}

nat_charon_encap_case() {
  C_CONN_EXTRA="encap = yes"
  A_START=add  # charon initiates: its IKE_SA_INIT request carries the faked NAT-D.
  establish || return 1
  local status=0
  # charon marks the IKE SA as NATed. (kernel-libipsec may fake a NAT on
  # its own, so this case cannot tell encap = yes from that.)
  swanctl --list-sas --raw >"$WORK/list-sas-raw.out" 2>&1
  grep -q "nat-any=yes" "$WORK/list-sas-raw.out" ||
    { echo "  charon's IKE SA is not marked NATed (nat-any) with encap = yes"; status=1; }
  agent_logged 'IKE SA established.*remote_behind_nat=true' ||
    { echo "  the agent's log does not see charon behind a NAT"; status=1; }
  grep -q ", INSTALLED, TUNNEL-in-UDP, " "$WORK/list-sas.out" ||
    { echo "  charon's CHILD SA is not TUNNEL-in-UDP"; status=1; }
  return $status
}

run_case() {  # run_case NAME FUNCTION [ARGS...]
  local name=$1 status start=$SECONDS
  shift
  [[ $name == *"${INTEROP_ONLY:-}"* ]] || return 0
  echo "=== $name"
  new_case
  rm -f "$WORK"/ping-*.out "$WORK"/initiate.out "$WORK/list-sas.out"
  "$@"
  status=$?
  record "$name" "$status" $((SECONDS - start))
  kill -INT "$PING_PID" 2>/dev/null; wait "$PING_PID" 2>/dev/null; PING_PID=
  kill_agent
  kill_charon
}

setup_netns sl "$TAG" || { echo "FAIL: cannot set up the namespaces"; exit 1; }
START=$SECONDS
run_case "CHILD SA rekey by charon, no PFS" rekey_case charon nopfs
run_case "CHILD SA rekey by charon, PFS" rekey_case charon pfs
run_case "CHILD SA rekey by Strait, no PFS" rekey_case strait nopfs
run_case "CHILD SA rekey by Strait, PFS" rekey_case strait pfs
run_case "DPD: Strait finds charon dead, restarts" dpd_strait_case
run_case "DPD: charon finds the agent dead" dpd_charon_case
run_case "DELETE: charon deletes the IKE SA" delete_ike_by_charon_case
run_case "DELETE: charon deletes the CHILD SA" delete_child_by_charon_case
run_case "DELETE: Strait removes the tunnel" delete_by_strait_case remove
run_case "DELETE: Strait shuts down" delete_by_strait_case shutdown
run_case "NAT-T: Strait forces encapsulation" nat_force_case
run_case "NAT-T: charon forces encapsulation" nat_charon_encap_case

summary
