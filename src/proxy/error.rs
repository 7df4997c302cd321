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
use super::client_secret::SECRET_HEADER;
use crate::auth::FetchError;
use crate::auth::cache::NoToken;
pub(crate) use crate::ops::metrics::ERROR_HEADER;

/// Why a request was not admitted. Checked before the token is touched: nothing was
/// forwarded and no token was fetched for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "this listener does not answer to Host {host:?}: only localhost, IP addresses and the route's \
         allowed_hosts may name it (a DNS name rebound to this machine must not act as the service \
         account); if the name is yours, add it to allowed_hosts"
    )]
    Host { host: String },
    #[error(
        "a page of {origin:?} may not send requests through iap-proxy: only the proxy's own origin \
         and the route's allowed_origins may (add it there if that page is yours)"
    )]
    Origin { origin: String },
    #[error(
        "a cross-site request (Sec-Fetch-Site: cross-site) may not use iap-proxy's identity; open the URL directly"
    )]
    CrossSite,
    #[error("the request has two Host headers; a request names one host (RFC 9112 section 3.2)")]
    DuplicateHost,
    #[error(
        "Transfer-Encoding {coding:?} is not supported: the proxy forwards only chunked bodies (RFC 9112 section 6.1)"
    )]
    TransferCoding { coding: String },
    #[error(
        "upgrading to {protocol:?} is not allowed: websocket is tunnelled, other protocols only when listed in allowed_upgrades"
    )]
    Upgrade { protocol: String },
}

impl Refused {
    /// A client-chosen value, as a message may quote it: printable and short.
    pub(crate) fn quoted(value: &[u8]) -> String {
        String::from_utf8_lossy(value).chars().take(200).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Refused(#[from] Refused),
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
    #[error(
        "the request head is over the limit of {limit} bytes (--max-header-bytes), or has too many header lines"
    )]
    HeadTooLarge { limit: usize },
    #[error("the request target is too long")]
    UriTooLong,
    #[error("bad request: the request head could not be parsed")]
    MalformedHead,
    #[error(
        "iap-proxy is overloaded: --max-concurrent-requests are in flight and {queued} more already wait (--max-queued-requests); retry later"
    )]
    Overloaded { queued: usize },
    #[error("no byte of the request moved either way for {}s (--stream-idle-timeout)", .waited.as_secs())]
    StreamIdle { waited: Duration },
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::Refused(r) => match r {
                Refused::Host { .. } => StatusCode::MISDIRECTED_REQUEST,
                Refused::Origin { .. } | Refused::CrossSite | Refused::Upgrade { .. } => {
                    StatusCode::FORBIDDEN
                }
                Refused::DuplicateHost => StatusCode::BAD_REQUEST,
                Refused::TransferCoding { .. } => StatusCode::NOT_IMPLEMENTED,
            },
            ProxyError::NoToken(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ClientSecret { .. } => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::MalformedHead => StatusCode::BAD_REQUEST,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::StreamIdle { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A stable machine-readable name, the value of `x-iap-proxy-error`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProxyError::Refused(r) => match r {
                Refused::Host { .. } => "host-not-allowed",
                Refused::Origin { .. } => "cross-origin",
                Refused::CrossSite => "cross-site",
                Refused::DuplicateHost => "duplicate-host",
                Refused::TransferCoding { .. } => "unsupported-transfer-coding",
                Refused::Upgrade { .. } => "upgrade-not-allowed",
            },
            ProxyError::NoToken(no) => no_token_code(no),
            ProxyError::UpstreamConnect { .. } => "upstream-connect",
            ProxyError::UpstreamFailed { .. } => "upstream-failed",
            ProxyError::UpstreamTimeout { .. } => "upstream-timeout",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::HeadersTooLarge { .. } => "headers-too-large",
            ProxyError::ClientSecret { .. } => "client-secret",
            ProxyError::TooManyConnections { .. } => "too-many-connections",
            ProxyError::HeadTooLarge { .. } => "headers-too-large",
            ProxyError::UriTooLong => "uri-too-long",
            ProxyError::MalformedHead => "bad-request",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::StreamIdle { .. } => "stream-idle-timeout",
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
        if let ProxyError::ClientSecret { .. } = self {
            // RFC 9110 section 15.5.8: a 407 says how to authenticate: the proxy's own
            // scheme, naming the header the secret goes in.
            let challenge =
                format!("IapProxySecret realm=\"iap-proxy\", header=\"{SECRET_HEADER}\"");
            if let Ok(value) = HeaderValue::try_from(challenge) {
                headers.insert(header::PROXY_AUTHENTICATE, value);
            }
        }
        res
    }
}

