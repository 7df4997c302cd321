//! A plain-HTTP client for talking to the proxy the way a legacy tool would.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Body = BoxBody<Bytes, Infallible>;
pub type HttpClient = Client<HttpConnector, Body>;

pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// HTTP/2 over cleartext with prior knowledge (h2c), as gRPC clients speak to localhost.
pub fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body of `len` bytes made chunk by chunk (never whole in memory), with the same
/// content as the upstream's `/download`.
pub fn generated(len: u64, chunk: impl Fn(u64, usize) -> Bytes + Send + Sync + 'static) -> Body {
    let chunk_size = 64 * 1024u64;
    let s = stream::unfold(0u64, move |offset| {
        let out = if offset >= len {
            None
        } else {
            let n = chunk_size.min(len - offset) as usize;
            Some((
                Ok::<_, Infallible>(Frame::data(chunk(offset, n))),
                offset + n as u64,
            ))
        };
        std::future::ready(out)
    });
    StreamBody::new(s).boxed()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &HttpClient, req: Request<Body>) -> Reply {
    let res = client
        .request(req)
        .await
        .expect("request reaches the proxy");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &HttpClient, url: &str) -> Reply {
    send(client, Request::get(url).body(empty()).unwrap()).await
}
