#!/usr/bin/env bash
# Generate the certificates of a TLS deployment (deploy/k8s-tls, the compose TLS
# variant): a CA, one certificate per member (used on the client port and the peer port, in
# both directions, so it carries both serverAuth and clientAuth) and a client certificate.
#
#   scripts/gen-certs.sh --out DIR [--members N] [--namespace NS]... [--service NAME]
#                        [--client-cn NAME] [--days N] [--owner UID:GID]
#
# Layout (what the overlay's Secrets and the compose variant mount):
#   DIR/ca/ca.pem, ca-key.pem                  the CA; its key stays with the operator
#   DIR/members/ca.pem, raftkv-N.pem, raftkv-N-key.pem     Secret raftkv-tls-members
#   DIR/client/ca.pem, client.pem, client-key.pem          Secret raftkv-tls-client
# Member raftkv-N's certificate names (DNS SANs) every way it is addressed:
#   raftkv-N.<service>.<ns>.svc.cluster.local, raftkv-N.<service>.<ns>.svc,
#   raftkv-N.<service>.<ns>, raftkv-N.<service>   the StatefulSet pod behind the headless Service
#   raftkv-N                                       the compose service and container host name
#   <service>-client[.<ns>[.svc[.cluster.local]]]  the client Service
#   localhost, IP 127.0.0.1                       probes and tools inside the pod/container
# The client certificate's common name (--client-cn, default "root") is the user a request
# acts as when auth is enabled and it carries no token (etcd's rule under --client-cert-auth).
#
# Keys are ECDSA P-256 in PKCS#8, written 0600. --owner chowns the
# member and client files (root only), e.g. --owner 65532:65532 so that the image's
# unprivileged user can read them from a compose bind mount. An existing DIR/ca is reused,
# so members can be added or certificates renewed without replacing the CA.
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { printf 'gen-certs: %s\n' "$*" >&2; exit 1; }

OUT="" MEMBERS=3 SERVICE=raftkv CLIENT_CN=root DAYS=365 OWNER="" NAMESPACES=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=${2:?}; shift 2 ;;
    --members) MEMBERS=${2:?}; shift 2 ;;
    --namespace) NAMESPACES+=("${2:?}"); shift 2 ;;
    --service) SERVICE=${2:?}; shift 2 ;;
    --client-cn) CLIENT_CN=${2:?}; shift 2 ;;
    --days) DAYS=${2:?}; shift 2 ;;
    --owner) OWNER=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) printf 'gen-certs: unknown argument %s\n\n' "$1" >&2; usage 2 ;;
  esac
done
[ -n "$OUT" ] || die "--out DIR is required (see --help)"
[[ $MEMBERS =~ ^[1-9][0-9]?$ ]] || die "--members must be 1-99, got $MEMBERS"
[[ $DAYS =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive number, got $DAYS"
[ "${#NAMESPACES[@]}" -gt 0 ] || NAMESPACES=(default)
dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
for n in "$SERVICE" "${NAMESPACES[@]}"; do
  [[ $n =~ $dns_label ]] || die "'$n' is not a DNS label (lower case letters, digits, '-')"
done
if [ -n "$OWNER" ] && [ "$(id -u)" != 0 ]; then die "--owner needs root (it chowns the files)"; fi

"$(dirname "$0")/ensure-packages.sh" openssl:openssl
umask 077
mkdir -p "$OUT/ca" "$OUT/members" "$OUT/client"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA: reused when present.
if [ ! -f "$OUT/ca/ca.pem" ] || [ ! -f "$OUT/ca/ca-key.pem" ]; then
  new_key "$OUT/ca/ca-key.pem"
  openssl req -x509 -new -key "$OUT/ca/ca-key.pem" -sha256 -days "$((DAYS + 365))" \
    -subj "/O=raftkv/CN=raftkv CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$OUT/ca/ca.pem" 2>/dev/null
  echo "gen-certs: new CA $OUT/ca/ca.pem" >&2
else
  echo "gen-certs: reusing the CA in $OUT/ca" >&2
fi

# sign NAME CN EKU SANS: DIR-less base name of the output, subject CN, extended key usages,
# subjectAltName list.
sign() {
  local out=$1 cn=$2 eku=$3 sans=$4
  new_key "$out-key.pem"
  openssl req -new -key "$out-key.pem" -subj "/O=raftkv/CN=$cn" -out "$TMP/req.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$TMP/ext.cnf"
  openssl x509 -req -in "$TMP/req.csr" -CA "$OUT/ca/ca.pem" -CAkey "$OUT/ca/ca-key.pem" \
    -CAcreateserial -CAserial "$TMP/ca.srl" -sha256 -days "$DAYS" -extfile "$TMP/ext.cnf" \
    -out "$out.pem" 2>/dev/null
}

client_service_names() {
  local ns names="DNS:$SERVICE-client"
  for ns in "${NAMESPACES[@]}"; do
    names+=",DNS:$SERVICE-client.$ns,DNS:$SERVICE-client.$ns.svc,DNS:$SERVICE-client.$ns.svc.cluster.local"
  done
  echo "$names"
}

for ((i = 0; i < MEMBERS; i++)); do
  m=$SERVICE-$i
  sans="DNS:$m,DNS:$m.$SERVICE"
  for ns in "${NAMESPACES[@]}"; do
    sans+=",DNS:$m.$SERVICE.$ns,DNS:$m.$SERVICE.$ns.svc,DNS:$m.$SERVICE.$ns.svc.cluster.local"
  done
  sans+=",$(client_service_names),DNS:localhost,IP:127.0.0.1"
  sign "$OUT/members/$m" "$m" serverAuth,clientAuth "$sans"
done
sign "$OUT/client/client" "$CLIENT_CN" clientAuth ""
cp "$OUT/ca/ca.pem" "$OUT/members/ca.pem"
cp "$OUT/ca/ca.pem" "$OUT/client/ca.pem"

# Check what was written, as a client of the result would.
for f in "$OUT"/members/"$SERVICE"-*.pem "$OUT/client/client.pem"; do
  case $f in *-key.pem) continue ;; esac
  openssl verify -CAfile "$OUT/ca/ca.pem" "$f" >/dev/null || die "$f does not verify against the CA"
done

chmod 0700 "$OUT/ca"
chmod 0755 "$OUT" "$OUT/members" "$OUT/client"
chmod 0644 "$OUT"/members/*.pem "$OUT"/client/*.pem
chmod 0600 "$OUT"/members/*-key.pem "$OUT"/client/*-key.pem
if [ -n "$OWNER" ]; then
  chown -R "$OWNER" "$OUT/members" "$OUT/client"
fi
echo "gen-certs: $MEMBERS member certificates in $OUT/members, client certificate (CN $CLIENT_CN) in $OUT/client" >&2
