//! Connection URLs: parsed by tokio-postgres as libpq parses them, shown
//! without their password, and given the timeouts a lock needs.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::Host;

use crate::Error;
use crate::tls::{self, Mode, Roots, Tls};

/// How long a TCP connection attempt may take, unless the URL says
/// (`connect_timeout`): libpq's default is to wait forever.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keepalive probes start after this much silence (`keepalives_idle`): with
/// [`KEEPALIVE_INTERVAL`] and [`KEEPALIVE_RETRIES`] a silent dead peer is
/// noticed within about 4 s even by an idle session.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
/// The time between keepalive probes (`keepalives_interval`).
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes before the kernel drops the connection (`keepalives_retries`).
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the kernel drops the
/// connection (`tcp_user_timeout`, Linux): bounds a heartbeat sent into a
/// dead network.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed URL, and how to show it.
#[derive(Clone)]
pub(crate) struct DbUrl {
    pub config: Config,
    /// TLS as `sslmode` and `sslrootcert` ask (unused under `disable`);
    /// cancel requests go through it too, as libpq sends them.
    pub tls: Tls,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Parses a `postgres://` or `postgresql://` URL as libpq accepts it, and
/// fills in the timeouts the URL leaves unset.
pub(crate) fn parse(url: &str) -> Result<DbUrl, Error> {
    let invalid = |shown: &str, reason: String| Error::InvalidUrl {
        url: shown.to_owned(),
        reason,
    };
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(invalid(
            "",
            "expected postgres://[USER[:PASSWORD]@]HOST[:PORT]/DBNAME (a key=value connection string is not accepted)".into(),
        ));
    };
    if scheme != "postgres" && scheme != "postgresql" {
        // Nothing but the scheme is shown: an unknown syntax may hide a
        // password anywhere.
        return Err(invalid(
            &format!("{scheme}://..."),
            "the scheme must be postgres:// or postgresql://".into(),
        ));
    }
    let shown = redact(url);
    // tokio-postgres knows neither verify-ca and verify-full nor sslrootcert:
    // they are read here, and the rest of the URL is its.
    let (url, tls_params) = take_params(url, &["sslmode", "sslrootcert"]);
    let [mode, roots] = tls_params;
    let decoded = |key: &str, value: Option<String>| {
        value
            .map(|value| {
                percent_decode(&value).ok_or_else(|| {
                    invalid(
                        &shown,
                        format!("{key}={value}: not valid percent-encoded UTF-8"),
                    )
                })
            })
            .transpose()
    };
    let mode = match decoded("sslmode", mode)? {
        Some(mode) => Mode::parse(&mode).map_err(|reason| invalid(&shown, reason))?,
        None => Mode::Prefer,
    };
    let roots = Roots::parse(decoded("sslrootcert", roots)?);
    let mut config =
        Config::from_str(&url).map_err(|e| invalid(&shown, crate::error::describe(&e)))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(invalid(
            &shown,
            "no host: name one (postgres://HOST/DBNAME) or a socket directory (?host=/run/postgresql)".into(),
        ));
    }
    let mode = mode_for_hosts(mode, &config).map_err(|reason| invalid(&shown, reason))?;
    let tls = tls::connector(mode, &roots).map_err(|reason| invalid(&shown, reason))?;
    config.ssl_mode(tls.ssl_mode);
    let url = url.as_str();
    let set = query_keys(url);
    let unset = |key: &str| !set.iter().any(|k| k == key);
    if unset("connect_timeout") {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let tcp = config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)))
        || !config.get_hostaddrs().is_empty();
    if tcp {
        if unset("keepalives_idle") {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if unset("keepalives_interval") {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if unset("keepalives_retries") {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        if unset("tcp_user_timeout") {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
    }
    if unset("application_name") {
        config.application_name("lockfile");
    }
    Ok(DbUrl { config, tls, shown })
}

/// `mode`, where the hosts allow TLS. TLS needs the server's host name
/// (tokio-postgres checks the certificate against it, and will not start
/// TLS without one): as libpq, `sslmode` does nothing on Unix sockets, and
/// `prefer` connects without TLS when only addresses (`hostaddr`) are given;
/// the modes that require TLS then need a host name.
fn mode_for_hosts(mode: Mode, config: &Config) -> Result<Mode, String> {
    let named = config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
    let addressed = !config.get_hostaddrs().is_empty();
    if named || mode == Mode::Disable {
        return Ok(mode);
    }
    if !addressed {
        // Unix sockets only.
        return Ok(Mode::Disable);
    }
    match mode {
        Mode::Prefer => Ok(Mode::Disable),
        _ => Err(format!(
            "sslmode={} needs the server's host name for TLS: give host=NAME beside hostaddr",
            mode.name()
        )),
    }
}

/// The URL without the query parameters `keys`, and their values as written
/// (the last one of each, as libpq takes it).
fn take_params<const N: usize>(url: &str, keys: &[&str; N]) -> (String, [Option<String>; N]) {
    let mut values = [const { None }; N];
    let query_at = query_start(url);
    let Some(query_at) = query_at else {
        return (url.to_owned(), values);
    };
    let mut kept = Vec::new();
    for pair in url[query_at + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match keys.iter().position(|k| *k == key) {
            Some(i) => values[i] = Some(value.to_owned()),
            None => kept.push(pair),
        }
    }
    let mut rest = url[..query_at].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, values)
}

/// Where the query string starts (its `?`): the first `?` after the
/// credentials, which end at the first `@` as tokio-postgres reads them.
fn query_start(url: &str) -> Option<usize> {
    let after = url.find('@').map_or(0, |at| at + 1);
    url[after..].find('?').map(|q| after + q)
}

/// `%XX` escapes decoded, as tokio-postgres decodes parameter values; `None`
/// for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL without its password: `postgres://user:secret@host/db` becomes
/// `postgres://user@host/db`, and a `password=` parameter is left out.
///
/// The credentials end at the first `@`, as tokio-postgres (and libpq) read
/// them, so a password holding `/` or `?` is still cut whole.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let rest = match rest.split_once('@') {
        Some((credentials, after)) => {
            let user = credentials
                .split_once(':')
                .map_or(credentials, |(user, _)| user);
            format!("{user}@{after}")
        }
        None => rest.to_owned(),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest.as_str(), None),
    };
    let mut shown = format!("{scheme}://{base}");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split('=').next() != Some("password"))
            .collect();
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
    }
    shown
}

