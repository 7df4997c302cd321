//! End to end with the real binary: memory while streaming, signals, logs, exit codes.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::support::client::{self, get, send, try_send};
use crate::support::fixture::{
    AUDIENCE, SA_EMAIL, USER_CLIENT, USER_EMAIL, USER_REFRESH_TOKEN, USER_SECRET, World,
    home_with_adc,
};
use crate::support::hex;
use crate::support::proxy::{Binary, binary_path};
use crate::support::upstream::expected_sha256;

fn proxy_args(w: &World) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream".into(),
        w.upstream.url(),
        "--audience".into(),
        AUDIENCE.into(),
        "--credentials".into(),
        w.key_file.display().to_string(),
        "--upstream-ca".into(),
        w.upstream.ca_path().display().to_string(),
    ]
}

async fn spawn(w: &World, extra: &[&str], env: &[(&str, &str)]) -> Binary {
    let mut args = proxy_args(w);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Binary::spawn_listening(&args, env).await
}

/// How long a request may take to reach the upstream once sent.
const ARRIVAL: Duration = Duration::from_secs(10);

const BIG: u64 = 100 * 1024 * 1024;

// Two workers: this process both produces the 100 MiB (the fake upstream) and hashes it
// (the client) while the proxy streams it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_100_mib_both_ways_in_bounded_memory() {
    let w = World::new().await;
    let proxy = spawn(&w, &[], &[]).await;
    let baseline = proxy.rss_kib();
    let http = client::http1();

    // Download: hash as it arrives, never holding the body.
    let res = http
        .request(
            Request::get(proxy.url(&format!("/download?bytes={BIG}")))
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    assert_eq!(len, BIG);
    assert_eq!(
        hasher.finalize().as_slice(),
        expected_sha256(BIG).as_slice()
    );

    // Upload.
    let want = hex(&client::patterned_sha256(BIG));
    let req = Request::post(proxy.url("/upload"))
        .body(client::patterned_body(BIG))
        .unwrap();
    let r = client::send(&http, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["bytes"], BIG);
    assert_eq!(r.json()["sha256"], want);

    let peak = proxy.peak_rss_kib();
    eprintln!("iap-proxy RSS: {baseline} KiB at start, {peak} KiB peak after 2 × 100 MiB");
    assert!(
        peak < 48 * 1024,
        "peak RSS {peak} KiB: the body was buffered"
    );
    assert_eq!(w.upstream.rejected_count(), 0);
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let w = World::new().await;
    let proxy = spawn(&w, &["--shutdown-grace", "10"], &[]).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/echo")).await.status, StatusCode::OK);
    let req = client::get_request(&proxy.url("/slow?ms=1500"), &[]);
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move { try_send(&http, req).await }
    });
    // SIGTERM only once the request is in flight at the upstream.
    w.upstream.wait_for_request("/slow", ARRIVAL).await;
    let stopped = tokio::spawn(proxy.terminate());
    let r = in_flight
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the in-flight request was cut: {e}"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "slow done");
    let (code, proxy) = stopped.await.unwrap();
    assert_eq!(code, Some(0), "{}", proxy.stderr());
    assert!(proxy.stderr().contains("drained"), "{}", proxy.stderr());
}

