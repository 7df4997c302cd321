//! Admission: whoever reaches a listener acts as the service account, so before a request
//! is queued, a token touched or a byte forwarded, it must come from the local user's own
//! programs — not from a web page that rebound a DNS name to this machine (`Host`), nor
//! from another site's page (`Origin`, `Sec-Fetch-Site`) — be framed unambiguously (one
//! `Host`, only chunked transfer coding), ask only for upgrades the proxy tunnels, and carry
//! the client secret when the listener has one.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Version, header};

use super::client_secret::{ClientSecret, SECRET_HEADER};
use super::error::{ProxyError, Refused};
use super::upgrade;
use crate::config::{AllowedHosts, AllowedOrigins, RouteSettings, SEC_FETCH_SITE};
use crate::ops::throttle::Throttle;

/// One warning per kind of refusal per this period: a refusal is a client's doing.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What one route admits.
pub(crate) struct Admission {
    route: Arc<str>,
    hosts: AllowedHosts,
    origins: AllowedOrigins,
    upgrades: Vec<String>,
    /// Off on Unix sockets: file permissions decide who connects, and no browser can.
    check_host: bool,
    secret: Option<ClientSecret>,
    host_warnings: Throttle,
    origin_warnings: Throttle,
}

impl Admission {
    pub(crate) fn new(
        route: &RouteSettings,
        unix_socket: bool,
        secret: Option<ClientSecret>,
    ) -> Admission {
        Admission {
            route: route.name.as_str().into(),
            hosts: route.allowed_hosts.clone(),
            origins: route.allowed_origins.clone(),
            upgrades: route.allowed_upgrades.clone(),
            check_host: !unix_socket,
            secret,
            host_warnings: Throttle::new(WARN_EVERY),
            origin_warnings: Throttle::new(WARN_EVERY),
        }
    }

    /// The request, admitted (without the client secret), or why it goes no further.
    pub(crate) fn admit<B>(&self, mut req: Request<B>) -> Result<Request<B>, ProxyError> {
        match self.check(&mut req) {
            Ok(()) => Ok(req),
            Err(refused) => {
                tracing::debug!(code = refused.code(), error = %refused, "request refused");
                Err(refused)
            }
        }
    }

    /// Admits the request (removing the client secret from it) or says why not.
    pub(crate) fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        if req.method() == Method::CONNECT {
            // Its authority is a tunnel's target, not a name of this listener: say what is
            // wrong rather than refusing the Host.
            return Err(ProxyError::BadRequest(
                "CONNECT is not supported: iap-proxy forwards plain requests to its one configured upstream".into(),
            ));
        }
        let headers = req.headers();
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(Refused::DuplicateHost.into());
        }
        if req.version() <= Version::HTTP_11 {
            transfer_coding(headers)?;
        }
        // The name the browser used: Host, or h2's :authority (which hyper puts in the URI)
        // when there is no Host. An absolute-form target's authority is not it: browsers
        // send that form only to a proxy they were told to use, and the upstream is fixed.
        let named = host
            .map(HeaderValue::as_bytes)
            .or(req.uri().authority().map(|a| a.as_str().as_bytes()));
        if let Some(named) = named.filter(|_| self.check_host) {
            if !std::str::from_utf8(named).is_ok_and(|h| self.hosts.allows(h)) {
                let host = Refused::quoted(named);
                if let Some(suppressed) = self.host_warnings.permit() {
                    tracing::warn!(route = %self.route, %host, suppressed, "refused a request naming a Host this listener does not answer to (a DNS rebinding attempt, or a name to add to allowed_hosts)");
                }
                return Err(Refused::Host { host }.into());
            }
        }
        let site = headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes);
        if site.is_some_and(|s| s.eq_ignore_ascii_case(b"cross-site")) {
            self.warn_origin("cross-site (Sec-Fetch-Site)");
            return Err(Refused::CrossSite.into());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own_host = named.and_then(|h| std::str::from_utf8(h).ok());
            let allowed = origin
                .to_str()
                .is_ok_and(|o| self.origins.allows(o, own_host));
            if !allowed {
                let origin = Refused::quoted(origin.as_bytes());
                self.warn_origin(&origin);
                return Err(Refused::Origin { origin }.into());
            }
        }
        if let Some(protocols) = upgrade::asked(req) {
            for p in protocols.split(',').map(str::trim) {
                let name = p.split('/').next().unwrap_or(p).to_ascii_lowercase();
                let tunnelled =
                    matches!(name.as_str(), "websocket" | "h2c") || self.upgrades.contains(&name);
                if !tunnelled {
                    return Err(Refused::Upgrade {
                        protocol: Refused::quoted(p.as_bytes()),
                    }
                    .into());
                }
            }
        }
        let presented = req.headers_mut().remove(SECRET_HEADER);
        if let Some(secret) = &self.secret {
            if !presented
                .as_ref()
                .is_some_and(|v| secret.matches(v.as_bytes()))
            {
                return Err(ProxyError::ClientSecret {
                    presented: presented.is_some(),
                });
            }
        }
        Ok(())
    }

    fn warn_origin(&self, origin: &str) {
        if let Some(suppressed) = self.origin_warnings.permit() {
            tracing::warn!(route = %self.route, %origin, suppressed, "refused a cross-origin request from a web page (add its origin to allowed_origins if the page is yours)");
        }
    }
}