/// The parameter names in the URL's query string.
fn query_keys(url: &str) -> Vec<String> {
    let Some(query_at) = query_start(url) else {
        return Vec::new();
    };
    url[query_at + 1..]
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_everywhere() {
        for (url, shown) in [
            (
                "postgres://lockfile:s3cret@127.0.0.1:5432/db",
                "postgres://lockfile@127.0.0.1:5432/db",
            ),
            (
                "postgresql://u:pa/ss?w@host/db?sslmode=disable",
                "postgresql://u@host/db?sslmode=disable",
            ),
            (
                "postgres://u@host/db?password=s3cret&sslmode=disable",
                "postgres://u@host/db?sslmode=disable",
            ),
            ("postgres://host/db?password=s3cret", "postgres://host/db"),
            ("postgres://host/db", "postgres://host/db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn fills_in_timeouts_the_url_leaves_unset() {
        let url = parse("postgres://u:p@localhost/db").unwrap();
        assert_eq!(url.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(url.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(url.config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(url.config.get_application_name(), Some("lockfile"));
        let url = parse("postgres://u@localhost/db?keepalives_idle=30&connect_timeout=2").unwrap();
        assert_eq!(url.config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            url.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
    }

    #[test]
    fn accepts_what_libpq_accepts() {
        for url in [
            "postgres://u@localhost/db",
            "postgresql://u:p@[::1]:5433/db?sslmode=prefer",
            "postgresql://u@%2Frun%2Fpostgresql/db",
            "postgresql:///db?host=/run/postgresql&user=u",
            "postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgres://u@localhost/db?sslmode=disable",
            "postgres://u@localhost/db?sslmode=require",
            "postgres://u@localhost/db?sslmode=verify-ca",
            "postgres://u@localhost/db?sslmode=verify-full&sslrootcert=system",
        ] {
            assert!(parse(url).is_ok(), "{url}: {:?}", parse(url).err());
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_for_tokio_postgres() {
        let (rest, [mode, root]) = take_params(
            "postgres://u:p?w@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fa%20b",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "postgres://u:p?w@h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(
            root.as_deref().and_then(percent_decode).as_deref(),
            Some("/a b")
        );
        let (rest, [mode]) = take_params("postgres://h/db?sslmode=require", &["sslmode"]);
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("postgres://h/db", Some("require"))
        );
        let url = parse("postgres://u@localhost/db?sslmode=verify-full").unwrap();
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let url = parse("postgres://u@localhost/db").unwrap();
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn tls_only_where_there_is_a_host_name() {
        use tokio_postgres::config::SslMode;
        let mode = |url: &str| parse(url).map(|url| url.config.get_ssl_mode());
        // libpq ignores sslmode on Unix sockets, where the server offers no TLS.
        assert_eq!(
            mode("postgresql:///db?host=/run/postgresql&sslmode=verify-full").unwrap(),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres:///db?hostaddr=127.0.0.1").unwrap(),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://localhost/db?hostaddr=127.0.0.1&sslmode=verify-full").unwrap(),
            SslMode::Require
        );
        let message = mode("postgres:///db?hostaddr=127.0.0.1&sslmode=require")
            .unwrap_err()
            .to_string();
        assert!(
            message.ends_with("sslmode=require needs the server's host name for TLS: give host=NAME beside hostaddr"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_sslmode_is_named_with_the_accepted_ones() {
        let message = parse("postgres://u@localhost/db?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "invalid lock database URL 'postgres://u@localhost/db?sslmode=allow': sslmode=allow is not a mode: use disable, prefer, require, verify-ca or verify-full (libpq's)"
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve_in_one_line_without_the_password() {
        for url in [
            "host=localhost password=s3cret",
            "mysql://u:s3cret@host/db",
            "postgres://u:s3cret@host/db?sslmode=bogus",
            "postgres://u:s3cret@host/db?sslmode=verify-full&sslrootcert=%2Fno%2Fsuch.crt",
            "postgres://u:s3cret@host/db?sslrootcert=%ZZ",
            "postgres://u:s3cret@host:notaport/db",
            "postgres://u:s3cret@/db",
            "postgres://u:s3cret@host/db?nosuchoption=1",
        ] {
            let message = parse(url).unwrap_err().to_string();
            assert!(!message.contains("s3cret"), "{message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(
                message.starts_with("invalid lock database URL"),
                "{message}"
            );
        }
    }
}
