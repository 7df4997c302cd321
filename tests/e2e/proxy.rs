//! End to end, in-process: client → iap-proxy → checking TLS upstream, with tokens from the
//! fake Google.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use iap_proxy::config::{AuthHeader, Env};
use tokio::net::TcpStream;

use crate::support::client::{self, Connection, get, send, try_send};
use crate::support::closed_port;
use crate::support::fake_google::{DEFAULT_EMAIL, TokenPath};
use crate::support::fixture::{AUDIENCE, SA_EMAIL, World};
use crate::support::proxy::InProcess;
use crate::support::upstream::Alpn;

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

    // What the proxy asked the token endpoint for: a jwt-bearer assertion signed with the
    // key file's key, for the IAP audience (the fake checked the signature and times).
    let asked = w.google.token_requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].grant_type,
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert_eq!(asked[0].status, 200, "{:?}", asked[0].refusal);
    let header = asked[0].assertion_header.as_ref().expect("a JWT assertion");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(
        header.kid.as_deref(),
        w.key_json()["private_key_id"].as_str()
    );
    let claims = asked[0].assertion_claims.as_ref().unwrap();
    assert_eq!(claims["iss"], SA_EMAIL);
    assert_eq!(claims["aud"], w.google.token_uri());
    assert_eq!(claims["target_audience"], AUDIENCE);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600,
        "{claims}"
    );
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
            let req = client::get_request(&proxy.url(&format!("/echo?i={i}")), &[]);
            tokio::spawn(async move { try_send(&http, req).await.map(|r| (r.status, r.text())) })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
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
    // Four clients for 10 s, bounded in count too. Each stops at its first failure and
    // hands it to the test body, which asserts.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let http = http.clone();
        let url = proxy.url("/echo");
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while start.elapsed() < Duration::from_secs(10) && n < 5_000 {
                match try_send(&http, client::get_request(&url, &[])).await {
                    Ok(r) if r.status == StatusCode::OK => {}
                    Ok(r) => return (n, Some(format!("{}: {}", r.status, r.text()))),
                    Err(e) => return (n, Some(e.to_string())),
                }
                n += 1;
                // Pacing, part of the load shape: not a synchronisation.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (n, None)
        }));
    }
    for wk in workers {
        let (n, failure) = wk.await.unwrap();
        assert_eq!(failure, None, "request {n} of a client failed");
        sent += n;
    }
    assert!(sent > 100, "only {sent} requests in 10 s");
    assert_eq!(
        w.upstream.rejected_count(),
        0,
        "a request carried an expired or bad token"
    );
    let issued = w.google.issued_tokens();
    assert!(
        (5..=20).contains(&issued.len()),
        "expected a refresh every ~1.5 s, got {} issuances",
        issued.len()
    );
    // The fake really handed out 2 s tokens (exp is rounded down to the second).
    assert!(issued.iter().all(|t| t.exp - t.iat <= 2), "{issued:?}");
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
    // The proxy's own retry (its backoff without a token is at most 4 s) gets a token…
    w.google.wait_for_issued(1, Duration::from_secs(15)).await;
    // …and from then on requests are served: one still racing with the token's arrival
    // waits for it.
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "did not recover: {}", r.text());
    assert_eq!(w.upstream.rejected_count(), 0);
}

#[tokio::test]
async fn metadata_server_source() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].credentials = None;
    let env = Env::from_pairs([("GCE_METADATA_HOST", w.google.metadata_host())]);
    let proxy = InProcess::start(s, env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let issued = w.google.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].via, TokenPath::Metadata, "{issued:?}");
    assert_eq!(issued[0].email, DEFAULT_EMAIL);
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
    s.routes[0].header = AuthHeader::ProxyAuthorization;
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
    // On a connection of its own, hyper writes the request target as given: absolute-form.
    let mut conn = Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let req = Request::get("http://other.example/echo")
        .header("host", proxy.addr.to_string())
        .body(client::empty())
        .unwrap();
    let r = conn.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["authority"],
        format!("127.0.0.1:{}", w.upstream.port())
    );
    assert_eq!(w.upstream.authorized_count(), 1);
    // Naming another host in Host is a rebound DNS name's signature: refused, not forwarded.
    let req = Request::get("http://other.example/echo")
        .header("host", "other.example")
        .body(client::empty())
        .unwrap();
    let r = conn.send(req).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.text());
    assert_eq!(r.header("x-iap-proxy-error"), Some("host-not-allowed"));
    assert_eq!(w.upstream.requests().len(), 1);
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
    s.routes[0].rewrite_redirects = false;
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
    let mut s = w.settings();
    s.routes[0].upstream = format!("https://127.0.0.1:{}", closed_port())
        .parse()
        .unwrap();
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-connect"));
    assert!(r.text().contains("cannot connect"), "{}", r.text());
    assert!(!r.text().contains("Bearer"), "{}", r.text());
    proxy.stop().await;

    // Untrusted certificate: 502 that says so.
    let mut s = w.settings();
    s.process.upstream_ca = None;
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
    s.routes[0].upstream_timeout = Duration::from_secs(1);
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&http, &proxy.url("/slow?ms=3000")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("x-iap-proxy-error"), Some("upstream-timeout"));
}

#[tokio::test]
async fn oversized_headers_get_431_and_connect_gets_400() {
    let w = World::new().await;
    let mut s = w.settings();
    s.process.max_header_bytes = 16 * 1024;
    let proxy = InProcess::start(s, w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("x-big", "a".repeat(20 * 1024))
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.header("x-iap-proxy-error"), Some("headers-too-large"));

    let mut conn = Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let connect = Request::connect("other.example:443")
        .header("host", "other.example:443")
        .body(client::empty())
        .unwrap();
    let r = conn.send(connect).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(w.upstream.requests().len(), 0);
}

#[tokio::test]
async fn malformed_key_file_names_the_file_and_the_field() {
    let w = World::new().await;
    let mut key = w
        .google
        .service_account_json("broken@fake-project.iam.gserviceaccount.com");
    key.as_object_mut().unwrap().remove("client_email");
    let path = w.write_json("broken-key.json", &key);
    let mut s = w.settings();
    s.routes[0].credentials = Some(path.clone());
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
    s.routes[0].audience = "999-other.apps.googleusercontent.com".into();
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("x-goog-iap-generated-response"), Some("true"));
    assert!(r.header("x-iap-proxy-error").is_none());
    assert!(r.text().contains(AUDIENCE), "{}", r.text());
}
