#!/usr/bin/env bash
# The main job: installs what is missing, builds sluice, makes a throwaway PKI with easy-rsa,
# validates the example configuration and prints its endpoints, target networks, authorization
# rules and routes as tables, then exports the client configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

sluice_install_packages
sluice_cargo_env

echo "==> building sluice"
cargo build --release --locked -p sluice-control --bin sluice
sluice=$PWD/target/release/sluice

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp examples/sluice.toml "$work/sluice.toml"
# The example keeps state and logs under system paths; the demo keeps them in its work dir.
sed -i -e "s|^state_dir = .*|state_dir = \"$work/state\"|" \
       -e "s|^admin_socket = .*|admin_socket = \"$work/admin.sock\"|" \
       -e "s|^path = \"/var/log/sluice/|path = \"$work/|" "$work/sluice.toml"
echo "==> making a PKI with easy-rsa in $work/pki"
scripts/gen-pki.sh "$work/pki"
config=$work/sluice.toml

echo
echo "==> sluice validate --config $config"
"$sluice" validate --config "$config" --output text
for verb in describe-client-vpn-endpoints describe-client-vpn-target-networks \
            describe-client-vpn-authorization-rules describe-client-vpn-routes; do
  echo
  echo "==> sluice $verb --output table"
  "$sluice" "$verb" --config "$config" --output table
done
echo
echo "==> sluice export-client-vpn-client-configuration (first lines)"
"$sluice" export-client-vpn-client-configuration --config "$config" --output text \
  --client-vpn-endpoint-id cvpn-endpoint-0123456789abcdef0 | sed -n '1,11p'
echo
echo "demo finished: configuration valid"
