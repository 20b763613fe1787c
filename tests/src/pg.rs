//! Throwaway PostgreSQL databases for tests and benchmarks: created through a maintenance database
//! (`$TALLY_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped after.
//! Test-only, so it lives here and not in central's store.

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tally_central::store::redact_url;

/// The maintenance database URL the PostgreSQL tests create their databases through.
pub fn pg_admin_url() -> String {
    std::env::var("TALLY_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `url` with its database name replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs one statement on the maintenance database at `admin_url` (setup scripts, tests).
pub async fn admin_execute(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {}", redact_url(admin_url)))?;
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .with_context(|| format!("running {sql:?}"))?;
    conn.close().await?;
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {name:?} must be letters, digits and underscores"
    );
    Ok(())
}

/// Creates database `name` through the server of `admin_url` (a maintenance database such as
/// `postgres://postgres@127.0.0.1:5432/postgres`) and returns its URL. For tests, benchmarks and
/// setup scripts.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    check_name(name)?;
    admin_execute(admin_url, &format!("CREATE DATABASE {name}")).await?;
    Ok(with_database(admin_url, name))
}

/// Drops database `name` (closing its sessions first), if it exists.
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    admin_execute(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
