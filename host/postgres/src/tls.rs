//! TLS for the lock database: libpq's `sslmode` and `sslrootcert`, on the
//! platform's own TLS through native-tls (OpenSSL on Linux, SChannel on
//! Windows, Security.framework on macOS).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and leaves
//! the checking of the server's certificate to the connector: `verify-ca`
//! and `verify-full` are `require` with a connector that checks the chain,
//! and for `verify-full` the host name too.

use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode;

/// The modes accepted, for messages.
const MODES: &str = "disable, prefer, require, verify-ca or verify-full";

/// libpq's `sslmode`, as far as this crate serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, else without (libpq's default).
    Prefer,
    /// TLS, whatever certificate the server shows.
    Require,
    /// TLS, with a certificate signed by a trusted root.
    VerifyCa,
    /// [`Mode::VerifyCa`], for the host name connected to.
    VerifyFull,
}

impl Mode {
    /// The mode as a URL names it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// `sslmode=VALUE`; an error says which values there are.
    pub fn parse(value: &str) -> Result<Mode, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => {
                return Err(format!(
                    "sslmode={value} is not a mode: use {MODES} (libpq's)"
                ));
            }
        })
    }
}

/// The roots the server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The system's (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// Only the certificates in this PEM file (`sslrootcert=PATH`).
    File(String),
}

impl Roots {
    pub fn parse(value: Option<String>) -> Roots {
        match value {
            None => Roots::System,
            Some(value) if value == "system" => Roots::System,
            Some(path) => Roots::File(path),
        }
    }
}

/// What a URL asks of TLS: the mode tokio-postgres is given, the connector
/// it uses, and what that connector checks of the server's certificate.
#[derive(Clone)]
pub(crate) struct Tls {
    pub ssl_mode: SslMode,
    pub connector: MakeTlsConnector,
    /// What the certificate must be, for a message when it is not; `None`
    /// when it is not checked.
    pub checks: Option<String>,
}

/// The TLS settings for `mode` and `roots`: reads the root file, if any.
pub(crate) fn connector(mode: Mode, roots: &Roots) -> Result<Tls, String> {
    // As libpq: under prefer and require the certificate is taken as it is,
    // unless a root file is named, which makes them check the chain.
    let (ssl_mode, check_chain, check_host) = match (mode, roots) {
        (Mode::Disable, _) => (SslMode::Disable, false, false),
        (Mode::Prefer, Roots::System) => (SslMode::Prefer, false, false),
        (Mode::Prefer, Roots::File(_)) => (SslMode::Prefer, true, false),
        (Mode::Require, Roots::System) => (SslMode::Require, false, false),
        (Mode::Require | Mode::VerifyCa, _) => (SslMode::Require, true, false),
        (Mode::VerifyFull, _) => (SslMode::Require, true, true),
    };
    let mut builder = native_tls::TlsConnector::builder();
    builder
        .danger_accept_invalid_certs(!check_chain)
        .danger_accept_invalid_hostnames(!check_host);
    if let Roots::File(path) = roots {
        builder.disable_built_in_roots(true);
        for cert in read_roots(path)? {
            builder.add_root_certificate(cert);
        }
    }
    let connector = builder
        .build()
        .map_err(|error| format!("couldn't set up TLS: {error}"))?;
    let signer = match roots {
        Roots::File(path) => format!("by a root in sslrootcert={path}"),
        Roots::System => {
            "by one of the system's roots (name the server's CA with sslrootcert=PATH)".to_owned()
        }
    };
    let checks = check_chain.then(|| {
        let host = if check_host { " and name the host" } else { "" };
        format!(
            "under sslmode={} the server's certificate must be signed {signer}{host}",
            mode.name()
        )
    });
    Ok(Tls {
        ssl_mode,
        connector: MakeTlsConnector::new(connector),
        checks,
    })
}

/// A connection's failure told plainly when TLS refused the server's
/// certificate: what the platform found wrong, and what the URL asked for.
pub(crate) fn explain(error: &tokio_postgres::Error, tls: &Tls) -> Option<String> {
    let checks = tls.checks.as_deref()?;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<native_tls::Error>() {
            let text = refused.to_string();
            // OpenSSL's text ends with the verification's verdict in
            // parentheses ("(unable to get local issuer certificate)"): that
            // is the part that says something.
            let verdict = text
                .rsplit_once(" (")
                .and_then(|(_, tail)| tail.strip_suffix(')'))
                .unwrap_or(&text);
            return Some(format!(
                "TLS refused the server's certificate ({verdict}): {checks}"
            ));
        }
        source = cause.source();
    }
    None
}

/// The certificates of a PEM file, at least one.
fn read_roots(path: &str) -> Result<Vec<native_tls::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|error| {
        format!("sslrootcert={path}: couldn't read it: {error}; name a PEM file of the root certificates to trust")
    })?;
    let certs = native_tls::Certificate::stack_from_pem(&pem)
        .map_err(|error| format!("sslrootcert={path}: not PEM certificates: {error}"))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert={path}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpqs_modes_and_names_them_for_others() {
        assert_eq!(Mode::parse("verify-full"), Ok(Mode::VerifyFull));
        assert_eq!(Mode::parse("verify-ca"), Ok(Mode::VerifyCa));
        let message = Mode::parse("verify_full").unwrap_err();
        assert!(
            message.starts_with("sslmode=verify_full is not a mode"),
            "{message}"
        );
        assert!(message.contains("verify-full"), "{message}");
    }

    #[test]
    fn maps_verification_onto_require() {
        for (mode, expected) in [
            (Mode::Disable, SslMode::Disable),
            (Mode::Prefer, SslMode::Prefer),
            (Mode::Require, SslMode::Require),
            (Mode::VerifyCa, SslMode::Require),
            (Mode::VerifyFull, SslMode::Require),
        ] {
            assert_eq!(connector(mode, &Roots::System).unwrap().ssl_mode, expected);
        }
    }

    #[test]
    fn a_root_file_that_is_missing_or_empty_is_named() {
        let message = connector(
            Mode::VerifyFull,
            &Roots::File("/nonexistent/root.crt".into()),
        )
        .err()
        .unwrap();
        assert!(message.starts_with("sslrootcert=/nonexistent/root.crt: couldn't read it"));
        let dir = std::env::temp_dir().join(format!("lockfile-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let path = empty.to_str().unwrap().to_owned();
        let message = connector(Mode::VerifyCa, &Roots::File(path.clone()))
            .err()
            .unwrap();
        assert!(
            message.starts_with(&format!("sslrootcert={path}: ")),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
