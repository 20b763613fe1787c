//! Metronome's official Python SDK (`metronome-sdk` 4.12.0), unmodified except for `base_url`,
//! drives the quickstart against a real `tally serve`: `tests/sdk/quickstart.py` asserts exact
//! invoice numbers and exits non-zero on the first mismatch. It runs once per storage backend.
//! `tests/sdk/billing_configs.py` does the same for billing-provider configurations and archiving,
//! and `tests/sdk/overrides.py` (on both backends) for contract overrides: two contracts with
//! every override type and both prioritizations, their draft invoices and rate schedule;
//! `tests/sdk/contract_edits.py` (on both backends) for contract amendments, edits, end dates
//! and the edit history; `tests/sdk/drawdown.py` (on both backends) for commits and credits
//! competing for usage with tiered and commit-specific overrides, a commit rate and a postpaid
//! true-up; `tests/sdk/commits.py` (on both backends) for a contract with a prepaid
//! commit, a credit and an override: the drawn-down draft, balances with their ledger, a manual
//! entry; `tests/sdk/recurring.py` (on both backends) for recurring commits and credits: what
//! they generate, its invoice, a commit-specific override naming one, an edit adding one;
//! `tests/sdk/charges.py` (on both backends) for scheduled charges on their own and on
//! consolidated invoices, and an edit archiving one; `tests/sdk/packages.py` (on both backends)
//! for a contract from a package billing like the same contract written out;
//! `tests/sdk/subscriptions.py` (on both backends) for seat subscriptions: in advance with a
//! prorated mid-period increase, in arrears on SCHEDULED invoices, the quantity history and
//! refusals;
//! `tests/sdk/composite.py` (on both backends) for composite products over tags and ids;
//! `tests/sdk/usage.py` (on both backends) for usage queries: windows, groups, pages, the
//! customer's metrics and costs;
//! `tests/sdk/events.py` (on both backends) for event search: matched, unmatched, unknown-customer
//! and duplicate events, what each matched, and the refusals; `tests/sdk/sql_metrics.py` (on both
//! backends) for an SQL billable metric (unique users per region) billed by region on the draft;
//! `tests/sdk/custom_units.py` (on both backends) for a custom pricing unit: a rate card
//! converting it, a rate and a credit in it, the drawn-down and converted draft line by line;
//! `tests/sdk/lifecycle.py` (on both backends) for a renewal with rollover: both contracts'
//! transitions, the rolled commit, its invoice and balances, and the refusals;
//! `tests/sdk/alerts.py` (on both backends) for alerts: usage, credit-balance and spend alerts
//! moving to in_alarm as usage arrives, reset, list, archive and the refusals.

use std::process::Command;
use std::time::Duration;

use tally_tests::{python_sdk_ready, run_with_timeout, workspace_root, PgDatabase, TallyServer};

/// Generous: the script makes a few dozen local requests; the SDK's own per-request timeout is 60 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn python_sdk_quickstart() {
    python_sdk_ready();
    run_quickstart(&TallyServer::start());
}

#[test]
fn python_sdk_quickstart_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_quickstart(&TallyServer::start_on(Some(db.url()), &[], &[]));
}

#[test]
fn python_sdk_alerts() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/alerts.py");
}

#[test]
fn python_sdk_alerts_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/alerts.py",
    );
}

#[test]
fn python_sdk_overrides() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/overrides.py");
}

#[test]
fn python_sdk_overrides_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/overrides.py",
    );
}

#[test]
fn python_sdk_commits_and_credits() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/commits.py");
}

#[test]
fn python_sdk_commits_and_credits_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/commits.py",
    );
}

#[test]
fn python_sdk_drawdown() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/drawdown.py");
}

#[test]
fn python_sdk_drawdown_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/drawdown.py",
    );
}

#[test]
fn python_sdk_contract_edits() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/contract_edits.py");
}

#[test]
fn python_sdk_contract_edits_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/contract_edits.py",
    );
}

#[test]
fn python_sdk_recurring_commits_and_credits() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/recurring.py");
}

#[test]
fn python_sdk_recurring_commits_and_credits_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/recurring.py",
    );
}

#[test]
fn python_sdk_contract_lifecycle() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/lifecycle.py");
}

#[test]
fn python_sdk_contract_lifecycle_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/lifecycle.py",
    );
}

#[test]
fn python_sdk_scheduled_charges() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/charges.py");
}

#[test]
fn python_sdk_scheduled_charges_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/charges.py",
    );
}

#[test]
fn python_sdk_subscriptions() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/subscriptions.py");
}

#[test]
fn python_sdk_subscriptions_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/subscriptions.py",
    );
}

#[test]
fn python_sdk_composite_products() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/composite.py");
}

#[test]
fn python_sdk_composite_products_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/composite.py",
    );
}

#[test]
fn python_sdk_usage_queries() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/usage.py");
}

#[test]
fn python_sdk_usage_queries_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/usage.py",
    );
}

#[test]
fn python_sdk_event_search() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/events.py");
}

#[test]
fn python_sdk_event_search_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/events.py",
    );
}

#[test]
fn python_sdk_sql_metric_by_region() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/sql_metrics.py");
}

#[test]
fn python_sdk_sql_metric_by_region_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/sql_metrics.py",
    );
}

#[test]
fn python_sdk_packages() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/packages.py");
}

#[test]
fn python_sdk_packages_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/packages.py",
    );
}

#[test]
fn python_sdk_custom_units() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/custom_units.py");
}

#[test]
fn python_sdk_custom_units_on_postgres() {
    python_sdk_ready();
    let db = PgDatabase::create();
    run_script(
        &TallyServer::start_on(Some(db.url()), &[], &[]),
        "tests/sdk/custom_units.py",
    );
}

#[test]
fn python_sdk_billing_configurations() {
    python_sdk_ready();
    run_script(&TallyServer::start(), "tests/sdk/billing_configs.py");
}

fn run_quickstart(server: &TallyServer) {
    run_script(server, "tests/sdk/quickstart.py");
}

fn run_script(server: &TallyServer, script: &str) {
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .current_dir(workspace_root())
        .env("TALLY_BASE_URL", server.base_url())
        .env("TALLY_TOKEN", server.token())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The script passes base_url and bearer_token explicitly; make sure nothing else leaks in.
        .env_remove("METRONOME_BASE_URL")
        .env_remove("METRONOME_BEARER_TOKEN");
    let out = run_with_timeout(&mut cmd, SCRIPT_TIMEOUT);

    assert!(
        out.status.success(),
        "{script} failed on {} with {}\n--- script stdout ---\n{}\n\
         --- script stderr ---\n{}\n--- server output (last lines) ---\n{}",
        server.database_url(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
}
