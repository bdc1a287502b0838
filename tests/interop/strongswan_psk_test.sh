#!/usr/bin/env bash
# Interop: strait-ike against Debian's strongSwan (charon + swanctl), PSK.
#
# Two network namespaces joined by a veth pair: "ss" runs charon
# (192.0.2.1, inner network 10.1.0.0/24 on lo), "st" runs strait-ike
# (192.0.2.2, inner 10.2.0.0/24 on lo; no `dummy` link type on this kernel).
# charon runs under `unshare -m` with a private tmpfs /run and its own
# strongswan.conf (STRONGSWAN_CONF), vici socket and log; kernel-libipsec
# gives it userspace ESP since this kernel has no ESP.
#
# Each case runs once with strait-ike initiating and once with charon
# initiating. A case passes when swanctl --list-sas shows the IKE SA
# ESTABLISHED and the CHILD SA INSTALLED with the expected algorithms and
# selectors, and strait-ike reports ESTABLISHED with the same SPIs.
#
# Usage: strongswan_psk_test.sh PATH/TO/strait-ike   (needs root)
set -uo pipefail

STRAIT_IKE=$(realpath "${1:?usage: $0 PATH/TO/strait-ike}")
CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
for tool in "$CHARON" "$SWANCTL" ip unshare python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not installed (tools/setup.sh)"; exit 1; }
done

# Unix socket paths are limited to 108 bytes, Bazel's TEST_TMPDIR is long.
WORK=$(mktemp -d /tmp/strait-interop.XXXXXX)
TAG=$$
NS_SS=strait-ss-$TAG
NS_ST=strait-st-$TAG
CHARON_PID=
STRAIT_PID=

