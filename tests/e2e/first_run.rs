//! A first run, through the real binary: the wrong files people give it, where a value came
//! from, exit statuses, and the command line's own help (issue 11).

use std::time::Duration;

use serde_json::json;

use crate::support::fixture::{AUDIENCE, SA_EMAIL, World, temp_dir, write_file};
use crate::support::proxy::{Binary, binary_path};

const WITHIN: Duration = Duration::from_secs(20);

/// The flags of a proxy for `w` that starts without asking anything of the upstream.
fn args(w: &World) -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs the binary to its exit; returns (exit code, stderr).
async fn run(args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Binary::spawn(&args, env);
    let code = p.wait_exit(WITHIN).await;
    (code, p.stderr())
}

fn with(mut base: Vec<String>, more: &[&str]) -> Vec<String> {
    base.extend(more.iter().map(|s| s.to_string()));
    base
}

fn contains_all(text: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(text.contains(w), "{w:?} missing from:\n{text}");
    }
}

#[tokio::test]
async fn an_oauth_client_secret_file_is_named_as_such() {
    let w = World::new().await;
    let client = w.write_json(
        "client_secret_123.json",
        &json!({"installed": {
            "client_id": "123-abc.apps.googleusercontent.com",
            "client_secret": "GOCSPX-do-not-print",
            "redirect_uris": ["http://localhost"],
        }}),
    );
    let path = client.to_str().unwrap();
    let (code, err) = run(&with(args(&w), &["--credentials", path]), &[]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &[
            &format!("credentials file {path} (from --credentials)"),
            "is an OAuth client secret file",
            "not a credential",
            "gcloud iam service-accounts keys create",
            "--client-id-file",
        ],
    );
    assert!(!err.contains("GOCSPX"), "{err}");
    assert!(!err.contains("field `type` is missing"), "{err}");
}

