//! End to end, in-process: client → iap-proxy → checking TLS upstream, with tokens from the
//! fake Google.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use iap_proxy::config::{AuthHeader, Env};
use support::Alpn;
use support::fixture::{AUDIENCE, World};
use support::proxy::InProcess;
use support::proxy_client::{self as client, get, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn token_injected_and_accepted() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let r = get(&client::http1(), &proxy.url("/echo?a=1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "a=1");
    let auth = echo["headers"]["authorization"][0].as_str().unwrap();
    assert!(auth.starts_with("Bearer ey"), "{auth}");
    assert_eq!(w.upstream.authorized_count(), 1);
    assert_eq!(w.upstream.rejected_count(), 0);
    assert_eq!(w.google.issued_count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_requests_on_cold_start_cause_one_issuance() {
    let w = World::new().await;
    w.google.set_delay(Duration::from_millis(300));
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let http = http.clone();
            let url = proxy.url(&format!("/echo?i={i}"));
            tokio::spawn(async move { get(&http, &url).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(w.google.issued_count(), 1);
    assert_eq!(w.upstream.authorized_count(), 100);
    assert_eq!(w.upstream.rejected_count(), 0);
}

#[tokio::test]
async fn two_second_tokens_never_reach_the_upstream_expired() {
    let w = World::new().await;
    w.google.set_token_lifetime(Duration::from_secs(2));
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    let start = Instant::now();
    let mut sent = 0u32;
    // Four clients for 10 s, bounded in count too.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let http = http.clone();
        let url = proxy.url("/echo");
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while start.elapsed() < Duration::from_secs(10) && n < 5_000 {
                let r = get(&http, &url).await;
                assert_eq!(r.status, StatusCode::OK, "request {n}: {}", r.text());
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        }));
    }
    for wk in workers {
        sent += wk.await.unwrap();
    }
    assert!(sent > 100, "only {sent} requests in 10 s");
    assert_eq!(
        w.upstream.rejected_count(),
        0,
        "a request carried an expired or bad token"
    );
    let issued = w.google.issued_count();
    assert!(
        (5..=20).contains(&issued),
        "expected a refresh every ~1.5 s, got {issued} issuances"
    );
}

#[tokio::test]
async fn failing_token_endpoint_gives_503_and_never_forwards_then_recovers() {
    let w = World::new().await;
    w.google.set_failing(Some(500));
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    for _ in 0..3 {
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.header("x-iap-proxy-error"), Some("token-endpoint-failed"));
        assert!(r.text().contains("500"), "reason missing: {}", r.text());
    }
    assert_eq!(
        w.upstream.requests().len(),
        0,
        "a request was forwarded without a token"
    );
    w.google.set_failing(None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&http, &proxy.url("/echo")).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.upstream.rejected_count(), 0);
}

#[tokio::test]
async fn metadata_server_source() {
    let w = World::new().await;
    let mut s = w.settings();
    s.credentials = None;
    let env = Env::from_pairs([("GCE_METADATA_HOST", w.google.metadata_host())]);
    let proxy = InProcess::start(s, env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(w.google.issued_count(), 1);
}

#[tokio::test]
async fn sse_first_event_arrives_before_the_stream_ends() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let res = client::http1()
        .request(
            Request::get(proxy.url("/sse"))
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event before the upstream released the rest")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("first"));
    w.upstream.release_sse();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("second"));
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let url = format!("ws://{}/ws", proxy.addr);
    let (mut ws, res) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello iap"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hello iap");
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[1, 2, 3]
    );
    ws.close(None).await.unwrap();
    assert_eq!(w.upstream.rejected_count(), 0);
}

#[tokio::test]
async fn upstream_protocol_follows_the_client() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["version"],
        "HTTP/1.1",
        "an HTTP/1.1 client is relayed over HTTP/1.1"
    );
    let r = get(&client::h2c(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "an h2c client is relayed over h2"
    );
}

