//! One request's way: rewrite it for the fixed upstream, put the token on it, forward it,
//! and stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::uri::{Authority, InvalidUri, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use url::Url;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::body::{DownBody, ResBody};
use super::conn::ConnState;
use super::error::ProxyError;
use super::exchange::{Head, exchange};
use super::upgrade::TunnelOpts;
use super::{headers, upgrade};
use crate::auth::TokenCache;
use crate::config::{AuthHeader, ProcessSettings, RouteSettings};
use crate::ops::metrics::{Metrics, RetryLabels, RouteLabels};
use crate::outbound::activity::Activity;
use crate::outbound::body::Replay;
use crate::outbound::clients::Clients;
use crate::outbound::retry::RetryReason;

/// Everything a request needs, shared by every connection of one route.
pub(crate) struct Shared {
    pub(crate) upstream: Url,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing slash, prefixed to every request path.
    base_path: String,
    pub(crate) clients: Clients,
    pub(crate) tokens: TokenCache,
    pub(crate) header: AuthHeader,
    pub(crate) rewrite_redirects: bool,
    pub(crate) upstream_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) stream_idle: Option<Duration>,
    retry_buffer: usize,
    /// Cancelled when the drain's grace period runs out: every tunnel is closed then.
    pub(crate) tunnels: CancellationToken,
    /// Used in rewritten redirects when the client sent no Host.
    pub(crate) listen_host: String,
    /// This route's metric handles, looked up once rather than per request.
    pub(super) upstream_latency: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    retries: [(RetryReason, Counter); 4],
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
            clients,
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
        })
    }

    pub(super) fn count_retry(&self, reason: RetryReason) {
        if let Some((_, counter)) = self.retries.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    /// The upstream URI for a request: always the configured upstream, whatever authority
    /// the client named (an absolute-form request cannot steer the token elsewhere).
    fn target_uri(&self, uri: &Uri) -> Result<Uri, ProxyError> {
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

/// The per-connection service: knows the client's address for X-Forwarded-For, and its
/// connection (whose slot a tunnel keeps).
#[derive(Clone)]
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    client: Option<SocketAddr>,
    conn: Arc<ConnState>,
}

impl Proxy {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Option<SocketAddr>,
        conn: Arc<ConnState>,
    ) -> Proxy {
        Proxy {
            shared,
            client,
            conn,
        }
    }
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let client = self.client;
        let conn = self.conn.clone();
        Box::pin(async move {
            Ok(match forward(&shared, client, &conn, req).await {
                Ok(res) => res,
                Err(err) => {
                    tracing::warn!(code = err.code(), error = %err, "request not served by the upstream");
                    err.into_response()
                }
            })
        })
    }
}

async fn forward(
    shared: &Shared,
    client: Option<SocketAddr>,
    conn: &Arc<ConnState>,
    mut req: Request<Incoming>,
) -> Result<Response<ResBody>, ProxyError> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > shared.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: shared.max_header_bytes,
        });
    }
    let upgrade = upgrade::requested(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    // Fetch the token before touching the body: without one nothing is forwarded.
    let token = shared.tokens.get().await?;

    let client_version = req.version();
    let (parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut head = Head {
        method: parts.method,
        uri: shared.target_uri(&parts.uri)?,
        headers: parts.headers,
    };
    let h = &mut head.headers;
    headers::strip_hop_by_hop(h, true);
    h.remove(header::HOST);
    headers::set_forwarded(h, client.map(|c| c.ip()), original_host.as_ref());
    headers::set_token(h, shared.header, token.bearer());
    // Even the h2 client may land on an HTTP/1.1 upstream (ALPN), and one field is valid on h2.
    headers::join_cookies(h);
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }

    let http = if client_version == http::Version::HTTP_2 && upgrade.is_none() {
        &shared.clients.main
    } else {
        &shared.clients.http1
    };
    let activity = Activity::new();
    let replay = Replay::new(
        body,
        shared.retry_buffer,
        shared.bytes_in.clone(),
        activity.clone(),
    );
    let mut res = exchange(shared, http, head, token, &replay, &activity).await?;

    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(client_upgrade), Some(proto)) = (client_upgrade, &upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            conn.upgraded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let websocket = proto
                .to_str()
                .is_ok_and(|p| p.to_ascii_lowercase().contains("websocket"));
            let opts = TunnelOpts {
                slot: conn.slot.clone(),
                idle: shared.stream_idle,
                cut: shared.tunnels.clone(),
                websocket,
            };
            tokio::spawn(upgrade::tunnel(client_upgrade, upstream_upgrade, opts));
            let (mut parts, _) = res.into_parts();
            let proto = parts.headers.get(header::UPGRADE).cloned();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(proto) = proto {
                parts.headers.insert(header::UPGRADE, proto);
            }
            parts.version = client_version;
            return Ok(Response::from_parts(
                parts,
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            ));
        }
    }

    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if shared.rewrite_redirects {
        if let Some(location) = parts.headers.get(header::LOCATION) {
            let host = original_host
                .as_ref()
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| shared.listen_host.clone());
            if let Some(new) = headers::rewrite_location(location, &shared.upstream, &host) {
                parts.headers.insert(header::LOCATION, new);
            }
        }
    }
    parts.version = client_version;
    let body = DownBody::new(body, shared.bytes_out.clone(), activity, shared.stream_idle);
    Ok(Response::from_parts(parts, body.boxed()))
}
