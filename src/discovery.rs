//! Audience discovery: ask the upstream once, without credentials, and read the IAP OAuth
//! client ID from the sign-in redirect IAP answers with.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Either, Empty, Limited};
use url::{Host, Url};

use crate::error::chain;
use crate::upstream::UpstreamClient;

const IAP_GENERATED: &str = "x-goog-iap-generated-response";
/// Enough of a body to explain an unexpected answer, never more.
const MAX_BODY_CHARS: usize = 200;
/// Headers quoted when the upstream does not answer like IAP.
const SHOWN_HEADERS: [&str; 5] = [
    "location",
    IAP_GENERATED,
    "www-authenticate",
    "server",
    "content-type",
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
    #[error(
        "cannot discover the audience: {upstream} does not answer like IAP (expected a 302 to accounts.google.com with client_id and {IAP_GENERATED}: true); it answered {status}{headers}{body}; pass --audience (the IAP OAuth client ID)"
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

/// How the audience was found, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The `client_id` of IAP's sign-in redirect.
    IapClientId(String),
    /// A Cloud Run service that did not answer like IAP: its URL is the audience.
    CloudRunUrl(String),
}

impl Found {
    pub fn audience(&self) -> &str {
        match self {
            Found::IapClientId(a) | Found::CloudRunUrl(a) => a,
        }
    }
}

/// Sends one unauthenticated GET to `upstream` (no redirect is followed) and derives the
/// audience from the answer.
pub async fn discover(
    client: &UpstreamClient,
    upstream: &Url,
    timeout: Duration,
) -> Result<Found, DiscoveryError> {
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
            .map_err(|e| DiscoveryError::Unreachable {
                upstream: shown.clone(),
                reason: chain(&e),
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

/// The audience an answer reveals: IAP's client ID, else (for `*.run.app`) the service URL.
pub fn from_answer(status: StatusCode, headers: &HeaderMap, upstream: &Url) -> Option<Found> {
    let by_iap = headers
        .get(IAP_GENERATED)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if by_iap && status.is_redirection() {
        let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
        if let Some(id) = location.and_then(client_id_from_location) {
            return Some(Found::IapClientId(id));
        }
    }
    cloud_run_audience(upstream).map(Found::CloudRunUrl)
}

/// `client_id` of a redirect to Google's sign-in page, if that is what `location` is.
pub fn client_id_from_location(location: &str) -> Option<String> {
    let url = Url::parse(location).ok()?;
    let google = url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("accounts.google.com"));
    if !google {
        return None;
    }
    url.query_pairs()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A Cloud Run service's own audience: its origin, `https://NAME-HASH.REGION.run.app`.
pub fn cloud_run_audience(upstream: &Url) -> Option<String> {
    let Some(Host::Domain(host)) = upstream.host() else {
        return None;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let is_run_app = host
        .strip_suffix(".run.app")
        .is_some_and(|name| !name.is_empty());
    if upstream.scheme() != "https" || !is_run_app {
        return None;
    }
    Some(match upstream.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

fn not_iap(upstream: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> DiscoveryError {
    let mut shown = String::new();
    for name in SHOWN_HEADERS {
        for value in headers.get_all(name) {
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

    const SIGN_IN: &str = "https://accounts.google.com/o/oauth2/v2/auth?client_id=123-abc.apps.googleusercontent.com&response_type=code&scope=openid%20email";

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn location_parsing() {
        assert_eq!(
            client_id_from_location(SIGN_IN).as_deref(),
            Some("123-abc.apps.googleusercontent.com")
        );
        let encoded = "https://accounts.google.com/o/oauth2/v2/auth?state=x&client_id=1%2D2.apps";
        assert_eq!(
            client_id_from_location(encoded).as_deref(),
            Some("1-2.apps")
        );
        for bad in [
            "https://evil.example/o/oauth2/v2/auth?client_id=x",
            "http://accounts.google.com/o?client_id=x",
            "https://accounts.google.com/o?client_id=",
            "https://accounts.google.com/o?state=1",
            "/relative?client_id=x",
            "not a url",
        ] {
            assert_eq!(client_id_from_location(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_iap_generated_redirects_count() {
        let up = url("https://app.example.com/");
        let iap = headers(&[
            ("x-goog-iap-generated-response", "true"),
            ("location", SIGN_IN),
        ]);
        assert_eq!(
            from_answer(StatusCode::FOUND, &iap, &up),
            Some(Found::IapClientId(
                "123-abc.apps.googleusercontent.com".into()
            ))
        );
        // The app's own redirect to Google sign-in is not IAP's.
        let app = headers(&[("location", SIGN_IN)]);
        assert_eq!(from_answer(StatusCode::FOUND, &app, &up), None);
        assert_eq!(from_answer(StatusCode::OK, &iap, &up), None);
    }

    #[test]
    fn cloud_run_rule() {
        let run = "https://hello-abc123xyz-ew.a.run.app/some/path";
        assert_eq!(
            cloud_run_audience(&url(run)).as_deref(),
            Some("https://hello-abc123xyz-ew.a.run.app")
        );
        assert_eq!(
            cloud_run_audience(&url("https://Svc-Hash.europe-west1.RUN.APP./")).as_deref(),
            Some("https://svc-hash.europe-west1.run.app")
        );
        assert_eq!(cloud_run_audience(&url("https://run.app/")), None);
        assert_eq!(cloud_run_audience(&url("https://app.example.com/")), None);
        assert_eq!(
            cloud_run_audience(&url("https://x.run.app.evil.com/")),
            None
        );
        // A run.app service that answers like IAP is IAP's: the client ID wins.
        let iap = headers(&[
            ("x-goog-iap-generated-response", "true"),
            ("location", SIGN_IN),
        ]);
        let found = from_answer(StatusCode::FOUND, &iap, &url(run)).unwrap();
        assert_eq!(found.audience(), "123-abc.apps.googleusercontent.com");
        let plain = from_answer(StatusCode::FORBIDDEN, &HeaderMap::new(), &url(run)).unwrap();
        assert_eq!(
            plain,
            Found::CloudRunUrl("https://hello-abc123xyz-ew.a.run.app".into())
        );
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
