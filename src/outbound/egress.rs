//! Egress through a corporate proxy: `HTTPS_PROXY` and `NO_PROXY` read with curl's rules and
//! applied to every outbound https connection, the upstream's and Google's alike.
//!
//! Only https targets are proxied (through an HTTP CONNECT tunnel, so TLS stays end to
//! end). Plain-http targets are the metadata server and loopback fakes, which curl would
//! send through `HTTP_PROXY`; we never read that variable, so they always go direct. The
//! metadata server is direct whatever the variables say: it is link-local by definition.
//! The matching itself is hyper-util's `Matcher` (curl's NO_PROXY rules: domains match
//! their subdomains, IPs and CIDRs, `*`), fed from the injected [`Env`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::ServiceExt;
use url::Url;

use crate::config::Env;

/// curl's default proxy port when the variable names none.
const DEFAULT_PROXY_PORT: u16 = 1080;
/// Hosts of the metadata server, which is never reached through a proxy.
const METADATA_HOSTS: [&str; 3] = ["metadata.google.internal", "metadata", "169.254.169.254"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(
        "{var} = {shown}: {reason}; use http://[user:password@]host:port of an HTTP CONNECT proxy"
    )]
    BadProxy {
        var: &'static str,
        /// The value with any password blanked out.
        shown: String,
        reason: String,
    },
}

/// Where outbound connections go: direct, or through one HTTP CONNECT proxy.
#[derive(Clone, Default)]
pub(crate) struct Egress {
    via: Option<Arc<ViaProxy>>,
}

struct ViaProxy {
    matcher: Matcher,
    /// The proxy as logs may show it: no credentials.
    shown: String,
    /// The metadata server's hosts, and port when `GCE_METADATA_HOST` names one: always direct.
    direct: Vec<(String, Option<u16>)>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.via {
            Some(r) => write!(f, "Egress(via {})", r.shown),
            None => f.write_str("Egress(direct)"),
        }
    }
}

impl Egress {
    /// Every connection direct.
    pub(crate) fn direct() -> Egress {
        Egress::default()
    }

    /// Reads `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY` (curl's order, first
    /// set wins) and `no_proxy` / `NO_PROXY`.
    pub(crate) fn from_env(env: &Env) -> Result<Egress, EgressError> {
        let Some((var, value)) = first(
            env,
            &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        ) else {
            return Ok(Egress::direct());
        };
        let no_proxy = first(env, &["no_proxy", "NO_PROXY"]).map(|(_, v)| v);
        let (normalized, shown) = parse_proxy(var, value)?;
        let Some(no) = no_proxy_entries(no_proxy.unwrap_or_default()) else {
            tracing::info!(proxy = %shown, "NO_PROXY is *: the proxy is not used");
            return Ok(Egress::direct());
        };
        let mut direct: Vec<(String, Option<u16>)> = METADATA_HOSTS
            .iter()
            .map(|h| (h.to_string(), None))
            .collect();
        // Read as discovery and the metadata source read it, so all three mean one server.
        let metadata = env.metadata_host();
        direct.push((metadata.host().to_owned(), metadata.port()));
        tracing::info!(proxy = %shown, no_proxy = %no, "https connections go through a proxy");
        let matcher = Matcher::builder().https(normalized).no(no).build();
        Ok(Egress {
            via: Some(Arc::new(ViaProxy {
                matcher,
                shown,
                direct,
            })),
        })
    }

    /// The proxy in use, without credentials.
    #[cfg(test)]
    fn proxy(&self) -> Option<&str> {
        self.via.as_ref().map(|r| r.shown.as_str())
    }

    /// Whether a connection to `dst` would go through the proxy.
    #[cfg(test)]
    fn proxied(&self, dst: &Uri) -> bool {
        self.via
            .as_ref()
            .is_some_and(|r| r.proxy_for(dst).is_some())
    }

    /// A connector that dials `http` directly or tunnels through the proxy, per target.
    pub(crate) fn connector(&self, http: HttpConnector) -> EgressConnector {
        EgressConnector {
            http,
            via: self.via.clone(),
        }
    }
}

impl ViaProxy {
    fn proxy_for(&self, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
        let host = dst.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let metadata = self
            .direct
            .iter()
            .any(|(h, p)| h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port));
        if metadata {
            return None;
        }
        self.matcher.intercept(dst)
    }
}

fn first<'a>(env: &'a Env, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
    names
        .iter()
        .find_map(|n| env.get(n).map(|v| (*n, v.trim())))
        .filter(|(_, v)| !v.is_empty())
}

/// Checks the proxy URL; returns it normalized (scheme and port explicit, credentials kept
/// for the matcher) and as shown in logs and errors (credentials removed).
fn parse_proxy(var: &'static str, value: &str) -> Result<(String, String), EgressError> {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let bad = |reason: &str, shown: String| EgressError::BadProxy {
        var,
        shown,
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| bad(&format!("not a URL ({e})"), redact_unparsed(value)))?;
    if url.port().is_none() {
        let _ = url.set_port(Some(DEFAULT_PROXY_PORT));
    }
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let shown = shown.as_str().trim_end_matches('/').to_owned();
    if url.scheme() != "http" {
        let reason = format!(
            "scheme {} is not supported (only http:// proxies, which tunnel with CONNECT)",
            url.scheme()
        );
        return Err(bad(&reason, shown));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host", shown));
    }
    Ok((url.as_str().trim_end_matches('/').to_owned(), shown))
}

/// An unparseable value may still hold `user:password@`: show only what follows the `@`.
fn redact_unparsed(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((_, host)) => format!("<credentials>@{host}"),
        None => value.to_owned(),
    }
}

