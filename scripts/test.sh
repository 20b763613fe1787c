#!/usr/bin/env bash
# Runs every check and test Tally has: formatting, lints, the core's no_std and WASM builds, unit and
# property tests, bounded coverage-guided fuzzing of the core, in-process HTTP tests, the store
# conformance suite (SQLite and PostgreSQL), golden invoices, the SDK end-to-end, contract
# (schemathesis), crash, fault, limit and replica tests, and the edge Worker (wasm32 lints, an
# offline deployment dry run, and its tests on workerd in front of the real tally).
# Installs or starts what the tests need first when it is missing (the wasm32 and no_std targets,
# Metronome's Python SDK, schemathesis, Chromium for the browser preview test, the local PostgreSQL
# server).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain and test dependencies"
for target in wasm32-unknown-unknown thumbv7em-none-eabihf; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
python3 -c 'import metronome, sys; sys.exit(0 if metronome.__version__ == "4.12.0" else 1)' 2>/dev/null \
  || python3 -m pip install -q metronome-sdk==4.12.0
# The contract test (tests/it/contract.rs) fuzzes tally against Metronome's OpenAPI document with
# schemathesis, pinned so generated cases stay the same from run to run.
python3 -c 'import schemathesis, sys; sys.exit(0 if schemathesis.__version__ == "4.32.5" else 1)' 2>/dev/null \
  || python3 -m pip install -q schemathesis==4.32.5
# The Stripe push tests (tests/it/stripe.rs) run localstripe, a stateful local Stripe, pinned.
python3 -c 'import localstripe, sys; sys.exit(0 if localstripe.__version__ == "1.15.10" else 1)' 2>/dev/null \
  || python3 -m pip install -q localstripe==1.15.10

# The webhook tests' receiver (tests/webhooks) verifies signatures with Metronome's TypeScript SDK,
# pinned in its own package-lock.json (the tests install it too when it is missing).
[ -f tests/webhooks/node_modules/@metronome/sdk/package.json ] \
  || (cd tests/webhooks && npm ci --no-audit --no-fund --ignore-scripts >/dev/null)

step "edge toolchain (worker-build, wasm-bindgen-cli, wrangler, Miniflare, wasm-opt, esbuild; cached)"
bash scripts/edge-tools.sh install >/dev/null

step "headless Chromium for the browser preview's test (Debian's chromium; cached)"
if ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

step "PostgreSQL (store conformance, SDK and replica tests create throwaway databases on it)"
# TALLY_TEST_PG_URL points the tests at another server; otherwise make sure the local one is up.
if [ -z "${TALLY_TEST_PG_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    action=start
    if ! command -v pg_ctlcluster >/dev/null; then
      apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
      # The tests connect as `postgres` over TCP without a password.
      sed -i -E 's/(scram-sha-256|md5|peer)$/trust/' /etc/postgresql/*/main/pg_hba.conf
      action=restart
    fi
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main "$action"
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  psql -qAt "postgres://postgres@127.0.0.1:5432/postgres" -c 'SELECT 1' >/dev/null
fi

step "format"
cargo fmt --all -- --check

step "the served OpenAPI document is what scripts/openapi.py builds from ../shared/reference"
python3 scripts/openapi.py --check

step "the committed browser preview module (central/assets/preview/) is built from the current sources"
bash scripts/preview-wasm.sh check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "core builds alone without std (thumbv7em-none-eabihf has no std at all) and for wasm32"
# wasm32-unknown-unknown ships a std, so only a target without one proves `no_std` + `alloc`: a std
# leak in core or a dependency fails to compile here. (x86_64-unknown-none would do too, but sha2
# 0.10's x86 SIMD backend crashes LLVM on that soft-float target.)
cargo build -p tally-core --target thumbv7em-none-eabihf --no-default-features
cargo build -p tally-core --target wasm32-unknown-unknown --no-default-features

step "edge lints for wasm32 (the Worker's real target)"
cargo clippy -p tally-edge --target wasm32-unknown-unknown -- -D warnings

step "fuzz the core (cargo-fuzz on nightly: 5 targets x 20 s from the committed corpus; see scripts/fuzz.sh)"
# Bounded: 390 s measured on a clean checkout, of which 275 s is the first nightly AddressSanitizer
# build of core/fuzz and about 110 s the five 20-second runs. Any failed law or crash fails CI.
bash scripts/fuzz.sh 20

step "binaries (the end-to-end tests start the real tally)"
cargo build --workspace --bins

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi

step "date independence (the SDK quickstart with the clock at a month's first and last hour; about a minute)"
# The full form, with the contract walkthrough, replicas and edge tests: scripts/test-clock.sh.
bash scripts/test-clock.sh --quick all

step "edge: deployment dry run (offline; runs wrangler.toml's build command into edge/build/)"
eval "$(bash scripts/edge-tools.sh env)"
npx --no-install wrangler deploy --dry-run --outdir target/edge-dry-run

step "edge tests (workerd through Miniflare 4 and wrangler dev, in front of the real tally)"
node --test --test-concurrency=1 --test-timeout=600000 tests/edge/*.test.mjs