/// Only `chunked` frames a request body unambiguously here: any other coding (`gzip,
/// chunked`) would reach the upstream decoded by nobody.
fn transfer_coding(headers: &HeaderMap) -> Result<(), Refused> {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    let chunked = first
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked");
    if chunked && values.next().is_none() {
        return Ok(());
    }
    let all: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| Refused::quoted(v.as_bytes()))
        .collect();
    Err(Refused::TransferCoding {
        coding: all.join(", "),
    })
}

/// The layer: a refused request is answered here and goes no further.
#[cfg(test)]
mod tests {
    use super::*;

    fn admission(hosts: &str, origins: &str, unix: bool) -> Admission {
        let mut route = crate::config::Settings::from_args(
            &["--upstream", "https://app.example.com", "--audience", "a"],
            &crate::config::Env::default(),
        )
        .unwrap()
        .routes
        .remove(0);
        route.allowed_hosts = AllowedHosts::parse(hosts).unwrap();
        route.allowed_origins = AllowedOrigins::parse(origins).unwrap();
        Admission::new(&route, unix, None)
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn code(a: &Admission, headers: &[(&str, &str)]) -> Option<&'static str> {
        a.check(&mut req(headers)).err().map(|e| e.code())
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn each_refusal_has_its_code() {
        let a = admission("sidecar", "http://localhost:3000", false);
        let table: &[Case] = &[
            (&[("host", "localhost:8080")], None),
            (&[], None),
            (&[("host", "sidecar:8080")], None),
            (
                &[("host", "attacker.example:8080")],
                Some("host-not-allowed"),
            ),
            (
                &[("host", "localhost"), ("host", "localhost")],
                Some("duplicate-host"),
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                ],
                None,
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:3000"),
                ],
                None,
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("origin", "https://evil.example"),
                ],
                Some("cross-origin"),
            ),
            (
                &[("host", "localhost:8080"), ("origin", "null")],
                Some("cross-origin"),
            ),
            (
                &[("host", "localhost:8080"), ("sec-fetch-site", "cross-site")],
                Some("cross-site"),
            ),
            (
                &[
                    ("host", "localhost:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
                None,
            ),
            (&[("transfer-encoding", "chunked")], None),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Some("unsupported-transfer-coding"),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Some("unsupported-transfer-coding"),
            ),
            (&[("connection", "upgrade"), ("upgrade", "websocket")], None),
            (
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                ],
                None,
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "tls/1.3")],
                Some("upgrade-not-allowed"),
            ),
        ];
        for (headers, want) in table {
            assert_eq!(code(&a, headers), *want, "{headers:?}");
        }
        // h2's :authority stands for Host when there is none.
        let h2 = &mut Request::get("http://attacker.example/x").body(()).unwrap();
        assert_eq!(
            a.check(h2).err().map(|e| e.code()),
            Some("host-not-allowed")
        );
        let h2 = &mut Request::get("http://localhost:8080/x").body(()).unwrap();
        assert!(a.check(h2).is_ok());
        // An absolute-form target goes to the fixed upstream whatever it names; Host decides.
        let absolute = &mut Request::get("http://other.example/x")
            .header("host", "localhost")
            .body(())
            .unwrap();
        assert!(a.check(absolute).is_ok());
        let connect = &mut Request::connect("other.example:443")
            .header("host", "other.example:443")
            .body(())
            .unwrap();
        assert_eq!(
            a.check(connect).err().map(|e| e.code()),
            Some("bad-request")
        );
    }

    #[test]
    fn unix_sockets_skip_only_the_host_check() {
        let a = admission("", "", true);
        assert_eq!(code(&a, &[("host", "x")]), None);
        assert_eq!(
            code(&a, &[("host", "x"), ("origin", "http://evil.example")]),
            Some("cross-origin")
        );
        assert_eq!(code(&a, &[("host", "x"), ("origin", "http://x")]), None);
    }

    #[test]
    fn the_secret_is_checked_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let mut a = admission("", "", false);
        a.secret = Some(ClientSecret::from_file(&path).unwrap());
        assert_eq!(code(&a, &[]), Some("client-secret"));
        assert_eq!(
            code(&a, &[("x-iap-proxy-secret", "wrong-wrong-wrong")]),
            Some("client-secret")
        );
        let mut ok = req(&[("x-iap-proxy-secret", "0123456789abcdef0123")]);
        assert!(a.check(&mut ok).is_ok());
        assert!(!ok.headers().contains_key("x-iap-proxy-secret"));
        let res = ProxyError::ClientSecret { presented: false }.into_response();
        assert_eq!(
            res.headers()[header::PROXY_AUTHENTICATE],
            "IapProxySecret realm=\"iap-proxy\", header=\"x-iap-proxy-secret\""
        );
    }
}
