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
//! - [`egress`] — `HTTPS_PROXY` / `NO_PROXY`: which connections tunnel through a proxy.
//! - [`discovery`] — finding the audience by asking the upstream (`--audience auto`).
//! - [`server`] — the listener, HTTP/1.1 + h2c, and the drain on shutdown.
//! - [`error`] — what the proxy answers itself, and with which status.
//! - [`telemetry`] — logging.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod auth;
pub mod check;
pub mod client_secret;
pub mod config;
pub mod discovery;
pub mod egress;
pub mod error;
pub mod headers;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::cache::RefreshPolicy;
use crate::auth::{AuthError, TokenCache, TokenHttp};
use crate::config::{Env, Settings, TokenSettings};
use crate::discovery::DiscoveryError;
use crate::egress::{Egress, EgressError};
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
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
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
    let egress = Egress::from_env(&env)?;
    let clients = Clients::with_egress(tls.clone(), &egress);
    let audience = match settings.explicit_audience() {
        Some(audience) => audience.to_owned(),
        None => {
            let found =
                discovery::discover(&clients.main, &settings.upstream, settings.upstream_timeout)
                    .await?;
            tracing::info!(audience = %found.audience(), how = ?found, "audience discovered");
            found.audience().to_owned()
        }
    };
    let options = auth::SourceOptions {
        credentials: settings.credentials.as_deref(),
        audience: &audience,
        impersonate: &settings.impersonate_service_account,
        iam_endpoint: &settings.iam_endpoint,
        token_kind: settings.token_kind,
        upstream: Some(&settings.upstream),
    };
    let source =
        auth::source_from_settings(&options, &env, TokenHttp::with_egress(tls.clone(), &egress))
            .await?;
    let policy = RefreshPolicy {
        wait: settings.token_wait,
        ..RefreshPolicy::default()
    };
    let tokens = TokenCache::spawn(source, policy);
    let listen = listener.local_addr().map_err(StartError::Listener)?;
    let shared = Shared::new(
        settings.upstream.clone(),
        clients,
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
    tracing::info!(%listen, upstream = %settings.upstream, %audience, header = ?settings.header, "iap-proxy listening");
    let opts = ServerOptions {
        shutdown_grace: settings.shutdown_grace,
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes,
        max_concurrent_requests: settings.max_concurrent_requests,
        route: "default".into(),
        metrics: Arc::new(metrics::Metrics::new()),
        client_secret: None,
    };
    Ok(server::serve(
        listener::Listener::Tcp(listener),
        Arc::new(shared),
        opts,
        shutdown,
    )
    .await)
}

/// Fetches one ID token, for `iap-proxy token`.
pub async fn fetch_token(settings: &TokenSettings, env: &Env) -> Result<auth::IdToken, StartError> {
    let tls = upstream::tls_config(settings.upstream_ca.as_deref())?;
    let http = TokenHttp::with_egress(tls, &Egress::from_env(env)?);
    let options = auth::SourceOptions {
        credentials: settings.credentials.as_deref(),
        audience: &settings.audience,
        impersonate: &settings.impersonate_service_account,
        iam_endpoint: &settings.iam_endpoint,
        token_kind: settings.token_kind,
        upstream: settings.upstream.as_ref(),
    };
    let source = auth::source_from_settings(&options, env, http).await?;
    Ok(source.fetch().await?)
}
