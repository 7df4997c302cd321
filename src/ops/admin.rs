//! The admin listener: liveness, readiness, metrics and a remote quit for sidecars.
//!
//! Kept apart from the proxy listeners so probes never carry credentials and a
//! Kubernetes readiness check keeps working while the proxy drains.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::metrics::{ERROR_HEADER, Metrics, RouteLabels};
use crate::auth::TokenCache;
use crate::config::{AllowedHosts, SEC_FETCH_SITE};

/// What the admin endpoints look at, shared with the rest of the process.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) routes: Vec<(Arc<str>, TokenCache)>,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) quit: Arc<Notify>,
    pub(crate) metrics: Arc<Metrics>,
    /// Names the admin listener answers to, besides localhost and IP addresses (every
    /// route's `allowed_hosts`): probes and scrapers use the pod's IP.
    pub(crate) hosts: AllowedHosts,
}

impl AdminState {
    /// Why the process is not ready, or `None` when it is.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining: shutting down, not taking new work".into());
        }
        let mut reasons = String::new();
        for (route, cache) in &self.routes {
            if cache.current().is_none() {
                let _ = writeln!(
                    reasons,
                    "route {route}: no valid ID token yet from {}",
                    cache.source_name()
                );
            }
        }
        (!reasons.is_empty()).then_some(reasons)
    }

    /// Why the process is not alive any more, or `None` when it is: a route whose token
    /// refresher crashed too often to be restarted will never have a token again.
    pub(crate) fn not_alive(&self) -> Option<String> {
        let mut reasons = String::new();
        for (route, cache) in &self.routes {
            if let Some(why) = cache.gave_up() {
                let _ = writeln!(reasons, "route {route}: {why}");
            }
        }
        (!reasons.is_empty()).then_some(reasons)
    }

    fn refresh_gauges(&self) {
        for (route, cache) in &self.routes {
            let secs = cache.remaining().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.metrics
                .token_expiry
                .get_or_create(&RouteLabels {
                    route: route.clone(),
                })
                .set(secs);
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        // A rebound DNS name would let any web page read /metrics and stop the proxy.
        let named = req
            .headers()
            .get(header::HOST)
            .map(header::HeaderValue::as_bytes)
            .or(req.uri().authority().map(|a| a.as_str().as_bytes()));
        if named.is_some_and(|h| !std::str::from_utf8(h).is_ok_and(|h| self.hosts.allows(h))) {
            return refused(
                StatusCode::MISDIRECTED_REQUEST,
                "host-not-allowed",
                "the admin listener answers to localhost, IP addresses and the routes' allowed_hosts only\n",
            );
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => match self.not_alive() {
                None => text(StatusCode::OK, "ok\n".into()),
                Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
            },
            (&Method::GET | &Method::HEAD, "/readyz") => match self.not_ready() {
                None => text(StatusCode::OK, "ready\n".into()),
                Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
            },
            (&Method::GET | &Method::HEAD, "/metrics") => {
                self.refresh_gauges();
                match self.metrics.encode() {
                    Ok(body) => {
                        let mut res = text(StatusCode::OK, body);
                        res.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        res
                    }
                    Err(err) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot encode metrics: {err}\n"),
                    ),
                }
            }
            (&Method::POST, "/quitquitquit") if from_a_web_page(req) => refused(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "a web page may not stop iap-proxy: POST /quitquitquit without Origin (e.g. curl -X POST)\n",
            ),
            (&Method::POST, "/quitquitquit") => {
                tracing::info!("shutdown requested through /quitquitquit");
                self.quit.notify_one();
                text(StatusCode::OK, "shutting down\n".into())
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/quitquitquit") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "admin endpoints: /healthz /readyz /metrics POST /quitquitquit\n".into(),
            ),
        }
    }
}

/// A browser marks what a page sends: `Origin` on every POST, `Sec-Fetch-Site` when it
/// is not the user's own navigation. A text/plain POST needs no CORS preflight, so without
/// this any page could stop the proxy.
fn from_a_web_page(req: &Request<Incoming>) -> bool {
    let site = req.headers().get(SEC_FETCH_SITE);
    req.headers().contains_key(header::ORIGIN)
        || site.is_some_and(|s| !s.as_bytes().eq_ignore_ascii_case(b"none"))
}

fn refused(status: StatusCode, code: &'static str, why: &str) -> Response<Full<Bytes>> {
    let mut res = text(status, why.to_owned());
    res.headers_mut()
        .insert(ERROR_HEADER, header::HeaderValue::from_static(code));
    res
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Serves the admin endpoints until the task is dropped; it outlives the drain on purpose.
pub(crate) async fn serve(listener: TcpListener, state: AdminState) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let res = state.handle(&req);
            async move { Ok::<_, Infallible>(res) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}
