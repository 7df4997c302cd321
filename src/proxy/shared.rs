//! What every request of one route shares: the upstream target, the clients, the token
//! cache, the route's settings and metric handles.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, InvalidUri, PathAndQuery, Scheme};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::error::ProxyError;
use crate::auth::TokenCache;
use crate::config::{AuthHeader, ProcessSettings, RouteSettings};
use crate::ops::metrics::{Metrics, RetryLabels, RouteLabels};
use crate::outbound::clients::Clients;
use crate::outbound::retry::RetryReason;

/// Everything a request needs, shared by every connection of one route.
pub(crate) struct Shared {
    pub(crate) upstream: Url,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing slash, prefixed to every request path.
    base_path: String,
    /// Replaced whole when `--upstream-ca` is reloaded: requests in flight keep the pool
    /// they started with, new ones get the new pool.
    clients: RwLock<Arc<Clients>>,
    pub(crate) tokens: TokenCache,
    pub(crate) header: AuthHeader,
    pub(crate) rewrite_redirects: bool,
    pub(crate) upstream_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) stream_idle: Option<Duration>,
    pub(super) retry_buffer: usize,
    /// Cancelled when the drain's grace period runs out: every tunnel is closed then.
    pub(crate) tunnels: CancellationToken,
    /// Used in rewritten redirects when the client sent no Host.
    pub(crate) listen_host: String,
    /// This route's metric handles, looked up once rather than per request.
    pub(super) upstream_latency: Histogram,
    pub(super) bytes_in: Counter,
    pub(super) bytes_out: Counter,
    retries: [(RetryReason, Counter); 5],
    /// `iap_proxy_iap_refusals_total{route}`.
    pub(super) iap_refusals: Counter,
    pub(super) route: Arc<str>,
}

/// The configured upstream cannot be a request target: settings validated the URL, so this
/// is a scheme or host that `url` accepts and `http` does not.
#[derive(Debug, thiserror::Error)]
#[error("cannot use upstream {upstream} as a request target: {source}")]
pub struct UpstreamTarget {
    upstream: Url,
    source: InvalidUri,
}

impl Shared {
    pub(crate) fn new(
        route: &RouteSettings,
        process: &ProcessSettings,
        clients: Clients,
        tokens: TokenCache,
        listen_host: String,
        metrics: &Metrics,
    ) -> Result<Shared, UpstreamTarget> {
        let upstream = route.upstream.clone();
        let invalid = |source| UpstreamTarget {
            upstream: route.upstream.clone(),
            source,
        };
        let scheme = Scheme::try_from(upstream.scheme()).map_err(invalid)?;
        let host = upstream.host_str().unwrap_or_default();
        let authority = match upstream.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let authority = Authority::try_from(authority).map_err(invalid)?;
        let base_path = upstream.path().trim_end_matches('/').to_string();
        let labels = RouteLabels {
            route: route.name.as_str().into(),
        };
        let retries = [
            RetryReason::GoAway,
            RetryReason::RefusedStream,
            RetryReason::KeepAliveRace,
            RetryReason::TokenRefused,
            RetryReason::NotSent,
        ]
        .map(|reason| {
            let labels = RetryLabels {
                route: labels.route.clone(),
                reason: reason.label(),
            };
            (
                reason,
                metrics.upstream_retries.get_or_create(&labels).clone(),
            )
        });
        Ok(Shared {
            upstream,
            scheme,
            authority,
            base_path,
            clients: RwLock::new(Arc::new(clients)),
            tokens,
            header: route.header,
            rewrite_redirects: route.rewrite_redirects,
            upstream_timeout: route.upstream_timeout,
            max_header_bytes: process.max_header_bytes,
            stream_idle: process.stream_idle_timeout,
            retry_buffer: process.retry_buffer_bytes,
            tunnels: CancellationToken::new(),
            listen_host,
            upstream_latency: metrics.upstream_latency.get_or_create(&labels).clone(),
            bytes_in: metrics.bytes_in.get_or_create(&labels).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&labels).clone(),
            retries,
            iap_refusals: metrics.iap_refusals.get_or_create(&labels).clone(),
            route: labels.route,
        })
    }

    /// The upstream clients now (a reloaded CA replaces them).
    pub(crate) fn clients(&self) -> Arc<Clients> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts new upstream clients (a new pool) in use for the requests that start from now.
    pub(crate) fn replace_clients(&self, clients: Clients) {
        *self.clients.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(clients);
    }

    pub(super) fn count_retry(&self, reason: RetryReason) {
        if let Some((_, counter)) = self.retries.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    /// The upstream URI for a request: always the configured upstream, whatever authority
    /// the client named (an absolute-form request cannot steer the token elsewhere).
    pub(super) fn target_uri(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        let pq = uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let pq = if pq.starts_with('/') {
            pq.to_string()
        } else {
            format!("/{pq}")
        };
        let pq = PathAndQuery::try_from(format!("{}{pq}", self.base_path))
            .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream path: {e}")))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URI: {e}")))
    }
}
