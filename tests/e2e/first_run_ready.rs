//! What a first run says while it starts, through the real binary: the ready line once per
//! route, the warning that points at `iap-proxy check`, where the credential came from, a
//! bad RUST_LOG, the build_info metric, and a metadata server that is slow to start.

use std::time::Duration;

use http::StatusCode;

use crate::support::client::{self, get};
use crate::support::fake_google::{DEFAULT_EMAIL, FakeGoogle};
use crate::support::fixture::{AUDIENCE, SA_EMAIL, World, temp_dir};
use crate::support::proxy::Binary;

const WITHIN: Duration = Duration::from_secs(20);

fn is_ready(line: &str) -> bool {
    line.contains("ready: the first ID token is here")
}

#[tokio::test]
async fn one_ready_line_per_route_with_its_url() {
    let w = World::new().await;
    let key = w.key_file.display();
    let ca = w.upstream.ca_path().display();
    let up = w.upstream.url();
    let config = w.write(
        "routes.toml",
        format!(
            "audience = \"{AUDIENCE}\"\ncredentials = \"{key}\"\nupstream_ca = \"{ca}\"\n\
             [[routes]]\nname = \"one\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\n\
             [[routes]]\nname = \"two\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{up}\"\n"
        ),
    );
    let args = ["--config", config.to_str().unwrap()];
    let proxy = Binary::spawn_listening(&args, &[("IAP_PROXY_LOG_FORMAT", "json")]).await;
    let ready = proxy.wait_for_stderr(2, WITHIN, is_ready).await;
    let listening = proxy
        .wait_for_stderr(2, WITHIN, |l| l.contains("iap-proxy listening"))
        .await;
    let field = |line: &str, key: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v[key].as_str().unwrap_or_default().to_owned()
    };
    for (route, listen) in ["one", "two"].into_iter().zip(&listening) {
        assert_eq!(field(listen, "route"), route);
        let url = format!("http://{}/", field(listen, "listen"));
        let line = ready
            .iter()
            .find(|l| field(l, "route") == route)
            .unwrap_or_else(|| panic!("no ready line for {route}: {ready:#?}"));
        assert_eq!(field(line, "url"), url, "{line}");
        assert_eq!(field(line, "principal"), SA_EMAIL, "{line}");
        assert_eq!(field(line, "audience"), AUDIENCE, "{line}");
        assert!(field(line, "expires").ends_with('Z'), "{line}");
        assert!(field(line, "message").contains(&url), "{line}");
        let r = get(&client::http1(), &format!("{url}echo")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let (_, proxy) = proxy.terminate().await;
    let all = proxy.stderr();
    assert_eq!(all.lines().filter(|l| is_ready(l)).count(), 2, "{all}");
    let start = all
        .lines()
        .find(|l| l.contains("starting"))
        .expect("start-up line");
    assert_eq!(
        field(start, "version"),
        env!("CARGO_PKG_VERSION"),
        "{start}"
    );
}

#[tokio::test]
async fn without_a_token_the_warning_points_at_check() {
    let w = World::new().await;
    w.google.set_failing(Some(400));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
    ];
    let key = w.key_file.to_str().unwrap();
    let proxy = Binary::spawn_listening(&args, &[("IAP_PROXY_CREDENTIALS", key)]).await;
    let warned = proxy
        .wait_for_stderr(1, WITHIN, |l| l.contains("no ID token yet"))
        .await;
    assert!(warned[0].contains("iap-proxy check"), "{}", warned[0]);
    // Each failed fetch's own warning points there too.
    let failed = proxy
        .wait_for_stderr(1, WITHIN, |l| l.contains("ID token fetch failed"))
        .await;
    assert!(failed[0].contains("iap-proxy check"), "{}", failed[0]);
    let out = proxy.stderr();
    assert!(
        out.contains("found_by=IAP_PROXY_CREDENTIALS"),
        "the log names the variable:\n{out}"
    );
    assert!(!out.lines().any(is_ready), "{out}");
}

#[tokio::test]
async fn a_bad_rust_log_warns_and_logs_at_info() {
    let w = World::new().await;
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
    ];
    // spawn_listening needs the INFO "listening" line: RUST_LOG=verbose no longer hides it.
    let proxy = Binary::spawn_listening(&args, &[("RUST_LOG", "verbose")]).await;
    let warning = proxy
        .wait_for_stderr(1, WITHIN, |l| l.contains("RUST_LOG"))
        .await;
    assert!(
        warning[0].contains("WARN") && warning[0].contains("`verbose`"),
        "{}",
        warning[0]
    );
    proxy.wait_for_stderr(1, WITHIN, is_ready).await;
    let admin = proxy
        .wait_for_stderr(1, WITHIN, |l| l.contains("admin endpoints listening"))
        .await;
    let addr = admin[0]
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("admin addr");
    let metrics = get(&client::http1(), &format!("http://{addr}/metrics")).await;
    let text = metrics.text();
    let build = format!(
        "iap_proxy_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    assert!(
        text.contains(
            "iap_proxy_token_refreshes_total{source=\"service_account\",result=\"success\"} 1"
        ),
        "the source label is the credential's kind:\n{text}"
    );
    assert!(!text.contains(".json"), "no path in a label:\n{text}");
}

/// On GKE the metadata server may answer only some seconds after the pod starts: the probe
/// keeps asking within --metadata-wait (default 10 s) instead of giving up at once.
#[tokio::test]
async fn a_metadata_server_that_answers_after_3s_is_waited_for() {
    let w = World::new().await;
    let google: &FakeGoogle = &w.google;
    let home = temp_dir();
    let env = [
        ("GCE_METADATA_HOST", google.metadata_host()),
        ("HOME", home.path().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
    ];

    google.answer_metadata_after(Duration::from_secs(3));
    let started = tokio::time::Instant::now();
    let proxy = Binary::spawn_listening(&base, &env).await;
    let probes = google.metadata_probes();
    assert!(!probes.is_empty());
    assert!(probes[0] < started + Duration::from_secs(3), "{probes:?}");
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        w.upstream
            .requests()
            .last()
            .and_then(|r| r.email.clone())
            .as_deref(),
        Some(DEFAULT_EMAIL)
    );
    let out = proxy.stderr();
    assert!(out.contains("found_by=metadata server probe"), "{out}");

    // With a wait shorter than the server's start, it is "no credentials", exit 64.
    google.answer_metadata_after(Duration::from_secs(3));
    let mut args = base.to_vec();
    args.extend(["--metadata-wait", "1"]);
    let mut p = Binary::spawn(&args, &env);
    assert_eq!(p.wait_exit(WITHIN).await, Some(64), "{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.contains("no Google credentials found") && err.contains("--metadata-wait"),
        "{err}"
    );
}
