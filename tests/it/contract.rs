//! Contract test: schemathesis (pinned, see [`SCHEMATHESIS_VERSION`]) checks a real `tally serve`
//! against Metronome's OpenAPI document (`../shared/reference/metronome-openapi.json`), limited to
//! the operations Tally implements. The driver is `tests/contract/run.py`: a validated walkthrough
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
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("contract: 37 passed, 0 failed")),
        "the driver passed without its closing line for all 37 operations:\n{stdout}"
    );
}
