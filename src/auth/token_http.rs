//! A small HTTP client for Google's token endpoints: bounded in time and in answer size,
//! and careful that request bodies (which carry assertions) never reach an error.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::outbound::egress::{Egress, EgressConnector};
use url::Url;

use crate::config::is_loopback_host;

use super::error::AuthError;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Token answers are a few KiB; anything far larger is not a token endpoint.
const MAX_BODY: usize = 1024 * 1024;
const MAX_DETAIL_CHARS: usize = 200;

/// A status and a fully read (size-capped) body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// HTTP client for token endpoints. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub(crate) struct TokenHttp {
    client: Client<HttpsConnector<EgressConnector>, Full<Bytes>>,
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
    pub(crate) fn with_egress(mut tls: rustls::ClientConfig, egress: &Egress) -> TokenHttp {
        // hyper-rustls panics on preset ALPN; we speak HTTP/1.1 only, so none is needed.
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(egress.connector(http));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        TokenHttp {
            client,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Replaces the per-request deadline (connect, send and reading the whole answer).
    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> TokenHttp {
        self.timeout = timeout;
        self
    }

    /// POSTs `form` as `application/x-www-form-urlencoded`.
    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<Response, AuthError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let content_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        let headers = [(header::CONTENT_TYPE, content_type)];
        self.send(Method::POST, url, &headers, Bytes::from(body))
            .await
    }

    /// POSTs `body` as JSON with `Authorization: Bearer <bearer>` (marked sensitive).
    pub(crate) async fn post_json_bearer(
        &self,
        url: &Url,
        bearer: &str,
        body: &serde_json::Value,
    ) -> Result<Response, AuthError> {
        let mut auth = HeaderValue::try_from(format!("Bearer {bearer}")).map_err(|_| {
            AuthError::BadToken(
                "the access token contains characters not allowed in a header".into(),
            )
        })?;
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
    ) -> Result<Response, AuthError> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, AuthError> {
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
            let response = self.client.request(request).await;
            let response = response.map_err(|e| unreachable(&endpoint, &e))?;
            let status = response.status();
            match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => Ok(Response {
                    status,
                    body: body.to_bytes(),
                }),
                Err(e) if e.is::<LengthLimitError>() => Err(AuthError::Rejected {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    detail: format!("the answer is larger than {} KiB", MAX_BODY / 1024),
                }),
                Err(e) => Err(unreachable(&endpoint, e.as_ref())),
            }
        };
        let seconds = self.timeout.as_secs().max(1);
        let answer = tokio::time::timeout(self.timeout, exchange).await;
        answer.map_err(|_| AuthError::Timeout {
            endpoint: endpoint.clone(),
            seconds,
        })?
    }
}

/// Parses a token endpoint URL and insists on https, except on loopback where test fakes
/// and local emulators live and nothing crosses the network.
pub(crate) fn check_endpoint(url: &str) -> Result<Url, AuthError> {
    let url = url.trim();
    let parsed = Url::parse(url).map_err(|e| AuthError::BadEndpoint {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let loopback = parsed.host().is_some_and(is_loopback_host);
    match parsed.scheme() {
        "https" if parsed.has_host() => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(AuthError::InsecureEndpoint {
            url: endpoint_name(&parsed),
        }),
    }
}

/// The URL as shown in messages: without user-info or query, which are the only places
/// a URL could smuggle a credential.
pub(crate) fn endpoint_name(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Names the endpoint and the whole error chain, so "connection refused" is not lost
/// behind hyper's generic "client error (Connect)".
fn unreachable(endpoint: &str, err: &(dyn std::error::Error + 'static)) -> AuthError {
    let reason = crate::outbound::chain(err);
    AuthError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// Turns a non-2xx answer into [`AuthError::Rejected`], quoting Google's explanation:
/// OAuth `error`/`error_description`, the JSON API's `error.message`, or the start of a
/// text body. Anything shaped like a token or key is blanked out first.
pub(crate) fn rejected(url: &Url, response: &Response) -> AuthError {
    AuthError::Rejected {
        endpoint: endpoint_name(url),
        status: response.status.as_u16(),
        detail: detail(&response.body),
    }
}

fn detail(body: &[u8]) -> String {
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
    let text: String = scrub(&text).chars().take(MAX_DETAIL_CHARS).collect();
    if text.is_empty() {
        "(empty answer)".to_owned()
    } else {
        text
    }
}

/// [`scrub`] for other error texts (e.g. a helper program's stderr), capped in length.
pub(crate) fn scrub_text(text: &str) -> String {
    scrub(text).chars().take(4 * MAX_DETAIL_CHARS).collect()
}

/// Blanks out what could be a credential: JWTs (`eyJ…`), OAuth access (`ya29.`) and refresh
/// (`1//`) tokens, and long dot-free base64 runs such as key material. Client IDs and
/// emails contain dots or `@` and survive, because they make errors actionable.
fn scrub(text: &str) -> String {
    if text.contains("PRIVATE KEY") {
        return "(answer withheld: it contains key material)".to_owned();
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-_.+/=~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c: char| !is_token_char(c)).unwrap_or(run.len());
        let word = &run[..end];
        let secret_prefix = ["eyJ", "ya29.", "1//"].iter().any(|p| word.starts_with(p));
        let long_opaque = word.len() >= 40 && !word.contains('.');
        if (secret_prefix && word.len() >= 16) || long_opaque {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

/// A throwaway HTTP server on 127.0.0.1 for the token sources' unit tests.
#[cfg(test)]
pub(crate) mod test_server {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    /// Serves every connection with `handler` until the test's runtime ends.
    pub(crate) async fn serve<F>(handler: F) -> SocketAddr
    where
        F: Fn(Request<Bytes>) -> http::Response<String> + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let answer = handler(Request::from_parts(parts, body));
                            Ok::<_, hyper::Error>(answer.map(|b| Full::new(Bytes::from(b))))
                        }
                    });
                let conn = hyper::server::conn::http1::Builder::new();
                tokio::spawn(
                    async move { conn.serve_connection(TokioIo::new(stream), service).await },
                );
            }
        });
        addr
    }

    /// A client for plain-http fakes: no roots needed.
    pub(crate) fn client() -> super::TokenHttp {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        super::TokenHttp::with_egress(tls, &crate::outbound::egress::Egress::direct())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(err, AuthError::BadEndpoint { .. }), "{err:?}");
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
        assert_eq!(detail("ab ".repeat(200).as_bytes()).len(), MAX_DETAIL_CHARS);

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
        assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_and_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
        let http = test_server::client().with_timeout(Duration::from_millis(200));
        let err = http.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, AuthError::Timeout { .. }), "{err:?}");
        drop(silent);
        let err = http.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, AuthError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }
}
