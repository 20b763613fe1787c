#!/usr/bin/env bash
# Fuzzes tally-core with cargo-fuzz (libFuzzer + AddressSanitizer, nightly toolchain): builds every
# target in core/fuzz, then runs each one for a bounded time (default 20 s) from its committed seed
# corpus in core/fuzz/corpus/<target>/ and the reproducers of past failures in
# core/fuzz/regressions/<target>/. Inputs the fuzzer discovers go to a temporary directory, never
# into the repository. Any failed law, panic, crash, timeout (10 s per input) or out-of-memory fails
# the script; libFuzzer leaves the reproducer in core/fuzz/artifacts/<target>/ and prints how to
# replay it (`cargo +nightly fuzz run <target> <file>` from core/).
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]   (all targets when none are named)
set -euo pipefail
cd "$(dirname "$0")/../core"

seconds="${1:-20}"
shift || true
CARGO_FUZZ_VERSION=0.13.2

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked
fi

cargo +nightly fuzz build
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  printf '\n-- fuzz %s for %s s\n' "$target" "$seconds"
  mkdir -p "$scratch/$target"
  # The first corpus directory receives new inputs; the committed ones are only read. The
  # reproducers of past failures live apart from the seeds so `cargo fuzz cmin` cannot drop them.
  log="$scratch/$target.log"
  corpora=("$scratch/$target" "fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && corpora+=("fuzz/regressions/$target")
  if ! cargo +nightly fuzz run "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz target $target failed (reproducer in core/fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log"
done
