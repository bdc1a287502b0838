#!/usr/bin/env bash
# Runs make_pki.sh into a temporary directory and checks what it made with
# the openssl CLI: chains (openssl verify -CAfile), subjects, SANs, key
# types, key files (PKCS#8, mode 0600, matching their certificates) and
# validity dates.
#
# Usage: make_pki_test.sh PATH/TO/make_pki.sh
set -uo pipefail

MAKE_PKI=$(realpath "${1:?usage: $0 PATH/TO/make_pki.sh}")
WORK=$(mktemp -d "${TEST_TMPDIR:-/tmp}/make_pki_test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# expect_contains WHAT TEXT NEEDLE
expect_contains() {
  [[ $2 == *"$3"* ]] || fail "$1: \"$3\" not in: $2"
}

PKI=$WORK/pki
out=$("$MAKE_PKI" "$PKI" 2>&1) || { echo "FAIL: make_pki.sh: $out"; exit 1; }
[[ -z $out ]] || fail "make_pki.sh is not quiet: $out"

now=$(date +%s)
for ca in ca rogue-ca; do
  [[ -f $PKI/$ca.crt ]] || fail "$ca.crt missing"
  expect_contains "$ca is a CA" "$(openssl x509 -in "$PKI/$ca.crt" -noout -ext basicConstraints)" \
    "CA:TRUE"
done
expect_contains "CA subject" "$(openssl x509 -in "$PKI/ca.crt" -noout -subject)" \
  "C = CH, O = Strait Test, CN = Strait Test CA"
expect_contains "rogue CA subject" "$(openssl x509 -in "$PKI/rogue-ca.crt" -noout -subject)" \
  "subject=CN = Rogue CA"

for base in ca rogue-ca strait-ecdsa256 strait-ecdsa384 strait-rsa peer-ecdsa256 \
  peer-ecdsa384 peer-rsa rogue-ecdsa256; do
  crt=$PKI/$base.crt
  key=$PKI/$base.key
  [[ -f $crt && -f $key ]] || { fail "$base: files missing"; continue; }
  mode=$(stat -c %a "$key")
  [[ $mode == 600 ]] || fail "$base.key has mode $mode"
  [[ $(head -1 "$key") == "-----BEGIN PRIVATE KEY-----" ]] || fail "$base.key is not PKCS#8"
  [[ $(openssl pkey -in "$key" -pubout) == $(openssl x509 -in "$crt" -noout -pubkey) ]] ||
    fail "$base.key does not belong to $base.crt"
  # From a day ago: valid 12 hours ago, not 36 hours ago; 30 days ahead.
  openssl x509 -in "$crt" -noout -checkend $((29 * 86400)) >/dev/null ||
    fail "$base expires within 29 days"
  openssl x509 -in "$crt" -noout -checkend $((31 * 86400)) >/dev/null &&
    fail "$base is valid for more than 31 days"
  issuer=$PKI/ca.crt
  [[ $base == rogue-* ]] && issuer=$PKI/rogue-ca.crt
  openssl verify -attime $((now - 12 * 3600)) -CAfile "$issuer" "$crt" >/dev/null 2>&1 ||
    fail "$base does not verify 12 hours ago"
  openssl verify -attime $((now - 36 * 3600)) -CAfile "$issuer" "$crt" >/dev/null 2>&1 &&
    fail "$base verifies 36 hours ago"
done

# Leaves: chain, subject, SANs, key type.
check_leaf() {
  local base=$1 name=$2 ip=$3 kind=$4 ca=${5:-ca}
  local crt=$PKI/$base-$kind.crt
  [[ -f $crt ]] || return
  local verify
  verify=$(openssl verify -CAfile "$PKI/$ca.crt" "$crt" 2>&1) || fail "$base-$kind: $verify"
  expect_contains "$base-$kind subject" "$(openssl x509 -in "$crt" -noout -subject)" \
    "C = CH, O = Strait Test, CN = $name.strait.test"
  expect_contains "$base-$kind SAN" "$(openssl x509 -in "$crt" -noout -ext subjectAltName)" \
    "DNS:$name.strait.test, IP Address:$ip"
  local text
  text=$(openssl x509 -in "$crt" -noout -text)
  expect_contains "$base-$kind basicConstraints" "$text" "CA:FALSE"
  expect_contains "$base-$kind keyUsage" "$text" "Digital Signature"
  [[ $text != *"Extended Key Usage"* ]] || fail "$base-$kind has an extendedKeyUsage"
  case $kind in
    ecdsa256) expect_contains "$base-$kind key" "$text" "ASN1 OID: prime256v1" ;;
    ecdsa384) expect_contains "$base-$kind key" "$text" "ASN1 OID: secp384r1" ;;
    rsa) expect_contains "$base-$kind key" "$text" "Public-Key: (2048 bit)" ;;
  esac
}
for kind in ecdsa256 ecdsa384 rsa; do
  check_leaf strait strait 10.99.0.1 "$kind"
  check_leaf peer peer 10.99.0.2 "$kind"
done
check_leaf rogue strait 10.99.0.1 ecdsa256 rogue-ca

# The rogue leaf does not verify to the real CA, whatever it claims.
openssl verify -CAfile "$PKI/ca.crt" "$PKI/rogue-ecdsa256.crt" >/dev/null 2>&1 &&
  fail "rogue-ecdsa256 verifies to the Strait Test CA"

# Addresses from the environment; a second run replaces the files.
STRAIT_IP=192.0.2.7 PEER_IP=2001:db8::2 "$MAKE_PKI" "$PKI" >/dev/null 2>&1 ||
  fail "make_pki.sh with STRAIT_IP/PEER_IP"
expect_contains "STRAIT_IP" "$(openssl x509 -in "$PKI/strait-rsa.crt" -noout -ext subjectAltName)" \
  "IP Address:192.0.2.7"
expect_contains "PEER_IP" "$(openssl x509 -in "$PKI/peer-ecdsa256.crt" -noout -ext subjectAltName)" \
  "IP Address:2001:DB8:0:0:0:0:0:2"
openssl verify -CAfile "$PKI/ca.crt" "$PKI/peer-ecdsa256.crt" >/dev/null 2>&1 ||
  fail "second run's peer-ecdsa256 does not verify to the second run's CA"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "PASS"
