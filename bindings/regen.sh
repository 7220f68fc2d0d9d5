#!/usr/bin/env bash
# Regenerates bindings/src/bindings.rs from the installed DPDK headers (needs libclang-dev and
# clang, which scripts/lib.sh installs). Review the diff and commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p dpdk-sys --features regenerate
rustfmt --edition 2021 bindings/src/bindings.rs
git diff --stat -- bindings/src/bindings.rs
