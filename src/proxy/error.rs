//! What a client of the proxy can be told, and with which status.
//!
//! Every answer the proxy makes itself carries a short plain-text body and an
//! `x-iap-proxy-error` header naming the failure, so a client (or a person with curl) can
//! tell the proxy's answers from the upstream's. IAP's own 401/403 pass through untouched.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::body::ResBody;
use crate::auth::cache::NoToken;

pub(crate) const ERROR_HEADER: &str = "x-iap-proxy-error";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("iap-proxy has no ID token, so the request was not forwarded: {0}")]
    NoToken(#[from] NoToken),
    #[error("cannot connect to upstream {upstream}: {reason}")]
    UpstreamConnect { upstream: String, reason: String },
    #[error("upstream {upstream} sent no response headers within {}s (--upstream-timeout)", .waited.as_secs())]
    UpstreamTimeout { upstream: String, waited: Duration },
    #[error("upstream {upstream} failed mid-request: {reason}")]
    UpstreamFailed { upstream: String, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request headers total {size} bytes, over the limit of {limit} (--max-header-bytes)")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("{}: this listener requires the client secret in the x-iap-proxy-secret header (--client-secret-file)", if *.presented { "wrong client secret" } else { "missing client secret" })]
    ClientSecret { presented: bool },
    #[error(
        "iap-proxy already holds {limit} client connections (--max-connections); this one is closed, retry later or reuse a connection"
    )]
    TooManyConnections { limit: usize },
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoToken(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ClientSecret { .. } => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable machine-readable name, the value of `x-iap-proxy-error`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProxyError::NoToken(_) => "no-token",
            ProxyError::UpstreamConnect { .. } => "upstream-connect",
            ProxyError::UpstreamFailed { .. } => "upstream-failed",
            ProxyError::UpstreamTimeout { .. } => "upstream-timeout",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::HeadersTooLarge { .. } => "headers-too-large",
            ProxyError::ClientSecret { .. } => "client-secret",
            ProxyError::TooManyConnections { .. } => "too-many-connections",
        }
    }

    pub(crate) fn into_response(self) -> Response<ResBody> {
        let body = format!("{self}\n");
        let mut res = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        );
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_plain_text_with_code() {
        let res = ProxyError::UpstreamTimeout {
            upstream: "https://u".into(),
            waited: Duration::from_secs(3),
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(res.headers()[ERROR_HEADER], "upstream-timeout");
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
}