cleanup() {
  [[ -n $STRAIT_PID ]] && kill "$STRAIT_PID" 2>/dev/null
  [[ -n $CHARON_PID ]] && kill "$CHARON_PID" 2>/dev/null
  [[ -n $STRAIT_PID ]] && wait "$STRAIT_PID" 2>/dev/null
  [[ -n $CHARON_PID ]] && wait "$CHARON_PID" 2>/dev/null
  ip netns del "$NS_SS" 2>/dev/null
  ip netns del "$NS_ST" 2>/dev/null
  if [[ -n ${TEST_UNDECLARED_OUTPUTS_DIR:-} ]]; then cp -r "$WORK" "$TEST_UNDECLARED_OUTPUTS_DIR/" 2>/dev/null; fi
  [[ -n ${INTEROP_KEEP:-} ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NS_SS" && ip netns add "$NS_ST" || { echo "FAIL: cannot create namespaces"; exit 1; }
ip link add "vss$TAG" type veth peer name "vst$TAG" || { echo "FAIL: cannot create veth"; exit 1; }
ip link set "vss$TAG" netns "$NS_SS"
ip link set "vst$TAG" netns "$NS_ST"
ip -n "$NS_SS" addr add 192.0.2.1/24 dev "vss$TAG"
ip -n "$NS_ST" addr add 192.0.2.2/24 dev "vst$TAG"
ip -n "$NS_SS" addr add 10.1.0.1/24 dev lo
ip -n "$NS_ST" addr add 10.2.0.1/24 dev lo
for ns in "$NS_SS" "$NS_ST"; do
  ip -n "$ns" link set lo up
done
ip -n "$NS_SS" link set "vss$TAG" up
ip -n "$NS_ST" link set "vst$TAG" up

GOOD_PSK="interop test pre-shared key 0123456789"
echo "$GOOD_PSK" >"$WORK/psk"
chmod 0600 "$WORK/psk"
echo "a different key entirely" >"$WORK/psk-wrong"
chmod 0600 "$WORK/psk-wrong"

cat >"$WORK/strongswan.conf" <<CONF
charon {
  load = random nonce openssl gcm aes sha2 hmac kdf curve25519 gmp kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  plugins {
    # Without raw_esp kernel-libipsec fakes a NAT to force UDP encapsulation
    # (port 4500), which strait-ike does not speak yet.
    kernel-libipsec {
      raw_esp = yes
    }
    vici {
      socket = unix://$WORK/charon.vici
    }
  }
  filelog {
    charon {
      path = $WORK/charon.log
      default = 1
      ike = 2
      cfg = 2
      enc = 1
      knl = 1
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
swanctl() { "$SWANCTL" "$1" --uri "unix://$WORK/charon.vici" "${@:2}"; }

start_charon() {
  : >"$WORK/charon.log"
  ip netns exec "$NS_SS" unshare -m sh -c \
    'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
    >"$WORK/charon.stdout" 2>&1 &
  CHARON_PID=$!
  for _ in $(seq 100); do
    [[ -S $WORK/charon.vici ]] && swanctl --stats >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "charon did not start:"; tail -n 30 "$WORK/charon.stdout" "$WORK/charon.log"
  return 1
}

stop_charon() {
  [[ -n $CHARON_PID ]] || return 0
  kill "$CHARON_PID" 2>/dev/null
  wait "$CHARON_PID" 2>/dev/null
  CHARON_PID=
  rm -f "$WORK/charon.vici"
}

stop_strait() {
  [[ -n $STRAIT_PID ]] || return 0
  kill "$STRAIT_PID" 2>/dev/null
  wait "$STRAIT_PID" 2>/dev/null
  STRAIT_PID=
}

# load_conns IKE ESP PSK
load_conns() {
  cat >"$WORK/swanctl.conf" <<CONF
connections {
  strait {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = $1
    local {
      auth = psk
      id = charon.example
    }
    remote {
      auth = psk
      id = strait.example
    }
    children {
      net {
        local_ts = 10.1.0.0/24
        remote_ts = 10.2.0.0/24
        esp_proposals = $2
        start_action = none
      }
    }
  }
}
secrets {
  ike-strait {
    id-1 = charon.example
    id-2 = strait.example
    secret = "$3"
  }
}
CONF
  swanctl --load-all --file "$WORK/swanctl.conf" >"$WORK/swanctl-load.out" 2>&1 || {
    echo "swanctl --load-all failed:"; cat "$WORK/swanctl-load.out"; return 1; }
}

# start_strait ROLE IKE ESP PSKFILE: strait-ike in the other namespace, with
# --stay so that charon can be queried afterwards; result in strait.json.
start_strait() {
  local role_flag=()
  [[ $1 == initiator ]] && role_flag=(--initiate)
  : >"$WORK/strait.json"
  ip netns exec "$NS_ST" "$STRAIT_IKE" --local 192.0.2.2 --remote 192.0.2.1 \
    --local-id strait.example --remote-id charon.example --psk-file "$4" \
    --ike-proposals "$2" --esp-proposals "$3" --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24 \
    --timeout 20s --stay --log-level info "${role_flag[@]}" \
    >"$WORK/strait.json" 2>"$WORK/strait.log" &
  STRAIT_PID=$!
}

wait_strait_result() {
  for _ in $(seq 250); do
    [[ -s $WORK/strait.json ]] && return 0
    kill -0 "$STRAIT_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -s $WORK/strait.json ]]
}

show_logs() {
  echo "--- strait-ike stdout:"; cat "$WORK/strait.json"
  echo "--- strait-ike stderr:"; tail -20 "$WORK/strait.log"
  echo "--- swanctl --list-sas:"; cat "$WORK/list-sas.out" 2>/dev/null
  echo "--- charon log (tail):"; tail -60 "$WORK/charon.log"
}

# check_established IKE_NAME ESP_NAME: compares strait.json with list-sas.
check_established() {
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  python3 - "$WORK/strait.json" "$WORK/list-sas.out" "$1" "$2" <<'PY'
import json, re, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
sas = open(sys.argv[2]).read()
ike_name, esp_name = sys.argv[3], sys.argv[4]
errors = []
if result.get("phase") != "ESTABLISHED":
    errors.append("strait-ike: phase %s reason %s (%s)" % (result.get("phase"), result.get("reason"), result.get("detail")))
else:
    ike, child = result["ike"], result["child"]
    if ike["algorithms"] != ike_name:
        errors.append("strait-ike IKE algorithms %s, want %s" % (ike["algorithms"], ike_name))
    if child["algorithms"] != esp_name:
        errors.append("strait-ike ESP algorithms %s, want %s" % (child["algorithms"], esp_name))
    if child["local_ts"] != ["10.2.0.0/24"] or child["remote_ts"] != ["10.1.0.0/24"]:
        errors.append("strait-ike selectors %s === %s" % (child["local_ts"], child["remote_ts"]))
    want = [
        r"strait: #\d+, ESTABLISHED, IKEv2, %s_i\*? %s_r\*?" % (ike["spi_i"], ike["spi_r"]),
        r"\n\s+%s\n" % re.escape(ike_name),
        r"net: #\d+, reqid \d+, INSTALLED, TUNNEL(-in-UDP)?, ESP:%s\n" % re.escape(esp_name),
        r"\n\s+in\s+%s," % child["spi_out"],
        r"\n\s+out\s+%s," % child["spi_in"],
        r"\n\s+local\s+10\.1\.0\.0/24\n",
        r"\n\s+remote\s+10\.2\.0\.0/24\n",
    ]
    for w in want:
        if not re.search(w, sas):
            errors.append("swanctl --list-sas lacks /%s/" % w)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
}

FAILED=()
PASSED=()
record() {  # record NAME STATUS
  if [[ $2 -eq 0 ]]; then PASSED+=("$1"); echo "PASS: $1"; else FAILED+=("$1"); echo "FAIL: $1"; show_logs; fi
}

# run_case ROLE IKE ESP IKE_NAME ESP_NAME
run_case() {
  local role=$1 name="$1 $2 / $3" status=0
  [[ $name == *"${INTEROP_ONLY:-}"* ]] || return 0
  echo "=== $name"
  start_charon && load_conns "$2" "$3" "$GOOD_PSK" || { record "$name" 1; stop_charon; return; }
  start_strait "$role" "$2" "$3" "$WORK/psk"
  if [[ $role == responder ]]; then
    sleep 0.3
    swanctl --initiate --ike strait --child net --timeout 20 >"$WORK/initiate.out" 2>&1 || {
      echo "  swanctl --initiate failed:"; tail -5 "$WORK/initiate.out"; status=1; }
  fi
  wait_strait_result || { echo "  strait-ike gave no result"; status=1; }
  [[ $status -eq 0 ]] && { check_established "$4" "$5" || status=1; }
  [[ $status -eq 0 ]] && sed 's/^/  | /' "$WORK/list-sas.out" "$WORK/strait.json"
  record "$name" "$status"
  stop_strait
  stop_charon
}

# run_wrong_psk ROLE: charon has the right key, strait-ike another one.
run_wrong_psk() {
  local role=$1 name="$1 wrong PSK" status=0
  [[ $name == *"${INTEROP_ONLY:-}"* ]] || return 0
  echo "=== $name"
  start_charon && load_conns aes256gcm16-prfsha384-ecp384 aes256gcm16 "$GOOD_PSK" ||
    { record "$name" 1; stop_charon; return; }
  start_strait "$role" aes256gcm16-prfsha384-ecp384 aes256gcm16 "$WORK/psk-wrong"
  if [[ $role == responder ]]; then
    sleep 0.3
    if swanctl --initiate --ike strait --child net --timeout 20 >"$WORK/initiate.out" 2>&1; then
      echo "  swanctl --initiate succeeded with a wrong PSK"; status=1
    fi
  fi
  wait_strait_result || { echo "  strait-ike gave no result"; status=1; }
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  if grep -q ESTABLISHED "$WORK/list-sas.out"; then echo "  charon established an SA"; status=1; fi
  if ! grep -q '"phase":"FAILED","reason":"AUTHENTICATION_FAILED"' "$WORK/strait.json"; then
    echo "  strait-ike did not fail with AUTHENTICATION_FAILED"; status=1
  fi
  record "$name" "$status"
  stop_strait
  stop_charon
}

CASES=(
  "aes256gcm16-prfsha384-ecp384|aes256gcm16|AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384|AES_GCM_16-256"
  "aes128gcm16-prfsha256-x25519|aes128gcm16|AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519|AES_GCM_16-128"
  "aes256-sha256-modp2048|aes256-sha256|AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048|AES_CBC-256/HMAC_SHA2_256_128"
)
for c in "${CASES[@]}"; do
  IFS='|' read -r ike esp ike_name esp_name <<<"$c"
  for role in initiator responder; do
    run_case "$role" "$ike" "$esp" "$ike_name" "$esp_name"
  done
done
run_wrong_psk initiator
run_wrong_psk responder

echo
echo "passed: ${#PASSED[@]}, failed: ${#FAILED[@]}"
for f in "${FAILED[@]}"; do echo "  failed: $f"; done
[[ ${#FAILED[@]} -eq 0 ]]
