//! Token lifecycle through the real binary: `tally token create --name`, `tally token list` (never
//! a secret), last-used times, and `tally token revoke`, which fails the token at once on every
//! server sharing the database (two replicas on one PostgreSQL database).

use std::process::Command;
use std::time::{Duration, Instant};

use tally_tests::{run_with_timeout, tally_bin, ApiClient, PgDatabase, TallyServer};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `tally token <args> --database <url>`: its stdout, or its output when it failed.
fn token_cli(database_url: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(tally_bin());
    cmd.arg("token")
        .args(args)
        .args(["--database", database_url]);
    let out = run_with_timeout(&mut cmd, CLI_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => Ok(stdout),
        false => Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// `tally token list` as rows of its tab-separated columns, header dropped.
fn list(database_url: &str) -> Vec<Vec<String>> {
    let out = token_cli(database_url, &["list"]).unwrap();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("ID\tNAME\tENV\tCREATED\tLAST USED\tREVOKED")
    );
    lines
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

async fn status(client: &reqwest::Client, base: &str, token: &str) -> u16 {
    client
        .get(format!("{base}/v1/billable-metrics?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_revoked_token_fails_at_once_on_every_postgres_replica() {
    let db = PgDatabase::create();
    let a = TallyServer::start_on(Some(db.url()), &[], &[]);
    let b = TallyServer::start_on(Some(db.url()), &[], &[]);
    revoke_while_serving(db.url(), &a, &b);
}

#[test]
fn a_revoked_token_fails_at_once_on_sqlite() {
    let a = TallyServer::start();
    let url = a.database_url().to_string();
    revoke_while_serving(&url, &a, &a);
}

/// Creates a named token, uses it on `a` and `b` (servers on the database at `url`), revokes it,
/// and checks both refuse it at the very next request.
fn revoke_while_serving(url: &str, a: &TallyServer, b: &TallyServer) {
    let created = token_cli(
        url,
        &["create", "--env", "production", "--name", "ci deploy"],
    )
    .unwrap();
    let secret = created.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("tally_prd_"));

    let rows = list(url);
    let row = rows
        .iter()
        .find(|r| r[1] == "ci deploy")
        .unwrap_or_else(|| panic!("named token not listed: {rows:?}"));
    assert_eq!(row[2], "production");
    assert_eq!((row[4].as_str(), row[5].as_str()), ("-", "-"), "{row:?}");
    let id = row[0].clone();
    assert_eq!(id.len(), 16);
    let listing = token_cli(url, &["list"]).unwrap();
    assert!(!listing.contains(&secret), "the list shows no secret");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        // Each replica accepts it (and each caches nothing it would have to forget).
        assert_eq!(status(&client, a.base_url(), &secret).await, 200);
        assert_eq!(status(&client, b.base_url(), &secret).await, 200);
    });
    // Its use is recorded (in the background, so poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = list(url);
        let row = rows.iter().find(|r| r[0] == id).unwrap();
        if row[4] != "-" {
            assert!(row[4].ends_with('Z'), "{row:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last use never recorded: {row:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Bad ids are refused and revoke nothing.
    assert!(token_cli(url, &["revoke", "not-an-id"]).is_err());
    assert!(token_cli(url, &["revoke", "0000000000000000"]).is_err());
    assert_eq!(
        token_cli(url, &["revoke", &id]).unwrap().trim(),
        format!("revoked {id}")
    );
    rt.block_on(async {
        // At once, on both replicas: no waiting, no retry.
        assert_eq!(status(&client, a.base_url(), &secret).await, 401);
        assert_eq!(status(&client, b.base_url(), &secret).await, 401);
        // The other tokens still work.
        let other = ApiClient::new(a);
        assert_eq!(status(other.http(), a.base_url(), other.token()).await, 200);
    });
    let rows = list(url);
    let row = rows.iter().find(|r| r[0] == id).unwrap();
    assert!(row[5].ends_with('Z'), "revocation time listed: {row:?}");
    assert!(
        token_cli(url, &["revoke", &id]).is_err(),
        "revoking twice is an error"
    );
}
