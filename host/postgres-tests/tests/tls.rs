//! TLS against the real server, which `scripts/postgres` starts with
//! `ssl = on` and a certificate for `localhost` signed by the test CA in
//! `LOCKFILE_TEST_PG_ROOT_CERT`. Each test asks the server whether its lock
//! session is encrypted (`pg_stat_ssl`), rather than trusting the mode.

mod common;

use std::time::Duration;

use common::{db_url, namespace, password, probe};
use lockfile_postgres::{Error, PgLocker};

/// A CA that signed nothing here: no certificate this server shows chains
/// to it (made once with the openssl command, valid until 2126; the
/// command's tests use it too).
const OTHER_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/other-ca.crt");

/// The test CA's certificate, from `LOCKFILE_TEST_PG_ROOT_CERT`.
fn root_cert() -> String {
    std::env::var("LOCKFILE_TEST_PG_ROOT_CERT").unwrap_or_else(|_| {
        panic!(
            "LOCKFILE_TEST_PG_ROOT_CERT is not set: run `eval \"$(scripts/postgres start)\"` first"
        )
    })
}

/// The test URL (host 127.0.0.1) with `query`, and the host `localhost`
/// if `by_name`: the name the server's certificate is for.
fn url(by_name: bool, query: &str) -> String {
    let url = db_url();
    let url = if by_name {
        url.replacen("@127.0.0.1:", "@localhost:", 1)
    } else {
        url
    };
    assert!(!url.contains('?'), "{url}");
    format!("{url}?{query}")
}

/// Connects, takes and releases a lock, and says whether the lock's
/// session was encrypted.
async fn encrypted(url: &str) -> bool {
    let locker = PgLocker::connect(url, &namespace("tls"))
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let lock = locker
        .acquire("tls.lock", Some("tls test".into()), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        locker.read_content("tls.lock").await.unwrap().as_deref(),
        Some("tls test")
    );
    lock.release().await.unwrap();
    locker.lock_session_encrypted().await.unwrap()
}

/// The error of connecting to `url`: one line, without the password, the
/// same from a separate process, which exits 74.
async fn refused(url: &str) -> String {
    let error = PgLocker::connect(url, &namespace("tls")).await.unwrap_err();
    assert!(
        matches!(error, Error::Lock(lockfile_core::Error::Io { .. })),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(!message.contains('\n'), "more than one line: {message}");
    assert!(
        !message.contains(&password()),
        "the password shows: {message}"
    );
    let output = probe("tls")
        .args(["--url", url, "try", "x"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("{message}\n")
    );
    assert_eq!(output.status.code(), Some(74), "{message}");
    eprintln!("{message}");
    message
}

#[tokio::test]
async fn require_connects_over_tls() {
    assert!(encrypted(&url(false, "sslmode=require")).await);
}

#[tokio::test]
async fn prefer_is_the_default_and_takes_the_tls_offered() {
    assert!(encrypted(&db_url()).await);
    assert!(encrypted(&url(false, "sslmode=prefer")).await);
}

#[tokio::test]
async fn disable_connects_without_tls() {
    assert!(!encrypted(&url(false, "sslmode=disable")).await);
}

#[tokio::test]
async fn verify_full_with_the_test_ca_connects_to_localhost() {
    let root = root_cert();
    assert!(
        encrypted(&url(
            true,
            &format!("sslmode=verify-full&sslrootcert={root}")
        ))
        .await
    );
}

#[tokio::test]
async fn verify_full_checks_the_name_where_verify_ca_does_not() {
    let root = root_cert();
    // The certificate is for localhost, not for the address 127.0.0.1.
    let message = refused(&url(
        false,
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await;
    assert!(
        message.starts_with("couldn't connect to 'postgres://lockfile@127.0.0.1:"),
        "{message}"
    );
    assert!(
        message.contains("TLS refused the server's certificate (IP address mismatch)"),
        "{message}"
    );
    assert!(
        encrypted(&url(
            false,
            &format!("sslmode=verify-ca&sslrootcert={root}")
        ))
        .await
    );
}

#[tokio::test]
async fn a_root_that_signed_nothing_is_refused_in_one_line() {
    let other = OTHER_CA;
    for query in [
        format!("sslmode=verify-full&sslrootcert={other}"),
        format!("sslmode=verify-ca&sslrootcert={other}"),
        // As libpq: require with a root file checks the chain.
        format!("sslmode=require&sslrootcert={other}"),
    ] {
        let message = refused(&url(true, &query)).await;
        assert!(
            message.contains("TLS refused the server's certificate"),
            "{message}"
        );
        assert!(
            message.ends_with(&format!("must be signed by a root in sslrootcert={other}"))
                || message.ends_with(&format!(
                    "must be signed by a root in sslrootcert={other} and name the host"
                )),
            "{message}"
        );
    }
}

#[tokio::test]
async fn verify_full_without_a_root_file_checks_against_the_system_roots() {
    // No system root signed the test CA.
    let message = refused(&url(true, "sslmode=verify-full")).await;
    assert!(
        message.contains("TLS refused the server's certificate"),
        "{message}"
    );
    assert!(message.contains("one of the system's roots"), "{message}");
}
