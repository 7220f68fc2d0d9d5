#!/usr/bin/env bash
# Builds sluice-bench with profile-guided optimization, trained by the engine suite on
# in-memory ports, and prints the binary's path: for comparing layouts with ticks_ab.sh, e.g.
#   bench/tools/pgo.sh stage-cycles            # -> target/pgo-use/release/sluice-bench
#   bench/tools/ticks_ab.sh 3 PLAIN target/pgo-use/release/sluice-bench
# An experiment, not the appliance's build: the profile covers `Worker<MemPort>` only (the
# appliance runs `Worker` over DPDK ports, which this training never runs). Needs rustup's
# llvm-tools component (llvm-profdata matching rustc's LLVM); adds it when missing.
#   bench/tools/pgo.sh [FEATURES]              # features of sluice-bench, comma-separated
set -euo pipefail
cd "$(dirname "$0")/../.."
features=${1:-}
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools >&2
fi
[ -x "$profdata" ] || { echo "error: no llvm-profdata at $profdata (rustup component add llvm-tools)" >&2; exit 1; }
work=$PWD/target/pgo
rm -rf "$work"
mkdir -p "$work/raw"
build() {
  CARGO_TARGET_DIR=$1 RUSTFLAGS=$2 cargo build --release --locked -p sluice-bench \
    ${features:+--features "$features"} >&2
}
build "$PWD/target/pgo-gen" "-Cprofile-generate=$work/raw"
# Only the training run's profile: the build scripts above wrote theirs there too.
rm -rf "$work/raw" && mkdir -p "$work/raw"
LLVM_PROFILE_FILE="$work/raw/train-%p.profraw" target/pgo-gen/release/sluice-bench engine \
  --seconds 0.3 --sizes 64,512,1400 --shapes 1000x1000,100000x1000000 \
  --json "$work/train.json" >/dev/null 2>&1
"$profdata" merge -o "$work/merged.profdata" "$work/raw"
build "$PWD/target/pgo-use" "-Cprofile-use=$work/merged.profdata"
echo "$PWD/target/pgo-use/release/sluice-bench"
