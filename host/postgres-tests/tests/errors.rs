//! Bad URLs and unusable servers: one clear line each, never the password.

mod common;

use common::{db_url, namespace, password, probe};
use lockfile_postgres::{Error, PgLocker};

/// A port on which nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The test URL with its password replaced, or its database, or its port.
fn with(what: &str, value: &str) -> String {
    let url = db_url();
    let (scheme_user, rest) = url.split_once(':').unwrap().1.split_once('@').unwrap();
    let user = scheme_user
        .trim_start_matches("//")
        .split(':')
        .next()
        .unwrap();
    let (hostport, database) = rest.split_once('/').unwrap();
    let host = hostport.split(':').next().unwrap();
    let port = hostport.split(':').nth(1).unwrap();
    let password = password();
    match what {
        "password" => format!("postgres://{user}:{value}@{host}:{port}/{database}"),
        "database" => format!("postgres://{user}:{password}@{host}:{port}/{value}"),
        "port" => format!("postgres://{user}:{password}@{host}:{value}/{database}"),
        _ => unreachable!(),
    }
}

async fn connect_error(url: &str) -> String {
    let error = PgLocker::connect(url, &namespace("errors"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.contains('\n'), "more than one line: {message}");
    assert!(
        !message.contains(&password()),
        "the password shows: {message}"
    );
    assert!(!message.contains("s3cret"), "the password shows: {message}");
    // The same line from a separate process, with its exit status.
    let output = probe("errors")
        .args(["--url", url, "try", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, format!("{message}\n"));
    let status = match error {
        Error::InvalidUrl { .. } => 64,
        _ => 74,
    };
    assert_eq!(output.status.code(), Some(status), "{message}");
    eprintln!("{status}: {message}");
    message
}

#[tokio::test]
async fn bad_urls_are_refused_before_connecting() {
    for (url, says) in [
        ("host=localhost password=s3cret", "expected postgres://"),
        (
            "mysql://root:s3cret@localhost/db",
            "scheme must be postgres://",
        ),
        (
            "postgres://u:s3cret@localhost:99999/db",
            "invalid value for option `port`",
        ),
        (
            "postgres://u:s3cret@localhost/db?sslmode=verify_full",
            "sslmode=verify_full is not a mode: use disable, prefer, require, verify-ca or verify-full",
        ),
        (
            "postgres://u:s3cret@localhost/db?sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
            "sslrootcert=/nonexistent/root.crt: couldn't read it",
        ),
        ("postgres://u:s3cret@localhost/db?bogus=1", "bogus"),
        ("postgres://u:s3cret@/db", "no host"),
    ] {
        let message = connect_error(url).await;
        assert!(
            message.starts_with("invalid lock database URL"),
            "{message}"
        );
        assert!(message.contains(says), "{url}: {message}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_one_line() {
    let url = with("port", &closed_port().to_string());
    let message = connect_error(&url).await;
    assert!(
        message.starts_with("couldn't connect to 'postgres://lockfile@127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");
}

#[tokio::test]
async fn a_wrong_password_is_one_line() {
    let message = connect_error(&with("password", "s3cret")).await;
    assert!(
        message.ends_with("password authentication failed for user \"lockfile\""),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_database_is_one_line() {
    let message = connect_error(&with("database", "no_such_db")).await;
    assert!(
        message.ends_with("database \"no_such_db\" does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_namespaces_are_refused() {
    for bad in ["", "a\0b"] {
        let error = PgLocker::connect(&db_url(), bad).await.unwrap_err();
        assert!(matches!(error, Error::InvalidNamespace { .. }), "{error:?}");
    }
}

/// The server's answer stays the error's cause: a caller reaches its
/// SQLSTATE by walking `source()`, not by parsing the line.
#[tokio::test]
async fn a_database_error_keeps_its_sqlstate_as_a_source() {
    use tokio_postgres::error::SqlState;
    let sqlstate = |url: String| async move {
        let error = PgLocker::connect(&url, &namespace("errors"))
            .await
            .unwrap_err();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut code = None;
        while let Some(cause) = source {
            // The io::Error in the chain holds the one line, and says the
            // same SQLSTATE.
            let failure = (cause.downcast_ref::<std::io::Error>())
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<lockfile_postgres::DbFailure>());
            if let Some(failure) = failure {
                code = failure.code().cloned();
            }
            if let Some(db) = cause.downcast_ref::<tokio_postgres::Error>() {
                assert_eq!(code.as_ref(), db.code(), "the line and its cause agree");
                assert!(code.is_some());
            }
            source = cause.source();
        }
        code
    };
    assert_eq!(
        sqlstate(with("database", "no_such_db")).await,
        Some(SqlState::INVALID_CATALOG_NAME)
    );
    assert_eq!(
        sqlstate(with("password", "s3cret")).await,
        Some(SqlState::INVALID_PASSWORD)
    );
}
