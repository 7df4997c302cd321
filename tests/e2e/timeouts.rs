//! One meaning per timeout: `--upstream-timeout` from the end of the upload to the response
//! head, `--stream-idle-timeout` for bodies and tunnels, `--header-read-timeout` for a
//! connection's request head (whatever it sent), `--client-idle-timeout` between requests.
//! Timings are real but short (1 s settings), and every wait is bounded.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::resilience::settings_for;
use crate::support::client::{self, Connection, get, send, try_send};
use crate::support::faulty_h1::{FaultyH1, H1Fault};
use crate::support::fixture::World;
use crate::support::proxy::InProcess;

fn with(w: &World, extra: &[&str]) -> iap_proxy::config::Settings {
    settings_for(w, &w.upstream.url(), w.upstream.ca_path(), extra)
}

#[tokio::test]
async fn the_upstream_timeout_starts_when_the_upload_ends() {
    let w = World::new().await;
    let proxy = InProcess::start(with(&w, &["--upstream-timeout", "1"]), w.env()).await;
    // 600 KB over about 2.4 s, twice the upstream timeout.
    let chunks = (0..6u64).map(|i| client::pattern(i * 100_000, 100_000));
    let paced = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    let req = Request::put(proxy.url("/upload"))
        .header("content-length", "600000")
        .body(BodyExt::boxed(StreamBody::new(paced)))
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["bytes"], 600_000);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stalled_upload_is_cut_by_the_stream_idle_timeout() {
    let w = World::new().await;
    let proxy = InProcess::start(with(&w, &["--stream-idle-timeout", "1"]), w.env()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"the first bytes"))))
        .await
        .unwrap();
    let body = BodyExt::boxed(StreamBody::new(tokio_stream_of(rx)));
    let req = Request::put(proxy.url("/upload"))
        .header("content-length", "1000")
        .body(body)
        .unwrap();
    let started = Instant::now();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{}", r.text());
    assert_eq!(r.header("x-iap-proxy-error"), Some("stream-idle-timeout"));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(tx);
    proxy.stop().await;
}

/// An mpsc receiver as a stream (tokio-stream is not a dependency).
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

#[tokio::test]
async fn a_stalled_response_body_is_cut_by_the_stream_idle_timeout() {
    let w = World::new().await;
    let up = FaultyH1::start(H1Fault::StallBody).await;
    let extra = ["--stream-idle-timeout", "1"];
    let proxy = InProcess::start(settings_for(&w, &up.url(), up.ca_path(), &extra), w.env()).await;
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        try_send(
            &client::http1(),
            client::get_request(&proxy.url("/stall"), &[]),
        ),
    )
    .await
    .expect("the proxy cut the stalled body within 10 s");
    assert!(outcome.is_err(), "the body was cut short: {outcome:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    proxy.stop().await;
}

/// Reads until the proxy closes the socket (bounded); what it sent before.
async fn closed_by_proxy(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "still open after 5 s: {read:?}");
    got
}

#[tokio::test]
async fn sockets_without_a_complete_request_head_are_closed() {
    let w = World::new().await;
    let extra = ["--max-connections", "4", "--header-read-timeout", "1"];
    let proxy = InProcess::start(with(&w, &extra), w.env()).await;
    let open = |bytes: &'static [u8]| {
        let addr = proxy.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            s
        }
    };
    let sockets = [
        open(b"").await,
        open(b"GET /echo HT").await,
        open(b"PRI * HTTP/2.0\r\n").await,
        // A whole preface and SETTINGS, but never a request.
        open(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await,
    ];
    let started = Instant::now();
    for s in sockets {
        closed_by_proxy(s).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Their slots are free again: a fifth connection is served (retried while the closed
    // ones' tasks give their slots back, which has no event of its own).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&client::http1(), &proxy.url("/echo")).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {}", r.text());
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_closed_after_the_client_idle_timeout() {
    let w = World::new().await;
    let extra = ["--client-idle-timeout", "1", "--header-read-timeout", "30"];
    let proxy = InProcess::start(with(&w, &extra), w.env()).await;
    let mut c = Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await;
    assert_eq!(c.get("/echo").await.status, StatusCode::OK);
    let started = Instant::now();
    c.assert_closed_by_peer().await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed_with_a_close_frame() {
    let w = World::new().await;
    let proxy = InProcess::start(with(&w, &["--stream-idle-timeout", "1"]), w.env()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("websocket handshake");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within 5 s");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame 1001, got {other:?}"),
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_h2c_connection_is_sent_a_goaway_after_the_client_idle_timeout() {
    let w = World::new().await;
    let proxy = InProcess::start(with(&w, &["--client-idle-timeout", "1"]), w.env()).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = Request::get(proxy.url("/echo")).body(()).unwrap();
    let (response, _) = h2.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let idle_from = Instant::now();
    // `h2` stays alive: the client does not close the connection itself.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("closed within 10 s")
        .unwrap();
    assert!(
        ended.is_ok(),
        "closed with GOAWAY(NO_ERROR), not cut: {ended:?}"
    );
    assert!(idle_from.elapsed() >= Duration::from_millis(900));
    drop(h2);
    proxy.stop().await;
}
