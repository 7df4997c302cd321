//! Start-up and the process's life: build every route (audience, token cache, upstream
//! clients), serve them, drain on shutdown.

mod error;
mod listeners;
mod ready;
mod reload;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use error::{BindTarget, StartError};
pub use listeners::Listeners;

use crate::auth::{self, TokenHttp};
use crate::config::{AllowedHosts, Env, Settings, TokenSettings};
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::Metrics;
use crate::outbound::clients::Clients;
use crate::outbound::egress::Egress;
use crate::outbound::tls;
use crate::proxy::admit::Admission;
use crate::proxy::client_secret::ClientSecret;
use crate::proxy::listener::{ListenAddr, Listener};
use crate::proxy::server::{self, Drain, ServerOptions};
use crate::proxy::shared::Shared;

/// Serves `settings`' first route on `listener` (other routes and the admin listener bind
/// their configured addresses) until `shutdown` resolves. A bad credentials file or CA
/// fails here, before a single request is accepted.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<Drain, StartError> {
    let listeners = Listeners::bind_after(Listener::Tcp(listener), &settings).await?;
    serve(listeners, settings, env, shutdown).await
}

/// Builds every route and serves them until `shutdown` (or `POST /quitquitquit`), then
/// drains: readiness turns 503 at once, serving goes on for `--max-sigterm-delay`, and
/// in-flight requests get `--shutdown-grace` to finish. Changed files are reloaded every
/// `--reload-interval`.
pub async fn serve(
    listeners: Listeners,
    settings: Settings,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<Drain, StartError> {
    serve_with_reload(
        listeners,
        settings,
        env,
        shutdown,
        futures_util::stream::pending(),
    )
    .await
}

/// [`serve`], also reloading the credentials, CA and client secret files at once on each
/// item of `reload` (the binary's SIGHUP).
pub async fn serve_with_reload(
    listeners: Listeners,
    settings: Settings,
    env: Env,
    shutdown: impl Future<Output = ()>,
    reload: impl Stream<Item = ()> + Unpin + Send + 'static,
) -> Result<Drain, StartError> {
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        routes = settings.routes.len(),
        "iap-proxy {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let tls = tls::client_config(settings.process.upstream_ca.as_deref())?;
    let egress = Egress::from_env(&env)?;
    let clients = Clients::new(tls.clone(), &egress, settings.process.upstream_liveness);
    let token_http = TokenHttp::with_egress(tls, &egress);
    let mut client_secrets = Vec::new();
    let metrics = Arc::new(Metrics::new());
    let mut caches = routes::Caches::default();
    let mut servers = Vec::new();
    let mut admin_routes = Vec::new();
    // Dropped (so aborted) whenever serve returns: each holds a handle on a token cache.
    let mut announcers = JoinSet::new();
    for (route, listener) in settings.routes.iter().zip(listeners.routes) {
        let audience = routes::audience(route, &clients).await?;
        let tokens = caches
            .get_or_spawn(
                route,
                &audience,
                &env,
                &token_http,
                &metrics,
                settings.process.metadata_wait,
            )
            .await?;
        let local = listener.local_addr().map_err(StartError::Listener)?;
        let listen_host = match &local {
            ListenAddr::Tcp(addr) => addr.to_string(),
            ListenAddr::Unix(_) => "localhost".to_string(),
        };
        let shared = Shared::new(
            route,
            &settings.process,
            clients.clone(),
            tokens.clone(),
            listen_host,
            &metrics,
        )?;
        let client_secret = match &route.client_secret_file {
            Some(path) => {
                let secret = ClientSecret::from_file(path)?;
                client_secrets.push((path.clone(), secret.clone()));
                Some(secret)
            }
            None => None,
        };
        tracing::info!(
            route = %route.name,
            listen = %local,
            upstream = %route.upstream,
            %audience,
            header = %route.header,
            client_secret = client_secret.is_some(),
            "iap-proxy listening"
        );
        announcers.spawn(ready::announce(
            route.name.clone(),
            ready::client_url(&local),
            audience.clone(),
            tokens.clone(),
        ));
        let name: Arc<str> = route.name.as_str().into();
        admin_routes.push((name.clone(), tokens));
        let opts = ServerOptions {
            shutdown_grace: settings.process.shutdown_grace,
            header_read_timeout: settings.process.header_read_timeout,
            max_header_bytes: settings.process.max_header_bytes,
            max_concurrent_requests: settings.process.max_concurrent_requests,
            max_queued_requests: settings.process.max_queued_requests,
            max_concurrent_streams: settings.process.max_concurrent_streams,
            client_idle_timeout: settings.process.client_idle_timeout,
            max_connections: settings.process.max_connections,
            access_log: settings.process.access_log,
            route: name,
            metrics: metrics.clone(),
            admission: Arc::new(Admission::new(
                route,
                matches!(local, ListenAddr::Unix(_)),
                client_secret,
            )),
        };
        servers.push((listener, Arc::new(shared), opts));
    }

    let reloads = reload::Reloads {
        credentials: std::mem::take(&mut caches.files),
        upstream_ca: settings.process.upstream_ca.clone(),
        routes: servers
            .iter()
            .map(|(_, shared, _)| shared.clone())
            .collect(),
        client_secrets,
        token_http,
        egress,
        env,
        metrics: metrics.clone(),
    };
    let files = reload::Files::new(reloads).await;
    let reload_task = tokio::spawn(reload::watch(
        files,
        settings.process.reload_interval,
        reload,
    ));

    let admin = AdminState {
        routes: admin_routes,
        draining: Arc::new(AtomicBool::new(false)),
        quit: Arc::new(Notify::new()),
        metrics,
        hosts: AllowedHosts::union(settings.routes.iter().map(|r| &r.allowed_hosts)),
    };
    let admin_task = listeners.admin.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "admin endpoints listening: /healthz /readyz /metrics POST /quitquitquit");
        }
        tokio::spawn(admin::serve(l, admin.clone()))
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drains =
        futures_util::future::join_all(servers.into_iter().map(|(listener, shared, opts)| {
            let mut stop = stop_rx.clone();
            server::serve(listener, shared, opts, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
        }));
    let stopper = async {
        let delay = tokio::select! {
            () = shutdown => settings.process.max_sigterm_delay,
            () = admin.quit.notified() => Duration::ZERO,
        };
        admin.draining.store(true, Ordering::SeqCst);
        if !delay.is_zero() {
            tracing::info!(
                delay_secs = delay.as_secs(),
                "not ready any more; still serving for --max-sigterm-delay"
            );
            tokio::time::sleep(delay).await;
        }
        let _ = stop_tx.send(true);
    };
    let (results, ()) = tokio::join!(drains, stopper);
    if let Some(task) = admin_task {
        task.abort();
    }
    reload_task.abort();
    Ok(if results.iter().all(|d| *d == Drain::Clean) {
        Drain::Clean
    } else {
        Drain::TimedOut
    })
}

/// Fetches one ID token, for `iap-proxy token`.
pub async fn fetch_token(settings: &TokenSettings, env: &Env) -> Result<auth::IdToken, StartError> {
    let tls = tls::client_config(settings.upstream_ca.as_deref())?;
    let http = TokenHttp::with_egress(tls, &Egress::from_env(env)?);
    // A self-signed JWT has no --audience: its audience is the upstream.
    let audience = match (&settings.audience, &settings.upstream) {
        (Some(audience), _) => audience.clone(),
        (None, Some(upstream)) => upstream.to_string(),
        (None, None) => String::new(),
    };
    let options = auth::SourceOptions {
        credentials: settings.credentials.as_deref(),
        credentials_from: &settings.credentials_from,
        metadata_wait: settings.metadata_wait,
        audience: &audience,
        impersonate: &settings.impersonate_service_account,
        iam_endpoint: &settings.iam_endpoint,
        token_kind: settings.token_kind,
        upstream: settings.upstream.as_ref(),
    };
    let chosen = auth::source_from_settings(&options, env, http).await?;
    Ok(chosen.source.fetch().await?)
}
