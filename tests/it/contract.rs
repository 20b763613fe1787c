//! Contract test: schemathesis (pinned, see [`SCHEMATHESIS_VERSION`]) checks a real `tally serve`
//! against the OpenAPI document it serves at `/openapi.json` (Metronome's operations that Tally
//! implements, as Metronome documents them, plus Tally's own; `central/tests/it/openapi.rs` keeps
//! it equal to the router). The driver is `tests/contract/run.py`: a validated walkthrough
//! of every operation, then generated valid and invalid requests with a fixed seed. It fails on
//! any 5xx, any undocumented status, content type or response body that breaks its schema, and any
//! operation no generated request could get a 2xx from (bar a documented exception). What the
//! driver relaxes in the document, and why, it prints with the per-operation status breakdown.

use std::process::Command;
use std::time::Duration;

use tally_tests::{python_package_ready, run_with_timeout, workspace_root, TallyServer};

/// The schemathesis release the driver is written against (also pinned in scripts/test.sh).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The run takes about a minute here; generous for a loaded CI machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn tally_conforms_to_metronomes_openapi_document() {
    python_package_ready("schemathesis", "schemathesis", SCHEMATHESIS_VERSION);
    // The walkthrough needs FINALIZED invoices: a one-second job finalizes due periods instead of
    // the walkthrough relying on a read to do it.
    let server = TallyServer::start_with(&["--job-interval-secs", "1"], &[]);
    let workdir = tempfile::Builder::new()
        .prefix("tally-contract-")
        .tempdir()
        .expect("a temp dir");

    let mut cmd = Command::new("python3");
    cmd.arg("tests/contract/run.py")
        .current_dir(workspace_root())
        .env("TALLY_BASE_URL", server.base_url())
        .env("TALLY_TOKEN", server.token())
        .env("CONTRACT_WORKDIR", workdir.path())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_with_timeout(&mut cmd, RUN_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);

    assert!(
        out.status.success(),
        "tests/contract/run.py failed with {}\n--- driver stdout ---\n{stdout}\n\
         --- driver stderr ---\n{}\n--- server output (last lines) ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    // Shown with `--no-capture`; the breakdown is the useful part of a passing run.
    let summary = stdout
        .lines()
        .skip_while(|l| !l.starts_with("walkthrough "))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    let operations = documented_operations();
    let closing = format!("contract: {operations} passed, 0 failed");
    assert!(
        stdout.lines().any(|l| l.starts_with(&closing)),
        "the driver passed without its closing line for all {operations} operations:\n{stdout}"
    );
}

/// How many operations the served document (the committed `central/openapi.json`) has.
fn documented_operations() -> usize {
    let path = workspace_root().join("central/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("central/openapi.json"))
            .expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .values()
        .flat_map(|item| item.as_object().expect("path item").keys())
        .filter(|method| ["get", "post", "put", "patch", "delete"].contains(&method.as_str()))
        .count()
}
