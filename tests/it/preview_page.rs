//! The browser cost preview (`GET /preview`, issue 15) in headless Chromium against a real
//! `tally serve`: `tests/preview/browser.mjs` (playwright-core with Debian's `chromium`, which
//! scripts/test.sh installs) enters usage for several scenarios and checks the page's numbers
//! equal `previewEvents`' response byte for byte, and the invoice the same events then make.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tally_tests::{run_with_timeout, workspace_root, TallyServer};

/// The Chromium binary: `$CHROMIUM`, else `chromium` on PATH. Panics with the fix otherwise.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .expect("sh runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "no chromium on PATH: apt-get install chromium (scripts/test.sh does), or set CHROMIUM"
    );
    PathBuf::from(path)
}

#[test]
fn the_preview_page_prices_like_preview_events_in_chromium() {
    let server = TallyServer::start();
    let root = workspace_root();
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/preview/browser.mjs"))
        .current_dir(&root)
        .env("TALLY_URL", server.base_url())
        .env("TALLY_TOKEN", server.token())
        .env("CHROMIUM", chromium());
    if let Some(shot) = std::env::var_os("PREVIEW_SCREENSHOT") {
        cmd.env("SCREENSHOT", shot);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    assert!(stdout.contains("preview page: ok"), "{stdout}");
    println!("{stdout}");
}