/// NO_PROXY entries with any `:port` dropped (a port-qualified entry matches the host on
/// every port), or `None` when an entry is `*`: no proxy for anything.
fn no_proxy_entries(raw: &str) -> Option<String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return None;
        }
        out.push(strip_port(entry));
    }
    Some(out.join(","))
}

/// `host:port` → `host`, `[v6]:port` / `[v6]` → `v6`; a bare IPv6 address or CIDR is kept.
fn strip_port(entry: &str) -> String {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host.to_owned()
        }
        _ => entry.to_owned(),
    }
}

/// Dials directly or through the proxy's CONNECT tunnel; either way the caller gets a TCP
/// stream to wrap in TLS, so the proxy sees only the target's host and port.
#[derive(Clone)]
pub(crate) struct EgressConnector {
    http: HttpConnector,
    via: Option<Arc<ViaProxy>>,
}

/// A tunnel that could not be set up, naming the proxy (never its credentials).
#[derive(Debug, thiserror::Error)]
#[error("through proxy {proxy} to {target}: {source}")]
pub(crate) struct TunnelFailed {
    proxy: String,
    target: String,
    source: BoxError,
}

impl tower::Service<Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let via = self
            .via
            .as_ref()
            .and_then(|r| r.proxy_for(&dst).map(|i| (i, r.shown.clone())));
        match via {
            None => {
                let connecting = tower::Service::call(&mut self.http, dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Some((intercept, shown)) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), self.http.clone());
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    let target = format!(
                        "{}:{}",
                        dst.host().unwrap_or_default(),
                        dst.port_u16().unwrap_or(443)
                    );
                    tunnel.oneshot(dst).await.map_err(|source| {
                        Box::new(TunnelFailed {
                            proxy: shown,
                            target,
                            source: source.into(),
                        }) as BoxError
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(pairs: &[(&str, &str)]) -> Egress {
        Egress::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn via(e: &Egress, url: &str) -> bool {
        e.proxied(&url.parse::<Uri>().unwrap())
    }

    #[test]
    fn no_proxy_table() {
        let p = ("HTTPS_PROXY", "http://proxy.corp:3128");
        // (NO_PROXY, target, proxied?)
        let table: &[(&str, &str, bool)] = &[
            ("", "https://app.example.com/", true),
            ("", "https://127.0.0.1:8443/", true),
            ("", "https://[::1]:8443/", true),
            ("example.com", "https://example.com/", false),
            ("example.com", "https://app.example.com/", false),
            ("example.com", "https://notexample.com/", true),
            (".example.com", "https://app.example.com/", false),
            (".example.com", "https://example.com/", false),
            ("EXAMPLE.com", "https://App.Example.COM/", false),
            ("127.0.0.1", "https://127.0.0.1:8443/", false),
            ("127.0.0.1", "https://127.0.0.2:8443/", true),
            ("127.0.0.0/8", "https://127.9.9.9/", false),
            ("10.0.0.0/8, localhost", "https://localhost:1/", false),
            ("127.0.0.1:8443", "https://127.0.0.1:9999/", false),
            ("app.example.com:443", "https://app.example.com/", false),
            ("::1", "https://[::1]:8443/", false),
            ("[::1]:8443", "https://[::1]:8443/", false),
            ("*", "https://anything.example/", false),
            ("*", "https://10.1.2.3/", false),
            ("a.com,*,b.com", "https://c.com/", false),
            // Plain http never goes through HTTPS_PROXY (curl would use HTTP_PROXY).
            ("", "http://127.0.0.1:8080/token", false),
            // The metadata server is always direct.
            ("", "https://metadata.google.internal/", false),
            ("", "https://169.254.169.254/", false),
        ];
        for (no, target, proxied) in table {
            let e = egress(&[p, ("NO_PROXY", no)]);
            assert_eq!(via(&e, target), *proxied, "NO_PROXY={no:?} {target}");
        }
    }

    #[test]
    fn variables_in_curls_order() {
        assert!(egress(&[]).proxy().is_none());
        let e = egress(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
        ]);
        assert_eq!(e.proxy(), Some("http://lower:1"));
        let e = egress(&[("ALL_PROXY", "http://all:3")]);
        assert_eq!(e.proxy(), Some("http://all:3"));
        // HTTP_PROXY alone does nothing: only https targets are proxied.
        assert!(egress(&[("HTTP_PROXY", "http://p:1")]).proxy().is_none());
        let e = egress(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("no_proxy", "a"),
            ("NO_PROXY", "*"),
        ]);
        assert!(via(&e, "https://b/"), "lowercase no_proxy wins");
        let e = egress(&[("HTTPS_PROXY", "proxy.corp")]);
        assert_eq!(e.proxy(), Some("http://proxy.corp:1080"));
        let e = egress(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("GCE_METADATA_HOST", "10.9.9.9:8080"),
        ]);
        assert!(!via(&e, "https://10.9.9.9:8080/"));
    }

    #[test]
    fn bad_proxy_values_are_named_without_credentials() {
        for (value, needle) in [
            ("https://u:secret@p:1", "scheme https"),
            ("socks5://u:secret@p:1", "scheme socks5"),
            ("http://u:secret@:1", "not a URL"),
        ] {
            let env = Env::from_pairs([("HTTPS_PROXY", value)]);
            let err = Egress::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("HTTPS_PROXY"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let e = egress(&[("HTTPS_PROXY", "http://user:secret@p:3128")]);
        assert_eq!(e.proxy(), Some("http://p:3128"));
        assert!(!format!("{e:?}").contains("secret"));
    }

    #[test]
    fn strip_port_keeps_ipv6_and_cidr() {
        assert_eq!(strip_port("host:80"), "host");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("fe80::/10"), "fe80::/10");
        assert_eq!(strip_port("10.0.0.0/8"), "10.0.0.0/8");
    }
}
