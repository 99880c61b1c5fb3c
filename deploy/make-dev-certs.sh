#!/usr/bin/env bash
# Development PKI for pack-agent and mosquitto: a CA, the broker's certificate,
# one client certificate per vehicle (CN = VIN) and one for a backend (CN = backend).
#
#   deploy/make-dev-certs.sh OUT_DIR VIN [VIN...]
#
# Environment: BROKER_HOSTS (extra DNS names of the broker, space-separated;
# localhost and 127.0.0.1 are always in), BACKENDS (client names, default
# "backend"), DAYS (validity, default 825).
#
# EC P-256 keys. For development and tests only: the CA key lies next to the
# certificates, unencrypted. A production fleet's vehicle keys belong in the
# gateway's secure element or TPM, signed by the maker's own CA.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
out=$1
shift
days=${DAYS:-825}
mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME CN EXTENSIONS: NAME.key + NAME.pem, signed by the CA
sign() {
  local name=$1 cn=$2 ext=$3
  key "$name.key"
  openssl req -new -key "$name.key" -subj "/O=pack-agent development/CN=$cn" -out "$name.csr"
  printf '%b' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days "$days" -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

if [ ! -f ca.pem ]; then
  key ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$days" \
    -subj "/O=pack-agent development/CN=pack-agent development CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
fi

san="DNS:localhost,IP:127.0.0.1"
for h in ${BROKER_HOSTS:-}; do san="$san,DNS:$h"; done
sign broker localhost "subjectAltName=$san\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"

client_ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
for vin in "$@"; do
  if ! [[ $vin =~ ^[A-HJ-NPR-Z0-9]{17}$ ]]; then
    echo "make-dev-certs: '$vin' is not a VIN (17 characters, A-Z and 0-9 without I, O, Q)" >&2
    exit 2
  fi
  sign "$vin" "$vin" "$client_ext"
done
for name in ${BACKENDS:-backend}; do
  sign "$name" "$name" "$client_ext"
done
chmod 644 ./*.pem
echo "make-dev-certs: CA, broker (${san}), vehicles: $*, backends: ${BACKENDS:-backend} in $out" >&2