#[tokio::test]
async fn debug_logs_hold_no_token_assertion_or_key() {
    let w = World::new().await;
    let proxy = spawn(&w, &[], &[("RUST_LOG", "trace")]).await;
    let http = client::http1();
    for path in [
        "/echo?sig=query-secret",
        "/redirect",
        "/download?bytes=1000",
    ] {
        let req = Request::get(proxy.url(path))
            .header("authorization", "Bearer client-secret-value")
            .body(client::empty())
            .unwrap();
        assert!(send(&http, req).await.status.is_success() || path == "/redirect");
    }
    let (_, proxy) = proxy.terminate().await;
    let out = format!("{}\n{}", proxy.stderr(), proxy.stdout());
    assert!(out.len() > 1000, "expected debug output, got:\n{out}");
    let tokens = w.google.issued_tokens();
    assert!(!tokens.is_empty());
    for t in tokens.iter().map(|t| t.token.clone()) {
        assert!(!out.contains(&t), "an ID token appears in the logs");
        let sig = t.rsplit('.').next().unwrap();
        assert!(!out.contains(sig), "a token signature appears in the logs");
    }
    for a in w.google.received_assertions() {
        assert!(
            !out.contains(a.rsplit('.').next().unwrap()),
            "the assertion appears in the logs"
        );
    }
    for line in w.key_json()["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
    {
        assert!(
            !out.contains(line),
            "private key material appears in the logs"
        );
    }
    assert!(
        !out.contains("client-secret-value"),
        "the client's Authorization appears in the logs"
    );
}

#[tokio::test]
async fn non_loopback_listen_is_refused_with_the_reason() {
    let mut p = Binary::spawn(
        &[
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "https://app.example.com",
            "--audience",
            AUDIENCE,
        ],
        &[],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, Some(64));
    let err = p.stderr();
    assert!(
        err.contains("--allow-non-loopback") && err.contains("service account"),
        "{err}"
    );
}

#[tokio::test]
async fn every_bad_setting_is_reported_at_once() {
    let mut p = Binary::spawn(
        &[
            "--listen",
            "nonsense",
            "--upstream",
            "ftp://x",
            "--log-format",
            "xml",
            "--audience",
            " ",
        ],
        &[],
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, Some(64));
    let err = p.stderr();
    for needle in ["listen", "upstream", "audience", "log"] {
        assert!(
            err.to_lowercase().contains(needle),
            "{needle} not reported:\n{err}"
        );
    }
}

#[tokio::test]
async fn malformed_key_file_stops_the_binary_naming_file_and_field() {
    let w = World::new().await;
    let path = w.write(
        "not-json.json",
        b"{\"type\": \"service_account\", \"private_key\": ",
    );
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--credentials",
        path.to_str().unwrap(),
    ];
    let mut p = Binary::spawn(&args, &[]);
    let code = p.wait_exit(Duration::from_secs(10)).await;
    assert_ne!(code, Some(0));
    assert!(p.stderr().contains("not-json.json"), "{}", p.stderr());
}

#[tokio::test]
async fn token_subcommand_prints_one_verifiable_token() {
    let w = World::new().await;
    let args = [
        "token",
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
    ];
    let mut p = Binary::spawn(&args, &[]);
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        p.stderr()
    );
    let out = p.stdout();
    let token = out.trim();
    assert_eq!(out.lines().count(), 1);
    let data = w
        .google
        .verify_id_token(token, AUDIENCE)
        .expect("valid token");
    assert_eq!(data.claims["email"], SA_EMAIL);
}

#[test]
fn help_states_the_precedence() {
    let out = std::process::Command::new(binary_path())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("IAP_PROXY_"), "{help}");
    assert!(help.to_lowercase().contains("flags"), "{help}");
}

#[tokio::test]
async fn token_subcommand_impersonates() {
    let w = World::new().await;
    let target = "target@fake-project.iam.gserviceaccount.com";
    w.google.grant_token_creator(SA_EMAIL, target);
    let base = w.google.base_url();
    let args = [
        "token",
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
        "--impersonate-service-account",
        target,
        "--iam-endpoint",
        &base,
    ];
    let mut p = Binary::spawn(&args, &[]);
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        p.stderr()
    );
    let data = w
        .google
        .verify_id_token(p.stdout().trim(), AUDIENCE)
        .expect("valid token");
    assert_eq!(data.claims["email"], target);

    // Denied: exit non-zero, and the message names the missing role.
    let args = [
        "token",
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
        "--impersonate-service-account",
        "nobody@fake-project.iam.gserviceaccount.com",
        "--iam-endpoint",
        &base,
    ];
    let mut p = Binary::spawn(&args, &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, Some(1));
    assert!(
        p.stderr()
            .contains("roles/iam.serviceAccountOpenIdTokenCreator"),
        "{}",
        p.stderr()
    );
}