#[tokio::test]
async fn http2_upstream_and_h2c_client_with_trailers() {
    let w = World::with_alpn(Alpn::Http2Only).await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let r = get(&client::h2c(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // gRPC-style: h2c in, h2 out, trailers through.
    let res = client::h2c()
        .request(
            Request::get(proxy.url("/trailers"))
                .header("te", "trailers")
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers passed through");
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn hop_by_hop_host_and_forwarding_headers() {
    // HTTP/1.1 upstream: on h2 hyper itself drops connection-specific headers, which would
    // hide a proxy that forgot to.
    let w = World::with_alpn(Alpn::Http1Only).await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("connection", "x-hop-named")
        .header("x-hop-named", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Y2xpZW50")
        .header("authorization", "Bearer client-supplied")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-app", "kept")
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let h = &r.json()["headers"];
    for gone in [
        "x-hop-named",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x-app"][0], "kept");
    let auth = h["authorization"].as_array().unwrap();
    assert_eq!(
        auth.len(),
        1,
        "token appended instead of replaced: {auth:?}"
    );
    assert_ne!(auth[0], "Bearer client-supplied");
    assert_eq!(
        h["host"][0].as_str().unwrap(),
        format!("127.0.0.1:{}", w.upstream.port())
    );
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(
        h["x-forwarded-host"][0].as_str().unwrap(),
        proxy.addr.to_string()
    );

    // And on the way back.
    let r = get(&client::http1(), &proxy.url("/hop")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-custom-hop").is_none(), "{:?}", r.headers);
    assert!(r.header("proxy-authenticate").is_none());
    assert!(r.header("keep-alive").is_none());
}

#[tokio::test]
async fn proxy_authorization_mode_leaves_the_apps_authorization_alone() {
    let w = World::new().await;
    let mut s = w.settings();
    s.header = AuthHeader::ProxyAuthorization;
    let proxy = InProcess::start(s, w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("authorization", "Basic YXBwOnVzZXI=")
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["authorization"][0], "Basic YXBwOnVzZXI=");
    assert!(
        h.get("proxy-authorization").is_none(),
        "IAP strips it before the app"
    );
    assert_eq!(w.upstream.authorized_count(), 1);
}

#[tokio::test]
async fn absolute_form_request_still_goes_to_the_configured_upstream() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET http://other.example/echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.contains(&format!(
            "\"authority\":\"127.0.0.1:{}\"",
            w.upstream.port()
        )),
        "{raw}"
    );
    assert_eq!(w.upstream.authorized_count(), 1);
}

#[tokio::test]
async fn redirects_on_the_upstream_origin_come_back_through_the_proxy() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    let r = get(&http, &proxy.url("/redirect")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://{}/landed?x=1", proxy.addr)
    );
    let r = get(&http, &proxy.url("/redirect-away")).await;
    assert_eq!(r.header("location"), Some("https://elsewhere.example/x"));
    proxy.stop().await;

    let mut s = w.settings();
    s.rewrite_redirects = false;
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/redirect")).await;
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/landed?x=1", w.upstream.url())
    );
}

#[tokio::test]
async fn upstream_failures_are_told_apart() {
    let w = World::new().await;
    let http = client::http1();

    // Nothing listens there: 502.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut s = w.settings();
    s.upstream = format!("https://127.0.0.1:{port}").parse().unwrap();
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-connect"));
    assert!(r.text().contains("cannot connect"), "{}", r.text());
    assert!(!r.text().contains("Bearer"), "{}", r.text());
    proxy.stop().await;

    // Untrusted certificate: 502 that says so.
    let mut s = w.settings();
    s.upstream_ca = None;
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().to_lowercase().contains("certificate"),
        "{}",
        r.text()
    );
    proxy.stop().await;

    // Slow upstream: 504.
    let mut s = w.settings();
    s.upstream_timeout = Duration::from_secs(1);
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/slow?ms=3000")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-timeout"));
}

#[tokio::test]
async fn oversized_headers_get_431_and_connect_gets_400() {
    let w = World::new().await;
    let mut s = w.settings();
    s.max_header_bytes = 16 * 1024;
    let proxy = InProcess::start(s, w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("x-big", "a".repeat(20 * 1024))
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.header("x-iap-proxy-error"), Some("headers-too-large"));

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let raw = String::from_utf8_lossy(&buf[..n]);
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(w.upstream.requests().len(), 0);
}

#[tokio::test]
async fn malformed_key_file_names_the_file_and_the_field() {
    let w = World::new().await;
    let mut key = w
        .google
        .service_account_json("broken@fake-project.iam.gserviceaccount.com");
    key.as_object_mut().unwrap().remove("client_email");
    let path = w.dir.path().join("broken-key.json");
    std::fs::write(&path, serde_json::to_vec(&key).unwrap()).unwrap();
    let mut s = w.settings();
    s.credentials = Some(path.clone());
    let err = InProcess::start_error(s, w.env()).await;
    let msg = err.to_string();
    assert!(
        msg.contains("broken-key.json") && msg.contains("client_email"),
        "{msg}"
    );
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

#[tokio::test]
async fn token_never_goes_to_another_host_via_audience_mismatch_check() {
    // The upstream checks aud exactly: a proxy configured with another audience is refused
    // by "IAP" (401 passes through untouched, it is IAP's answer, not ours).
    let w = World::new().await;
    let mut s = w.settings();
    s.audience = "999-other.apps.googleusercontent.com".into();
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("x-goog-iap-generated-response"), Some("true"));
    assert!(r.header("x-iap-proxy-error").is_none());
    assert!(r.text().contains(AUDIENCE), "{}", r.text());
}
