#!/usr/bin/env bash
# Interop: IKE fragmentation (RFC 7383) between strait-ike and Debian's
# strongSwan, with certificate chains too large for one datagram.
#
# The namespace and charon setup follows strongswan_interop_test.sh: two
# network namespaces joined by a veth pair, "ss" runs charon (192.0.2.1,
# inner 10.1.0.0/24 on lo) under `unshare -m` with its own strongswan.conf,
# vici socket and log, "st" runs strait-ike (192.0.2.2, inner 10.2.0.0/24).
#
# The PKI, made here with the openssl CLI: a P-256 root, two RSA-4096
# intermediates under it, and an RSA-4096 leaf for each side under the
# second intermediate. Each side sends its leaf and both intermediates
# (three CERT payloads, ~4.5 kB) and a 512-byte RSA signature, and trusts
# only the root.
#
# Cases, each once with strait-ike initiating and once with charon:
#   chain-1280   both sides at the default fragment size (1280);
#   chain-576    both sides at 576 bytes: many more fragments;
#   no-frag      charon's connection has fragmentation = no: both send the
#                IKE_AUTH whole (the kernel fragments the IP datagram).
# A fragmentation case passes when the CHILD SA is established on both
# sides (swanctl --list-sas, strait-ike's JSON), charon's log shows that it
# split its IKE_AUTH into fragments ("splitting IKE message") and
# reassembled strait-ike's ("received fragment #n of n, reassembled"), and
# strait-ike's counters show fragments sent and one message reassembled,
# with every datagram charon received from it ("received packet: ... (N
# bytes)") no larger than the fragment size allows. The
# no-frag case passes when it establishes with no fragments either way.
#
# Usage: strongswan_fragmentation_test.sh PATH/TO/strait-ike (needs root).
#   INTEROP_ONLY=TEXT runs only the cases whose name contains TEXT;
#   INTEROP_KEEP=1 keeps the work directory.
set -uo pipefail

STRAIT_IKE=$(realpath "${1:?usage: $0 PATH/TO/strait-ike}")
CHARON=/usr/lib/ipsec/charon
SWANCTL=/usr/sbin/swanctl
source "$(dirname "$0")/strongswan_lib.sh" || { echo "FAIL: no strongswan_lib.sh"; exit 1; }
require_tools "$CHARON" "$SWANCTL" ip unshare python3 openssl

WORK=$(mktemp -d /tmp/strait-frag.XXXXXX)
TAG=$$
NS_SS=strait-fss-$TAG
NS_ST=strait-fst-$TAG
CHARON_PID=
STRAIT_PID=

CLEANUP_PIDS=(STRAIT_PID CHARON_PID)
CLEANUP_NAMESPACES=("$NS_SS" "$NS_ST")
KEEP=${INTEROP_KEEP:-}
trap_cleanup

ip netns add "$NS_SS" && ip netns add "$NS_ST" || { echo "FAIL: cannot create namespaces"; exit 1; }
ip link add "fss$TAG" type veth peer name "fst$TAG" || { echo "FAIL: cannot create veth"; exit 1; }
ip link set "fss$TAG" netns "$NS_SS"
ip link set "fst$TAG" netns "$NS_ST"
ip -n "$NS_SS" addr add 192.0.2.1/24 dev "fss$TAG"
ip -n "$NS_ST" addr add 192.0.2.2/24 dev "fst$TAG"
ip -n "$NS_SS" addr add 10.1.0.1/24 dev lo
ip -n "$NS_ST" addr add 10.2.0.1/24 dev lo
for ns in "$NS_SS" "$NS_ST"; do ip -n "$ns" link set lo up; done
ip -n "$NS_SS" link set "fss$TAG" up
ip -n "$NS_ST" link set "fst$TAG" up

