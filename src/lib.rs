//! iap-proxy: a localhost proxy that puts a fresh Google IAP ID token on every request.
//!
//! # Layout
//! - `main.rs` — parse flags, load settings, start logging, bind, [`run`].
//! - [`config`] — flags > env `IAP_PROXY_*` > TOML file > defaults, validated all at once.
//! - [`auth`] — the [`auth::TokenSource`] trait, one file per credential source, and
//!   [`auth::cache`], the refresher that keeps one fresh token for every request.
//! - [`proxy`] — request rewriting and forwarding (a tower `Service`).
//! - [`headers`] — hop-by-hop, forwarding, token and `Location` header rules.
//! - [`upstream`] — trust roots and the pooled HTTPS clients.
//! - [`server`] — the listener, HTTP/1.1 + h2c, and the drain on shutdown.
//! - [`error`] — what the proxy answers itself, and with which status.
//! - [`telemetry`] — logging.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod headers;
pub mod proxy;
pub mod server;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::cache::RefreshPolicy;
use crate::auth::{AuthError, TokenCache, TokenHttp};
use crate::config::{Env, Settings};
use crate::proxy::Shared;
pub use crate::server::Drain;
use crate::server::ServerOptions;
use crate::upstream::{Clients, TlsError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot use upstream {upstream}: {reason}")]
    Upstream { upstream: String, reason: String },
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
}

/// Builds everything from `settings` and serves `listener` until `shutdown` resolves.
/// A bad credentials file or CA fails here, before a single request is accepted.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<Drain, StartError> {
    let tls = upstream::tls_config(settings.upstream_ca.as_deref())?;
    let source = auth::source_from_settings(
        settings.credentials.as_deref(),
        &settings.audience,
        &env,
        TokenHttp::new(tls.clone()),
    )?;
    let policy = RefreshPolicy {
        wait: settings.token_wait,
        ..RefreshPolicy::default()
    };
    let tokens = TokenCache::spawn(source, policy);
    let listen = listener.local_addr().map_err(StartError::Listener)?;
    let shared = Shared::new(
        settings.upstream.clone(),
        Clients::new(tls),
        tokens,
        settings.header,
        settings.rewrite_redirects,
        settings.upstream_timeout,
        settings.max_header_bytes,
        listen,
    )
    .map_err(|reason| StartError::Upstream {
        upstream: settings.upstream.to_string(),
        reason,
    })?;
    tracing::info!(%listen, upstream = %settings.upstream, audience = %settings.audience, header = ?settings.header, "iap-proxy listening");
    let opts = ServerOptions {
        shutdown_grace: settings.shutdown_grace,
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes,
        max_concurrent_requests: settings.max_concurrent_requests,
        max_connections: settings.max_connections,
    };
    Ok(server::serve(listener, Arc::new(shared), opts, shutdown).await)
}

/// Fetches one ID token, for `iap-proxy token`.
pub async fn fetch_token(
    audience: &str,
    credentials: Option<&std::path::Path>,
    upstream_ca: Option<&std::path::Path>,
    env: &Env,
) -> Result<auth::IdToken, StartError> {
    let tls = upstream::tls_config(upstream_ca)?;
    let source = auth::source_from_settings(credentials, audience, env, TokenHttp::new(tls))?;
    Ok(source.fetch().await?)
}
