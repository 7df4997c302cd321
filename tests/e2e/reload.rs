//! Reloading what the proxy read at start-up: a key file rotated the Kubernetes way or
//! overwritten in place (then SIGHUP), a broken replacement, a rotated CA, a new client
//! secret. Each while clients keep sending requests, none of which may fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use iap_proxy::config::{Env, Settings};
use tokio::task::JoinHandle;

use crate::support::admin::{Admin, with_admin};
use crate::support::client::{self, get, get_request, try_send};
use crate::support::fake_google::FakeGoogle;
use crate::support::fixture::{AUDIENCE, SA_EMAIL, World, temp_dir, write_file};
use crate::support::proxy::Binary;
use crate::support::upstream::{Upstream, UpstreamOptions};

const ROTATED_EMAIL: &str = "rotated@fake-project.iam.gserviceaccount.com";
/// How soon a changed file must be in use (the check interval is 1 s in these tests).
const WITHIN: Duration = Duration::from_secs(8);

/// Clients sending GETs back to back until stopped; each answer's status is kept.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Result<StatusCode, String>>>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url, http) = (stop.clone(), url.clone(), client::http1());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = try_send(&http, get_request(&url, &[])).await;
                        seen.push(r.map(|r| r.status).map_err(|e| e.to_string()));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients; asserts every request they sent was answered 200.
    async fn assert_all_ok(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let mut n = 0;
        for task in self.tasks {
            for outcome in task.await.unwrap() {
                assert_eq!(
                    outcome,
                    Ok(StatusCode::OK),
                    "a request failed during the reload"
                );
                n += 1;
            }
        }
        assert!(n > 0, "the clients sent nothing");
        n
    }
}

fn settings(args: &[&str]) -> Settings {
    Settings::from_args(args, &Env::default()).expect("valid test settings")
}

/// The World's settings with `--credentials key` and a 1 s check interval.
fn settings_with_key(w: &World, key: &Path) -> Settings {
    let mut s = w.settings();
    s.routes[0].credentials = Some(key.to_path_buf());
    s.process.reload_interval = Duration::from_secs(1);
    s
}

/// A Secret volume as the kubelet writes it: `key.json` → `..data/key.json`, `..data` → a
/// timestamped directory. Returns the path the proxy is given.
fn secret_volume(dir: &Path, key: &serde_json::Value) -> PathBuf {
    let first = dir.join("..2024_01_01_00_00_00.1");
    std::fs::create_dir(&first).unwrap();
    write_file(&first, "key.json", serde_json::to_vec(key).unwrap());
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/key.json", dir.join("key.json")).unwrap();
    dir.join("key.json")
}

