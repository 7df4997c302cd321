//! Token cache behaviour under paused time, with a scripted source.
use super::*;
use crate::auth::FetchError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

/// A token source whose answers the test scripts; its tokens are real JWT shapes.
struct Scripted {
    lifetime: Duration,
    fetches: AtomicUsize,
    fail: Mutex<bool>,
    delay: Duration,
}

fn jwt_expiring_in(lifetime: Duration) -> String {
    let exp = (SystemTime::now() + lifetime)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let claims = format!(r#"{{"exp":{},"aud":"a"}}"#, exp.as_secs());
    format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims))
}

impl TokenSource for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(async move {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if *self.fail.lock().unwrap() {
                return Err(FetchError::Rejected {
                    endpoint: "test".into(),
                    status: 500,
                    detail: "boom".into(),
                });
            }
            // Under paused time the wall clock stands still, so exp is taken from it too.
            Ok(IdToken::from_jwt(&jwt_expiring_in(self.lifetime))?)
        })
    }
}

fn spawn(source: Arc<Scripted>) -> TokenCache {
    TokenCache::spawn(
        source,
        "a",
        RefreshPolicy::default(),
        FetchCounters::default(),
    )
}

fn scripted(lifetime_secs: u64, fail: bool) -> Arc<Scripted> {
    Arc::new(Scripted {
        lifetime: Duration::from_secs(lifetime_secs),
        fetches: AtomicUsize::new(0),
        fail: Mutex::new(fail),
        delay: Duration::from_millis(50),
    })
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_start_waits_for_one_fetch() {
    let source = scripted(3600, false);
    let cache = spawn(source.clone());
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let cache = cache.clone();
                async move { cache.get().await }
            })
        })
        .collect();
    for w in waiters {
        assert!(w.await.unwrap().is_ok());
    }
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_most_80_percent_of_lifetime() {
    let source = scripted(100, false);
    let cache = spawn(source.clone());
    cache.get().await.unwrap();
    tokio::time::sleep(Duration::from_secs(69)).await;
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        1,
        "refreshed before 70 %"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        2,
        "not refreshed by 81 %"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_is_reported_and_recovers() {
    let source = scripted(3600, true);
    let cache = spawn(source.clone());
    let err = cache.get().await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    // The fetch's own error, typed, for the 503's code.
    assert!(
        matches!(&err, NoToken::FetchFailed { error, .. } if matches!(**error, FetchError::Rejected { status: 500, .. })),
        "{err:?}"
    );
    *source.fail.lock().unwrap() = false;
    let token = cache.get().await.unwrap();
    assert!(token.expires_at() > SystemTime::now());
    assert!(source.fetches.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(start_paused = true)]
async fn keeps_last_good_token_while_refresh_fails() {
    let source = scripted(100, false);
    let cache = spawn(source.clone());
    let first = cache.get().await.unwrap();
    *source.fail.lock().unwrap() = true;
    tokio::time::sleep(Duration::from_secs(85)).await;
    assert!(
        source.fetches.load(Ordering::SeqCst) > 2,
        "should have retried"
    );
    let still = cache.current().expect("last good token still usable");
    assert!(Arc::ptr_eq(&first, &still));
    // Past expiry minus margin it is no longer handed out.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(cache.current().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_fetches_once_for_many_callers() {
    let source = scripted(3600, false);
    let cache = spawn(source.clone());
    let stale = cache.get().await.unwrap();
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (cache, stale) = (cache.clone(), stale.clone());
            tokio::spawn(async move {
                let refusal = cache.refused(&stale);
                assert!(refusal.fetching_now && refusal.repeated.is_none());
                cache.newer_than(&stale).await
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for c in callers {
        fresh.push(c.await.unwrap().unwrap());
    }
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2, "one forced fetch");
    assert!(fresh.iter().all(|t| Arc::ptr_eq(t, &fresh[0])));
    assert!(!Arc::ptr_eq(&fresh[0], &stale));
    // Asking again about the old token finds the newer one without fetching.
    assert!(Arc::ptr_eq(
        &cache.refused(&stale).newer.unwrap(),
        &fresh[0]
    ));
    let again = cache.newer_than(&stale).await.unwrap();
    assert!(Arc::ptr_eq(&again, &fresh[0]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        2,
        "no extra fetch later"
    );
    // The schedule still runs after a forced fetch.
    tokio::time::sleep(Duration::from_secs(3000)).await;
    assert_eq!(source.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_forced_refresh_is_paced_and_reports_failure() {
    let source = scripted(3600, false);
    let cache = spawn(source.clone());
    let first = cache.get().await.unwrap();
    let started = Instant::now();
    assert!(cache.refused(&first).fetching_now);
    let second = cache.newer_than(&first).await.unwrap();
    assert!(started.elapsed() >= RefreshPolicy::default().min_refresh_delay);
    *source.fail.lock().unwrap() = true;
    // Half an hour later a refusal is a new run: no backoff, and its failure is reported.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert!(cache.refused(&second).fetching_now);
    let err = cache.newer_than(&second).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

#[test]
fn backoff_grows_and_is_capped() {
    use super::policy::{backoff, refresh_delay};
    let p = RefreshPolicy::default();
    assert!(backoff(1, true, &p) <= p.first_backoff);
    assert!(backoff(3, true, &p) > p.first_backoff * 2);
    assert!(backoff(30, true, &p) <= p.max_backoff);
    assert!(backoff(30, false, &p) <= p.max_backoff_without_token);
    assert!(refresh_delay(Duration::ZERO, &p) >= p.min_refresh_delay);
}
