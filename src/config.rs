//! Settings: defaults < `--config FILE` (TOML) < env `IAP_PROXY_<KEY>` < flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Which request header carries the ID token to IAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader {
    Authorization,
    ProxyAuthorization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The process environment, injected so tests never call `set_var`.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars().collect())
    }
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Env(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.0
    }
}

/// Validated settings of the proxy command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub upstream: Url,
    pub audience: String,
    pub credentials: Option<PathBuf>,
    pub header: AuthHeader,
    pub upstream_ca: Option<PathBuf>,
    pub allow_non_loopback: bool,
    pub log_format: LogFormat,
    pub rewrite_redirects: bool,
    pub shutdown_grace: Duration,
    pub upstream_timeout: Duration,
    pub token_wait: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_requests: usize,
}

impl Settings {
    /// Settings for tests and embedders: defaults for everything but the three essentials.
    pub fn new(upstream: Url, audience: impl Into<String>) -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream,
            audience: audience.into(),
            credentials: None,
            header: AuthHeader::Authorization,
            upstream_ca: None,
            allow_non_loopback: false,
            log_format: LogFormat::Text,
            rewrite_redirects: true,
            shutdown_grace: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(60),
            token_wait: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 4096,
        }
    }
}
