#!/usr/bin/env bash
# Runs the tests that read the real clock with the clock moved to a month's first hour and to its
# last hour, to prove they do not depend on the day they run on (a month's first day is when the
# previous period is still in its 24-hour grace, its last hour is when "now - 2 h" and "now" are in
# one period but "now + 1 h" is not).
#
# Usage: scripts/test-clock.sh [--quick] [first|last|all]   (default: all)
#   --quick   only the SDK quickstart on SQLite (`tests/it/sdk_python.rs`), about 15 s per clock;
#             scripts/test.sh runs this form.
#   otherwise the SDK quickstart (SQLite, PostgreSQL), the SDK scenarios of overrides, commits,
#             drawdown, contract edits, recurring commits, scheduled charges, packages, subscriptions,
#             composite products, custom units, lifecycle, alerts, usage queries, event search and SQL metrics (SQLite), the contract walkthrough (schemathesis),
#             the replica test, backup, backfill and metrics, about 7 minutes per clock; bounded by
#             `timeout`.
# Not the edge tests (tests/edge/*.mjs): node is faked fine, but Miniflare's workerd hangs at start
# under libfaketime (seen with workerd 2026-04-26), so they are kept date-independent by
# construction instead (they read the invoice whose period holds their events).
#
# How: libfaketime (Debian's `faketime`, installed if missing) preloaded into every process the
# tests start (tally, python) with a constant offset, so all of them agree on the
# moved "now" while it keeps ticking. Monotonic clocks are left alone (timeouts stay real).
# Binaries are built first, on the real clock; the tests' own binary then runs faked directly
# under libtest (cargo-nextest hangs under libfaketime).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
which=all
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    first | last | all) which=$arg ;;
    *) echo "usage: $0 [--quick] [first|last|all]" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s\n' "$*"; }

lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if [ ! -e "$lib" ]; then
  apt-get update -qq && apt-get install -y -qq faketime >/dev/null
fi
lib=$(find /usr/lib -name libfaketime.so.1 -path '*faketime*' | head -n 1)
[ -n "$lib" ] || { echo "libfaketime.so.1 not found after installing faketime" >&2; exit 1; }

# Seconds from now to a target instant (UTC): the next month's 1st at 00:05 or this month's last
# day at 23:05 (the suite needs well under the 55 minutes left before the hour ends).
offset_to() {
  local target
  case "$1" in
    first) target=$(date -u -d "$(date -u +%Y-%m-01) +1 month" +%Y-%m-%dT00:05:00Z) ;;
    last) target=$(date -u -d "$(date -u +%Y-%m-01) +1 month -1 day" +%Y-%m-%dT23:05:00Z) ;;
  esac
  echo "$target $(($(date -u -d "$target" +%s) - $(date -u +%s)))"
}

# Runs "$@" with the clock moved by $offset seconds, bounded by $1 seconds.
faked() {
  local limit=$1
  shift
  LD_PRELOAD="$lib" FAKETIME="$(printf '%+d' "$offset")" FAKETIME_DONT_FAKE_MONOTONIC=1 \
    timeout --kill-after=10 "$limit" "$@"
}

step "binaries and test binaries (real clock)"
cargo build --workspace --bins
it=$(cargo test -p tally-tests --test it --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])')
[ -x "$it" ] || { echo "could not build the tally-tests integration binary" >&2; exit 1; }

run_at() {
  read -r target offset < <(offset_to "$1")
  step "clock at $target (offset ${offset}s): $(faked 5 date -u +%Y-%m-%dT%H:%M:%SZ)"
  if [ "$quick" = 1 ]; then
    faked 300 "$it" --exact sdk_python::python_sdk_quickstart
    return
  fi
  # From the workspace's root, as cargo runs them (the tests find tests/ and target/ from there).
  faked 900 "$it" --test-threads 1 --exact sdk_python::python_sdk_quickstart \
    sdk_python::python_sdk_quickstart_on_postgres sdk_python::python_sdk_overrides \
    sdk_python::python_sdk_commits_and_credits sdk_python::python_sdk_drawdown \
    sdk_python::python_sdk_contract_edits sdk_python::python_sdk_recurring_commits_and_credits \
    sdk_python::python_sdk_scheduled_charges sdk_python::python_sdk_packages \
    sdk_python::python_sdk_subscriptions sdk_python::python_sdk_composite_products \
    sdk_python::python_sdk_custom_units sdk_python::python_sdk_contract_lifecycle \
    sdk_python::python_sdk_alerts sdk_python::python_sdk_usage_queries \
    sdk_python::python_sdk_event_search sdk_python::python_sdk_sql_metric_by_region \
    contract::tally_conforms_to_metronomes_openapi_document \
    postgres::two_replicas_on_one_database_behave_as_one \
    backup::a_backup_taken_during_ingest_restores_every_acknowledged_event_and_invoice \
    backfill::a_gzip_ndjson_backfill_reports_rejects_and_a_rerun_counts_nothing_twice \
    backfill::a_killed_backfill_rerun_from_the_start_counts_every_event_once \
    backfill::a_json_array_from_stdin_backfills_a_local_database \
    metrics::metrics_count_a_known_ingest_and_requests_carry_ids
}

case "$which" in
  first | last) run_at "$which" ;;
  all) run_at first && run_at last ;;
esac
