//! The access log and per-request metrics, as a tower layer around the proxy service.
//!
//! The log line goes out when the response headers do (an SSE stream may never end).
//! [`CountingBody`] counts body bytes as they stream (used by the proxy for both directions).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use crate::error::ERROR_HEADER;
use crate::metrics::{Metrics, RequestLabels, origin, status_class};
use crate::proxy::ResBody;

const IAP_GENERATED: &str = "x-goog-iap-generated-response";

#[derive(Clone)]
pub struct AccessLogLayer {
    route: Arc<str>,
    metrics: Arc<Metrics>,
    remote: Option<SocketAddr>,
    /// `--access-log`: off by default, as in Envoy; a line per request costs more CPU than
    /// the rest of the proxy's work on a small request.
    log: bool,
}

impl AccessLogLayer {
    pub fn new(
        route: Arc<str>,
        metrics: Arc<Metrics>,
        remote: Option<SocketAddr>,
        log: bool,
    ) -> Self {
        AccessLogLayer {
            route,
            metrics,
            remote,
            log,
        }
    }
}

/// The method as a metrics label: the standard ones by name, the rest as `other`, so a
/// client cannot grow the series count.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// What the access log line needs from the request, taken only when it is on.
struct RequestFacts {
    method: Method,
    path: String,
    version: http::Version,
    request_size: Option<u64>,
    user_agent: Option<String>,
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    layer: AccessLogLayer,
}

impl<S, B> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(req.method());
        let facts = self.layer.log.then(|| RequestFacts {
            method: req.method().clone(),
            // The query is left out: it often carries identifiers or signed-URL secrets.
            path: req.uri().path().to_owned(),
            version: req.version(),
            request_size: content_length(req.headers()),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let status = res.status().as_u16();
            let who = if res.headers().contains_key(ERROR_HEADER) {
                origin::PROXY
            } else if res
                .headers()
                .get(IAP_GENERATED)
                .is_some_and(|v| v == "true")
            {
                origin::IAP
            } else {
                origin::APP
            };
            layer
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: layer.route.clone(),
                    method,
                    status_class: status_class(status),
                    origin: who,
                })
                .inc();
            if let Some(f) = facts {
                let latency = start.elapsed();
                tracing::info!(
                    target: "iap_proxy::access",
                    route = %layer.route,
                    origin = who,
                    "httpRequest.requestMethod" = %f.method,
                    "httpRequest.requestUrl" = %f.path,
                    "httpRequest.status" = status,
                    "httpRequest.latency" = %format_args!("{:.6}s", latency.as_secs_f64()),
                    "httpRequest.requestSize" = f.request_size,
                    "httpRequest.responseSize" = content_length(res.headers()),
                    "httpRequest.remoteIp" = layer.remote.map(|r| r.ip().to_string()),
                    "httpRequest.userAgent" = f.user_agent,
                    "httpRequest.protocol" = ?f.version,
                    "{} {} {status} {:.1}ms",
                    f.method,
                    f.path,
                    latency.as_secs_f64() * 1000.0
                );
            }
            Ok(res)
        })
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Counts data bytes as they pass, without holding them.
pub struct CountingBody<B> {
    inner: B,
    counter: Counter,
}

impl<B> CountingBody<B> {
    pub fn new(inner: B, counter: Counter) -> Self {
        CountingBody { inner, counter }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
