#!/usr/bin/env bash
# Interop: strait-ike against Debian's strongSwan (charon + swanctl) with
# PSK, ECDSA and RSA certificates, and the failures that must fail.
#
# Two network namespaces joined by a veth pair: "ss" runs charon
# (192.0.2.1, inner network 10.1.0.0/24 on lo), "st" runs strait-ike
# (192.0.2.2, inner 10.2.0.0/24 on lo; no `dummy` link type on this kernel).
# charon runs under `unshare -m` with a private tmpfs /run and its own
# strongswan.conf (STRONGSWAN_CONF), vici socket and log; kernel-libipsec
# gives it userspace ESP since this kernel has no ESP. Each case gets a fresh
# charon. Certificates come from make_pki.sh.
#
# Every case runs once with strait-ike initiating and once with charon
# initiating. A good case passes when swanctl --list-sas shows the IKE SA
# ESTABLISHED between the expected identities and the CHILD SA INSTALLED
# with the expected algorithms and selectors, strait-ike reports ESTABLISHED
# with the same SPIs, identity and AUTH method, and charon's log shows how it
# verified strait-ike's AUTH. A failure case passes when neither side
# established: strait-ike reports FAILED with the expected reason (and
# detail), swanctl --list-sas shows no ESTABLISHED IKE SA, swanctl
# --initiate failed (charon initiating) and charon's log says why.
#
# Usage: strongswan_interop_test.sh PATH/TO/strait-ike [PATH/TO/make_pki.sh]
#   (needs root). INTEROP_ONLY=TEXT runs only the cases whose name contains
#   TEXT; INTEROP_KEEP=1 keeps the work directory.
set -uo pipefail

STRAIT_IKE=$(realpath "${1:?usage: $0 PATH/TO/strait-ike [PATH/TO/make_pki.sh]}")
MAKE_PKI=$(realpath "${2:-$(dirname "$0")/make_pki.sh}")
CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
for tool in "$CHARON" "$SWANCTL" ip unshare python3 openssl; do
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

PKI=$WORK/pki
"$MAKE_PKI" "$PKI" 192.0.2.2 192.0.2.1 >"$WORK/make_pki.log" 2>&1 || {
  echo "FAIL: make_pki.sh failed:"; cat "$WORK/make_pki.log"; exit 1; }

