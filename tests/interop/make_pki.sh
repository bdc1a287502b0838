#!/usr/bin/env bash
# Creates a test PKI for the certificate interop tests with the openssl CLI.
#
# Usage: make_pki.sh DIR
#   STRAIT_IP (default 10.99.0.1) and PEER_IP (default 10.99.0.2) are put
#   into the subjectAltNames of the `strait` and `peer` leaves.
#
# Files in DIR (certificates PEM, keys PKCS#8 PEM with mode 0600):
#   ca.{crt,key}               "C=CH, O=Strait Test, CN=Strait Test CA", P-256
#   {strait,peer}-ecdsa256.*   ECDSA P-256 leaf
#   {strait,peer}-ecdsa384.*   ECDSA P-384 leaf
#   {strait,peer}-rsa.*        RSA-2048 leaf
#       subject "C=CH, O=Strait Test, CN={name}.strait.test",
#       subjectAltName DNS:{name}.strait.test, IP:$STRAIT_IP or IP:$PEER_IP
#   rogue-ca.{crt,key}         "CN=Rogue CA", P-256, trusted by nobody
#   rogue-ecdsa256.*           P-256 leaf from the rogue CA with the subject
#                              and subjectAltNames of `strait`
# Every certificate is valid from a day ago for 31 days (usable for 30
# days from now); serial numbers count up from 1000 per CA. Leaves carry
# keyUsage digitalSignature and no extendedKeyUsage. Existing files are
# replaced. Prints nothing unless a step fails.
set -euo pipefail

DIR=${1:?usage: $0 DIR}
STRAIT_IP=${STRAIT_IP:-10.99.0.1}
PEER_IP=${PEER_IP:-10.99.0.2}

mkdir -p "$DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strait-pki.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Runs a command, showing its output only when it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf 'make_pki.sh: failed: %s\n%s\n' "$*" "$out" >&2
    return 1
  fi
}

START=$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)
END=$(date -u -d '30 days' +%Y%m%d%H%M%SZ)

# A fresh database and configuration for the CA named $1.
ca_config() {
  local ca=$1
  mkdir -p "$WORK/$ca/new"
  : >"$WORK/$ca/index.txt"
  echo 1000 >"$WORK/$ca/serial"
  cat >"$WORK/$ca/openssl.cnf" <<EOF
[ca]
default_ca = this_ca

[this_ca]
database = $WORK/$ca/index.txt
new_certs_dir = $WORK/$ca/new
serial = $WORK/$ca/serial
default_md = sha256
policy = any_subject
preserve = yes
unique_subject = no
email_in_dn = no
copy_extensions = none

[any_subject]
countryName = optional
organizationName = optional
commonName = supplied

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \${ENV::LEAF_SAN}
EOF
}

# genkey FILE KIND: a PKCS#8 private key, KIND ecdsa256, ecdsa384 or rsa.
genkey() {
  local file=$1 kind=$2
  local -a args
  case $kind in
    ecdsa256) args=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256) ;;
    ecdsa384) args=(-algorithm EC -pkeyopt ec_paramgen_curve:P-384) ;;
    rsa) args=(-algorithm RSA -pkeyopt rsa_keygen_bits:2048) ;;
    *) echo "make_pki.sh: unknown key kind $kind" >&2; return 1 ;;
  esac
  rm -f "$file"
  (umask 077 && quiet openssl genpkey "${args[@]}" -out "$file")
  chmod 600 "$file"
}

# sign CA SUBJECT KEY OUT EXTENSIONS [ISSUER_CRT ISSUER_KEY]: a certificate
# for KEY; self-signed when no issuer is given.
sign() {
  local ca=$1 subject=$2 key=$3 out=$4 ext=$5 issuer_crt=${6:-} issuer_key=${7:-}
  local csr="$WORK/$ca/request.csr"
  quiet openssl req -new -key "$key" -subj "$subject" -utf8 -out "$csr"
  local -a issuer=(-selfsign -keyfile "$key")
  [[ -n $issuer_crt ]] && issuer=(-cert "$issuer_crt" -keyfile "$issuer_key")
  quiet openssl ca -batch -notext -config "$WORK/$ca/openssl.cnf" "${issuer[@]}" \
    -startdate "$START" -enddate "$END" -extensions "$ext" -in "$csr" -out "$out"
  chmod 644 "$out"
}

make_ca() {
  local name=$1 subject=$2
  ca_config "$name"
  genkey "$DIR/$name.key" ecdsa256
  LEAF_SAN='' sign "$name" "$subject" "$DIR/$name.key" "$DIR/$name.crt" ca_ext
}

# make_leaf CA FILE_BASE NAME IP KIND
make_leaf() {
  local ca=$1 base=$2 name=$3 ip=$4 kind=$5
  genkey "$DIR/$base-$kind.key" "$kind"
  LEAF_SAN="DNS:$name.strait.test, IP:$ip" sign "$ca" "/C=CH/O=Strait Test/CN=$name.strait.test" \
    "$DIR/$base-$kind.key" "$DIR/$base-$kind.crt" leaf_ext "$DIR/$ca.crt" "$DIR/$ca.key"
}

export LEAF_SAN=''
make_ca ca "/C=CH/O=Strait Test/CN=Strait Test CA"
for kind in ecdsa256 ecdsa384 rsa; do
  make_leaf ca strait strait "$STRAIT_IP" "$kind"
  make_leaf ca peer peer "$PEER_IP" "$kind"
done
make_ca rogue-ca "/CN=Rogue CA"
make_leaf rogue-ca rogue strait "$STRAIT_IP" ecdsa256
