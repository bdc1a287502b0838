#!/usr/bin/env bash
# Creates a throwaway PKI for the interop tests with the openssl CLI.
#
# Usage: make_pki.sh DIR [STRAIT_IP [CHARON_IP]]
#        (defaults 192.0.2.2 and 192.0.2.1, the test's namespace addresses)
#
# In DIR:
#   ca.crt                     "C=CH, O=Strait Test, CN=Strait Test CA" (ECDSA P-256)
#   NAME-p256.{crt,key}        for NAME in strait and charon: ECDSA P-256,
#   NAME-p384.{crt,key}        ECDSA P-384 and RSA-2048 leaves with subject
#   NAME-rsa.{crt,key}         "C=CH, O=Strait Test, CN=NAME.strait.test" and
#                              SANs DNS:NAME.strait.test, IP:<its address>
#   rogue-ca.crt               "CN=Rogue CA" (ECDSA P-256)
#   charon-rogue.{crt,key}     an ECDSA P-384 leaf of the rogue CA with the
#                              same subject and SANs as the good charon leaves
# Keys are PKCS#8 PEM, mode 0600; CA keys stay in DIR/ca-work. Every
# certificate is valid from yesterday for 30 days.
set -euo pipefail

DIR=${1:?usage: $0 DIR [STRAIT_IP [CHARON_IP]]}
STRAIT_IP=${2:-192.0.2.2}
CHARON_IP=${3:-192.0.2.1}
command -v openssl >/dev/null || { echo "make_pki.sh: openssl not installed" >&2; exit 1; }

mkdir -p "$DIR/ca-work"
DIR=$(realpath "$DIR")
WORKDIR=$DIR/ca-work
umask 077

START=$(date -u -d yesterday +%Y%m%d%H%M%SZ)
END=$(date -u -d '29 days' +%Y%m%d%H%M%SZ)

# new_key FILE ALG: a PKCS#8 PEM key; ALG is p256, p384 or rsa.
new_key() {
  case $2 in
    p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -pkeyopt ec_param_enc:named_curve -out "$1" ;;
    p384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 \
            -pkeyopt ec_param_enc:named_curve -out "$1" ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" ;;
    *) echo "make_pki.sh: unknown key type $2" >&2; return 1 ;;
  esac 2>/dev/null
  chmod 0600 "$1"
}

# ca_config NAME: `openssl ca` configuration of CA NAME (its own database,
# subject order preserved, random serials). The certificate's extensions
# come from the section given with -extensions.
ca_config() {
  local d=$WORKDIR/$1
  mkdir -p "$d"
  : >"$d/index.txt"
  cat >"$d/openssl.cnf" <<CNF
[ ca ]
default_ca = this_ca

[ this_ca ]
dir = $d
database = $d/index.txt
new_certs_dir = $d
certificate = $d/ca.crt
private_key = $d/ca.key
rand_serial = yes
default_md = sha256
policy = policy_any
preserve = yes
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
countryName = optional
organizationName = optional
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no
string_mask = utf8only

[ req_dn ]
CN = unused

[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ leaf_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \$ENV::LEAF_SAN
CNF
}

# sign CA SUBJECT KEY OUT EXT: CA (a ca_config name) signs a request for
# KEY with SUBJECT (openssl's /A=b form); self-signed when EXT is ca_ext.
sign() {
  local subject=$2 key=$3 out=$4 ext=$5 cnf=$WORKDIR/$1/openssl.cnf csr
  csr=$(mktemp "$WORKDIR/req.XXXXXX")
  # The configuration refers to it, whichever command reads it.
  export LEAF_SAN=${LEAF_SAN:-DNS:unused}
  openssl req -new -config "$cnf" -key "$key" -subj "$subject" -out "$csr"
  local self=()
  [[ $ext == ca_ext ]] && self=(-selfsign -keyfile "$key")
  openssl ca -batch -config "$cnf" -in "$csr" -out "$out" \
    -startdate "$START" -enddate "$END" -extensions "$ext" -notext "${self[@]}" 2>"$csr.err" ||
    { cat "$csr.err" >&2; return 1; }
  rm -f "$csr" "$csr.err"
  chmod 0644 "$out"
}

new_ca() {  # new_ca NAME SUBJECT OUT
  ca_config "$1"
  new_key "$WORKDIR/$1/ca.key" p256
  sign "$1" "$2" "$WORKDIR/$1/ca.key" "$WORKDIR/$1/ca.crt" ca_ext
  cp "$WORKDIR/$1/ca.crt" "$3"
  chmod 0644 "$3"
}

leaf() {  # leaf CA NAME IP ALG BASENAME
  new_key "$DIR/$5.key" "$4"
  LEAF_SAN="DNS:$2.strait.test, IP:$3" \
    sign "$1" "/C=CH/O=Strait Test/CN=$2.strait.test" "$DIR/$5.key" "$DIR/$5.crt" leaf_ext
}

new_ca good "/C=CH/O=Strait Test/CN=Strait Test CA" "$DIR/ca.crt"
for alg in p256 p384 rsa; do
  leaf good strait "$STRAIT_IP" "$alg" "strait-$alg"
  leaf good charon "$CHARON_IP" "$alg" "charon-$alg"
done
new_ca rogue "/CN=Rogue CA" "$DIR/rogue-ca.crt"
leaf rogue charon "$CHARON_IP" p384 charon-rogue

for crt in "$DIR"/strait-*.crt "$DIR"/charon-*.crt; do
  openssl verify -CAfile "$DIR/ca.crt" "$crt" >/dev/null 2>&1 ||
    [[ $crt == */charon-rogue.crt ]] ||
    { echo "make_pki.sh: $crt does not verify" >&2; exit 1; }
done
