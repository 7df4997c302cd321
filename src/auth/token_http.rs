//! A small HTTP client for Google's token endpoints: bounded in time and in answer size,
//! careful that request bodies (which carry assertions) never reach an error, and ending
//! every call the same way: a non-2xx answer is [`FetchError::Rejected`] with Google's
//! explanation, a 2xx one is read as the typed answer the caller asked for.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{BadToken, EndpointError, FetchError};
use super::redact::{DETAIL_CHARS, endpoint_name, scrub};
use crate::config::is_loopback_host;
use crate::outbound::egress::{Egress, EgressConnector};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Token answers are a few KiB; anything far larger is not a token endpoint.
const MAX_BODY: usize = 1024 * 1024;

fn build(mut tls: rustls::ClientConfig, egress: &Egress) -> Inner {
    // hyper-rustls panics on preset ALPN; we speak HTTP/1.1 only, so none is needed.
    tls.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(egress.connector(http));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A status and a fully read (size-capped) body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Response {
    /// The body of a 2xx answer from `url`; any other is [`FetchError::Rejected`].
    pub(crate) fn success(self, url: &Url) -> Result<Bytes, FetchError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(rejected(url, &self))
        }
    }

    /// The body of a 2xx answer from `url`, read as `T`. Answers' types read a field of an
    /// unexpected type as absent, so only a body that is no JSON object fails here.
    pub(crate) fn json<T: DeserializeOwned>(self, url: &Url) -> Result<T, FetchError> {
        let body = self.success(url)?;
        serde_json::from_slice(&body).map_err(|_| {
            FetchError::BadToken(BadToken::AnswerNotJson {
                endpoint: endpoint_name(url),
            })
        })
    }
}

type Inner = Client<HttpsConnector<EgressConnector>, Full<Bytes>>;

/// HTTP client for token endpoints. Cheap to clone: clones share the pool (and `use_tls`).
#[derive(Clone)]
pub(crate) struct TokenHttp {
    client: Arc<RwLock<Inner>>,
    timeout: Duration,
}

impl fmt::Debug for TokenHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHttp")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenHttp {
    /// Uses `tls` for https endpoints, reached as `egress` says (a corporate proxy); plain
    /// http is allowed for loopback fakes and the metadata server (callers vet URLs with
    /// [`check_endpoint`]), and those are always direct.
    pub(crate) fn with_egress(tls: rustls::ClientConfig, egress: &Egress) -> TokenHttp {
        TokenHttp {
            client: Arc::new(RwLock::new(build(tls, egress))),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A new client and pool, using `tls`, for this and every clone (a reloaded CA).
    pub(crate) fn use_tls(&self, tls: rustls::ClientConfig, egress: &Egress) {
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = build(tls, egress);
    }

    /// Replaces the per-request deadline (connect, send and reading the whole answer).
    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> TokenHttp {
        self.timeout = timeout;
        self
    }

    /// POSTs `form` as `application/x-www-form-urlencoded` and reads the answer as `T`.
    pub(crate) async fn post_form_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<T, FetchError> {
        self.post_form(url, form).await?.json(url)
    }

    /// GETs `url` and reads the answer as `T`.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<T, FetchError> {
        self.get(url, headers).await?.json(url)
    }

    /// POSTs `form` as `application/x-www-form-urlencoded`.
    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<Response, FetchError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let content_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        let headers = [(header::CONTENT_TYPE, content_type)];
        self.send(Method::POST, url, &headers, Bytes::from(body))
            .await
    }

    /// POSTs `body` as JSON with `Authorization: Bearer <bearer>` (marked sensitive). The
    /// answer is left whole: the caller reads some statuses itself.
    pub(crate) async fn post_json_bearer(
        &self,
        url: &Url,
        bearer: &str,
        body: &serde_json::Value,
    ) -> Result<Response, FetchError> {
        let mut auth = HeaderValue::try_from(format!("Bearer {bearer}"))
            .map_err(|_| BadToken::AccessTokenNotHeaderSafe)?;
        auth.set_sensitive(true);
        let headers = [
            (header::AUTHORIZATION, auth),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ];
        let body = Bytes::from(body.to_string());
        self.send(Method::POST, url, &headers, body).await
    }

    pub(crate) async fn get(
        &self,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Response, FetchError> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, FetchError> {
        let endpoint = endpoint_name(url);
        let mut request = Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // A failed build can only be about the URI or a header: the body is never quoted.
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(&endpoint, &e))?;
        let exchange = async {
            let client = Inner::clone(&self.client.read().unwrap_or_else(PoisonError::into_inner));
            let response = client.request(request).await;
            let response = response.map_err(|e| unreachable(&endpoint, &e))?;
            let status = response.status();
            match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => Ok(Response {
                    status,
                    body: body.to_bytes(),
                }),
                Err(e) if e.is::<LengthLimitError>() => Err(FetchError::TooLarge {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    limit_kib: MAX_BODY / 1024,
                }),
                Err(e) => Err(unreachable(&endpoint, e.as_ref())),
            }
        };
        let seconds = self.timeout.as_secs().max(1);
        let answer = tokio::time::timeout(self.timeout, exchange).await;
        answer.map_err(|_| FetchError::Timeout {
            endpoint: endpoint.clone(),
            seconds,
        })?
    }
}

