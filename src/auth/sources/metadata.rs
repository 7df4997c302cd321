//! The GCE/GKE/Cloud Run metadata server: it mints ID tokens for the attached service
//! account with a single GET.
//!
//! Always plain http by design: the server is link-local, never routed, and Google serves
//! it only over http. The `Metadata-Flavor` header is what guards it against requests
//! forged through other software on the host.

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use url::Url;

use crate::auth::access_token::AccessToken;
use crate::auth::answer::TokenAnswer;
use crate::auth::error::{BadToken, FetchError, MetadataHostProblem};
use crate::auth::redact::endpoint_name;
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::token_http::TokenHttp;
use crate::config::Env;

const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
const ACCESS_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// ID tokens from the metadata server at `GCE_METADATA_HOST` or `metadata.google.internal`.
#[derive(Debug)]
pub(crate) struct Metadata {
    host: String,
    /// A bad `GCE_METADATA_HOST` is reported on fetch: `new` cannot fail, and the error
    /// then reaches the user through the same path as an unreachable server.
    url: Result<Url, MetadataHostProblem>,
    audience: String,
    http: TokenHttp,
}

fn flavor() -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("metadata-flavor"),
        HeaderValue::from_static("Google"),
    )
}

impl Metadata {
    pub(crate) fn new(env: &Env, audience: &str, http: TokenHttp) -> Self {
        let host = env.metadata_host().authority().to_owned();
        Metadata {
            url: identity_url(&host, audience),
            host,
            audience: audience.to_owned(),
            http,
        }
    }

    fn bad_host(&self, problem: MetadataHostProblem) -> FetchError {
        FetchError::MetadataHost {
            url: format!("http://{}", self.host),
            problem,
        }
    }

    async fn fetch_token(&self) -> Result<IdToken, FetchError> {
        let url = self.url.as_ref().map_err(|p| self.bad_host(p.clone()))?;
        let response = self.http.get(url, &[flavor()]).await.map_err(|e| match e {
            // The usual cause is running off Google Cloud; say how to choose a key file instead.
            FetchError::Unreachable { endpoint, reason } => FetchError::Unreachable {
                endpoint,
                reason: format!("{reason} (outside Google Cloud, pass --credentials or set GOOGLE_APPLICATION_CREDENTIALS)"),
            },
            other => other,
        })?;
        let body = response.success(url)?;
        let body = std::str::from_utf8(&body).map_err(|_| BadToken::AnswerNotText)?;
        IdToken::issued_for(body, &self.audience)
    }

    async fn fetch_access_token(&self) -> Result<AccessToken, FetchError> {
        let url = metadata_url(&self.host, ACCESS_TOKEN_PATH).map_err(|p| self.bad_host(p))?;
        let answer: TokenAnswer = self.http.get_json(&url, &[flavor()]).await?;
        AccessToken::from_answer(answer, &endpoint_name(&url))
    }
}

// Fully qualified so that `describe` stays unambiguous where `TokenSource` is in scope.
impl crate::auth::access_token::AccessTokenSource for Metadata {
    fn describe(&self) -> String {
        TokenSource::describe(self)
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(self.fetch_access_token())
    }
}

/// `http://HOST/…/identity?audience=AUD&format=full`; `format=full` adds the `email`
/// claim IAP wants.
fn identity_url(host: &str, audience: &str) -> Result<Url, MetadataHostProblem> {
    let mut url = metadata_url(host, IDENTITY_PATH)?;
    url.query_pairs_mut()
        .append_pair("audience", audience)
        .append_pair("format", "full");
    Ok(url)
}

/// `http://HOST{path}`.
fn metadata_url(host: &str, path: &str) -> Result<Url, MetadataHostProblem> {
    // Only host[:port] is meaningful; anything else would silently change the request.
    if host.contains(['/', '?', '#', '@']) || host.contains(char::is_whitespace) {
        return Err(MetadataHostProblem::NotAHost);
    }
    Url::parse(&format!("http://{host}{path}")).map_err(MetadataHostProblem::Invalid)
}

impl TokenSource for Metadata {
    fn describe(&self) -> String {
        format!("metadata server at {}", self.host)
    }

    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(self.fetch_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_server;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn env(host: Option<&str>) -> Env {
        Env::from_pairs(host.map(|h| ("GCE_METADATA_HOST", h)))
    }

    fn unsigned_jwt(aud: &str) -> String {
        let payload = serde_json::json!({"aud": aud, "exp": 4_000_000_000u64, "email": "sa@p"});
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload.to_string()))
    }

    #[test]
    fn host_and_url() {
        let http = test_server::client();
        let default = Metadata::new(&env(None), "a b&c", http.clone());
        assert_eq!(
            default.describe(),
            "metadata server at metadata.google.internal"
        );
        let url = default.url.unwrap();
        assert_eq!(url.path(), IDENTITY_PATH);
        let query: Vec<_> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("audience".into(), "a b&c".into()),
                ("format".into(), "full".into())
            ]
        );
        let custom = Metadata::new(&env(Some("http://127.0.0.1:8999/")), "a", http.clone());
        assert_eq!(custom.describe(), "metadata server at 127.0.0.1:8999");
        assert_eq!(custom.url.unwrap().authority(), "127.0.0.1:8999");
        let evil = Metadata::new(&env(Some("evil.com/x?")), "a", http);
        assert!(matches!(evil.url, Err(MetadataHostProblem::NotAHost)));
    }

    #[tokio::test]
    async fn fetches_with_the_flavor_header() {
        let addr = test_server::serve(|req| {
            if req
                .headers()
                .get("metadata-flavor")
                .is_none_or(|v| v != "Google")
            {
                return http::Response::builder()
                    .status(403)
                    .body("Missing Metadata-Flavor".into())
                    .unwrap();
            }
            let query: Vec<_> =
                url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let aud = &query[0].1;
            match aud.as_str() {
                "missing" => http::Response::builder()
                    .status(404)
                    .body("not found".into())
                    .unwrap(),
                "mismatch" => http::Response::new(unsigned_jwt("other")),
                _ => http::Response::new(format!("{}\n", unsigned_jwt(aud))),
            }
        })
        .await;
        let source =
            |aud: &str| Metadata::new(&env(Some(&addr.to_string())), aud, test_server::client());
        let token = source("https://app.example").fetch().await.unwrap();
        assert_eq!(token.claims().aud.as_deref(), Some("https://app.example"));
        let err = source("missing").fetch().await.unwrap_err();
        assert!(
            matches!(err, FetchError::Rejected { status: 404, ref detail, .. } if detail == "not found")
        );
        let err = source("mismatch").fetch().await.unwrap_err();
        assert!(
            matches!(err, FetchError::BadToken(BadToken::WrongAudience { .. })),
            "{err:?}"
        );

        let http = test_server::client();
        let bare = http.get(&source("x").url.unwrap(), &[]).await.unwrap();
        assert_eq!(bare.status, 403);
    }

    #[tokio::test]
    async fn a_bad_host_is_reported_on_fetch() {
        let bad = Metadata::new(&env(Some("evil.com/x?")), "a", test_server::client());
        let err = bad.fetch().await.unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::MetadataHost {
                    problem: MetadataHostProblem::NotAHost,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("GCE_METADATA_HOST must be a host name"),
            "{text}"
        );
        let err = bad.fetch_access_token().await.unwrap_err();
        assert!(matches!(err, FetchError::MetadataHost { .. }), "{err:?}");
    }
}
