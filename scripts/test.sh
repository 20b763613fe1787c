#!/usr/bin/env bash
# Runs every check and test Tally has: formatting, lints, the core's no_std WASM build, unit and
# property tests, in-process HTTP tests, golden invoices and the SDK end-to-end tests.
# Installs what the tests need first when it is missing (wasm target, Metronome's Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain and test dependencies"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
python3 -c 'import metronome, sys; sys.exit(0 if metronome.__version__ == "4.12.0" else 1)' 2>/dev/null \
  || python3 -m pip install -q metronome-sdk==4.12.0

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "core builds alone for wasm32 without std"
cargo build -p tally-core --target wasm32-unknown-unknown --no-default-features

step "binaries (the end-to-end tests start the real tally)"
cargo build --workspace --bins

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
