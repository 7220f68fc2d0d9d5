#!/usr/bin/env bash
# Installs what is missing, builds, and runs every check and test of sluice.
# Usage: scripts/test.sh            (as root on Debian 12; CI calls it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# On any exit (a failure, Ctrl-C, a CI timeout's SIGTERM): what a test process killed before
# its Drops ran leaves behind is removed: its namespaces (with what runs in them) and the
# hugepages the hugepages test reserved.
hugepages_before=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || true)
cleanup() {
  if [ "$(id -u)" -eq 0 ]; then
    sluice_remove_stale_namespaces
    sluice_restore_hugepages "$hugepages_before"
  fi
}
trap cleanup EXIT   # bash runs it on SIGINT and SIGTERM too

sluice_cargo_env        # first: without Rust nothing below can work, so no apt-get before that is known
sluice_rust_components
sluice_install_packages

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> the fuzz targets (fuzz/, a workspace of its own): fmt and clippy on stable, so they keep"
echo "    compiling as the crates change; scripts/fuzz.sh runs them, on nightly"
python3 scripts/fuzz-lock.py   # its lock at the main lock's versions (fuzz/README.md)
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --bins --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> the stage-cycle counters (features stage-cycles, aead-cycles, aead-fenced): build and their tests"
cargo clippy --locked -p sluice-engine -p sluice-bench --all-targets --features sluice-bench/aead-fenced -- -D warnings
cargo test --locked -p sluice-engine --features stage-cycles --lib stages
cargo test --locked -p sluice-engine --features aead-cycles --lib stages
cargo test --locked -p sluice-engine --features aead-fenced --lib stages
echo "==> engine per-stage benchmarks, once each (criterion test mode: they run, nothing is timed)"
cargo test --locked -p sluice-engine --bench stages
echo "==> benchmark harness, quick mode (proves it works; asserts no speed)"
cargo build --release --locked -p sluice-control --bin sluice   # the lab suite runs it
cargo run --release --locked -p sluice-bench -- all --quick --json target/bench-quick.json
