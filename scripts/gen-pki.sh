#!/usr/bin/env bash
# Makes a test/demo PKI with easy-rsa in DIR (default: ./pki):
#   ca.crt ca.key               the CA (signs server and client certificates, and the CRL)
#   server.crt server.key       RSA-2048 server certificate with extendedKeyUsage serverAuth
#   server-chain.crt            server.crt followed by ca.crt (the chain, leaf first)
#   server-ec.crt server-ec.key ECDSA P-384 server certificate
#   server-p256.crt/.key        ECDSA P-256 server certificate
#   client1.crt client1.key     a valid client certificate (CN client1.domain.tld)
#   client2.crt client2.key     a client certificate that crl.pem revokes
#   crl.pem                     the CRL (revokes client2)
#   crl-all.pem                 a later CRL (revokes client1 and client2)
#   weak.crt weak.key           RSA-1024 server certificate (must be refused)
#   noeku.crt                   a client certificate, i.e. without serverAuth (must be refused as a server cert)
# Needs easy-rsa (Debian package easy-rsa). Takes a few seconds.
#
# The PKI is built in a temporary directory next to DIR and renamed to DIR at the end, so DIR
# never holds a partial PKI (an interrupted run leaves nothing; the temporary directory is
# removed). An existing DIR is replaced if it holds nothing but files of this list (an earlier
# PKI); otherwise the script refuses, rather than delete someone's files.
set -euo pipefail
out=$(realpath -m "${1:-pki}")
[ -x /usr/share/easy-rsa/easyrsa ] || { echo "error: easy-rsa is not installed (apt-get install easy-rsa)" >&2; exit 1; }
files=(ca.crt ca.key server.crt server.key server-chain.crt server-ec.crt server-ec.key
       server-p256.crt server-p256.key client1.crt client1.key client2.crt client2.key
       crl.pem crl-all.pem weak.crt weak.key noeku.crt)
if [ -e "$out" ]; then
  [ -d "$out" ] || { echo "error: $out exists and is not a directory" >&2; exit 1; }
  while IFS= read -r -d '' f; do
    case " ${files[*]} " in
      *" $f "*) ;;
      *) echo "error: $out holds $f, which is not part of a PKI this script makes; remove it or choose another directory" >&2; exit 1 ;;
    esac
  done < <(find "$out" -mindepth 1 -maxdepth 1 -printf '%f\0')
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
new=$(mktemp -d "$(dirname "$out")/.$(basename "$out").new.XXXXXX")
old=""
trap 'rm -rf "$work" ${new:+"$new"} ${old:+"$old"}' EXIT
cp -r /usr/share/easy-rsa/. "$work/"
cd "$work"
export EASYRSA_BATCH=1 EASYRSA_ALGO=rsa EASYRSA_KEY_SIZE=2048
e() { ./easyrsa "$@" >/dev/null 2>&1 || { echo "error: easyrsa $* failed" >&2; ./easyrsa "$@" >&2; exit 1; }; }
e init-pki
e --req-cn="sluice test CA" build-ca nopass
e build-server-full server nopass
e build-client-full client1.domain.tld nopass
e build-client-full client2.domain.tld nopass
EASYRSA_KEY_SIZE=1024 e build-server-full weak nopass
EASYRSA_ALGO=ec EASYRSA_CURVE=secp384r1 e build-server-full server-ec nopass
EASYRSA_ALGO=ec EASYRSA_CURVE=prime256v1 e build-server-full server-p256 nopass
# Strip easy-rsa's text dump so the files hold only PEM.
pem() { sed -n '/-----BEGIN/,/-----END/p' "$1" > "$2"; }
pem pki/ca.crt "$new/ca.crt"
cp pki/private/ca.key "$new/ca.key"
for n in server weak server-ec server-p256; do
  pem "pki/issued/$n.crt" "$new/$n.crt"; cp "pki/private/$n.key" "$new/$n.key"
done
cat "$new/server.crt" "$new/ca.crt" > "$new/server-chain.crt"
pem pki/issued/client1.domain.tld.crt "$new/client1.crt"; cp pki/private/client1.domain.tld.key "$new/client1.key"
pem pki/issued/client2.domain.tld.crt "$new/client2.crt"; cp pki/private/client2.domain.tld.key "$new/client2.key"
cp "$new/client1.crt" "$new/noeku.crt"
e revoke client2.domain.tld
e gen-crl
cp pki/crl.pem "$new/crl.pem"
e revoke client1.domain.tld
e gen-crl
cp pki/crl.pem "$new/crl-all.pem"
chmod 600 "$new"/*.key
# Into place: one rename when DIR is absent; otherwise the old PKI is renamed aside first (DIR
# is briefly absent, never partial) and removed afterwards.
chmod 755 "$new"
if [ -e "$out" ]; then
  old=$(mktemp -u "$(dirname "$out")/.$(basename "$out").old.XXXXXX")
  mv -T "$out" "$old"
fi
mv -T "$new" "$out"
new=""
echo "PKI written to $out"
