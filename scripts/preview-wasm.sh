#!/usr/bin/env bash
# The browser preview's WASM module: tally-core with its `wasm` feature, built for
# wasm32-unknown-unknown, bound with the pinned wasm-bindgen CLI (`--target web`) and shrunk with
# wasm-opt, into central/assets/preview/ (committed; central embeds it and serves it under
# /preview/). STAMP there records what it was built from: the hash of core's sources and
# Cargo.toml, this script, and the exact versions of every crate the module links.
#
#   bash scripts/preview-wasm.sh          build (installs the edge toolchain first if missing)
#   bash scripts/preview-wasm.sh check    exit 1 when the committed module is older than its sources
#   bash scripts/preview-wasm.sh stamp    print the sources' stamp
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/central/assets/preview"

log() { printf '[preview-wasm] %s\n' "$*" >&2; }

stamp() {
  cd "$ROOT"
  {
    # Test modules (`*_tests.rs`, compiled only under cfg(test)) never reach the module.
    find core/src -name '*.rs' ! -name '*_tests.rs' -print0 | sort -z | xargs -0 sha256sum
    sha256sum core/Cargo.toml scripts/preview-wasm.sh
    cargo tree -q -p tally-core --features wasm --target wasm32-unknown-unknown -e normal \
      --prefix none --no-dedupe | sed -E 's# \(/[^)]*\)##' | sort -u  # no checkout path
  } | sha256sum | cut -d' ' -f1
}

build() {
  # The pinned wasm-bindgen CLI and wasm-opt are the edge's (scripts/edge-tools.sh installs them).
  eval "$(bash "$ROOT/scripts/edge-tools.sh" env)"
  if ! "$WASM_BINDGEN_BIN" --version 2>/dev/null | grep -qF 0.2.130 || [ ! -x "$WASM_OPT_BIN" ]; then
    bash "$ROOT/scripts/edge-tools.sh" install >/dev/null
  fi
  local target="$ROOT/target/preview-wasm"
  log "cargo rustc -p tally-core --features wasm (release, wasm32-unknown-unknown, cdylib)"
  # Paths are remapped so the module is the same bytes from any checkout.
  (cd "$ROOT" && CARGO_TARGET_DIR="$target" \
    RUSTFLAGS="--remap-path-prefix=$ROOT=/tally --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
    cargo rustc -q -p tally-core --release --features wasm --target wasm32-unknown-unknown \
    --crate-type cdylib)
  mkdir -p "$OUT"
  "$WASM_BINDGEN_BIN" --target web --no-typescript --out-name tally_core --out-dir "$OUT" \
    "$target/wasm32-unknown-unknown/release/tally_core.wasm"
  "$WASM_OPT_BIN" -Oz --strip-debug --strip-producers "$OUT/tally_core_bg.wasm" \
    -o "$OUT/tally_core_bg.wasm.opt" \
    --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-bulk-memory --enable-multivalue --enable-reference-types
  mv "$OUT/tally_core_bg.wasm.opt" "$OUT/tally_core_bg.wasm"
  stamp >"$OUT/STAMP"
  log "module: $(wc -c <"$OUT/tally_core_bg.wasm") bytes, $(gzip -9c "$OUT/tally_core_bg.wasm" | wc -c) bytes gzipped; glue $(gzip -9c "$OUT/tally_core.js" | wc -c) bytes gzipped"
}

case "${1:-build}" in
  build) build ;;
  stamp) stamp ;;
  check)
    want="$(stamp)"
    have="$(cat "$OUT/STAMP" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
      log "central/assets/preview/ was built from other sources (STAMP $have, sources $want):"
      log "run bash scripts/preview-wasm.sh and commit central/assets/preview/"
      exit 1
    fi
    ;;
  *)
    echo "usage: bash scripts/preview-wasm.sh [build|check|stamp]" >&2
    exit 2
    ;;
esac
