//! What real upstreams do never becomes a client's error: requests the upstream provably
//! did not process (GOAWAY'd streams, REFUSED_STREAM) and idempotent ones caught in the
//! keep-alive race go again; dead connections are found by PINGs; each timeout has one
//! meaning. The upstreams here are `support::faulty_h2` / `faulty_h1`, which record what
//! they saw.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use iap_proxy::config::{Env, Settings};
use iap_proxy::listener::Listener;
use tokio::net::TcpListener;

use crate::support::client::{self, Body, get, send, try_send};
use crate::support::faulty_h1::{FaultyH1, H1Fault};
use crate::support::faulty_h2::{Faults, FaultyH2, Outcome};
use crate::support::fixture::{AUDIENCE, World};
use crate::support::proxy::InProcess;

/// Settings for a proxy in front of `upstream` (trusting `ca`), tokens from `w`'s Google.
pub fn settings_for(w: &World, upstream: &str, ca: &Path, extra: &[&str]) -> Settings {
    let mut args = vec![
        "--upstream",
        upstream,
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
        "--upstream-ca",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Settings::from_args(&args, &Env::default()).expect("valid test settings")
}

/// A proxy with an admin listener; returns it and the admin base URL.
async fn with_admin(w: &World, settings: Settings) -> (InProcess, String) {
    let route = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", admin.local_addr().unwrap());
    let listeners = iap_proxy::Listeners {
        routes: vec![Listener::Tcp(route)],
        admin: Some(admin),
    };
    (
        InProcess::start_listeners(listeners, settings, w.env()),
        base,
    )
}

/// `iap_proxy_upstream_retries_total` by reason, as scraped.
async fn retries(admin: &str) -> HashMap<String, f64> {
    let text = get(&client::http1(), &format!("{admin}/metrics"))
        .await
        .text();
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("iap_proxy_upstream_retries_total{"))
    {
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse().ok());
        if let (Some(reason), Some(value)) = (reason, value) {
            out.insert(reason.to_owned(), value);
        }
    }
    out
}

fn request(method: Method, url: &str, body: &'static str) -> Request<Body> {
    let b = Request::builder().method(method).uri(url);
    if body.is_empty() {
        b.body(client::empty()).unwrap()
    } else {
        b.body(client::full(body)).unwrap()
    }
}