# write_strongswan_conf SIGNATURE_AUTHENTICATION: with "no" charon neither
# sends SIGNATURE_HASH_ALGORITHMS nor signs with RFC 7427 (method 14), so
# both sides fall back to the classic methods (1 RSA, 9/10/11 ECDSA).
write_strongswan_conf() {
  cat >"$WORK/strongswan.conf" <<CONF
charon {
  load = random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 gmp x509 pem pkcs1 pkcs8 pubkey constraints kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  signature_authentication = $1
  plugins {
    # kernel-libipsec makes charon fake a NAT anyway ("faking NAT situation
    # to enforce UDP encapsulation"): the CHILD SA is TUNNEL-in-UDP and
    # charon, initiating, floats IKE to port 4500 (strait-ike --nat-t-port).
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
}
export STRONGSWAN_CONF=$WORK/strongswan.conf

# The service URI is an option of each command, so it goes after the command.
swanctl() { "$SWANCTL" "$1" --uri "unix://$WORK/charon.vici" "${@:2}"; }

start_charon() {
  write_strongswan_conf "$C_SIGNATURE_AUTH"
  : >"$WORK/charon.log"
  ip netns exec "$NS_SS" unshare -m sh -c \
    'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
    >"$WORK/charon.stdout" 2>&1 &
  CHARON_PID=$!
  for _ in $(seq 100); do
    [[ -S $WORK/charon.vici ]] && swanctl --stats >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "  charon did not start:"; tail -n 30 "$WORK/charon.stdout" "$WORK/charon.log"
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

# The case being run: new_case sets the defaults (PSK, both sides agreeing,
# expected to establish), the case list overrides some of them.
new_case() {
  C_ROLE=$1           # strait-ike's role: initiator or responder
  C_AUTH=psk          # psk or cert
  C_IKE=aes256gcm16-prfsha384-ecp384
  C_ESP=aes256gcm16
  C_IKE_NAME=AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384   # as swanctl --list-sas names them
  C_ESP_NAME=AES_GCM_16-256
  C_STRAIT_IKE=       # strait-ike's IKE proposals when they differ from charon's
  C_STRAIT_PSK=$WORK/psk
  C_STRAIT_CERT=      # base name in $PKI (strait-p256), C_AUTH=cert
  C_CHARON_CERT=      # base name in $PKI (charon-p384), C_AUTH=cert
  C_STRAIT_ID=strait.strait.test
  C_CHARON_ID=charon.strait.test
  C_STRAIT_REMOTE_ID= # the identity strait-ike demands when not C_CHARON_ID
  C_SIGNATURE_AUTH=yes
  C_AUTH_METHOD=psk   # strait-ike's auth_method for charon's AUTH
  # How charon's log says it verified strait-ike's AUTH (ERE).
  C_CHARON_AUTH_RE="authentication of '$C_STRAIT_ID' with pre-shared key successful"
  C_CHARON_EXTRA_RE=  # another ERE that charon's log must match
  C_CHARON_ABSENT_RE= # an ERE that charon's log must not match
  C_FAIL_REASON=      # set: a failure case, strait-ike must report this reason
  C_FAIL_DETAIL=      # ... and this text in its detail
  C_CHARON_FAIL_RE=   # ... and charon's log must say this (EREs, one a line)
  C_IKE_REKEY=        # charon or strait: that side rekeys the IKE SA after a few seconds
  C_STRAIT_ARGS=()    # more strait-ike flags
}

# cert_case STRAIT_CERT CHARON_CERT STRAIT_METHOD CHARON_SCHEME_RE
cert_case() {
  C_AUTH=cert
  C_STRAIT_CERT=$1
  C_CHARON_CERT=$2
  C_AUTH_METHOD=$3
  C_CHARON_AUTH_RE="authentication of '$C_STRAIT_ID' with $4 successful"
}

# suite N: the Nth of the three suites the acceptance text names.
suite() {
  case $1 in
    1) C_IKE=aes256gcm16-prfsha384-ecp384 C_ESP=aes256gcm16
       C_IKE_NAME=AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384 C_ESP_NAME=AES_GCM_16-256 ;;
    2) C_IKE=aes128gcm16-prfsha256-x25519 C_ESP=aes128gcm16
       C_IKE_NAME=AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519 C_ESP_NAME=AES_GCM_16-128 ;;
    3) C_IKE=aes256-sha256-modp2048 C_ESP=aes256-sha256
       C_IKE_NAME=AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048
       C_ESP_NAME=AES_CBC-256/HMAC_SHA2_256_128 ;;
  esac
}

# swanctl.conf for the case: charon's side of it.
SWANCTL_DIR=$WORK/swanctl
load_conns() {
  local local_auth remote_auth secrets
  rm -rf "$SWANCTL_DIR"
  mkdir -p "$SWANCTL_DIR"/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
  if [[ $C_AUTH == psk ]]; then
    local_auth="auth = psk"
    remote_auth="auth = psk"
    secrets="ike-strait {
    id-1 = \"$C_CHARON_ID\"
    id-2 = \"$C_STRAIT_ID\"
    secret = \"$GOOD_PSK\"
  }"
  else
    local_auth="auth = pubkey
      certs = $PKI/$C_CHARON_CERT.crt"
    remote_auth="auth = pubkey
      cacerts = $PKI/ca.crt"
    secrets=
    # swanctl loads private keys from the private/ folder next to its
    # configuration; secrets.private* only holds passphrases.
    cp "$PKI/$C_CHARON_CERT.key" "$SWANCTL_DIR/private/charon.key"
  fi
  cat >"$SWANCTL_DIR/swanctl.conf" <<CONF
