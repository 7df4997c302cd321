//! Who may use a listener, as browsers name it: the `Host` a request carries and the
//! `Origin` of the page that sent it.
//!
//! A page on another site can make a browser send requests to the proxy (a cross-site
//! POST needs no CORS preflight), and a DNS name rebound to 127.0.0.1 makes such a page
//! same-origin with the proxy. Either way the request would leave signed as the service
//! account, so the data path admits only Hosts that cannot be rebound and Origins that are
//! the proxy's own.

use std::net::IpAddr;

use http::HeaderName;
use url::Url;

/// What a browser says of a request's relation to the page that sent it (`cross-site`,
/// `same-site`, `same-origin`, or `none` for the user's own navigation).
pub(crate) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The Hosts a listener answers to: `localhost`, IP address literals, and the names a
/// route lists (`allowed_hosts`). An IP literal cannot be rebound: a page whose origin is
/// an address of this machine was served by the proxy itself, so every address is safe —
/// which also lets Kubernetes probes and clients that use a pod's IP through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// A comma-separated list of DNS names (no port, no scheme), e.g. `iap-proxy,iap-proxy.ns.svc`.
    pub fn parse(list: &str) -> Result<AllowedHosts, String> {
        let mut names = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let name = item.trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !valid {
                return Err(format!(
                    "`{item}` is not a host name; list names only, without scheme or port, e.g. iap-proxy,iap-proxy.default.svc"
                ));
            }
            names.push(name);
        }
        Ok(AllowedHosts(names))
    }

    /// Every name any of `lists` holds.
    pub(crate) fn union<'a>(lists: impl Iterator<Item = &'a AllowedHosts>) -> AllowedHosts {
        let mut names: Vec<String> = lists.flat_map(|l| l.0.iter().cloned()).collect();
        names.sort();
        names.dedup();
        AllowedHosts(names)
    }

    /// Whether a request naming `authority` (a `Host` value or an absolute URI's authority,
    /// `host[:port]`) may use the listener. Any port is accepted: port forwarding
    /// (`docker -p`, `kubectl port-forward`) changes it legitimately.
    pub(crate) fn allows(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else {
            return false;
        };
        if host.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.0.contains(&name)
    }
}

/// The host of `host[:port]` or `[v6][:port]` (brackets removed); `None` when it is not a
/// plain authority (userinfo, path, spaces…).
fn host_of(authority: &str) -> Option<&str> {
    if authority.is_empty() || authority.contains(['@', '/', '?', '#', ' ', '\t', '\\']) {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return (port_ok && v6.parse::<std::net::Ipv6Addr>().is_ok()).then_some(v6);
    }
    match authority.split_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok().then_some(host),
        None => Some(authority),
    }
    .filter(|h| !h.is_empty())
}

/// Browser origins, besides the proxy's own, whose pages may send requests through it
/// (`allowed_origins`), e.g. a front end served by a local dev server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// A comma-separated list of origins, `scheme://host[:port]`.
    pub fn parse(list: &str) -> Result<AllowedOrigins, String> {
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let origin = Url::parse(item)
                .ok()
                .filter(|u| u.has_host() && matches!(u.path(), "" | "/"))
                .filter(|u| u.query().is_none() && u.fragment().is_none())
                .map(|u| u.origin().ascii_serialization());
            match origin {
                Some(o) => origins.push(o),
                None => {
                    return Err(format!(
                        "`{item}` is not an origin; write scheme://host[:port], e.g. http://localhost:3000"
                    ));
                }
            }
        }
        Ok(AllowedOrigins(origins))
    }

    /// Whether a request whose `Host` is `host` may come from a page of `origin`: the
    /// proxy's own origin (`http://` + the Host the browser used), or a listed one.
    pub(crate) fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let Some(origin) = normalize(origin) else {
            return false; // `null` (sandboxed frames, file: pages) or garbage
        };
        let own = host.and_then(|h| normalize(&format!("http://{h}")));
        own.as_deref() == Some(origin.as_str()) || self.0.contains(&origin)
    }
}

fn normalize(origin: &str) -> Option<String> {
    let url = Url::parse(origin).ok()?;
    url.has_host().then(|| url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_cannot_be_rebound_and_listed_names() {
        let listed = AllowedHosts::parse("iap-proxy, Sidecar.NS.svc.").unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "[::1]",
            "10.0.0.7:8080",
            "iap-proxy:8080",
            "sidecar.ns.svc",
        ] {
            assert!(listed.allows(ok), "{ok}");
        }
        for refused in [
            "attacker.example:8080",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "user@localhost",
            "localhost:notaport",
            "[::1",
            "",
            "iap-proxy.evil",
            "localhost/x",
        ] {
            assert!(!listed.allows(refused), "{refused}");
        }
        assert!(AllowedHosts::parse("http://x").is_err());
        assert!(AllowedHosts::parse("x:80").is_err());
        assert!(AllowedHosts::parse("a..b").is_err());
    }

    #[test]
    fn own_origin_and_listed_ones() {
        let none = AllowedOrigins::default();
        assert!(none.allows("http://localhost:8080", Some("localhost:8080")));
        assert!(none.allows("http://LOCALHOST:8080", Some("localhost:8080")));
        assert!(none.allows("http://127.0.0.1", Some("127.0.0.1:80")));
        assert!(!none.allows("http://localhost:3000", Some("localhost:8080")));
        assert!(!none.allows("https://localhost:8080", Some("localhost:8080")));
        assert!(!none.allows("http://attacker.example", Some("localhost:8080")));
        assert!(!none.allows("null", Some("localhost:8080")));
        assert!(!none.allows("http://localhost:8080", None));
        let dev = AllowedOrigins::parse("http://localhost:3000/, https://app.example.com").unwrap();
        assert!(dev.allows("http://localhost:3000", Some("localhost:8080")));
        assert!(dev.allows("https://app.example.com", Some("localhost:8080")));
        assert!(AllowedOrigins::parse("localhost:3000").is_err());
        assert!(AllowedOrigins::parse("http://x/path").is_err());
    }
}
