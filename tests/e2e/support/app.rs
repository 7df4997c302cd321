//! The "app" behind the fake IAP: routes that exercise streaming, upgrades, redirects,
//! trailers and hop-by-hop headers through the proxy.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::upstream::Shared;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const CHUNK: usize = 64 * 1024;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

fn stream_body<S>(s: S) -> Body
where
    S: futures_util::Stream<Item = Frame<Bytes>> + Send + 'static,
{
    StreamBody::new(s.map(Ok::<_, Infallible>)).boxed_unsync()
}

/// Chunk `index` of the /download stream: splitmix64 output seeded by the index, so any
/// chunk can be produced on its own and the whole stream never sits in memory.
fn pattern_chunk(index: u64, len: usize) -> Vec<u8> {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of what `GET /download?bytes=n` sends.
pub fn expected_sha256(n: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let (mut index, mut left) = (0u64, n);
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        h.update(pattern_chunk(index, len));
        index += 1;
        left -= len as u64;
    }
    h.finalize().into()
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn echo_json(req: &Request<Incoming>) -> Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str().to_owned()).or_default().push(v);
    }
    json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        // What the app sees as its host: Host on HTTP/1.1, :authority on h2.
        "authority": req.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string())),
        "headers": headers,
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap()
}

pub(super) async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/download" => download(&req),
        "/upload" => upload(req).await,
        "/sse" => sse(shared),
        "/ws" => websocket(shared, req),
        "/redirect" => redirect(format!("https://127.0.0.1:{}/landed?x=1", shared.port)),
        "/redirect-away" => redirect("https://elsewhere.example/x".to_owned()),
        "/trailers" => trailers(),
        "/slow" => {
            let ms = query_param(&req, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow done"))
        }
        // A redirect to `next` beside this path, on the upstream's origin, so that under a
        // base path `/base/redirect-under` points at `/base/next`.
        p if p.ends_with("/redirect-under") => redirect(format!(
            "https://127.0.0.1:{}{}/next",
            shared.port,
            p.trim_end_matches("/redirect-under")
        )),
        "/hop" => {
            let mut resp = json_response(StatusCode::OK, &echo_json(&req));
            let h = resp.headers_mut();
            // hyper drops these on HTTP/2 (connection-specific), so /hop is an HTTP/1.1 test.
            h.insert("connection", "x-custom-hop, keep-alive".parse().unwrap());
            h.insert("x-custom-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-authenticate", "Basic".parse().unwrap());
            resp
        }
        _ => json_response(StatusCode::OK, &echo_json(&req)),
    }
}

fn download(req: &Request<Incoming>) -> Response<Body> {
    let Some(n) = query_param(req, "bytes").and_then(|v| v.parse::<u64>().ok()) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("bytes=N required"))
            .unwrap();
    };
    let chunks = stream::unfold((0u64, n), |(index, left)| async move {
        if left == 0 {
            return None;
        }
        let len = left.min(CHUNK as u64) as usize;
        let data = Frame::data(Bytes::from(pattern_chunk(index, len)));
        Some((data, (index + 1, left - len as u64)))
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", n)
        .body(stream_body(chunks))
        .unwrap()
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let (mut hasher, mut n) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    n += d.len() as u64;
                }
            }
            Err(e) => {
                return json_response(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() }));
            }
        }
    }
    let sha = super::hex(&hasher.finalize());
    json_response(StatusCode::OK, &json!({ "bytes": n, "sha256": sha }))
}

fn sse(shared: &Shared) -> Response<Body> {
    // Subscribed before the first event goes out, so a release after the client has seen
    // "first" is never missed.
    let rx = shared.sse.subscribe();
    let events = stream::unfold((0u8, rx), |(step, mut rx)| async move {
        match step {
            0 => Some((Frame::data(Bytes::from_static(b"data: first\n\n")), (1, rx))),
            1 => {
                let _ = tokio::time::timeout(Duration::from_secs(10), rx.changed()).await;
                Some((
                    Frame::data(Bytes::from_static(b"data: second\n\n")),
                    (2, rx),
                ))
            }
            _ => None,
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(stream_body(events))
        .unwrap()
}

fn redirect(location: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .body(full("redirecting"))
        .unwrap()
}

fn trailers() -> Response<Body> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    let frames = stream::iter([
        Frame::data(Bytes::from_static(b"chunk-1\n")),
        Frame::data(Bytes::from_static(b"chunk-2\n")),
        Frame::trailers(t),
    ]);
    // hyper's HTTP/1.1 server only emits trailers announced here and asked for by `TE: trailers`.
    Response::builder()
        .header("content-type", "text/plain")
        .header("trailer", "grpc-status")
        .body(stream_body(frames))
        .unwrap()
}

fn websocket(shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let is_upgrade = h
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = h
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept), Version::HTTP_11) = (is_upgrade, key, req.version()) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("WebSocket upgrade over HTTP/1.1 required"))
            .unwrap();
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let task = tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
            if matches!(msg, Message::Close(_)) || (echo && tx.send(msg).await.is_err()) {
                break;
            }
        }
    });
    shared.ws_tasks.lock().unwrap().push(task.abort_handle());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}
