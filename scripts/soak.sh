#!/usr/bin/env bash
# Runs the appliance soak test (control/tests/appliance_e2e.rs,
# soak_clients_come_and_go_and_the_appliance_returns_to_where_it_started) for MINUTES of client
# churn (default 20), then its end checks: sessions, flows and mbufs back to where they started,
# the daemon's RSS and open descriptors not grown, no unexpected drop, every connection's end in
# the connection logs. Needs root, the Debian openvpn client and python3, as the e2e tests do;
# the DPDK worker spins a core the whole time. The figures line ("soak: ...") is printed at the
# end, for docs/SOAK.md; the whole output is kept in target/soak.log. Usage: scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
sluice_cargo_env

minutes="${1:-20}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "usage: scripts/soak.sh [MINUTES]   (a whole number, at least 1)" >&2
  exit 2
fi
log=target/soak.log
mkdir -p target
echo "==> soak: $minutes minutes at $(git rev-parse --short HEAD); full output in $log"
status=0
SLUICE_SOAK_SECONDS=$((minutes * 60)) cargo test -q -p sluice-control --test appliance_e2e \
  soak_clients_come_and_go_and_the_appliance_returns_to_where_it_started -- --exact --nocapture \
  >"$log" 2>&1 || status=$?
grep -E '^soak|panicked at|^test result' "$log" | cut -c1-2000 || true
exit "$status"
