//! No client can take the proxy down: a WebSocket keeps its connection slot and lives
//! through the drain; a connection that cancels most of its streams right after opening them
//! is told to calm down; the queue past `--max-concurrent-requests` is bounded; oversized
//! heads get the proxy's own 431; absurd numbers are settings errors.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use iap_proxy::Drain;
use iap_proxy::config::{Env, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::resilience::settings_for;
use crate::support::client::{self, Connection, get, try_send};
use crate::support::fixture::World;
use crate::support::proxy::InProcess;

fn with(w: &World, extra: &[&str]) -> Settings {
    settings_for(w, &w.upstream.url(), w.upstream.ca_path(), extra)
}

#[tokio::test]
async fn a_websocket_keeps_its_slot_and_works_through_the_drain() {
    let w = World::new().await;
    let extra = ["--max-connections", "1", "--shutdown-grace", "2"];
    let mut proxy = InProcess::start(with(&w, &extra), w.env()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("websocket handshake");
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
    // The tunnel still holds the only slot.
    let mut other = Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let refused = other.get("/echo").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.header("x-iap-proxy-error"),
        Some("too-many-connections")
    );

    proxy.signal_shutdown();
    // Draining: the tunnel still carries messages.
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("two"));
    // When the grace period ends the proxy closes it, saying so.
    let closing = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed once the grace period ran out");
    match closing {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame 1001, got {other:?}"),
    }
    assert_eq!(
        proxy.stopped_within(Duration::from_secs(10)).await,
        Drain::TimedOut
    );
}

#[tokio::test]
async fn a_websocket_closed_during_the_drain_makes_it_clean() {
    let w = World::new().await;
    let mut proxy = InProcess::start(with(&w, &["--shutdown-grace", "20"]), w.env()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("websocket handshake");
    proxy.signal_shutdown();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    assert_eq!(
        proxy.stopped_within(Duration::from_secs(10)).await,
        Drain::Clean
    );
}

#[tokio::test]
async fn a_connection_that_resets_what_it_opens_gets_enhance_your_calm() {
    let w = World::new().await;
    let extra = ["--max-concurrent-streams", "500"];
    let proxy = InProcess::start(with(&w, &extra), w.env()).await;
    assert_eq!(
        get(&client::h2c(), &proxy.url("/warm")).await.status,
        StatusCode::OK
    );
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    // Open 100 streams the upstream holds (/slow), then reset them all at once.
    let mut streams = Vec::new();
    for i in 0..100 {
        h2 = h2.ready().await.unwrap();
        let req = Request::get(format!("http://{}/slow?ms=5000&n={i}", proxy.addr))
            .body(())
            .unwrap();
        let (response, _) = h2.send_request(req, true).unwrap();
        streams.push(response);
    }
    w.upstream
        .wait_for_count("/slow", 100, Duration::from_secs(10))
        .await;
    drop(streams); // dropping an unanswered response future resets its stream
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the proxy closed the connection")
        .unwrap();
    let err = ended.expect_err("closed with an error");
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
    assert!(err.is_go_away() && err.is_remote(), "{err:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_queue_past_max_concurrent_requests_is_bounded() {
    let w = World::new().await;
    let extra = [
        "--max-concurrent-requests",
        "1",
        "--max-queued-requests",
        "1",
    ];
    let proxy = InProcess::start(with(&w, &extra), w.env()).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/warm")).await.status, StatusCode::OK);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let req = client::get_request(&proxy.url(&format!("/slow?ms=3000&q={i}")), &[]);
            let http = http.clone();
            tokio::spawn(async move { try_send(&http, req).await.map(|r| r.status) })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    proxy.stop().await;
}

/// Sends raw bytes on a fresh connection and reads the answer until the proxy closes.
async fn raw_exchange(proxy: &InProcess, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // The proxy may answer and close before it read everything: a failed write is fine.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn every_oversized_head_gets_the_proxys_own_431() {
    let w = World::new().await;
    let proxy = InProcess::start(with(&w, &["--max-header-bytes", "8192"]), w.env()).await;
    // Far past hyper's buffer (twice the limit), and past hyper's 100 header lines.
    let huge = format!(
        "GET /echo HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /echo HTTP/1.1\r\nhost: localhost\r\n{many}\r\n");
    for (what, bytes) in [("huge", huge), ("many", many)] {
        let answer = raw_exchange(&proxy, bytes.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{what}: {answer}");
        assert!(
            answer.contains("x-iap-proxy-error: headers-too-large"),
            "{what}: {answer}"
        );
    }
    // HTTP/2: a header list far past the limit is ours to refuse too.
    let req = Request::get(proxy.url("/echo"))
        .header("x-big", "b".repeat(20_000))
        .body(client::empty())
        .unwrap();
    let r = try_send(&client::h2c(), req).await.expect("an answer");
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.header("x-iap-proxy-error"), Some("headers-too-large"));
    // A request within the limit on a keep-alive connection is untouched.
    let mut c = Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await;
    assert_eq!(c.get("/echo").await.status, StatusCode::OK);
    assert_eq!(c.get("/echo").await.status, StatusCode::OK);
    assert_eq!(w.upstream.authorized_count(), 2);
    let _ = Bytes::new();
    proxy.stop().await;
}

#[test]
fn absurd_numbers_are_settings_errors_not_panics() {
    let base = ["--upstream", "https://app.example.com", "--audience", "a"];
    for (flag, value) in [
        ("--max-connections", "18446744073709551615"),
        ("--max-connections", "0"),
        ("--max-concurrent-requests", "99999999999"),
        ("--max-header-bytes", "4294967296"),
        ("--upstream-timeout", "18446744073709551615"),
        ("--shutdown-grace", "9999999999"),
        ("--max-concurrent-streams", "0"),
        ("--retry-buffer-bytes", "1000000000000"),
        ("--stream-idle-timeout", "ten"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let err = Settings::from_args(&args, &Env::default())
            .expect_err(&format!("{flag} {value} is refused"))
            .to_string();
        let key = flag.trim_start_matches("--").replace('-', "_");
        assert!(err.contains(&key), "{flag} {value}: {err}");
    }
}