connections {
  strait {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = $C_IKE
    $([[ $C_IKE_REKEY == charon ]] && printf 'rekey_time = 8s\n    over_time = 60s')
    local {
      $local_auth
      id = "$C_CHARON_ID"
    }
    remote {
      $remote_auth
      id = "$C_STRAIT_ID"
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
  $secrets
}
CONF
  # swanctl exits 0 when a credential does not load, but says so.
  if ! swanctl --load-all --file "$SWANCTL_DIR/swanctl.conf" >"$WORK/swanctl-load.out" 2>&1 ||
    grep -qi "fail\|error" "$WORK/swanctl-load.out"; then
    echo "  swanctl --load-all failed:"; cat "$WORK/swanctl-load.out"; return 1
  fi
}

# strait-ike in the other namespace, with --stay so that charon can be
# queried afterwards; its JSON result goes to strait.json.
start_strait() {
  local args=(--local 192.0.2.2 --remote 192.0.2.1
    --local-id "$C_STRAIT_ID" --remote-id "${C_STRAIT_REMOTE_ID:-$C_CHARON_ID}"
    --ike-proposals "${C_STRAIT_IKE:-$C_IKE}" --esp-proposals "$C_ESP"
    --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24 --timeout 20s --stay --log-level info)
  if [[ $C_AUTH == psk ]]; then
    args+=(--psk-file "$C_STRAIT_PSK")
  else
    args+=(--ca-file "$PKI/ca.crt" --cert-file "$PKI/$C_STRAIT_CERT.crt"
      --key-file "$PKI/$C_STRAIT_CERT.key")
  fi
  [[ $C_ROLE == initiator ]] && args+=(--initiate)
  args+=(--status-file "$WORK/status.json")
  [[ $C_IKE_REKEY == strait ]] && args+=(--ike-lifetime 6s)
  args+=("${C_STRAIT_ARGS[@]}")
  # A responder that accepted charon's AUTH keeps listening, so that charon
  # refusing ours (INFORMATIONAL AUTHENTICATION_FAILED) still turns it FAILED.
  [[ $C_ROLE == responder && -n $C_FAIL_REASON ]] && args+=(--settle 3s)
  : >"$WORK/strait.json"
  rm -f "$WORK/status.json"
  ip netns exec "$NS_ST" "$STRAIT_IKE" "${args[@]}" >"$WORK/strait.json" 2>"$WORK/strait.log" &
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
  echo "--- strait-ike stderr (tail):"; tail -20 "$WORK/strait.log"
  echo "--- swanctl --initiate:"; cat "$WORK/initiate.out" 2>/dev/null
  echo "--- swanctl --list-sas:"; cat "$WORK/list-sas.out" 2>/dev/null
  echo "--- charon log (tail):"; tail -60 "$WORK/charon.log"
}

# Compares strait.json with swanctl --list-sas and charon's log.
check_established() {
  # After a rekey, check_ike_rekey listed the SAs at the moment they matched.
  [[ -n $C_IKE_REKEY ]] || swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  python3 - "$WORK/strait.json" "$WORK/list-sas.out" "$WORK/charon.log" \
    "$C_IKE_NAME" "$C_ESP_NAME" "$C_AUTH_METHOD" "$C_STRAIT_ID" "$C_CHARON_ID" \
    "$C_CHARON_AUTH_RE" "$C_CHARON_EXTRA_RE" "$C_CHARON_ABSENT_RE" <<'PY'
import json, re, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
sas = open(sys.argv[2]).read()
log = open(sys.argv[3]).read()
ike_name, esp_name, auth_method, strait_id, charon_id, auth_re, extra_re, absent_re = sys.argv[4:12]
errors = []
if result.get("phase") != "ESTABLISHED":
    errors.append("strait-ike: phase %s reason %s (%s)" % (result.get("phase"), result.get("reason"), result.get("detail")))
else:
    ike, child = result["ike"], result["child"]
    if ike["algorithms"] != ike_name:
        errors.append("strait-ike IKE algorithms %s, want %s" % (ike["algorithms"], ike_name))
    if ike["auth_method"] != auth_method:
        errors.append("strait-ike auth_method %s, want %s" % (ike["auth_method"], auth_method))
    # strait-ike prints DNs the RFC 4514 way (CN first, no spaces).
    def rdns(name):
        return sorted(p.strip() for p in name.split(","))
    if rdns(ike["remote_identity"]) != rdns(charon_id):
        errors.append("strait-ike remote_identity %s, want %s" % (ike["remote_identity"], charon_id))
    if child["algorithms"] != esp_name:
        errors.append("strait-ike ESP algorithms %s, want %s" % (child["algorithms"], esp_name))
    if child["local_ts"] != ["10.2.0.0/24"] or child["remote_ts"] != ["10.1.0.0/24"]:
        errors.append("strait-ike selectors %s === %s" % (child["local_ts"], child["remote_ts"]))
    want = [
        r"strait: #\d+, ESTABLISHED, IKEv2, %s_i\*? %s_r\*?" % (ike["spi_i"], ike["spi_r"]),
        # Port 4500 once charon, initiating, floated there (it fakes a NAT).
        r"\n\s+local\s+'%s' @ 192\.0\.2\.1\[(500|4500)\]\n" % re.escape(charon_id),
        r"\n\s+remote\s+'%s' @ 192\.0\.2\.2\[(500|4500)\]\n" % re.escape(strait_id),
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
    for w in (auth_re, extra_re):
        if w and not re.search(w, log):
            errors.append("charon log lacks /%s/" % w)
    if absent_re and re.search(absent_re, log):
        errors.append("charon log has /%s/" % absent_re)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
}

# After an IKE SA rekey: strait-ike's status file names a new IKE SA
# (ike_rekeys >= 1) with the CHILD SA of before, swanctl --list-sas shows
# exactly one IKE SA, with those new SPIs (check_established then checks it
# through strait.json, replaced by the status), and charon's log shows the
# rekey and the old IKE SA's deletion.
check_ike_rekey() {
  local ok= until=$((SECONDS + 30))
  while ((SECONDS < until)); do
    swanctl --list-sas >"$WORK/list-sas.out" 2>&1
    if python3 - "$WORK/strait.json" "$WORK/status.json" "$WORK/list-sas.out" <<'PY' 2>/dev/null
import json, re, sys
first = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
now = json.loads(open(sys.argv[2]).read().strip().splitlines()[0])
sas = open(sys.argv[3]).read()
ok = (now.get("phase") == "ESTABLISHED" and now.get("ike_rekeys", 0) >= 1 and
      now["ike"]["spi_i"] != first["ike"]["spi_i"] and now["ike"]["spi_r"] != first["ike"]["spi_r"] and
      len(re.findall(r"^strait: #\d+", sas, re.M)) == 1 and
      re.search(r"strait: #\d+, ESTABLISHED, IKEv2, %s_i\*? %s_r\*?" % (now["ike"]["spi_i"], now["ike"]["spi_r"]), sas))
if ok:
    open(sys.argv[2] + ".matched", "w").write(json.dumps(now) + "\n")
sys.exit(0 if ok else 1)
PY
    then ok=1; break; fi
    sleep 0.5
  done
  [[ -n $ok ]] || { echo "  no IKE SA rekey seen within 30 s (status: $(cat "$WORK/status.json" 2>/dev/null))"; return 1; }
  python3 - "$WORK/strait.json" "$WORK/status.json" <<'PY' || return 1
import json, sys
first = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
now = json.loads(open(sys.argv[2]).read().strip().splitlines()[0])
if first["child"]["spi_in"] != now["child"]["spi_in"] or first["child"]["spi_out"] != now["child"]["spi_out"]:
    print("  the CHILD SA changed: %s -> %s" % (first["child"], now["child"]))
    sys.exit(1)
print("  IKE SA %s_i %s_r -> %s_i %s_r, CHILD SA %s/%s kept" % (
    first["ike"]["spi_i"], first["ike"]["spi_r"], now["ike"]["spi_i"], now["ike"]["spi_r"],
    now["child"]["spi_in"], now["child"]["spi_out"]))
PY
  local re status=0
  for re in "IKE_SA strait\[[0-9]+\] rekeyed between" \
    "(deleting IKE_SA strait\[[0-9]+\]|received DELETE for IKE_SA strait\[[0-9]+\])" "IKE_SA deleted"; do
    grep -Eq "$re" "$WORK/charon.log" || { echo "  charon log lacks /$re/"; status=1; }
  done
  cp "$WORK/strait.json" "$WORK/strait-first.json"
  # What matched the listing (strait-ike may have rekeyed again since).
  cp "$WORK/status.json.matched" "$WORK/strait.json"
  return $status
}

# Neither side may have established; strait-ike names the expected reason.
check_failed() {
  local status=0
  # A refused responder learns it from an INFORMATIONAL that may still be
  # on its way.
  for _ in $(seq 30); do
    swanctl --list-sas >"$WORK/list-sas.out" 2>&1
    grep -q ESTABLISHED "$WORK/list-sas.out" || break
    sleep 0.1
  done
  if grep -q ESTABLISHED "$WORK/list-sas.out"; then echo "  charon lists an ESTABLISHED IKE SA"; status=1; fi
  python3 - "$WORK/strait.json" "$C_FAIL_REASON" "$C_FAIL_DETAIL" <<'PY' || status=1
import json, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
reason, detail = sys.argv[2:4]
if result.get("phase") != "FAILED" or result.get("reason") != reason or detail not in result.get("detail", ""):
    print("  strait-ike: phase %s reason %s detail %r; want FAILED %s with %r" % (
        result.get("phase"), result.get("reason"), result.get("detail"), reason, detail))
    sys.exit(1)
PY
  local re
  while IFS= read -r re; do
    [[ -z $re ]] || grep -Eq "$re" "$WORK/charon.log" || { echo "  charon log lacks /$re/"; status=1; }
  done <<<"$C_CHARON_FAIL_RE"
  return $status
}

FAILED=()
PASSED=()
record() {  # record NAME STATUS
  if [[ $2 -eq 0 ]]; then PASSED+=("$1"); echo "PASS: $1"; else FAILED+=("$1"); echo "FAIL: $1"; show_logs; fi
}

# run_case NAME: runs the case that new_case and the overrides describe.
run_case() {
  local name="$C_ROLE $1" status=0
  [[ $name == *"${INTEROP_ONLY:-}"* ]] || return 0
  echo "=== $name"
  rm -f "$WORK/initiate.out" "$WORK/list-sas.out"
  start_charon && load_conns || { record "$name" 1; stop_charon; return; }
  start_strait
  if [[ $C_ROLE == responder ]]; then
    sleep 0.3
    if swanctl --initiate --ike strait --child net --timeout 20 >"$WORK/initiate.out" 2>&1; then
      [[ -z $C_FAIL_REASON ]] || { echo "  swanctl --initiate succeeded"; status=1; }
    else
      [[ -n $C_FAIL_REASON ]] || { echo "  swanctl --initiate failed:"; tail -5 "$WORK/initiate.out"; status=1; }
    fi
  fi
  wait_strait_result || { echo "  strait-ike gave no result"; status=1; }
  if [[ $status -eq 0 ]]; then
    if [[ -n $C_IKE_REKEY ]]; then
      check_ike_rekey || status=1
    fi
    if [[ $status -ne 0 ]]; then
      :
    elif [[ -n $C_FAIL_REASON ]]; then
      check_failed || status=1
      [[ $status -eq 0 ]] && sed 's/^/  | /' "$WORK/strait.json"
    else
      check_established || status=1
      [[ $status -eq 0 ]] && sed 's/^/  | /' "$WORK/list-sas.out" "$WORK/strait.json"
    fi
  fi
  record "$name" "$status"
  stop_strait
  stop_charon
}

START=$SECONDS
for role in initiator responder; do
  for n in 1 2 3; do
    new_case "$role"; suite "$n"
    run_case "psk $C_IKE/$C_ESP"
  done
  # ECDSA: strait-ike P-256, charon P-384, RFC 7427 both ways.
  for n in 1 2 3; do
    new_case "$role"; suite "$n"
    cert_case strait-p256 charon-p384 ecdsa-with-SHA384 ECDSA_WITH_SHA256_DER
    run_case "ecdsa $C_IKE/$C_ESP"
  done
  # RSA-2048 both sides, RFC 7427 (PKCS#1 v1.5 with SHA-2). strait-ike signs
  # with the strongest hash both sides support, charon with SHA-256.
  for n in 1 2 3; do
    new_case "$role"; suite "$n"
    cert_case strait-rsa charon-rsa sha256WithRSAEncryption RSA_EMSA_PKCS1_SHA2_256
    run_case "rsa $C_IKE/$C_ESP"
  done
  # Classic signature methods (RFC 7296 AUTH methods 1 and 9/10): charon
  # without RFC 7427 sends no SIGNATURE_HASH_ALGORITHMS, so neither side may
  # use method 14.
  new_case "$role"; C_SIGNATURE_AUTH=no
  cert_case strait-rsa charon-rsa rsa-pkcs1-sha1 "RSA signature"
  C_CHARON_EXTRA_RE="authentication of '$C_CHARON_ID' \(myself\) with RSA signature successful"
  C_CHARON_ABSENT_RE="generating IKE_SA_INIT [a-z]+ 0 \[[^]]*HASH_ALG"
  run_case "rsa-classic $C_IKE/$C_ESP"
  new_case "$role"; C_SIGNATURE_AUTH=no
  cert_case strait-p256 charon-p384 ecdsa-sha384-p384 "ECDSA-256 signature"
  C_CHARON_EXTRA_RE="authentication of '$C_CHARON_ID' \(myself\) with ECDSA-384 signature successful"
  C_CHARON_ABSENT_RE="generating IKE_SA_INIT [a-z]+ 0 \[[^]]*HASH_ALG"
  run_case "ecdsa-classic $C_IKE/$C_ESP"
  # DN identities on both sides.
  new_case "$role"
  C_STRAIT_ID="C=CH, O=Strait Test, CN=strait.strait.test"
  C_CHARON_ID="C=CH, O=Strait Test, CN=charon.strait.test"
  cert_case strait-p384 charon-p256 ecdsa-with-SHA256 ECDSA_WITH_SHA384_DER
  run_case "ecdsa-dn $C_IKE/$C_ESP"
  # strait-ike demands a COOKIE (RFC 7296 2.6): charon sends its
  # IKE_SA_INIT again with ours in front.
  if [[ $role == responder ]]; then
    new_case "$role"
    C_STRAIT_ARGS=(--require-cookie)
    C_CHARON_EXTRA_RE="parsed IKE_SA_INIT response 0 \[ N\(COOKIE\) \]"
    run_case "psk cookie $C_IKE/$C_ESP"
  fi

  # IKE SA rekey (RFC 7296 §1.3.2): charon rekeys (rekey_time), then
  # strait-ike does (--ike-lifetime); the CHILD SA moves along unchanged.
  # In both IKE roles.
  for rekeyer in charon strait; do
    new_case "$role"; C_IKE_REKEY=$rekeyer
    run_case "ike-rekey by $rekeyer $C_IKE/$C_ESP"
  done
  new_case "$role"; suite 3; C_IKE_REKEY=strait
  run_case "ike-rekey by strait $C_IKE/$C_ESP"

  # Failures, each on both sides. When strait-ike initiates and refuses
  # charon's AUTH, charon (responding) had established and must delete the
  # IKE SA on strait-ike's INFORMATIONAL AUTHENTICATION_FAILED; when charon
  # initiates, strait-ike's IKE_AUTH response carries the notify.
  if [[ $role == initiator ]]; then
    REFUSED_RE="parsed INFORMATIONAL request [0-9]+ \[ N\(AUTH_FAILED\) \]
IKE_SA deleted"
  else
    REFUSED_RE="received AUTHENTICATION_FAILED notify error"
  fi
  new_case "$role"
  C_STRAIT_PSK=$WORK/psk-wrong
  C_FAIL_REASON=AUTHENTICATION_FAILED
  if [[ $role == initiator ]]; then
    # charon, responding, names itself %any before it picked the config.
    C_CHARON_FAIL_RE="tried 1 shared key for '[^']*' - '$C_STRAIT_ID', but MAC mismatched"
  else
    C_CHARON_FAIL_RE="received AUTHENTICATION_FAILED notify error"
  fi
  run_case "fail wrong-psk"

  new_case "$role"
  cert_case strait-p256 charon-rogue "" ""
  C_FAIL_REASON=AUTHENTICATION_FAILED C_FAIL_DETAIL="not trusted"
  C_CHARON_FAIL_RE=$REFUSED_RE
  run_case "fail untrusted-cert"

  new_case "$role"
  cert_case strait-p256 charon-p384 "" ""
  C_STRAIT_REMOTE_ID=other.strait.test
  C_FAIL_REASON=PEER_IDENTITY_MISMATCH C_FAIL_DETAIL="charon.strait.test"
  C_CHARON_FAIL_RE=$REFUSED_RE
  run_case "fail identity-mismatch"

  new_case "$role"
  C_STRAIT_IKE=aes128-sha256-modp2048,aes128gcm16-prfsha256-x25519
  C_FAIL_REASON=NO_PROPOSAL_CHOSEN
  if [[ $role == initiator ]]; then
    C_CHARON_FAIL_RE="received proposals unacceptable"
  else
    C_CHARON_FAIL_RE="received NO_PROPOSAL_CHOSEN notify error"
  fi
  run_case "fail disjoint-proposal"
done

echo
echo "passed: ${#PASSED[@]}, failed: ${#FAILED[@]}, $((SECONDS - START)) s"
for f in "${FAILED[@]}"; do echo "  failed: $f"; done
[[ ${#FAILED[@]} -eq 0 ]]
