//! A token's life end to end: IAP refusing every token (refreshes back off, one warning
//! per token, counted), a refused POST that still refreshes, a token dead on arrival
//! (clock skew), and an `exp` at the end of time.

use std::time::{Duration, Instant};

use http::{Request, StatusCode};

use crate::support::admin::{Admin, with_admin};
use crate::support::client::{self, get, send};
use crate::support::fixture::{SA_EMAIL, World};
use crate::support::proxy::{Binary, InProcess};

const WRONG_AUDIENCE: &str = "999999999-wrongclient.apps.googleusercontent.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iap_refusing_every_token_backs_off_and_warns_once_per_token() {
    let w = World::new().await;
    let key = w.key_file.display().to_string();
    let ca = w.upstream.ca_path().display().to_string();
    let upstream = w.upstream.url();
    // A wrong audience: Google mints the tokens, IAP refuses every one of them.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--audience",
        WRONG_AUDIENCE,
        "--credentials",
        &key,
        "--upstream-ca",
        &ca,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let proxy = Binary::spawn_listening(&args, &[]).await;
    let admin = Admin::at(proxy.admin_url("").await);
    let http = client::http1();
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert_eq!(r.header("x-goog-iap-generated-response"), Some("true"));
        assert!(
            r.text().contains("audience"),
            "IAP's body reaches the client: {}",
            r.text()
        );
        requests += 1;
    }
    let issued = w.google.issued_tokens();
    // The start, the first refusal's refresh, then 1 s and 2 s apart: not one per request.
    assert!(requests >= 20, "only {requests} requests in 4 s");
    assert!(
        (3..=5).contains(&issued.len()),
        "{} tokens for {requests} refused requests",
        issued.len()
    );
    let gaps: Vec<u128> = issued
        .windows(2)
        .map(|p| p[1].issued_at_ms - p[0].issued_at_ms)
        .collect();
    for (i, pair) in gaps.windows(2).enumerate().skip(1) {
        assert!(
            pair[1] >= pair[0] * 3 / 2,
            "refresh {i}: gaps {gaps:?} ms do not grow"
        );
    }
    // One warning per token refused after a refusal, naming what to check.
    let warning = proxy
        .wait_for_stderr_line(
            "IAP refused a freshly fetched ID token too",
            Duration::from_secs(5),
        )
        .await;
    for needle in [
        WRONG_AUDIENCE,
        SA_EMAIL,
        "iap-proxy check",
        "JWT audience doesn't match",
    ] {
        assert!(warning.contains(needle), "{needle} missing: {warning}");
    }
    let warnings = proxy
        .stderr()
        .lines()
        .filter(|l| l.contains("IAP refused a freshly fetched ID token too"))
        .count();
    assert!(
        (1..issued.len()).contains(&warnings),
        "{warnings} warnings for {} tokens",
        issued.len()
    );
    // Every IAP 401 is counted, replays included.
    let refusals = admin
        .metric("iap_proxy_iap_refusals_total", &[("route", "default")])
        .await
        .expect("the refusal counter");
    assert_eq!(refusals as usize, w.upstream.rejected_count());
    assert!(refusals as usize >= requests);
    assert!(
        !proxy.stderr().contains(&issued[0].token),
        "a token in the log"
    );
}

#[tokio::test]
async fn a_refused_post_beyond_the_retry_buffer_is_not_replayed_but_the_next_one_has_a_fresh_token()
{
    let w = World::new().await;
    // A body held in the retry buffer is replayed (resilience.rs); one larger than the
    // buffer is gone once sent.
    let mut settings = w.settings();
    settings.process.retry_buffer_bytes = 4;
    let proxy = InProcess::start(settings, w.env()).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/warm")).await.status, StatusCode::OK);
    let post = |n: u32| {
        Request::post(proxy.url(&format!("/upload?n={n}")))
            .body(client::full("payload"))
            .unwrap()
    };
    // IAP stops accepting the held token; the POST's body (7 bytes) is gone, so its 401 is passed on.
    w.upstream.reject_next_valid_tokens(1);
    let r = send(&http, post(1)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.header("x-goog-iap-generated-response"), Some("true"));
    let posts = |n: &str| {
        w.upstream
            .requests()
            .into_iter()
            .filter(|r| r.method == http::Method::POST && r.query.as_deref() == Some(n))
            .count()
    };
    assert_eq!(posts("n=1"), 1, "a POST with a body is never replayed");
    // But the refusal asked for a fresh token, so the next POST goes through with it.
    let fresh = w.google.wait_for_issued(2, Duration::from_secs(10)).await;
    let r = send(&http, post(2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = w
        .upstream
        .wait_for("for /upload?n=2", Duration::from_secs(5), |r| {
            r.query.as_deref() == Some("n=2")
        })
        .await;
    let sent = seen.headers["authorization"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("Bearer {}", fresh[1].token));
    proxy.stop().await;
}

#[tokio::test]
async fn a_token_dead_on_arrival_is_a_503_naming_clock_skew_and_fetches_back_off() {
    let w = World::new().await;
    // Google's clock two hours behind ours: every hour-long token is dead on arrival.
    w.google.set_clock_offset(-7200);
    let mut settings = w.settings();
    settings.routes[0].token_wait = Duration::from_secs(5);
    let proxy = InProcess::start(settings, w.env()).await;
    let http = client::http1();
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        answers.push(get(&http, &proxy.url("/echo")).await);
    }
    for r in &answers {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert_eq!(
            r.header("x-iap-proxy-error"),
            Some("clock-skew"),
            "{}",
            r.text()
        );
        let body = r.text();
        assert!(
            body.contains("already expired when it arrived")
                && body.contains("before this machine's clock")
                && body.contains("clock skew"),
            "{body}"
        );
    }
    // Retries back off (0.25 s, 0.5 s, 1 s, 2 s …) instead of one every 250 ms.
    let fetches = w.google.request_count();
    assert!((3..=8).contains(&fetches), "{fetches} fetches in 5 s");
    assert_eq!(w.upstream.requests().len(), 0, "nothing was forwarded");
    // Once the clocks agree, the proxy recovers by itself.
    w.google.set_clock_offset(0);
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    proxy.stop().await;
}

#[tokio::test]
async fn an_exp_at_the_end_of_time_is_a_bad_token_and_the_refresher_lives_on() {
    let w = World::new().await;
    w.google.set_fixed_exp(Some(u64::MAX));
    let (proxy, admin) = with_admin(w.settings(), w.env()).await;
    let http = client::http1();
    for exp in [u64::MAX, i64::MAX as u64] {
        w.google.set_fixed_exp(Some(exp));
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert_eq!(r.header("x-iap-proxy-error"), Some("token-endpoint-failed"));
        assert!(r.text().contains("beyond the year 9999"), "{}", r.text());
        // Alive and truthful: the process is healthy, it is just not ready.
        admin.assert_status("/healthz", StatusCode::OK).await;
        admin
            .assert_status("/readyz", StatusCode::SERVICE_UNAVAILABLE)
            .await;
    }
    w.google.set_fixed_exp(None);
    let r = get(&http, &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    admin.assert_status("/healthz", StatusCode::OK).await;
    admin.assert_status("/readyz", StatusCode::OK).await;
    let restarts = admin
        .metric(
            "iap_proxy_token_refresher_restarts_total",
            // A kind, never the key file's path or the account's email.
            &[("source", "service_account")],
        )
        .await;
    assert_eq!(restarts, Some(0.0), "the refresher never crashed");
    assert_eq!(w.upstream.authorized_count(), 1);
    assert!(w.upstream.requests().iter().all(|r| r.authorized()));
    proxy.stop().await;
}
