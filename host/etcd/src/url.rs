//! The lock database URL for etcd: `etcd://` (plain gRPC) or `etcds://`
//! (TLS), one or more `HOST:PORT` endpoints, a user and password, and the CA
//! file that TLS trusts.

use std::path::PathBuf;

use crate::Error;

/// The port of an endpoint given without one: etcd's client port.
const DEFAULT_PORT: u16 = 2379;

/// A parsed URL.
#[derive(Clone)]
pub(crate) struct EtcdUrl {
    /// `http://HOST:PORT` or `https://HOST:PORT`, as etcd-client takes them.
    pub endpoints: Vec<String>,
    pub user: Option<(String, String)>,
    pub tls: bool,
    /// The PEM file of the roots that TLS trusts (`cacert=`), else the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl std::fmt::Debug for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Parses `etcd://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/][?cacert=PATH]`
/// (`etcds://` for TLS). Percent-escapes are decoded in the user, the
/// password and the CA file's path.
pub(crate) fn parse(url: &str) -> Result<EtcdUrl, Error> {
    let shown = redact(url);
    let invalid = |reason: String| Error::InvalidUrl {
        url: shown.clone(),
        reason,
    };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("etcds://") {
        (true, rest)
    } else {
        return Err(invalid(
            "an etcd URL starts with etcd:// (or etcds:// for TLS)".into(),
        ));
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(invalid(
            "an etcd URL has no path: etcd://HOST:PORT[,HOST:PORT...]".into(),
        ));
    }
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (name, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let name = decode(name).map_err(&invalid)?;
            if name.is_empty() {
                return Err(invalid("the user name before '@' is empty".into()));
            }
            (Some((name, decode(password).map_err(&invalid)?)), hosts)
        }
        None => (None, rest),
    };
    let scheme = if tls { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        endpoints.push(format!("{scheme}://{}", endpoint(host).map_err(&invalid)?));
    }
    let mut ca_file = None;
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        match pair.split_once('=') {
            Some(("cacert", path)) if tls && !path.is_empty() => {
                ca_file = Some(PathBuf::from(decode(path).map_err(&invalid)?));
            }
            Some(("cacert", _)) if !tls => {
                return Err(invalid(
                    "cacert= needs TLS: write etcds:// instead of etcd://".into(),
                ));
            }
            _ => {
                return Err(invalid(format!(
                    "unknown parameter {pair:?}: the one parameter is cacert=PATH (with etcds://)"
                )));
            }
        }
    }
    Ok(EtcdUrl {
        endpoints,
        user,
        tls,
        ca_file,
        shown,
    })
}

/// One `HOST[:PORT]`, checked: a name or an IPv4 address, or an IPv6
/// address in brackets.
fn endpoint(text: &str) -> Result<String, String> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (address, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("endpoint {text:?}: an IPv6 address lacks its ']'"))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "endpoint {text:?}: {address:?} is not an IPv6 address"
            ));
        }
        let port =
            match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("endpoint {text:?}: expected ':PORT' after the address")
                })?),
            };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let fine = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || !host.chars().all(fine) {
            return Err(format!(
                "endpoint {text:?}: expected HOST:PORT (a host name, an IPv4 address or [IPv6])"
            ));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("endpoint {text:?}: port {port:?} is not 1-65535")),
        },
    };
    Ok(format!("{host}:{port}"))
}

/// Decodes `%XX` escapes.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("a '%' not followed by two hex digits in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} decodes to bytes that are not UTF-8"))
}

/// The URL without the password between `:` and `@`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, hosts)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{scheme}://{user}@{hosts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> String {
        match parse(url) {
            Err(Error::InvalidUrl { reason, .. }) => reason,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn endpoints_users_and_tls() {
        let url = parse("etcd://10.0.0.1:2379,db-2,[::1]:32379/").unwrap();
        assert_eq!(
            url.endpoints,
            [
                "http://10.0.0.1:2379",
                "http://db-2:2379",
                "http://[::1]:32379"
            ]
        );
        assert!(!url.tls && url.user.is_none() && url.ca_file.is_none());
        let url =
            parse("etcds://app:s%40cret@etcd.internal:2379?cacert=/etc/ca%20file.pem").unwrap();
        assert_eq!(url.endpoints, ["https://etcd.internal:2379"]);
        assert_eq!(url.user, Some(("app".into(), "s@cret".into())));
        assert_eq!(url.ca_file, Some(PathBuf::from("/etc/ca file.pem")));
        assert_eq!(
            url.shown,
            "etcds://app@etcd.internal:2379?cacert=/etc/ca%20file.pem"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(reason("postgres://x").contains("etcd://"));
        assert!(reason("etcd://h:0").contains("not 1-65535"));
        assert!(reason("etcd://h:2379,,h2").contains("expected HOST:PORT"));
        assert!(reason("etcd://h/db").contains("no path"));
        assert!(reason("etcd://h?cacert=/ca.pem").contains("etcds://"));
        assert!(reason("etcds://h?sslmode=require").contains("unknown parameter"));
        assert!(reason("etcd://[::1:2379").contains("']'"));
        assert!(reason("etcd://:pw@h").contains("user name"));
        assert!(!format!("{:?}", parse("etcd://u:topsecret@h:1:2")).contains("topsecret"));
    }
}