#[tokio::test]
async fn goawayd_streams_go_again_on_a_fresh_connection_whatever_the_method() {
    let w = World::new().await;
    let up = FaultyH2::start(Faults {
        goaway_after: Some(10),
        ..Faults::default()
    })
    .await;
    let (proxy, admin) = with_admin(&w, settings_for(&w, &up.url(), up.ca_path(), &[])).await;
    let h2c = client::h2c();
    // Warm the token, then 20 at once: the first connection answers 10 and GOAWAYs the rest.
    assert_eq!(get(&h2c, &proxy.url("/warm")).await.status, StatusCode::OK);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (method, body) = if i % 2 == 0 {
                (Method::POST, "posted")
            } else {
                (Method::GET, "")
            };
            let req = request(method, &proxy.url(&format!("/r/{i}")), body);
            let h2c = h2c.clone();
            tokio::spawn(async move { try_send(&h2c, req).await.map(|r| (r.status, r.text())) })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, text) = t.await.unwrap().unwrap_or_else(|e| panic!("/r/{i}: {e}"));
        assert_eq!(status, StatusCode::OK, "/r/{i}: {text}");
    }
    let seen = up.seen();
    for i in 0..20 {
        let target = format!("/r/{i}");
        let answered: Vec<_> = seen
            .iter()
            .filter(|s| s.target == target && s.outcome == Outcome::Answered)
            .collect();
        assert_eq!(
            answered.len(),
            1,
            "{target} processed exactly once: {seen:?}"
        );
        let want = if i % 2 == 0 { "posted".len() } else { 0 };
        assert_eq!(
            answered[0].body_len, want,
            "{target}: the replayed body is whole"
        );
    }
    for a in seen.iter().filter(|s| s.outcome == Outcome::AboveGoaway) {
        let again = seen
            .iter()
            .find(|s| s.target == a.target && s.outcome == Outcome::Answered)
            .unwrap();
        assert!(
            again.conn != a.conn,
            "{} went again on another connection",
            a.target
        );
        assert_eq!(
            (&again.method, a.stream % 2),
            (&a.method, 1),
            "client streams are odd"
        );
    }
    let above = seen
        .iter()
        .filter(|s| s.outcome == Outcome::AboveGoaway)
        .count();
    assert!(
        above >= 1,
        "a stream was in flight above the GOAWAY: {seen:?}"
    );
    assert!(up.connections() >= 2, "the retries took a fresh connection");
    let counted = retries(&admin).await;
    assert!(
        counted.get("goaway").copied().unwrap_or(0.0) >= above as f64,
        "{counted:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn refused_streams_go_again_whatever_the_method() {
    let w = World::new().await;
    let up = FaultyH2::start(Faults {
        refuse_once: true,
        ..Faults::default()
    })
    .await;
    let proxy = InProcess::start(settings_for(&w, &up.url(), up.ca_path(), &[]), w.env()).await;
    let h2c = client::h2c();
    let r = send(
        &h2c,
        request(Method::POST, &proxy.url("/refuse/post"), "abc"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(&h2c, request(Method::GET, &proxy.url("/refuse/get"), "")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = up.seen();
    for (target, body) in [("/refuse/post", 3), ("/refuse/get", 0)] {
        let outcomes: Vec<_> = seen
            .iter()
            .filter(|s| s.target == target)
            .map(|s| (s.outcome.clone(), s.body_len))
            .collect();
        assert_eq!(
            outcomes,
            [(Outcome::Refused, 0), (Outcome::Answered, body)],
            "{target}: {seen:?}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_keepalive_race_replays_idempotent_requests_only() {
    let w = World::new().await;
    let up = FaultyH1::start(H1Fault::DropEverySecond).await;
    let proxy = InProcess::start(settings_for(&w, &up.url(), up.ca_path(), &[]), w.env()).await;
    let http = client::http1();
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::DELETE,
        Method::PUT,
        Method::TRACE,
    ];
    for i in 0..24 {
        let method = methods[i % methods.len()].clone();
        let body = if method == Method::PUT { "put" } else { "" };
        let r = send(
            &http,
            request(method.clone(), &proxy.url(&format!("/k/{i}")), body),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{method} /k/{i}: {}", r.text());
    }
    let seen = up.seen();
    for i in 0..24 {
        let target = format!("/k/{i}");
        let answered = seen
            .iter()
            .filter(|s| s.target == target && s.answered)
            .count();
        assert_eq!(answered, 1, "{target}: {seen:?}");
    }
    let dropped = seen.iter().filter(|s| !s.answered).count();
    assert!(
        dropped >= 10,
        "the race happened on reused connections: {seen:?}"
    );
    for lost in seen.iter().filter(|s| !s.answered) {
        assert_eq!(lost.on_conn, 2, "only reused connections lose requests");
        let again = seen
            .iter()
            .find(|s| s.target == lost.target && s.answered)
            .unwrap();
        assert!(
            again.conn != lost.conn && again.method == lost.method,
            "{again:?}"
        );
    }

    // A POST caught the same way may have been processed: it is not sent again.
    let r = send(&http, request(Method::GET, &proxy.url("/before-post"), "")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&http, request(Method::POST, &proxy.url("/post"), "once")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-failed"));
    let posts: Vec<_> = up
        .seen()
        .into_iter()
        .filter(|s| s.target == "/post")
        .collect();
    assert_eq!(posts.len(), 1, "not replayed: {posts:?}");
    assert!(!posts[0].answered && posts[0].body_len == 4);
    proxy.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_connection_is_found_by_ping_not_by_the_upstream_timeout() {
    let w = World::new().await;
    let up = FaultyH2::start(Faults {
        silent_after: Some(1),
        ..Faults::default()
    })
    .await;
    let extra = [
        "--upstream-ping-interval",
        "1",
        "--upstream-ping-timeout",
        "1",
        "--upstream-timeout",
        "60",
    ];
    let proxy = InProcess::start(settings_for(&w, &up.url(), up.ca_path(), &extra), w.env()).await;
    let h2c = client::h2c();
    assert_eq!(get(&h2c, &proxy.url("/first")).await.status, StatusCode::OK);
    let started = Instant::now();
    let r = get(&h2c, &proxy.url("/second")).await;
    let waited = started.elapsed();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-failed"));
    assert!(
        waited < Duration::from_secs(15),
        "found dead in {waited:?}, not after 60 s"
    );
    // The dead connection is gone: the next request takes a fresh one.
    assert_eq!(get(&h2c, &proxy.url("/third")).await.status, StatusCode::OK);
    assert_eq!(up.connections(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn iaps_401_replays_a_body_held_in_the_retry_buffer() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/warm")).await.status, StatusCode::OK);
    w.upstream.reject_next_valid_tokens(1);
    let r = send(
        &http,
        request(Method::POST, &proxy.url("/upload"), "payload"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["bytes"], 7, "the whole body, sent again");
    let posts: Vec<_> = w
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(!posts[0].authorized() && posts[1].authorized());
    proxy.stop().await;
}

#[tokio::test]
async fn idle_pooled_upstream_connections_are_closed_by_the_proxy_first() {
    let w = World::new().await;
    let up = FaultyH1::start(H1Fault::Healthy).await;
    let extra = ["--upstream-idle-timeout", "1"];
    let proxy = InProcess::start(settings_for(&w, &up.url(), up.ca_path(), &extra), w.env()).await;
    assert_eq!(
        get(&client::http1(), &proxy.url("/once")).await.status,
        StatusCode::OK
    );
    let idle_from = Instant::now();
    up.wait_closed(1, Duration::from_secs(10)).await;
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "closed only once idle"
    );
    proxy.stop().await;
}
