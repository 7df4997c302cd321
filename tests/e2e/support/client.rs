//! Small HTTP clients for tests that talk to the fixtures (or the proxy) directly.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode, Version};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTPS client using `tls` (e.g. `upstream.client_config()`). `alpn` selects what is
/// offered: `[h2, http/1.1]` when both are true.
pub fn https_client(tls: Arc<rustls::ClientConfig>, http1: bool, http2: bool) -> HttpsClient {
    let b = HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only();
    let conn = match (http1, http2) {
        (true, true) => b.enable_all_versions().build(),
        (false, true) => b.enable_http2().build(),
        _ => b.enable_http1().build(),
    };
    let mut builder = Client::builder(TokioExecutor::new());
    if http2 && !http1 {
        builder.http2_only(true);
    }
    builder.build(conn)
}

/// Sends `req`, buffers the whole body (and trailers).
pub async fn send<C>(client: &Client<C, Full<Bytes>>, req: Request<Full<Bytes>>) -> Resp
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("read body");
    let trailers = collected.trailers().cloned();
    Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// A GET with optional extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// GET `url` with `Authorization: Bearer token`, buffered.
pub async fn get_bearer<C>(client: &Client<C, Full<Bytes>>, url: &str, token: &str) -> Resp
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    send(
        client,
        get(url, &[("authorization", &format!("Bearer {token}"))]),
    )
    .await
}
