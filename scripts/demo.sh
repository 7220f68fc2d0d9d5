#!/usr/bin/env bash
# The main job: installs what is missing, builds sluice, validates the example configuration
# and prints its endpoints, target networks, authorization rules and routes as tables.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

sluice_install_packages
sluice_cargo_env

echo "==> building sluice"
cargo build --release --locked -p sluice-control --bin sluice
sluice=target/release/sluice
config=examples/sluice.toml

echo "==> sluice validate --config $config"
"$sluice" validate --config "$config"
for verb in describe-client-vpn-endpoints describe-client-vpn-target-networks \
            describe-client-vpn-authorization-rules describe-client-vpn-routes; do
  echo
  echo "==> sluice $verb --output table"
  "$sluice" "$verb" --config "$config" --output table
done
