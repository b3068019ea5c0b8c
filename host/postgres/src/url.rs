//! Connection URLs: parsed by tokio-postgres as libpq parses them, shown
//! without their password, and given the timeouts a lock needs.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::{Host, SslMode};

use crate::Error;

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
    if let Some(mode) = query_value(url, "sslmode")
        && mode != "disable"
        && mode != "prefer"
    {
        return Err(invalid(
            &shown,
            format!(
                "sslmode={mode}: this build has no TLS; use sslmode=disable or prefer (prefer connects without TLS)"
            ),
        ));
    }
    let mut config =
        Config::from_str(url).map_err(|e| invalid(&shown, crate::error::describe(&e)))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(invalid(
            &shown,
            "no host: name one (postgres://HOST/DBNAME) or a socket directory (?host=/run/postgresql)".into(),
        ));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(invalid(
            &shown,
            "sslmode=require: this build has no TLS".into(),
        ));
    }
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
    Ok(DbUrl { config, shown })
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

/// The value of parameter `key` in the URL's query string, as written.
fn query_value<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let rest = url.split_once('@').map_or(url, |(_, after)| after);
    let (_, query) = rest.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value)
}

/// The parameter names in the URL's query string.
fn query_keys(url: &str) -> Vec<String> {
    // The query starts at the first `?` after the credentials.
    let rest = url.split_once('@').map_or(url, |(_, after)| after);
    let Some((_, query)) = rest.split_once('?') else {
        return Vec::new();
    };
    query
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
        ] {
            assert!(parse(url).is_ok(), "{url}: {:?}", parse(url).err());
        }
    }

    #[test]
    fn refuses_what_it_cannot_serve_in_one_line_without_the_password() {
        for url in [
            "host=localhost password=s3cret",
            "mysql://u:s3cret@host/db",
            "postgres://u:s3cret@host/db?sslmode=require",
            "postgres://u:s3cret@host/db?sslmode=bogus",
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
