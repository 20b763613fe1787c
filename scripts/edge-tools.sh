#!/usr/bin/env bash
# The edge Worker's toolchain: installs what is missing (idempotent; skips what is already there at
# the pinned version) and builds the Worker.
#
#   bash scripts/edge-tools.sh          install, then print the environment the build needs
#   bash scripts/edge-tools.sh env      print only `export ...` lines: eval "$(bash scripts/edge-tools.sh env)"
#   bash scripts/edge-tools.sh build    install, then build edge/build/ (wrangler.toml's build command)
#   bash scripts/edge-tools.sh check    exit 0 only if everything is installed at the pinned versions
#
# Pinned: rustup target wasm32-unknown-unknown; cargo: worker-build 0.8.7, wasm-bindgen-cli 0.2.130
# (it must equal the wasm-bindgen library version edge/Cargo.toml pins); npm (root package.json and
# package-lock.json, into ./node_modules): wrangler 4.86.0 (the last release that runs on Node 20),
# miniflare 4.20260426.0 (the one that wrangler bundles), binaryen 132.0.0 (wasm-opt; Debian's is
# too old) and esbuild 0.28.2; also playwright-core 1.65.2, which the browser preview's Chromium
# test drives (tests/preview/browser.mjs; it never downloads a browser), since this is where the
# root package.json is installed. worker-build downloads wasm-bindgen, wasm-opt and esbuild itself
# unless WASM_BINDGEN_BIN, WASM_OPT_BIN and ESBUILD_BIN name them (it does not look on PATH);
# this script sets all three, so nothing is downloaded outside the package registries.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=0.2.130
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

log() { printf '[edge-tools] %s\n' "$*" >&2; }

have_version() { # binary, expected version substring
  [ -x "$1" ] && "$1" --version 2>/dev/null | grep -qF "$2"
}

npm_pinned() { # package, version: installed in ./node_modules at exactly that version
  local pj="$ROOT/node_modules/$1/package.json"
  [ -f "$pj" ] && node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' "$pj" "$2"
}

npm_ok() {
  npm_pinned wrangler 4.86.0 && npm_pinned miniflare 4.20260426.0 \
    && npm_pinned binaryen 132.0.0 && npm_pinned esbuild 0.28.2 \
    && npm_pinned playwright-core 1.65.2
}

installed() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    && have_version "$CARGO_BIN/worker-build" "$WORKER_BUILD_VERSION" \
    && have_version "$CARGO_BIN/wasm-bindgen" "$WASM_BINDGEN_VERSION" \
    && npm_ok
}

install() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding rustup target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown >&2
  fi
  if ! have_version "$CARGO_BIN/worker-build" "$WORKER_BUILD_VERSION"; then
    log "installing worker-build $WORKER_BUILD_VERSION"
    cargo install --locked worker-build --version "=$WORKER_BUILD_VERSION" >&2
  fi
  if ! have_version "$CARGO_BIN/wasm-bindgen" "$WASM_BINDGEN_VERSION"; then
    log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
    # Not --locked: the crate's own lock file does not build with current compilers.
    cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" >&2
  fi
  if ! npm_ok; then
    log "installing npm packages from package-lock.json"
    (cd "$ROOT" && npm ci --no-audit --no-fund >&2)
  fi
}

print_env() {
  cat <<EOF
export PATH="$CARGO_BIN:\$PATH"
export WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export WRANGLER_SEND_ERROR_REPORTS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
EOF
}

build() {
  eval "$(print_env)"
  cd "$ROOT/edge"
  log "worker-build --release (edge/build/)"
  # worker-build keeps files of earlier builds that this one does not write.
  rm -rf "$ROOT/edge/build"
  # One codegen unit: about 20 KB (gzipped) smaller than the default 16, for this build only.
  # edge/shim.js is the entry module: it makes the shard class a DurableObject, for RPC.
  CUSTOM_SHIM="$ROOT/edge/shim.js" CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 worker-build --release >&2
  local wasm="$ROOT/edge/build/worker/index.wasm"
  [ -f "$wasm" ] || { log "no $wasm after the build"; exit 1; }
  # worker-build 0.8.7 always runs wasm-opt with --debuginfo, which keeps the name section (about
  # 28 KB of the gzipped bundle). The edge never panics by design, so symbolicated WASM stack
  # traces are not worth their size: drop it, with the feature set worker-build enables, unless
  # EDGE_KEEP_NAMES is set (for profiles that name functions: tests/edge/bench.mjs --profile).
  if [ -z "${EDGE_KEEP_NAMES:-}" ]; then
    "$WASM_OPT_BIN" "$wasm" --strip-debug -o "$wasm.stripped" \
      --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
      --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling
    mv "$wasm.stripped" "$wasm"
  fi
  log "bundle: $(wc -c <"$wasm") bytes wasm, $(gzip -9c "$wasm" "$ROOT/edge/build/worker/shim.mjs" | wc -c) bytes gzipped with its JS"
}

case "${1:-install}" in
  install)
    install
    print_env
    ;;
  env) print_env ;;
  check) installed ;;
  build)
    installed || install
    build
    ;;
  *)
    echo "usage: bash scripts/edge-tools.sh [install|env|build|check]" >&2
    exit 2
    ;;
esac