/// Parses a token endpoint URL and insists on https, except on loopback where test fakes
/// and local emulators live and nothing crosses the network.
pub(crate) fn check_endpoint(url: &str) -> Result<Url, EndpointError> {
    let url = url.trim();
    let parsed = Url::parse(url).map_err(|reason| EndpointError::Invalid {
        url: url.to_owned(),
        reason,
    })?;
    let loopback = parsed.host().is_some_and(is_loopback_host);
    match parsed.scheme() {
        "https" if parsed.has_host() => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(EndpointError::Insecure {
            url: endpoint_name(&parsed),
        }),
    }
}

/// Names the endpoint and the whole error chain, so "connection refused" is not lost
/// behind hyper's generic "client error (Connect)".
fn unreachable(endpoint: &str, err: &(dyn std::error::Error + 'static)) -> FetchError {
    let reason = crate::outbound::chain(err);
    FetchError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// Turns a non-2xx answer into [`FetchError::Rejected`], quoting Google's explanation:
/// OAuth `error`/`error_description`, the JSON API's `error.message`, or the start of a
/// text body. Anything shaped like a token or key is blanked out first.
pub(crate) fn rejected(url: &Url, response: &Response) -> FetchError {
    FetchError::Rejected {
        endpoint: endpoint_name(url),
        status: response.status.as_u16(),
        detail: detail(&response.body),
    }
}

/// Google's explanation in a refusal's `body`, scrubbed and capped.
pub(crate) fn detail(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("error")? {
            serde_json::Value::String(code) => {
                Some(match v.get("error_description").and_then(|d| d.as_str()) {
                    Some(description) => format!("{code}: {description}"),
                    None => code.clone(),
                })
            }
            serde_json::Value::Object(e) => e.get("message")?.as_str().map(str::to_owned),
            _ => None,
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text: String = scrub(&text).chars().take(DETAIL_CHARS).collect();
    if text.is_empty() {
        "(empty answer)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_server;

    #[test]
    fn endpoint_rules() {
        let ok = "https://a.com/t http://127.0.0.1/t http://127.9.9.9/t http://[::1]:9/t";
        for url in ok.split(' ').chain(["http://LOCALHOST/t"]) {
            assert!(check_endpoint(url).is_ok(), "{url}");
        }
        for url in "http://oauth2.googleapis.com/t http://10.0.0.1/ ftp://127.0.0.1/x".split(' ') {
            let insecure = check_endpoint(url).map_err(|e| e.to_string());
            assert!(insecure.unwrap_err().contains("must use https"), "{url}");
        }
        let err = check_endpoint("not a url").unwrap_err();
        assert!(matches!(err, EndpointError::Invalid { .. }), "{err:?}");
        let err = check_endpoint("http://user:pw@example.com/t?x=1").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn details_follow_googles_error_shapes_but_never_echo_tokens() {
        let oauth = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(detail(oauth), "invalid_grant: Invalid JWT Signature.");
        let api =
            br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(detail(api), "Permission denied");
        assert_eq!(detail(b"  Not Found\n"), "Not Found");
        assert_eq!(detail(b""), "(empty answer)");
        assert_eq!(detail("ab ".repeat(200).as_bytes()).len(), DETAIL_CHARS);

        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJlc2lnbmF0dXJl";
        let body = format!("bad assertion {jwt}, ya29.a0AfH6SMBxyz123 and 1//0gLongRefresh");
        let shown = detail(body.as_bytes());
        for leaked in ["eyJ", "ya29", "1//"] {
            assert!(!shown.contains(leaked), "{shown}");
        }
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
        assert!(!detail(key.as_bytes()).contains("MIIE"));
        let kept = "audience 123-abc.apps.googleusercontent.com for sa@p.iam.gserviceaccount.com";
        assert_eq!(detail(kept.as_bytes()), kept);
    }

    #[tokio::test]
    async fn posts_forms_and_caps_answers() {
        let addr = test_server::serve(|req| {
            let form: Vec<_> = url::form_urlencoded::parse(req.body()).collect();
            let content_type = &req.headers()[header::CONTENT_TYPE];
            if req.uri().path() == "/big" {
                return http::Response::new("x".repeat(MAX_BODY + 1));
            }
            http::Response::new(format!("{content_type:?} {form:?}"))
        })
        .await;
        let http = test_server::client();
        let url = Url::parse(&format!("http://{addr}/form")).unwrap();
        let form = [("a", "1 2"), ("b", "&")];
        let answer = http.post_form(&url, &form).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        let expected = r#""application/x-www-form-urlencoded" [("a", "1 2"), ("b", "&")]"#;
        assert_eq!(answer.body, expected);
        let big = Url::parse(&format!("http://{addr}/big")).unwrap();
        let err = http.post_form(&big, &[]).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { status: 200, .. }));
        assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    }

    #[tokio::test]
    async fn typed_answers_end_every_call_the_same_way() {
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
        }
        let addr = test_server::serve(|req| match req.uri().path() {
            "/ok" => http::Response::new(r#"{"token":"t","other":1}"#.into()),
            "/text" => http::Response::new("ya29.secret-looking answer".into()),
            _ => http::Response::builder()
                .status(400)
                .body(r#"{"error":"invalid_grant"}"#.into())
                .unwrap(),
        })
        .await;
        let http = test_server::client();
        let url = |path: &str| Url::parse(&format!("http://{addr}{path}?key=k")).unwrap();
        let ok: Answer = http.get_json(&url("/ok"), &[]).await.unwrap();
        assert_eq!(ok.token.as_deref(), Some("t"));
        let err = http.post_form_json::<Answer>(&url("/no"), &[]).await.err();
        assert!(matches!(
            err,
            Some(FetchError::Rejected { status: 400, .. })
        ));
        let err = http
            .get_json::<Answer>(&url("/text"), &[])
            .await
            .err()
            .unwrap();
        assert!(matches!(
            err,
            FetchError::BadToken(BadToken::AnswerNotJson { .. })
        ));
        let text = err.to_string();
        assert!(text.contains("/text") && !text.contains("ya29") && !text.contains("key=k"));
    }

    #[tokio::test]
    async fn unreachable_and_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
        let http = test_server::client().with_timeout(Duration::from_millis(200));
        let err = http.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
        drop(silent);
        let err = http.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }
}