#[tokio::test]
async fn a_saved_access_token_is_named_as_such_with_the_variable() {
    let w = World::new().await;
    let token = w.write("token.txt", "ya29.a0AfH6SM-do-not-print\n");
    let path = token.to_str().unwrap();
    let (code, err) = run(&args(&w), &[("IAP_PROXY_CREDENTIALS", path)]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &[
            &format!("credentials file {path} (from IAP_PROXY_CREDENTIALS)"),
            "OAuth access token",
            "IAP needs an ID token",
        ],
    );
    assert!(
        !err.contains("do-not-print") && !err.contains("not valid JSON"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_file_names_the_variable_and_says_it_once() {
    let w = World::new().await;
    let missing = w.path("nope.json");
    let path = missing.to_str().unwrap();
    let (code, err) = run(&args(&w), &[("GOOGLE_APPLICATION_CREDENTIALS", path)]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &[
            &format!(
                "credentials file {path} (from GOOGLE_APPLICATION_CREDENTIALS) does not exist"
            ),
            "unset it",
        ],
    );
    assert!(!err.contains("os error"), "one cause, in words: {err}");

    // From the config file: the message names the file that set it.
    let config = w.write("iap.toml", format!("credentials = \"{path}\"\n"));
    let config = config.to_str().unwrap();
    let (code, err) = run(&with(args(&w), &["--config", config]), &[]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &[&format!("(from config file {config})"), "no such file"],
    );
}

#[tokio::test]
async fn a_busy_port_is_exit_1_with_a_hint() {
    let w = World::new().await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut a = args(&w);
    a[1] = addr.clone();
    let (code, err) = run(
        &with(a, &["--credentials", w.key_file.to_str().unwrap()]),
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    contains_all(
        &err,
        &[
            &format!("cannot listen on {addr} for route `default` (--listen)"),
            "ss -ltnp",
        ],
    );
    assert_eq!(err.to_lowercase().matches("in use").count(), 1, "{err}");
    drop(busy);
}

#[tokio::test]
async fn clashing_listeners_and_typos_are_settings_errors() {
    let w = World::new().await;
    let mut a = args(&w);
    a[1] = "127.0.0.1:18080".into();
    let (code, err) = run(&with(a, &["--admin-listen", "localhost:18080"]), &[]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &["admin_listen", "route `default` listens on 127.0.0.1:18080"],
    );

    let dir = temp_dir();
    let toml = write_file(
        dir.path(),
        "c.toml",
        "upstrem = \"https://app.example.com\"\n",
    );
    let argv = ["--audience", AUDIENCE, "--config", toml.to_str().unwrap()].map(str::to_owned);
    let (code, err) = run(&argv, &[]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(&err, &["unknown key `upstrem`: did you mean `upstream`?"]);
    assert!(!err.contains("upstream is required"), "{err}");

    let argv = ["--audience", AUDIENCE].map(str::to_owned);
    let env = [("IAP_PROXY_UPSTRAEM", "https://app.example.com")];
    let (code, err) = run(&argv, &env).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(
        &err,
        &["IAP_PROXY_UPSTRAEM: did you mean IAP_PROXY_UPSTREAM?"],
    );
    assert!(!err.contains("upstream is required"), "{err}");
}

#[tokio::test]
async fn localhost_port_listens_on_127_0_0_1() {
    let w = World::new().await;
    let mut a = args(&w);
    a[1] = "localhost:0".into();
    let a = with(a, &["--credentials", w.key_file.to_str().unwrap()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let proxy = Binary::spawn_listening(&a, &[]).await;
    let url = proxy.url("/echo");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let r = crate::support::client::get(&crate::support::client::http1(), &url).await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn discovery_behind_an_untrusted_certificate_points_at_upstream_ca() {
    let w = World::new().await;
    let argv = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &w.upstream.url(),
        "--credentials",
        w.key_file.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let (code, err) = run(&argv, &[]).await;
    assert_eq!(code, Some(64), "{err}");
    contains_all(&err, &["not trusted", "--upstream-ca", "--audience"]);
    assert!(!err.contains("unreachable"), "{err}");
}

#[tokio::test]
async fn the_self_signed_token_needs_no_audience() {
    let w = World::new().await;
    let upstream = w.upstream.url();
    let argv = [
        "token",
        "--token-kind",
        "self-signed-jwt",
        "--upstream",
        &upstream,
        "--credentials",
        w.key_file.to_str().unwrap(),
    ];
    let mut p = Binary::spawn(&argv, &[]);
    assert_eq!(p.wait_exit(WITHIN).await, Some(0), "{}", p.stderr());
    let token = p.stdout();
    let key = w
        .google
        .service_account_key(SA_EMAIL)
        .expect("registered key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    let origin = url::Url::parse(&upstream)
        .unwrap()
        .origin()
        .ascii_serialization();
    v.set_audience(&[format!("{origin}/*")]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token.trim(), &key, &v)
        .unwrap_or_else(|e| panic!("{e}: {token}"));
    assert_eq!(data.claims["iss"], SA_EMAIL);
}

#[test]
fn help_names_the_variables_and_completions_offer_the_choices() {
    let help = std::process::Command::new(binary_path())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    // Wrapped to the terminal: compare words, not lines.
    let help = String::from_utf8_lossy(&help.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for var in [
        "[env: IAP_PROXY_LISTEN]",
        "[env: IAP_PROXY_CREDENTIALS]",
        "[env: IAP_PROXY_METADATA_WAIT]",
        "[env: IAP_PROXY_ALLOW_NON_LOOPBACK=true]",
    ] {
        assert!(help.contains(var), "{var} missing:\n{help}");
    }
    let out = std::process::Command::new(binary_path())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for list in [
        "authorization proxy-authorization x-serverless-authorization",
        "text json",
        "id-token self-signed-jwt",
    ] {
        assert!(
            script.contains(list),
            "{list} missing from the bash completions"
        );
    }
}

/// The sidecar manifest's flags are valid settings, so copying it does not end in exit 64.
#[test]
fn the_sidecar_manifest_flags_are_valid_settings() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/sidecar.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let flags: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|flag| format!("--{flag}"))
        .collect();
    assert!(flags.len() >= 5, "{flags:?}");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let settings = iap_proxy::config::Settings::from_args(&flags, &Default::default())
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    assert_eq!(settings.process.metadata_wait, Duration::from_secs(20));
}
