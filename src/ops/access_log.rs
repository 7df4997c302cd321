//! The access log line and the request counter: what is recorded about each answered
//! request. The data path (`proxy::observe`) decides when; this module decides what.
//!
//! The line goes out when the response headers do (an SSE stream may never end). Off by
//! default (`--access-log`), as in Envoy: a line per request costs more CPU than the rest
//! of the proxy's work on a small request.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method, Request, header};

use super::request_counter::{MethodLabel, Origin, RequestCounter};

/// What the access log line needs from the request, taken only when the log is on.
pub(crate) struct RequestFacts {
    method: Method,
    path: String,
    version: http::Version,
    request_size: Option<u64>,
    user_agent: Option<String>,
}

impl RequestFacts {
    pub(crate) fn of<B>(req: &Request<B>) -> RequestFacts {
        RequestFacts {
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
        }
    }
}

/// One answered request: counted always, logged when `facts` were taken.
pub(crate) struct Answered<'a> {
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) method: MethodLabel,
    pub(crate) status: u16,
    pub(crate) origin: Origin,
    pub(crate) response_headers: &'a HeaderMap,
    pub(crate) latency: Duration,
}

pub(crate) fn record(
    counter: &RequestCounter,
    answered: &Answered<'_>,
    facts: Option<RequestFacts>,
) {
    counter.inc(answered.method, answered.status, answered.origin);
    let Some(f) = facts else {
        return;
    };
    let latency = answered.latency;
    tracing::info!(
        target: "iap_proxy::access",
        route = %counter.route(),
        origin = answered.origin.label(),
        "httpRequest.requestMethod" = %f.method,
        "httpRequest.requestUrl" = %f.path,
        "httpRequest.status" = answered.status,
        "httpRequest.latency" = %format_args!("{:.6}s", latency.as_secs_f64()),
        "httpRequest.requestSize" = f.request_size,
        "httpRequest.responseSize" = content_length(answered.response_headers),
        "httpRequest.remoteIp" = answered.remote.map(|r| r.ip().to_string()),
        "httpRequest.userAgent" = f.user_agent,
        "httpRequest.protocol" = protocol(f.version),
        "{} {} {} {:.1}ms",
        f.method,
        f.path,
        answered.status,
        latency.as_secs_f64() * 1000.0
    );
}

/// The protocol as Cloud Logging's `httpRequest.protocol` names it (a plain value, not
/// `http::Version`'s Debug text).
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
