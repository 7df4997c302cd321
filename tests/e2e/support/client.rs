//! The one HTTP client of the tests: pooled clients for the proxy (HTTP/1.1, h2c) and for
//! the fixtures (HTTPS), a single connection the test holds itself, and one buffered
//! response type, `Resp`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::HeaderMap;
use http::{Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{self as conn, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

pub type Body = BoxBody<Bytes, Infallible>;
pub type HttpClient = Client<HttpConnector, Body>;
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Plain HTTP/1.1, the way a legacy tool talks to the proxy.
pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// HTTP/2 over cleartext with prior knowledge (h2c), as gRPC clients speak to localhost.
pub fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// HTTPS client using `tls` (e.g. `upstream.client_config()`), offering by ALPN `h2` and/or
/// `http/1.1`: `[h2, http/1.1]` when both are true.
pub fn https(tls: Arc<rustls::ClientConfig>, http1: bool, http2: bool) -> HttpsClient {
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

pub fn empty() -> Body {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// Byte `offset + i` of a patterned upload, for any slice of it.
pub fn pattern(offset: u64, n: usize) -> Bytes {
    (0..n as u64)
        .map(|i| ((offset + i).wrapping_mul(31) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A body of `len` patterned bytes made chunk by chunk, never whole in memory.
pub fn patterned_body(len: u64) -> Body {
    let s = stream::unfold(0u64, move |offset| {
        let out = (offset < len).then(|| {
            let n = PATTERN_CHUNK.min(len - offset) as usize;
            let frame = Frame::data(pattern(offset, n));
            (Ok::<_, Infallible>(frame), offset + n as u64)
        });
        std::future::ready(out)
    });
    StreamBody::new(s).boxed()
}

/// SHA-256 of `patterned_body(len)`, computed chunk by chunk as well.
pub fn patterned_sha256(len: u64) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut offset = 0u64;
    while offset < len {
        let n = PATTERN_CHUNK.min(len - offset) as usize;
        hasher.update(pattern(offset, n));
        offset += n as u64;
    }
    hasher.finalize().into()
}

const PATTERN_CHUNK: u64 = 64 * 1024;

/// A buffered response: status, headers, the whole body and its trailers.
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

    async fn read(resp: http::Response<Incoming>) -> Result<Resp, BoxError> {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }
}

/// Sends `req` and buffers the answer; `Err` when there is no complete answer. For
/// spawned tasks, which hand the outcome to the test body to assert on.
pub async fn try_send<C>(client: &Client<C, Body>, req: Request<Body>) -> Result<Resp, BoxError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    Resp::read(client.request(req).await?).await
}

/// Sends `req` and buffers the whole answer (body and trailers).
pub async fn send<C>(client: &Client<C, Body>, req: Request<Body>) -> Resp
where
    C: Connect + Clone + Send + Sync + 'static,
{
    try_send(client, req)
        .await
        .unwrap_or_else(|e| panic!("no complete answer: {e}"))
}

/// A GET request with extra headers.
pub fn get_request(url: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

/// GET `url`, buffered.
pub async fn get<C>(client: &Client<C, Body>, url: &str) -> Resp
where
    C: Connect + Clone + Send + Sync + 'static,
{
    send(client, get_request(url, &[])).await
}

/// GET `url` with `Authorization: Bearer token`, buffered.
pub async fn get_bearer<C>(client: &Client<C, Body>, url: &str, token: &str) -> Resp
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let bearer = format!("Bearer {token}");
    send(client, get_request(url, &[("authorization", &bearer)])).await
}

type Parts<T> = conn::Parts<TokioIo<T>>;

/// One HTTP/1.1 connection held by the test itself, for when it matters which connection
/// a request travels on (the pooled clients hide that), over TCP or a Unix socket.
pub struct Connection<T> {
    sender: SendRequest<Body>,
    /// The connection task. It gives the socket back instead of closing it, so the test
    /// can tell whether the *other* side closed it.
    task: JoinHandle<Result<Parts<T>, hyper::Error>>,
}

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub async fn handshake(io: T) -> Connection<T> {
        let (sender, conn) = conn::handshake(TokioIo::new(io))
            .await
            .expect("HTTP/1.1 handshake");
        let task = tokio::spawn(conn.without_shutdown());
        Connection { sender, task }
    }

    /// Sends `req` on this connection; `Host: localhost` unless the request has one.
    pub async fn send(&mut self, mut req: Request<Body>) -> Resp {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, "localhost".parse().unwrap());
        }
        let resp = self
            .sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("no answer on this connection: {e}"));
        Resp::read(resp)
            .await
            .unwrap_or_else(|e| panic!("answer cut short: {e}"))
    }

    /// GET `path` (origin-form) on this connection.
    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(get_request(path, &[])).await
    }

    /// Asserts that the peer closes the connection (bounded): after the answer it reads
    /// end-of-file, and no byte came after the answer.
    pub async fn assert_closed_by_peer(self) {
        let parts = self.finish().await;
        assert!(
            parts.read_buf.is_empty(),
            "bytes after the answer: {:?}",
            parts.read_buf
        );
        let mut io = parts.io.into_inner();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "connection not closed by the peer: {read:?}, {rest:?}"
        );
    }

    /// Closes the connection from this side and waits (bounded) until the peer has closed
    /// its side too, i.e. until the peer has seen the close.
    pub async fn close(self) {
        let mut io = self.finish().await.io.into_inner();
        io.shutdown().await.expect("shut down the write side");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the peer did not close its side after ours: {read:?}"
        );
    }

    /// Ends the HTTP connection (no more requests) and takes the socket back.
    async fn finish(self) -> Parts<T> {
        drop(self.sender);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the connection task ends once no request can follow")
            .expect("connection task")
            .expect("connection ended cleanly")
    }
}
