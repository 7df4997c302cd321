//! One request's way: rewrite it for the fixed upstream, put the token on it, forward it,
//! and stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::uri::{Authority, InvalidUri, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use url::Url;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::body::ResBody;
use super::error::ProxyError;
use super::{headers, refusal, upgrade};
use crate::auth::TokenCache;
use crate::config::{AuthHeader, RouteSettings};
use crate::iap;
use crate::ops::metrics::{Metrics, RouteLabels};
use crate::outbound::body::{CountingBody, ReqBody};
use crate::outbound::chain;
use crate::outbound::clients::{Clients, UpstreamClient};

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
    /// Used in rewritten redirects when the client sent no Host.
    pub(crate) listen_host: String,
    /// This route's metric handles, looked up once rather than per request.
    upstream_latency: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    iap_refusals: Counter,
    route: Arc<str>,
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
        max_header_bytes: usize,
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
        let iap_refusals = metrics.iap_refusals.get_or_create(&labels).clone();
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
            max_header_bytes,
            listen_host,
            upstream_latency: metrics.upstream_latency.get_or_create(&labels).clone(),
            bytes_in: metrics.bytes_in.get_or_create(&labels).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&labels).clone(),
            iap_refusals,
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

/// The per-connection service: knows the client's address for X-Forwarded-For.
#[derive(Clone)]
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    client: Option<SocketAddr>,
}

impl Proxy {
    pub(crate) fn new(shared: Arc<Shared>, client: Option<SocketAddr>) -> Proxy {
        Proxy { shared, client }
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
        Box::pin(async move {
            Ok(match forward(&shared, client, req).await {
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
    let replayable = replayable(&body);
    let body = CountingBody::new(body, shared.bytes_in.clone());
    let mut out = Request::new(Either::Left(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = shared.target_uri(&parts.uri)?;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = parts.headers;
    let h = out.headers_mut();
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

    let clients = shared.clients();
    let http = if client_version == Version::HTTP_2 && upgrade.is_none() {
        &clients.main
    } else {
        &clients.http1
    };
    // Kept only for a bodiless request, the one kind that can be sent again.
    let replay = replayable.then(|| {
        (
            out.method().clone(),
            out.uri().clone(),
            out.headers().clone(),
        )
    });
    let mut res = send(shared, http, out).await?;
    if iap::refused_token(res.status(), res.headers()) {
        let refused = refusal::Context {
            tokens: &shared.tokens,
            header: shared.header,
            route: &shared.route,
            counter: &shared.iap_refusals,
        };
        let resend = |again| send(shared, http, again);
        res = match refusal::after(refused, res, &token, replay, resend).await? {
            Ok(res) => res,
            Err(read) => return Ok(relay(shared, read, original_host.as_ref(), client_version)),
        };
    }

    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(upgrade::tunnel(client_upgrade, upstream_upgrade));
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

    Ok(relay(shared, res, original_host.as_ref(), client_version))
}

/// The upstream's answer as the client gets it: hop-by-hop headers off, redirects pointed
/// back at the proxy, the body streamed and counted.
fn relay<B>(
    shared: &Shared,
    res: Response<B>,
    original_host: Option<&HeaderValue>,
    client_version: Version,
) -> Response<ResBody>
where
    B: http_body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static,
{
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if shared.rewrite_redirects {
        if let Some(location) = parts.headers.get(header::LOCATION) {
            let host = original_host
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| shared.listen_host.clone());
            if let Some(new) = headers::rewrite_location(location, &shared.upstream, &host) {
                parts.headers.insert(header::LOCATION, new);
            }
        }
    }
    parts.version = client_version;
    let body = CountingBody::new(body, shared.bytes_out.clone());
    Response::from_parts(parts, body.boxed())
}

async fn send(
    shared: &Shared,
    http: &UpstreamClient,
    out: Request<ReqBody>,
) -> Result<Response<Incoming>, ProxyError> {
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(shared.upstream_timeout, http.request(out)).await;
    shared
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    match sent {
        Err(_elapsed) => Err(ProxyError::UpstreamTimeout {
            upstream: shared.upstream.to_string(),
            waited: shared.upstream_timeout,
        }),
        Ok(Err(err)) if err.is_connect() => Err(ProxyError::UpstreamConnect {
            upstream: shared.upstream.to_string(),
            reason: chain(&err),
        }),
        Ok(Err(err)) => Err(ProxyError::UpstreamFailed {
            upstream: shared.upstream.to_string(),
            reason: chain(&err),
        }),
        Ok(Ok(res)) => Ok(res),
    }
}

/// A request whose body is known to be empty (no Content-Length above 0, no chunked
/// body, or END_STREAM on HTTP/2 headers) can be sent again: nothing was consumed.
fn replayable<B: http_body::Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Empty, Full, StreamBody};

    #[test]
    fn only_empty_bodies_are_replayable() {
        assert!(replayable(&Empty::<Bytes>::new()));
        assert!(replayable(&Full::new(Bytes::new())));
        assert!(!replayable(&Full::new(Bytes::from_static(b"x"))));
        // A streamed body of unknown length is never replayed, even if it turns out empty.
        let stream = futures_util::stream::empty::<Result<http_body::Frame<Bytes>, Infallible>>();
        assert!(!replayable(&StreamBody::new(stream)));
    }
}