# --- PKI: root (P-256) -> im1 (RSA-4096) -> im2 (RSA-4096) -> leaves (RSA-4096).
PKI=$WORK/pki
mkdir -p "$PKI"
make_pki() {
  set -e
  umask 077
  cat >"$PKI/ext.cnf" <<'CNF'
[ ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $ENV::SAN
CNF
  export SAN=DNS:unused
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/root.key"
  openssl req -x509 -new -key "$PKI/root.key" -subj "/C=CH/O=Strait Test/CN=Frag Root CA" \
    -days 30 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$PKI/root.crt"
  # issue ISSUER NAME SUBJECT EXT [SAN]
  issue() {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out "$PKI/$2.key"
    openssl req -new -key "$PKI/$2.key" -subj "$3" -out "$PKI/$2.csr"
    SAN=${5:-DNS:unused} openssl x509 -req -in "$PKI/$2.csr" -CA "$PKI/$1.crt" \
      -CAkey "$PKI/$1.key" -CAcreateserial -days 29 -sha256 -extfile "$PKI/ext.cnf" \
      -extensions "$4" -out "$PKI/$2.crt"
  }
  issue root im1 "/C=CH/O=Strait Test/CN=Frag Intermediate 1" ca
  issue im1 im2 "/C=CH/O=Strait Test/CN=Frag Intermediate 2" ca
  issue im2 strait "/C=CH/O=Strait Test/CN=strait.strait.test" leaf \
    "DNS:strait.strait.test, IP:192.0.2.2"
  issue im2 charon "/C=CH/O=Strait Test/CN=charon.strait.test" leaf \
    "DNS:charon.strait.test, IP:192.0.2.1"
  cat "$PKI/strait.crt" "$PKI/im2.crt" "$PKI/im1.crt" >"$PKI/strait-chain.crt"
  chmod 0644 "$PKI"/*.crt
  openssl verify -CAfile "$PKI/root.crt" -untrusted "$PKI/im1.crt" -untrusted "$PKI/im2.crt" \
    "$PKI/strait.crt" "$PKI/charon.crt"
}
( make_pki ) >"$WORK/pki.log" 2>&1 || { echo "FAIL: making the PKI failed:"; cat "$WORK/pki.log"; exit 1; }

start_charon() {
  write_strongswan_conf \
    "random nonce openssl gcm aes sha1 sha2 hmac kdf curve25519 gmp x509 pem pkcs1 pkcs8 pubkey constraints kernel-libipsec kernel-netlink socket-default vici" \
    "fragment_size = $C_FRAGMENT_SIZE" \
    "default = 1
      ike = 2
      cfg = 2
      enc = 1
      net = 1
      knl = 1"
  start_charon_daemon
}

SWANCTL_DIR=$WORK/swanctl
load_conns() {
  rm -rf "$SWANCTL_DIR"
  make_swanctl_dirs "$SWANCTL_DIR"
  cp "$PKI/charon.key" "$SWANCTL_DIR/private/charon.key"
  # The intermediates as CA certificates: charon builds its chain from them
  # and sends them in CERT payloads.
  cp "$PKI/im1.crt" "$PKI/im2.crt" "$SWANCTL_DIR/x509ca/"
  cat >"$SWANCTL_DIR/swanctl.conf" <<CONF
connections {
  strait {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 192.0.2.2
    proposals = aes256gcm16-prfsha384-ecp384
    fragmentation = $C_CHARON_FRAGMENTATION
    local {
      auth = pubkey
      certs = $PKI/charon.crt
      id = charon.strait.test
    }
    remote {
      auth = pubkey
      cacerts = $PKI/root.crt
      id = strait.strait.test
    }
    children {
      net {
        local_ts = 10.1.0.0/24
        remote_ts = 10.2.0.0/24
        esp_proposals = aes256gcm16
        start_action = none
      }
    }
  }
}
CONF
  load_swanctl_conf "$SWANCTL_DIR/swanctl.conf"
}

start_strait() {
  local args=(--local 192.0.2.2 --remote 192.0.2.1
    --local-id strait.strait.test --remote-id charon.strait.test
    --ike-proposals aes256gcm16-prfsha384-ecp384 --esp-proposals aes256gcm16
    --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24 --timeout 20s --stay --log-level info
    --ca-file "$PKI/root.crt" --cert-file "$PKI/strait-chain.crt" --key-file "$PKI/strait.key"
    --fragment-size "$C_FRAGMENT_SIZE")
  [[ $C_ROLE == initiator ]] && args+=(--initiate)
  : >"$WORK/strait.json"
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

check() {
  swanctl --list-sas >"$WORK/list-sas.out" 2>&1
  python3 - "$WORK/strait.json" "$WORK/list-sas.out" "$WORK/charon.log" \
    "$C_EXPECT_FRAGMENTS" "$C_FRAGMENT_SIZE" <<'PY'
import json, re, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[0])
sas = open(sys.argv[2]).read()
log = open(sys.argv[3]).read()
fragments = sys.argv[4] == "yes"
fragment_size = int(sys.argv[5])
# The IKE messages charon received from strait-ike (marker stripped).
sizes = [int(n) for n in re.findall(r"received packet: from 192\.0\.2\.2\[\d+\] to [^ ]+ \((\d+) bytes\)", log)]
errors = []
if result.get("phase") != "ESTABLISHED":
    errors.append("strait-ike: phase %s reason %s (%s)" % (result.get("phase"), result.get("reason"), result.get("detail")))
else:
    ike, child, c = result["ike"], result["child"], result["counters"]
    if "RSA" not in ike["auth_method"]:
        errors.append("strait-ike auth_method %s" % ike["auth_method"])
    for w in [r"strait: #\d+, ESTABLISHED, IKEv2, %s_i\*? %s_r\*?" % (ike["spi_i"], ike["spi_r"]),
              r"net: #\d+, reqid \d+, INSTALLED, TUNNEL(-in-UDP)?, ESP:AES_GCM_16-256\n",
              r"\n\s+in\s+%s," % child["spi_out"], r"\n\s+out\s+%s," % child["spi_in"]]:
        if not re.search(w, sas):
            errors.append("swanctl --list-sas lacks /%s/" % w)
    recv = re.findall(r"received fragment #(\d+) of (\d+), (waiting|reassembled)", log)
    split = re.findall(r"splitting IKE message \((\d+) bytes\) into (\d+) fragments", log)
    if fragments:
        # The IP datagrams (IPv4 20 + UDP 8 + the non-ESP marker 4, which
        # strait-ike always reserves) within the fragment size.
        if c["fragments_sent"] < 2:
            errors.append("strait-ike sent %d fragments" % c["fragments_sent"])
        if c["messages_reassembled"] != 1:
            errors.append("strait-ike reassembled %d messages" % c["messages_reassembled"])
        if c["fragments_received"] < 2:
            errors.append("strait-ike received %d fragments" % c["fragments_received"])
        if not any(r[2] == "reassembled" for r in recv):
            errors.append("charon log lacks 'received fragment #n of n, reassembled'")
        quiet = c["retransmits_sent"] == 0 and c["responses_resent"] == 0
        if quiet and len(recv) != c["fragments_sent"]:
            errors.append("charon received %d fragments, strait-ike sent %d" % (len(recv), c["fragments_sent"]))
        if not split:
            errors.append("charon log lacks 'splitting IKE message'")
        elif quiet and int(split[0][1]) != c["fragments_received"]:
            errors.append("charon split into %s fragments, strait-ike received %d" % (split[0][1], c["fragments_received"]))
        too_big = [s for s in sizes if s + 32 > fragment_size]
        if not sizes or too_big:
            errors.append("strait-ike datagrams over %d bytes (IP): %s of %s" % (fragment_size, too_big, sizes))
        print("  strait-ike: %d fragments sent, %d received, %d reassembled; charon: split %s, received %d; largest message from strait-ike %d bytes" % (
            c["fragments_sent"], c["fragments_received"], c["messages_reassembled"],
            "+".join(s[1] for s in split), len(recv), max(sizes) if sizes else 0))
    else:
        if c["fragments_sent"] or c["fragments_received"] or recv or split:
            errors.append("fragments where none were negotiated: strait-ike %s, charon %d/%d" % (c, len(recv), len(split)))
        if not sizes or max(sizes) <= fragment_size:
            errors.append("expected a whole IKE_AUTH over %d bytes, sizes %s" % (fragment_size, sizes))
        print("  no fragments; largest message from strait-ike %d bytes" % (max(sizes) if sizes else 0))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
}

run_case() {  # run_case ROLE NAME FRAGMENT_SIZE CHARON_FRAGMENTATION EXPECT_FRAGMENTS
  C_ROLE=$1 C_FRAGMENT_SIZE=$3 C_CHARON_FRAGMENTATION=$4 C_EXPECT_FRAGMENTS=$5
  local name="$1 $2" status=0
  [[ $name == *"${INTEROP_ONLY:-}"* ]] || return 0
  echo "=== $name"
  rm -f "$WORK/initiate.out" "$WORK/list-sas.out"
  start_charon && load_conns || { record "$name" 1; stop_pid CHARON_PID; return; }
  start_strait
  if [[ $C_ROLE == responder ]]; then
    sleep 0.3
    swanctl --initiate --ike strait --child net --timeout 20 >"$WORK/initiate.out" 2>&1 ||
      { echo "  swanctl --initiate failed:"; tail -5 "$WORK/initiate.out"; status=1; }
  fi
  wait_strait_result || { echo "  strait-ike gave no result"; status=1; }
  [[ $status -eq 0 ]] && { check || status=1; }
  record "$name" "$status"
  stop_pid STRAIT_PID
  stop_pid CHARON_PID
}

START=$SECONDS
for role in initiator responder; do
  run_case "$role" "chain-1280" 1280 yes yes
  run_case "$role" "chain-576" 576 yes yes
  run_case "$role" "no-frag" 1280 no no
done

# Passes with no case run too (INTEROP_ONLY matching none), as it did.
summary 0
