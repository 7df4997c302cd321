//! A soak, not run by `cargo test` (it takes two minutes): tokens that live 3 s, so the
//! real binary rotates them every ~2 s, while several clients keep sending requests.
//! Every request must succeed, and latency must not step up when a token is swapped.
//!
//! Run (release, as README's *Token lifecycle* says):
//! `cargo test --release --test e2e soak -- --ignored --nocapture`
//! Knobs: SOAK_ROTATIONS (default 60), SOAK_CLIENTS (8), SOAK_TOKEN_SECS (3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::client::{self, get_request, try_send};
use crate::support::fixture::{AUDIENCE, World};
use crate::support::now_millis;
use crate::support::proxy::Binary;

/// A request that started this close to a token's issuance counts as "at a rotation".
const AROUND_MS: u128 = 100;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request: when it started (wall clock, ms), how long it took, how it ended.
struct Sample {
    started_ms: u128,
    took: Duration,
    ok: bool,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn summary(name: &str, mut took: Vec<Duration>) -> (Duration, Duration) {
    took.sort();
    let (p50, p99) = (percentile(&took, 50), percentile(&took, 99));
    let max = took.last().copied().unwrap_or_default();
    eprintln!(
        "soak: {name:>16}: {:>7} requests, p50 {p50:>10.3?}, p99 {p99:>10.3?}, max {max:>10.3?}",
        took.len()
    );
    (p50, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute soak: cargo test --release --test e2e soak -- --ignored --nocapture"]
async fn soak_token_rotations_under_load() {
    let rotations = knob("SOAK_ROTATIONS", 60) as usize;
    let clients = knob("SOAK_CLIENTS", 8) as usize;
    let token_secs = knob("SOAK_TOKEN_SECS", 3);
    let w = World::new().await;
    w.google.set_token_lifetime(Duration::from_secs(token_secs));
    w.upstream.stop_recording();
    let (key, ca, upstream) = (
        w.key_file.display().to_string(),
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
        &key,
        "--upstream-ca",
        &ca,
    ];
    // The default log level: nothing is logged per request or per refresh.
    let proxy = Binary::spawn_listening(&args, &[]).await;
    let url = proxy.url("/echo");
    let first = w.google.wait_for_issued(1, Duration::from_secs(10)).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, http, stop) = (url.clone(), client::http1(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started_ms = now_millis();
                    let t = Instant::now();
                    let r = try_send(&http, get_request(&url, &[])).await;
                    let ok = r.is_ok_and(|r| r.status == StatusCode::OK);
                    samples.push(Sample {
                        started_ms,
                        took: t.elapsed(),
                        ok,
                    });
                    // A little think time: load, not a saturated queue whose wait hides
                    // everything else.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                samples
            })
        })
        .collect();
    // One more than asked, so the last rotation has traffic on both sides of it.
    let deadline = Duration::from_secs(token_secs * rotations as u64 * 2 + 60);
    w.google
        .wait_for_issued(first.len() + rotations + 1, deadline)
        .await;
    stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let issued = w.google.issued_tokens();
    let rotated: Vec<u128> = issued.iter().skip(1).map(|t| t.issued_at_ms).collect();
    let failed = samples.iter().filter(|s| !s.ok).count();
    let near = |s: &Sample| {
        let i = rotated.partition_point(|&r| r < s.started_ms.saturating_sub(AROUND_MS));
        rotated
            .get(i)
            .is_some_and(|&r| r <= s.started_ms + AROUND_MS)
    };
    let (around, between): (Vec<&Sample>, Vec<&Sample>) = samples.iter().partition(|s| near(s));
    eprintln!(
        "soak: {} rotations in {elapsed:.1?} ({clients} clients, {token_secs} s tokens), {} requests, {failed} failed",
        rotated.len(),
        samples.len()
    );
    let (a50, a99) = summary("at rotations", around.iter().map(|s| s.took).collect());
    let (b50, b99) = summary("between", between.iter().map(|s| s.took).collect());
    assert_eq!(failed, 0, "requests failed during the soak");
    assert_eq!(
        w.upstream.unauthorized_total(),
        0,
        "the upstream refused a token"
    );
    assert!(
        rotated.len() >= rotations,
        "only {} rotations",
        rotated.len()
    );
    assert!(around.len() >= rotations, "too few requests at rotations");
    // No step: a rotation is a pointer swap; the fetch runs beside the requests. Generous
    // bounds for a shared two-core machine, far below a fetch's cost if one were waited on.
    assert!(
        a50 <= b50 * 2 + Duration::from_millis(1),
        "p50 {a50:?} at rotations vs {b50:?}"
    );
    assert!(
        a99 <= b99 * 2 + Duration::from_millis(5),
        "p99 {a99:?} at rotations vs {b99:?}"
    );
    let (code, proxy) = proxy.terminate().await;
    assert_eq!(code, Some(0), "{}", proxy.stderr());
}
