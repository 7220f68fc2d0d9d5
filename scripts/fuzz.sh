#!/usr/bin/env bash
# Runs sluice's fuzz targets (fuzz/fuzz_targets) with cargo-fuzz, each for SECONDS (default 60),
# one after another, on one core each. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs a nightly Rust toolchain (cargo-fuzz builds with -Z flags); installs cargo-fuzz from
# crates.io when missing. scripts/test.sh only lints the targets: a defect found here is fixed
# with an ordinary unit test that CI runs. Corpora grow in fuzz/corpus/TARGET (not committed beyond the
# seeds); a crash lands in fuzz/artifacts/TARGET and stops the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# libdpdk-dev (the engine's dpdk feature, through sluice-tests) and easy-rsa (control_server's
# test PKI), as for the tests.
sluice_install_packages
sluice_cargo_env

seconds="${1:-60}"
shift || true

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "error: no nightly toolchain; cargo-fuzz needs one: rustup toolchain install nightly" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  if [ -d "fuzz/seeds/$t" ]; then
    seeds=("seeds/$t")
  fi
  echo "==> $t for ${seconds}s"
  (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1)
done