#[tokio::test]
async fn user_credentials_and_impersonation_never_reach_the_logs() {
    let w = World::new().await;
    let target = "target@fake-project.iam.gserviceaccount.com";
    let home = home_with_adc(w.dir.path(), &w.authorized_user(USER_CLIENT));
    w.google.grant_token_creator(USER_EMAIL, target);
    let base = w.google.base_url();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
        "--impersonate-service-account",
        target,
        "--iam-endpoint",
        &base,
    ];
    let env = [("HOME", home.to_str().unwrap()), ("RUST_LOG", "debug")];
    let proxy = Binary::spawn_listening(&args, &env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (_, proxy) = proxy.terminate().await;
    let out = format!("{}\n{}", proxy.stderr(), proxy.stdout());
    assert!(
        out.contains("credential source chosen") && out.contains("impersonating"),
        "{out}"
    );
    let mut secrets = vec![USER_SECRET.to_owned(), USER_REFRESH_TOKEN.to_owned()];
    secrets.extend(w.google.issued_access_tokens());
    secrets.extend(w.google.issued_tokens().into_iter().map(|t| t.token));
    assert!(secrets.len() >= 4);
    for s in secrets {
        assert!(!out.contains(&s), "a secret appears in the logs");
    }
}

#[tokio::test]
async fn json_logs_are_cloud_logging_shaped_and_hold_no_secret() {
    let w = World::new().await;
    let proxy = spawn(
        &w,
        &["--log-format", "json", "--access-log"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let http = client::http1();
    let req = Request::get(proxy.url("/echo?sig=query-secret"))
        .header("authorization", "Bearer client-secret-value")
        .header("cookie", "session=cookie-secret")
        .body(client::empty())
        .unwrap();
    assert_eq!(send(&http, req).await.status, StatusCode::OK);
    let (_, proxy) = proxy.terminate().await;
    let out = proxy.stderr();
    let mut access = None;
    for line in out.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["severity"].is_string(), "{line}");
        if v.get("httpRequest").is_some() {
            access = Some(v);
        }
    }
    let access = access.expect("an access log line");
    let http_request = &access["httpRequest"];
    assert_eq!(http_request["requestMethod"], "GET");
    assert_eq!(http_request["requestUrl"], "/echo", "the query is left out");
    assert_eq!(http_request["status"], 200);
    assert!(http_request["latency"].as_str().unwrap().ends_with('s'));
    assert_eq!(access["severity"], "INFO");
    for secret in ["client-secret-value", "cookie-secret", "query-secret"] {
        assert!(!out.contains(secret), "{secret} appears in the logs");
    }
    for t in w.google.issued_tokens() {
        assert!(!out.contains(&t.token), "an ID token appears in the logs");
    }
}

#[tokio::test]
async fn grace_running_out_exits_non_zero() {
    let w = World::new().await;
    let proxy = spawn(&w, &["--shutdown-grace", "1"], &[]).await;
    let req = client::get_request(&proxy.url("/slow?ms=5000"), &[]);
    let http = client::http1();
    let in_flight = tokio::spawn(async move { try_send(&http, req).await });
    // SIGTERM only once the request is in flight at the upstream.
    w.upstream.wait_for_request("/slow", ARRIVAL).await;
    let (code, proxy) = proxy.terminate().await;
    assert_eq!(code, Some(1), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("grace period ran out"),
        "{}",
        proxy.stderr()
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request fails rather than looking complete"
    );
}

#[test]
fn completions_for_bash() {
    let out = std::process::Command::new(binary_path())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("--upstream") && script.contains("complete"),
        "{script}"
    );
}
