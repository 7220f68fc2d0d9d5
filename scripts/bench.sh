#!/usr/bin/env bash
# The benchmark harness in one command (as root on Debian 12): installs what is missing, builds
# sluice and the harness, and runs every suite — the AEAD ceiling, the engine on in-memory and
# DPDK ports, the control plane, and the namespace lab against the Debian OpenVPN 2.6 server —
# writing a table, JSON and an SVG chart. Extra arguments go to sluice-bench (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# On any exit (Ctrl-C included): the lab suite's namespaces, left if sluice-bench is killed
# before its Drops run, are removed with what runs in them.
trap '[ "$(id -u)" -ne 0 ] || sluice_remove_stale_namespaces' EXIT
sluice_install_packages
sluice_cargo_env
stamp=$(date -u +%Y-%m-%d)
mkdir -p bench/results
cargo build --release --locked -p sluice-control --bin sluice
cargo run --release --locked -p sluice-bench -- all \
  --json "bench/results/$stamp.json" --chart "bench/results/$stamp.svg" "$@"