/// The kubelet's update: a new timestamped directory, a new `..data` symlink renamed over
/// the old one (atomic), the old directory removed.
fn swap_secret(dir: &Path, key: &serde_json::Value) {
    let second = dir.join("..2024_01_02_00_00_00.2");
    std::fs::create_dir(&second).unwrap();
    write_file(&second, "key.json", serde_json::to_vec(key).unwrap());
    std::os::unix::fs::symlink("..2024_01_02_00_00_00.2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2024_01_01_00_00_00.1")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_swap_is_in_use_within_seconds_without_a_failed_request() {
    let w = World::new().await;
    let volume = temp_dir();
    let key = secret_volume(volume.path(), &w.key_json());
    let (proxy, admin) = with_admin(settings_with_key(&w, &key), w.env()).await;
    let r = get(&client::http1(), &proxy.url("/warm")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let load = Load::start(proxy.url("/echo"), 4);

    let rotated = w.google.service_account_json(ROTATED_EMAIL);
    let swapped = Instant::now();
    swap_secret(volume.path(), &rotated);
    let seen = w
        .upstream
        .wait_for("with the rotated key's token", WITHIN, |r| {
            r.authorized() && r.email.as_deref() == Some(ROTATED_EMAIL)
        })
        .await;
    let took = swapped.elapsed();
    assert!(seen.authorized());
    // More traffic on the new key, then every request must have succeeded.
    let later = seen.received_at_ms + 300;
    w.upstream
        .wait_for("300 ms after the switch", WITHIN, |r| {
            r.received_at_ms > later && r.email.as_deref() == Some(ROTATED_EMAIL)
        })
        .await;
    let n = load.assert_all_ok().await;
    let last = w.google.issued_tokens().pop().unwrap();
    assert_eq!(last.email, ROTATED_EMAIL);
    let reloads = admin
        .wait_for_metric(
            "iap_proxy_reloads_total",
            &[("what", "credentials")],
            1.0,
            WITHIN,
        )
        .await;
    assert_eq!(reloads, 1.0);
    eprintln!("secret swap in use after {took:?}; {n} requests, all 200");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_overwritten_in_place_is_read_again_on_sighup() {
    let w = World::new().await;
    let key = w.write_json("key.json", &w.key_json());
    let (key, ca, upstream) = (
        key.display().to_string(),
        w.upstream.ca_path().display().to_string(),
        w.upstream.url(),
    );
    // No interval: only the signal can make it look.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--audience",
        AUDIENCE,
        "--credentials",
        &key,
        "--upstream-ca",
        &ca,
        "--reload-interval",
        "0",
    ];
    let proxy = Binary::spawn_listening(&args, &[]).await;
    let r = get(&client::http1(), &proxy.url("/warm")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let load = Load::start(proxy.url("/echo"), 4);
    // Overwritten in place: same inode, new content.
    let rotated = w.google.service_account_json(ROTATED_EMAIL);
    std::fs::write(&key, serde_json::to_vec_pretty(&rotated).unwrap()).unwrap();
    proxy.signal("HUP").await;
    w.upstream
        .wait_for("with the rotated key's token", WITHIN, |r| {
            r.authorized() && r.email.as_deref() == Some(ROTATED_EMAIL)
        })
        .await;
    proxy.wait_for_stderr_line("SIGHUP", WITHIN).await;
    let line = proxy.wait_for_stderr_line("reloaded", WITHIN).await;
    assert!(
        line.contains(&key) && line.contains(ROTATED_EMAIL),
        "{line}"
    );
    load.assert_all_ok().await;
    // SIGHUP no longer kills it: it still serves, and stops cleanly.
    let r = get(&client::http1(), &proxy.url("/after")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (code, proxy) = proxy.terminate().await;
    assert_eq!(code, Some(0), "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_keeps_the_old_key_working_and_says_why() {
    let w = World::new().await;
    // Short tokens, so the old key is used for several fetches after the breakage.
    w.google.set_token_lifetime(Duration::from_secs(3));
    let key = w.write_json("key.json", &w.key_json());
    let (key_arg, ca, upstream) = (
        key.display().to_string(),
        w.upstream.ca_path().display().to_string(),
        w.upstream.url(),
    );
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--audience",
        AUDIENCE,
        "--credentials",
        &key_arg,
        "--upstream-ca",
        &ca,
        "--reload-interval",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let proxy = Binary::spawn_listening(&args, &[]).await;
    let admin = Admin::at(proxy.admin_url("").await);
    let r = get(&client::http1(), &proxy.url("/warm")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let load = Load::start(proxy.url("/echo"), 2);

    // Not JSON at all: the ERROR names the file and the position.
    std::fs::write(&key, b"{\"type\": \"service_account\", \"private_").unwrap();
    let line = proxy.wait_for_stderr_line("cannot be used", WITHIN).await;
    assert!(line.contains("ERROR") && line.contains(&key_arg), "{line}");
    assert!(line.contains("not valid JSON"), "{line}");
    // Well-formed but without its key: the ERROR names the field.
    let mut no_key = w.key_json();
    no_key.as_object_mut().unwrap().remove("private_key");
    std::fs::write(&key, serde_json::to_vec(&no_key).unwrap()).unwrap();
    admin
        .wait_for_metric(
            "iap_proxy_reload_failures_total",
            &[("what", "credentials")],
            2.0,
            WITHIN,
        )
        .await;
    let errors: Vec<String> = proxy
        .stderr()
        .lines()
        .filter(|l| l.contains("cannot be used"))
        .map(str::to_owned)
        .collect();
    assert!(
        errors[1].contains(&key_arg) && errors[1].contains("`private_key`"),
        "{errors:?}"
    );
    // The old key keeps fetching tokens (two more 3 s lifetimes), and the proxy is ready.
    let before = w.google.issued_count();
    w.google
        .wait_for_issued(before + 2, Duration::from_secs(10))
        .await;
    assert!(w.google.issued_tokens().iter().all(|t| t.email == SA_EMAIL));
    admin.assert_status("/readyz", StatusCode::OK).await;
    load.assert_all_ok().await;
    // Each bad version is reported once, not at every check.
    let failures = admin
        .metric(
            "iap_proxy_reload_failures_total",
            &[("what", "credentials")],
        )
        .await;
    assert_eq!(failures, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_file_gives_new_upstream_connections_the_new_roots() {
    let google = FakeGoogle::start().await;
    // Its port is taken again after a stop: outside the range other tests' sockets get.
    let mut old =
        Upstream::start_outside_ephemeral_range(UpstreamOptions::new(&google, AUDIENCE)).await;
    let dir = temp_dir();
    let key = google.service_account_key_file(dir.path(), SA_EMAIL);
    let ca = write_file(dir.path(), "ca.pem", std::fs::read(old.ca_path()).unwrap());
    let upstream = old.url();
    let s = settings(&[
        "--upstream",
        &upstream,
        "--audience",
        AUDIENCE,
        "--credentials",
        key.to_str().unwrap(),
        "--upstream-ca",
        ca.to_str().unwrap(),
        "--reload-interval",
        "1",
    ]);
    let (proxy, admin) = with_admin(s, Env::default()).await;
    let http = client::http1();
    assert_eq!(
        get(&http, &proxy.url("/before")).await.status,
        StatusCode::OK
    );

    // The upstream comes back on its port with a certificate from another CA.
    let port = old.port();
    let stopped = old.on_stop();
    drop(old);
    let _ = stopped.await;
    let new = Upstream::start_at(port, UpstreamOptions::new(&google, AUDIENCE)).await;
    let r = get(&http, &proxy.url("/untrusted")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    // Its CA replaces the file (written aside, renamed over it).
    let aside = write_file(
        dir.path(),
        "ca.pem.new",
        std::fs::read(new.ca_path()).unwrap(),
    );
    std::fs::rename(&aside, &ca).unwrap();
    admin
        .wait_for_metric(
            "iap_proxy_reloads_total",
            &[("what", "upstream_ca")],
            1.0,
            WITHIN,
        )
        .await;
    let r = get(&http, &proxy.url("/after")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        new.requests()
            .iter()
            .any(|r| r.path == "/after" && r.authorized())
    );
    // A CA file that holds no certificate is refused, and the new roots stay.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    admin
        .wait_for_metric(
            "iap_proxy_reload_failures_total",
            &[("what", "upstream_ca")],
            1.0,
            WITHIN,
        )
        .await;
    assert_eq!(
        get(&http, &proxy.url("/still")).await.status,
        StatusCode::OK
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_new_client_secret_is_required_once_its_file_changes() {
    let w = World::new().await;
    let secret = w.write("secret", "first-secret-0123456789\n");
    let mut s = w.settings();
    s.routes[0].client_secret_file = Some(secret.clone());
    s.process.reload_interval = Duration::from_secs(1);
    let (proxy, admin) = with_admin(s, w.env()).await;
    let http = client::http1();
    let with = |secret: &str| {
        let req = get_request(&proxy.url("/echo"), &[("x-iap-proxy-secret", secret)]);
        client::send(&http, req)
    };
    assert_eq!(with("first-secret-0123456789").await.status, StatusCode::OK);
    std::fs::write(&secret, "second-secret-0123456789\n").unwrap();
    admin
        .wait_for_metric(
            "iap_proxy_reloads_total",
            &[("what", "client_secret")],
            1.0,
            WITHIN,
        )
        .await;
    let old = with("first-secret-0123456789").await.status;
    assert_eq!(old, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        with("second-secret-0123456789").await.status,
        StatusCode::OK
    );
    proxy.stop().await;
}
