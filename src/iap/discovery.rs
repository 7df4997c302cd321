//! Audience discovery: ask the upstream once, without credentials, and read the IAP OAuth
//! client ID from the sign-in redirect IAP answers with.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, StatusCode, header};
use http_body_util::{BodyExt, Either, Empty, Limited};
use url::Url;

use super::{Discovered, GENERATED_RESPONSE, from_answer};
use crate::outbound::clients::UpstreamClient;
use crate::outbound::{chain, tls_error};

/// Enough of a body to explain an unexpected answer, never more.
const MAX_BODY_CHARS: usize = 200;
/// Headers quoted when the upstream does not answer like IAP.
const SHOWN_HEADERS: [HeaderName; 5] = [
    header::LOCATION,
    GENERATED_RESPONSE,
    header::WWW_AUTHENTICATE,
    header::SERVER,
    header::CONTENT_TYPE,
];

/// Why the audience could not be discovered. The messages say what came back.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "cannot discover the audience: {upstream} is unreachable ({reason}); pass --audience to start without asking it"
    )]
    Unreachable { upstream: String, reason: String },
    #[error(
        "cannot discover the audience: {upstream} did not answer within {}s; pass --audience", .waited.as_secs()
    )]
    Timeout { upstream: String, waited: Duration },
    /// The TLS handshake refused the upstream's certificate: a settings matter (which CA to
    /// trust), not an unreachable host.
    #[error(
        "cannot discover the audience: the certificate of {upstream} is not trusted here \
         ({reason}).\nPass --upstream-ca CA.pem with the CA that signed it (behind a \
         TLS-inspecting corporate proxy:\nyour company's root CA; `openssl s_client -connect \
         HOST:443 -showcerts </dev/null` shows the chain),\nor pass --audience to start \
         without asking"
    )]
    UntrustedCertificate { upstream: String, reason: String },
    #[error(
        "cannot discover the audience: {upstream} does not answer like IAP (expected a 302 to accounts.google.com with client_id and x-goog-iap-generated-response: true); it answered {status}{headers}{body}; pass --audience (the IAP OAuth client ID)"
    )]
    NotIap {
        upstream: String,
        status: StatusCode,
        /// `, header: value` pairs, already formatted.
        headers: String,
        /// `, body: "..."` (at most 200 characters), or empty.
        body: String,
    },
}

/// Sends one unauthenticated GET to `upstream` (no redirect is followed) and derives the
/// audience from the answer.
pub(crate) async fn discover(
    client: &UpstreamClient,
    upstream: &Url,
    timeout: Duration,
) -> Result<Discovered, DiscoveryError> {
    let shown = upstream.to_string();
    let request = Request::get(upstream.as_str())
        .body(Either::Right(Empty::<Bytes>::new()))
        .map_err(|e| DiscoveryError::Unreachable {
            upstream: shown.clone(),
            reason: e.to_string(),
        })?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| match tls_error(&e) {
                Some(tls) => DiscoveryError::UntrustedCertificate {
                    upstream: shown.clone(),
                    reason: tls.to_string(),
                },
                None => DiscoveryError::Unreachable {
                    upstream: shown.clone(),
                    reason: chain(&e),
                },
            })?;
        let (parts, body) = response.into_parts();
        if let Some(found) = from_answer(parts.status, &parts.headers, upstream) {
            return Ok(found);
        }
        // Only a short prefix is shown, so only a few KiB are ever read.
        let body = Limited::new(body, 4096)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(not_iap(&shown, parts.status, &parts.headers, &body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(DiscoveryError::Timeout {
            upstream: shown,
            waited: timeout,
        }),
    }
}

fn not_iap(upstream: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> DiscoveryError {
    let mut shown = String::new();
    for name in SHOWN_HEADERS {
        for value in headers.get_all(&name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            let value: String = value.chars().take(MAX_BODY_CHARS).collect();
            shown.push_str(&format!(", {name}: {value}"));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let body = if text.is_empty() {
        String::new()
    } else {
        let mut cut: String = text.chars().take(MAX_BODY_CHARS).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        format!(", body: {cut:?}")
    };
    DiscoveryError::NotIap {
        upstream: upstream.to_owned(),
        status,
        headers: shown,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn not_iap_message_says_what_came_back() {
        let h = headers(&[
            ("server", "nginx"),
            ("content-type", "text/html"),
            ("x-other", "no"),
        ]);
        let long = "x".repeat(5000);
        let err = not_iap(
            "https://app.example.com/",
            StatusCode::OK,
            &h,
            long.as_bytes(),
        );
        let text = err.to_string();
        assert!(text.contains("200 OK"), "{text}");
        assert!(text.contains("server: nginx") && text.contains("content-type: text/html"));
        assert!(!text.contains("x-other"), "{text}");
        assert!(text.contains(&"x".repeat(200)) && !text.contains(&"x".repeat(201)));
        assert!(text.contains("--audience"), "{text}");
    }
}
