//! The typed values settings take, and the one rule for what counts as loopback.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use url::Host;

/// Whether `ip` is a loopback address; an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`)
/// counts as the IPv4 address it maps.
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a URL's host is loopback: a loopback IP, or `localhost` (with or without the
/// trailing dot of a fully qualified name), in any case.
pub(crate) fn is_loopback_host(host: Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => is_loopback_ip(ip.into()),
        Host::Ipv6(ip) => is_loopback_ip(ip.into()),
    }
}

/// A listen address as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// The TCP port, when this is a TCP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::Tcp(addr) => Some(addr.port()),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// Which request header carries the ID token to IAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthHeader {
    /// `Authorization: Bearer <token>` (the usual choice).
    Authorization,
    /// `Proxy-Authorization: Bearer <token>`, leaving `Authorization` to the application.
    ProxyAuthorization,
    /// `X-Serverless-Authorization: Bearer <token>`, for Cloud Run (which checks it before
    /// `Authorization`), leaving `Authorization` to the application.
    XServerlessAuthorization,
}

impl AuthHeader {
    pub fn header_name(self) -> http::HeaderName {
        match self {
            AuthHeader::Authorization => http::header::AUTHORIZATION,
            AuthHeader::ProxyAuthorization => http::header::PROXY_AUTHORIZATION,
            AuthHeader::XServerlessAuthorization => {
                http::HeaderName::from_static("x-serverless-authorization")
            }
        }
    }
}

impl fmt::Display for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header_name().as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// What kind of token the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum TokenKind {
    /// A Google-signed ID token for the audience (the usual choice).
    IdToken,
    /// A JWT the service account key signs itself, `aud` = the upstream origin + `/*`.
    SelfSignedJwt,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::IdToken => "id-token",
            TokenKind::SelfSignedJwt => "self-signed-jwt",
        })
    }
}

/// How the proxy notices dead upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLiveness {
    /// An idle pooled connection is closed after this long.
    pub idle_timeout: Duration,
    /// HTTP/2 PINGs this often (`None`: no PINGs), each answered within `ping_timeout`.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
}

impl Default for UpstreamLiveness {
    /// The defaults of the settings table.
    fn default() -> Self {
        UpstreamLiveness {
            idle_timeout: Duration::from_secs(50),
            ping_interval: Some(Duration::from_secs(15)),
            ping_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            let url = url::Url::parse(&format!("http://{host}/")).unwrap();
            assert!(is_loopback_host(url.host().unwrap()), "{host}");
        }
        for host in [
            "localhost.example",
            "10.0.0.1",
            "[::]",
            "[fe80::1]",
            "evil-localhost",
        ] {
            let url = url::Url::parse(&format!("http://{host}/")).unwrap();
            assert!(!is_loopback_host(url.host().unwrap()), "{host}");
        }
    }
}
