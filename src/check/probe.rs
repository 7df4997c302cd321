//! The two requests `check` sends to the upstream: one without credentials (does it answer
//! like IAP? is its certificate trusted?) and one with the token.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Limited};
use rustls::CertificateError;
use url::Url;

use crate::config::AuthHeader;
use crate::iap;
use crate::outbound::clients::UpstreamClient;
use crate::outbound::{chain, tls_error};
use crate::proxy::headers::set_token;
/// IAP's error pages are short; the hints are in their first lines.
const MAX_IAP_BODY: usize = 4096;

/// What came back from one GET.
#[derive(Debug)]
pub(super) enum Reach {
    Answer(Answer),
    /// The TLS handshake failed: why, in rustls' words, and the kind when it is a
    /// certificate problem.
    Tls {
        message: String,
        certificate: Option<CertificateError>,
    },
    /// DNS, connect, or the connection broke.
    Unreachable(String),
    Timeout(Duration),
}

#[derive(Debug)]
pub(super) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// Carries `x-goog-iap-generated-response: true`: IAP answered, not the app.
    pub(crate) by_iap: bool,
    /// The start of the body, only when IAP generated the answer: an app's body could echo
    /// the request's headers, token included, so it is never read.
    pub(crate) iap_body: String,
}

/// GETs `upstream` (its own path; redirects are not followed), with `token` in `header`
/// when given.
pub(super) async fn get(
    client: &UpstreamClient,
    upstream: &Url,
    token: Option<(AuthHeader, &HeaderValue)>,
    timeout: Duration,
) -> Reach {
    let mut request =
        match Request::get(upstream.as_str()).body(Either::Right(Empty::<Bytes>::new())) {
            Ok(r) => r,
            Err(e) => return Reach::Unreachable(format!("not a valid request URL ({e})")),
        };
    if let Some((header, bearer)) = token {
        set_token(request.headers_mut(), header, bearer);
    }
    let exchange = async {
        let response = match client.request(request).await {
            Ok(r) => r,
            Err(e) => return classify(&e),
        };
        let (parts, body) = response.into_parts();
        let by_iap = iap::generated(&parts.headers);
        let iap_body = if by_iap {
            let bytes = Limited::new(body, MAX_IAP_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            String::new()
        };
        Reach::Answer(Answer {
            status: parts.status,
            headers: parts.headers,
            by_iap,
            iap_body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Reach::Timeout(timeout))
}

/// Tells a TLS refusal from every other way a connection fails.
fn classify(err: &(dyn StdError + 'static)) -> Reach {
    match tls_error(err) {
        Some(tls) => Reach::Tls {
            message: tls.to_string(),
            certificate: match tls {
                rustls::Error::InvalidCertificate(c) => Some(c.clone()),
                _ => None,
            },
        },
        None => Reach::Unreachable(chain(err)),
    }
}

/// The hint words of an IAP 401 body, lowercased and without markup.
pub(super) fn plain(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        // As hyper-rustls hands it on: wrapped once more.
        let io = std::io::Error::other(io);
        match classify(&io) {
            Reach::Tls { certificate, .. } => {
                assert_eq!(certificate, Some(CertificateError::UnknownIssuer))
            }
            other => panic!("{other:?}"),
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(classify(&refused), Reach::Unreachable(m) if m.contains("refused")));
    }

    #[test]
    fn markup_is_dropped_from_iap_bodies() {
        assert_eq!(
            plain("<html><b>Invalid IAP credentials:</b>\n  Unable to parse JWT</html>"),
            "Invalid IAP credentials: Unable to parse JWT"
        );
    }
}
