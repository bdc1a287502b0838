#!/usr/bin/env bash
# Agents with --enable-ike in two network namespaces joined by a veth pair
# negotiate a node-to-node tunnel with the built-in IKEv2 engine: both ends
# report TUNNEL_PHASE_ESTABLISHED to the controller, for a tunnel with a PSK
# and one with ECDSA certificates (the agents' --ike-certificate, a DN and an
# FQDN identity). Needs root (namespaces, port 500).
set -euo pipefail
RUNFILES=${TEST_SRCDIR:-$PWD/..}/strait
CONTROLLER_BIN=$RUNFILES/controller/strait-controller
AGENT_BIN=$RUNFILES/agent/strait-agent
CTL_BIN=$RUNFILES/cli/straitctl
MAKE_PKI=$RUNFILES/tests/interop/make_pki.sh

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Unix socket paths must stay under 108 bytes, so not in TEST_TMPDIR.
WORK=$(mktemp -d /tmp/sike.XXXXXX)
PREFIX=sike$$
NS_A=$PREFIX-a
NS_B=$PREFIX-b
PORT=$(free_port)
export STRAIT_CONTROLLER=127.0.0.1:$PORT STRAIT_INSECURE=1
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do
    echo "---- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$PREFIX-va" netns "$NS_A" type veth peer name "$PREFIX-vb" netns "$NS_B"
ip -n "$NS_A" addr add 198.51.100.11/24 dev "$PREFIX-va"
ip -n "$NS_B" addr add 198.51.100.12/24 dev "$PREFIX-vb"
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set "$PREFIX-va" up
ip -n "$NS_B" link set "$PREFIX-vb" up
ip -n "$NS_A" addr add 198.51.100.21/24 dev "$PREFIX-va"
ip -n "$NS_B" addr add 198.51.100.22/24 dev "$PREFIX-vb"
ip -n "$NS_A" addr add 10.1.0.1/24 dev lo
ip -n "$NS_B" addr add 10.2.0.1/24 dev lo

# node-a holds the "strait" leaf, node-b the "charon" one (ECDSA P-256).
"$MAKE_PKI" "$WORK/pki" 198.51.100.21 198.51.100.22 >"$WORK/pki.log" 2>&1 || fail "make_pki.sh failed"
declare -A LEAF=([a]=strait [b]=charon)

"$CONTROLLER_BIN" --insecure --listen "127.0.0.1:$PORT,unix://$WORK/c.sock" \
  --data-dir "$WORK/controller" --metrics-listen "" >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do
  "$CTL_BIN" get nodes >/dev/null 2>&1 && break
  sleep 0.1
done
"$CTL_BIN" get nodes >/dev/null 2>&1 || fail "controller did not come up"

for node in a b; do
  ns=$PREFIX-$node
  ip netns exec "$ns" "$AGENT_BIN" --enable-ike --insecure --node-name "node-$node" \
    --controller "unix://$WORK/c.sock" --state-dir "$WORK/agent-$node" \
    --ike-certificate "$WORK/pki/${LEAF[$node]}-p256.crt" \
    --ike-private-key "$WORK/pki/${LEAF[$node]}-p256.key" \
    --metrics-listen "" --status-interval 1s >"$WORK/agent-$node.log" 2>&1 &
  PIDS+=($!)
done

"$CTL_BIN" apply -f - >"$WORK/apply.out" 2>&1 <<'YAML' || fail "apply failed: $(cat "$WORK/apply.out")"
kind: Tunnel
metadata:
  name: a-to-b
spec:
  node: node-a
  local:
    address: 198.51.100.11
    trafficSelectors: [10.1.0.0/24]
  remote:
    node: node-b
    address: 198.51.100.12
    trafficSelectors: [10.2.0.0/24]
  auth:
    psk: "ike e2e test key, not a secret"
  ike:
    proposals: [aes256gcm16-prfsha384-ecp384]
  esp:
    proposals: [aes256gcm16-ecp384]
  startAction: start
YAML

{
  cat <<'YAML'
kind: Tunnel
metadata:
  name: a-to-b-cert
spec:
  node: node-a
  local:
    address: 198.51.100.21
    id: "C=CH, O=Strait Test, CN=strait.strait.test"
    trafficSelectors: [10.1.1.0/24]
  remote:
    node: node-b
    address: 198.51.100.22
    id: charon.strait.test
    trafficSelectors: [10.2.1.0/24]
  auth:
    certificate:
      caCertificates: |
YAML
  sed 's/^/        /' "$WORK/pki/ca.crt"
  cat <<'YAML'
  ike:
    proposals: [aes128gcm16-prfsha256-x25519]
  esp:
    proposals: [aes128gcm16]
  startAction: start
YAML
} >"$WORK/cert-tunnel.yaml"
"$CTL_BIN" apply -f "$WORK/cert-tunnel.yaml" >"$WORK/apply-cert.out" 2>&1 ||
  fail "apply of the certificate tunnel failed: $(cat "$WORK/apply-cert.out")"

phases() {
  "$CTL_BIN" get tunnel "$1" -o json 2>/dev/null |
    jq -r '[.status.ends[]? | "\(.node)=\(.phase)"] | sort | join(" ")'
}
want="node-a=TUNNEL_PHASE_ESTABLISHED node-b=TUNNEL_PHASE_ESTABLISHED"
for tunnel in a-to-b a-to-b-cert; do
  got=""
  for _ in $(seq 600); do
    got=$(phases "$tunnel" || true)
    [[ $got == "$want" ]] && break
    sleep 0.1
  done
  [[ $got == "$want" ]] || fail "$tunnel ends not ESTABLISHED within 60 s: \"$got\""
done
# The certificate tunnel authenticated with ECDSA signatures (RFC 7427) and
# the identities of the spec.
"$CTL_BIN" get tunnel a-to-b-cert -o json >"$WORK/cert.json"
auth=$(jq -r '[.status.ends[] | "\(.node) \(.ikeSa.authMethod) \(.ikeSa.remoteIdentity)"] | sort | join("; ")' \
  "$WORK/cert.json")
want_auth="node-a ecdsa-with-SHA256 charon.strait.test; node-b ecdsa-with-SHA256 CN=strait.strait.test,O=Strait Test,C=CH"
[[ $auth == "$want_auth" ]] || fail "certificate tunnel: \"$auth\", want \"$want_auth\""
# Both ends report the same IKE SA and mirrored CHILD SA SPIs.
"$CTL_BIN" get tunnel a-to-b -o json >"$WORK/tunnel.json"
sas=$(jq -r '[.status.ends[] | select(.node == "node-a")][0] as $a |
  [.status.ends[] | select(.node == "node-b")][0] as $b |
  ($a.ikeSa.initiatorSpi // "") != "" and $a.ikeSa.initiatorSpi == $b.ikeSa.initiatorSpi and
  $a.ikeSa.responderSpi == $b.ikeSa.responderSpi and $a.ikeSa.initiator == true and
  $a.childSas[0].inboundSpi == $b.childSas[0].outboundSpi and
  $a.childSas[0].outboundSpi == $b.childSas[0].inboundSpi' "$WORK/tunnel.json")
[[ $sas == true ]] || fail "IKE/CHILD SA status does not match across ends: $(cat "$WORK/tunnel.json")"
"$CTL_BIN" get tunnel a-to-b -o json | jq -c '.status.ends[] | {node, phase, reason, message}'
echo PASS
