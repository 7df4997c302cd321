//! IAP's own conventions, in one place: the header that marks IAP's answers, the sign-in
//! redirect that names the OAuth client (the audience), and Cloud Run's audience rule.

pub(crate) mod discovery;

use http::{HeaderMap, HeaderName, StatusCode, header};
use url::{Host, Url};

/// `x-goog-iap-generated-response: true` marks an answer IAP made itself: the application
/// never saw the request.
pub(crate) const GENERATED_RESPONSE: HeaderName =
    HeaderName::from_static("x-goog-iap-generated-response");

/// Whether IAP (not the application) produced this answer.
pub(crate) fn generated(headers: &HeaderMap) -> bool {
    headers
        .get(GENERATED_RESPONSE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// IAP's own 401: it refused the token before the application saw the request.
pub(crate) fn refused_token(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED && generated(headers)
}

/// How the audience was found, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Discovered {
    /// The `client_id` of IAP's sign-in redirect.
    IapClientId(String),
    /// A Cloud Run service that did not answer like IAP: its URL is the audience.
    CloudRunUrl(String),
}

impl Discovered {
    pub(crate) fn audience(&self) -> &str {
        match self {
            Discovered::IapClientId(a) | Discovered::CloudRunUrl(a) => a,
        }
    }

    /// Where it came from, for the log line.
    pub(crate) fn source(&self) -> &'static str {
        match self {
            Discovered::IapClientId(_) => "IAP's sign-in redirect",
            Discovered::CloudRunUrl(_) => "the Cloud Run service URL",
        }
    }
}

/// The audience an answer reveals: IAP's client ID, else (for `*.run.app`) the service URL.
pub(crate) fn from_answer(
    status: StatusCode,
    headers: &HeaderMap,
    upstream: &Url,
) -> Option<Discovered> {
    if generated(headers) && status.is_redirection() {
        let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
        if let Some(id) = location.and_then(client_id_from_location) {
            return Some(Discovered::IapClientId(id));
        }
    }
    cloud_run_audience(upstream).map(Discovered::CloudRunUrl)
}

/// `client_id` of a redirect to Google's sign-in page, if that is what `location` is.
pub(crate) fn client_id_from_location(location: &str) -> Option<String> {
    let url = Url::parse(location).ok()?;
    let google = url.scheme() == "https"
        && url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("accounts.google.com"));
    if !google {
        return None;
    }
    // Whatever answers decides the audience the service account mints tokens for, and then
    // receives them: take only what has the shape of an OAuth client ID, never arbitrary text.
    url.query_pairs()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| is_oauth_client_id(v))
}

/// `NNN-xxx.apps.googleusercontent.com`, the form of every IAP OAuth client ID.
fn is_oauth_client_id(id: &str) -> bool {
    id.strip_suffix(".apps.googleusercontent.com")
        .is_some_and(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A Cloud Run service's own audience: its origin, `https://NAME-HASH.REGION.run.app`.
pub(crate) fn cloud_run_audience(upstream: &Url) -> Option<String> {
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
        let encoded = "https://accounts.google.com/o/oauth2/v2/auth?state=x&client_id=1%2D2.apps.googleusercontent.com";
        assert_eq!(
            client_id_from_location(encoded).as_deref(),
            Some("1-2.apps.googleusercontent.com")
        );
        for bad in [
            "https://evil.example/o/oauth2/v2/auth?client_id=x",
            "http://accounts.google.com/o?client_id=x",
            "https://accounts.google.com/o?client_id=",
            "https://accounts.google.com/o?state=1",
            "https://accounts.google.com/o?client_id=anything-else",
            "https://accounts.google.com/o?client_id=x.apps.googleusercontent.com.evil.example",
            "https://accounts.google.com.evil.example/o?client_id=1-a.apps.googleusercontent.com",
            "https://accounts.google.com@evil.example/o?client_id=1-a.apps.googleusercontent.com",
            "/relative?client_id=x",
            "not a url",
        ] {
            assert_eq!(client_id_from_location(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_iaps_own_401_is_a_refusal() {
        let iap = headers(&[("x-goog-iap-generated-response", "true")]);
        assert!(refused_token(StatusCode::UNAUTHORIZED, &iap));
        assert!(!refused_token(StatusCode::FORBIDDEN, &iap));
        assert!(!refused_token(StatusCode::FOUND, &iap));
        assert!(!refused_token(StatusCode::UNAUTHORIZED, &HeaderMap::new()));
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
            Some(Discovered::IapClientId(
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
            Discovered::CloudRunUrl("https://hello-abc123xyz-ew.a.run.app".into())
        );
    }
}