/// The 503's code when there is no token: what kind of failure, so a client can tell a
/// refusal (fix the credential or its roles) from an outage (retry later).
fn no_token_code(no: &NoToken) -> &'static str {
    match no {
        NoToken::FetchFailed { error, .. } => fetch_failure_code(error),
        // No fetch ended in time (or the refresher is gone): nothing more specific is known.
        NoToken::TimedOut { .. } | NoToken::Stopped => "no-token",
    }
}

fn fetch_failure_code(err: &FetchError) -> &'static str {
    match err {
        // Google (or the subject-token URL) refused the credential: retrying will not help.
        FetchError::Rejected {
            status: 400..=499, ..
        }
        | FetchError::ImpersonationDenied { .. } => "token-denied",
        FetchError::Unreachable { .. }
        | FetchError::Timeout { .. }
        | FetchError::MetadataHost { .. } => "token-endpoint-unreachable",
        FetchError::Rejected { .. } | FetchError::TooLarge { .. } | FetchError::BadToken(_) => {
            "token-endpoint-failed"
        }
        // Nothing answered badly: a local helper or the key itself failed.
        FetchError::Subject { .. } | FetchError::Gcloud(_) | FetchError::Sign { .. } => {
            "credential-failed"
        }
        // The token came, dead: this machine's clock (or a stale cache) is to blame.
        FetchError::ExpiredOnArrival { .. } => "clock-skew",
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

    #[test]
    fn no_token_answers_name_the_kind_of_failure() {
        use crate::auth::error::{BadToken, ProcessError};
        use std::sync::Arc;
        let failed = |error| {
            ProxyError::NoToken(NoToken::FetchFailed {
                source_name: "src".into(),
                error: Arc::new(error),
            })
        };
        let rejected = |status| FetchError::Rejected {
            endpoint: "https://oauth2.googleapis.com/token".into(),
            status,
            detail: "d".into(),
        };
        let cases = [
            (failed(rejected(400)), "token-denied"),
            (failed(rejected(403)), "token-denied"),
            (
                failed(FetchError::ImpersonationDenied {
                    caller: "c".into(),
                    target: "t".into(),
                    delegates: Vec::new(),
                    detail: "d".into(),
                }),
                "token-denied",
            ),
            (failed(rejected(500)), "token-endpoint-failed"),
            (
                failed(FetchError::BadToken(BadToken::NotAJwt { segments: 1 })),
                "token-endpoint-failed",
            ),
            (
                failed(FetchError::Unreachable {
                    endpoint: "e".into(),
                    reason: "refused".into(),
                }),
                "token-endpoint-unreachable",
            ),
            (
                failed(FetchError::Timeout {
                    endpoint: "e".into(),
                    seconds: 10,
                }),
                "token-endpoint-unreachable",
            ),
            (
                failed(FetchError::Gcloud(ProcessError::TimedOut {
                    what: "gcloud".into(),
                    timeout: Duration::from_secs(60),
                })),
                "credential-failed",
            ),
            (
                ProxyError::NoToken(NoToken::TimedOut {
                    source_name: "src".into(),
                    waited: Duration::from_secs(10),
                    last_error: Some(Arc::new(rejected(500))),
                }),
                "no-token",
            ),
            (ProxyError::NoToken(NoToken::Stopped), "no-token"),
            (
                failed(FetchError::ExpiredOnArrival {
                    exp: 1_000,
                    now: 4_700,
                }),
                "clock-skew",
            ),
        ];
        for (err, code) in cases {
            let body = err.to_string();
            let res = err.into_response();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(res.headers()[ERROR_HEADER], code, "{body}");
        }
    }
}
