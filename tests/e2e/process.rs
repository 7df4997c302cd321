//! The real binary under the resilience rules: a second signal exits at once, an app's 5xx
//! is no ERROR line, and the memory an idle client connection costs fits the sidecar's limit
//! at the default `--max-connections`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use iap_proxy::config::{Env, Settings};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::client::{self, Connection, get};
use crate::support::faulty_h1::{FaultyH1, H1Fault};
use crate::support::fixture::{AUDIENCE, World};
use crate::support::proxy::Binary;

async fn spawn(w: &World, upstream: &str, ca: &str, extra: &[&str]) -> Binary {
    let key = w.key_file.display().to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--audience",
        AUDIENCE,
        "--credentials",
        &key,
        "--upstream-ca",
        ca,
    ];
    args.extend_from_slice(extra);
    Binary::spawn_listening(&args, &[]).await
}

#[tokio::test]
async fn a_second_signal_exits_at_once_and_says_something_was_cut() {
    let w = World::new().await;
    let ca = w.upstream.ca_path().display().to_string();
    let mut proxy = spawn(&w, &w.upstream.url(), &ca, &["--shutdown-grace", "60"]).await;
    let url = proxy.url("/ws").replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
    proxy.signal("TERM").await;
    // The drain waits for the tunnel (it still works); a second signal ends the wait.
    ws.send(Message::text("y")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("y"));
    assert!(!proxy.stderr().contains("drained"), "{}", proxy.stderr());
    let started = Instant::now();
    proxy.signal("INT").await;
    let code = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "{}", proxy.stderr());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        proxy.stderr().contains("second signal"),
        "{}",
        proxy.stderr()
    );
}

#[tokio::test]
async fn an_upstream_5xx_is_the_apps_answer_not_an_error_line() {
    let w = World::new().await;
    let up = FaultyH1::start(H1Fault::Healthy).await;
    let ca = up.ca_path().display().to_string();
    let proxy = spawn(&w, &up.url(), &ca, &["--access-log"]).await;
    let r = get(&client::http1(), &proxy.url("/status/500/x")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.header("x-iap-proxy-error"), None);
    let (code, proxy) = proxy.terminate().await;
    assert_eq!(code, Some(0));
    let logs = proxy.stderr();
    assert!(
        logs.contains("GET /status/500/x 500"),
        "the access log has it: {logs}"
    );
    assert!(!logs.contains("ERROR"), "{logs}");
}

/// Resident memory of the process, sampled after its connections settled.
fn rss_kib(proxy: &Binary) -> u64 {
    proxy.rss_kib()
}

/// The sidecar manifest's memory limit, in KiB.
fn sidecar_limit_kib() -> u64 {
    let manifest = include_str!("../../deploy/kubernetes/sidecar.yaml");
    let limit = manifest
        .lines()
        .find_map(|l| l.split("limits: { memory: ").nth(1))
        .and_then(|v| v.split("Mi").next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("a `limits: { memory: NMi }` line in sidecar.yaml");
    limit * 1024
}

const IDLE: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_default_limit_fit_the_sidecars_memory() {
    let w = World::new().await;
    let ca = w.upstream.ca_path().display().to_string();
    let proxy = spawn(&w, &w.upstream.url(), &ca, &["--max-connections", "2000"]).await;
    let addr = proxy.url("").trim_start_matches("http://").to_owned();
    assert_eq!(
        get(&client::http1(), &proxy.url("/warm")).await.status,
        StatusCode::OK
    );
    let base = rss_kib(&proxy);
    // HTTP/1.1: each connection served one request, then idles (keep-alive).
    let mut h1 = Vec::new();
    for _ in 0..IDLE {
        let mut c = Connection::handshake(TcpStream::connect(&addr).await.unwrap()).await;
        assert_eq!(c.get("/echo").await.status, StatusCode::OK);
        h1.push(c);
    }
    let after_h1 = rss_kib(&proxy);
    // h2c: likewise, each with its HTTP/2 state.
    let mut h2 = Vec::new();
    for _ in 0..IDLE {
        let io = TokioIo::new(TcpStream::connect(&addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(proxy.url("/echo"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        drop(res);
        h2.push(sender);
    }
    let after_h2 = rss_kib(&proxy);
    let per_h1 = (after_h1.saturating_sub(base) * 1024) / IDLE as u64;
    let per_h2 = (after_h2.saturating_sub(after_h1) * 1024) / IDLE as u64;
    let default = Settings::from_args(
        &["--upstream", "https://app.example.com", "--audience", "a"],
        &Env::default(),
    )
    .unwrap()
    .process
    .max_connections as u64;
    let worst = base + default * per_h1.max(per_h2) / 1024;
    let limit = sidecar_limit_kib();
    // Shown with --nocapture: the numbers README quotes.
    println!(
        "idle connection: HTTP/1.1 {per_h1} B, h2c {per_h2} B; base RSS {base} KiB; \
         {default} connections need about {worst} KiB of the sidecar's {limit} KiB"
    );
    assert!(
        worst <= limit * 9 / 10,
        "{worst} KiB at the default limit, over 90 % of {limit} KiB"
    );
    drop((h1, h2));
}
