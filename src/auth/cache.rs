//! The token cache: one background task keeps a fresh ID token; requests only read it.
//!
//! Requests never fetch: the refresher is the only caller of [`TokenSource::fetch`], so a
//! thousand requests on a cold start still cause exactly one fetch. A request that finds a
//! usable token takes it without waiting; one that finds none waits (bounded) for the next
//! fetch to end, and is told why when it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{IdToken, TokenSource};

/// When to refresh and how to retry. The defaults suit Google's one-hour tokens and still
/// behave for the two-second tokens tests use.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh after this share of the token's remaining lifetime (a random point between).
    pub refresh_at: (f64, f64),
    /// Never refresh sooner than this after a fetch, so a token that is nearly expired on
    /// arrival cannot turn the refresher into a hot loop.
    pub min_refresh_delay: Duration,
    /// Stop handing out a token this long before it expires, bounded by a tenth of its
    /// lifetime: a request still needs time to reach IAP, whose clock may run ahead.
    pub max_expiry_margin: Duration,
    pub first_backoff: Duration,
    /// Backoff ceiling while a usable token is still held.
    pub max_backoff: Duration,
    /// Backoff ceiling while requests are waiting without a token: recover quickly.
    pub max_backoff_without_token: Duration,
    /// How long a request without a usable token waits for a fetch.
    pub wait: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_at: (0.70, 0.80),
            min_refresh_delay: Duration::from_millis(250),
            max_expiry_margin: Duration::from_secs(30),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_backoff_without_token: Duration::from_secs(4),
            wait: Duration::from_secs(10),
        }
    }
}

/// Why a request has no token. The text goes to the client as the 503 body, so it holds
/// nothing secret (source errors never carry tokens).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoToken {
    #[error("fetching an ID token from {source_name} failed: {reason}")]
    FetchFailed {
        source_name: Arc<str>,
        reason: Arc<str>,
    },
    #[error("no ID token from {source_name} within {waited:?}{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    TimedOut {
        source_name: Arc<str>,
        waited: Duration,
        last_error: Option<Arc<str>>,
    },
    #[error("the token refresher has stopped")]
    Stopped,
}

#[derive(Clone)]
struct Cached {
    token: Arc<IdToken>,
    usable_until: Instant,
}

#[derive(Clone, Default)]
struct State {
    cached: Option<Cached>,
    last_error: Option<Arc<str>>,
    /// Counts finished fetch attempts, so a waiter can tell a new failure from an old one.
    attempts: u64,
    /// Counts successful fetches: the serial number of the cached token.
    serial: u64,
}

impl State {
    fn usable(&self, now: Instant) -> Option<&Arc<IdToken>> {
        self.cached
            .as_ref()
            .filter(|c| now < c.usable_until)
            .map(|c| &c.token)
    }
}

/// A request for a token newer than the one IAP refused: the refresher fetches early while
/// `wanted` is above the cached token's serial. Many requests refusing the same token ask
/// for the same serial, so they cause one fetch.
#[derive(Default)]
struct Forced {
    wanted: AtomicU64,
    wake: Notify,
}

/// A cheap handle on the shared token; clone it freely.
#[derive(Clone)]
pub struct TokenCache {
    rx: watch::Receiver<State>,
    source_name: Arc<str>,
    wait: Duration,
    forced: Arc<Forced>,
}

impl TokenCache {
    /// Starts the refresher task; it stops when the last handle is dropped.
    pub fn spawn(source: Arc<dyn TokenSource>, policy: RefreshPolicy) -> TokenCache {
        let (tx, rx) = watch::channel(State::default());
        let source_name: Arc<str> = source.describe().into();
        let wait = policy.wait;
        let forced = Arc::new(Forced::default());
        tokio::spawn(refresh_loop(source, policy, tx, forced.clone()));
        TokenCache {
            rx,
            source_name,
            wait,
            forced,
        }
    }

    /// A token newer than `stale` (which IAP refused): taken at once if the refresher already
    /// has one, else fetched early, the wait bounded as in [`TokenCache::get`]. However many
    /// requests refuse the same token at once, one fetch serves them all.
    pub async fn force_refresh(&self, stale: &Arc<IdToken>) -> Result<Arc<IdToken>, NoToken> {
        let mut rx = self.rx.clone();
        let (stale_serial, seen_attempts) = {
            let state = rx.borrow_and_update();
            let newer = state
                .cached
                .as_ref()
                .is_some_and(|c| !Arc::ptr_eq(&c.token, stale));
            if newer {
                if let Some(token) = state.usable(Instant::now()) {
                    return Ok(token.clone());
                }
            }
            (state.serial, state.attempts)
        };
        self.forced
            .wanted
            .fetch_max(stale_serial + 1, Ordering::SeqCst);
        self.forced.wake.notify_one();
        let deadline = Instant::now() + self.wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_elapsed) => {
                    return Err(NoToken::TimedOut {
                        source_name: self.source_name.clone(),
                        waited: self.wait,
                        last_error: rx.borrow().last_error.clone(),
                    });
                }
                Ok(Err(_closed)) => return Err(NoToken::Stopped),
                Ok(Ok(())) => {
                    let state = rx.borrow_and_update();
                    if state.serial > stale_serial {
                        if let Some(token) = state.usable(Instant::now()) {
                            return Ok(token.clone());
                        }
                    }
                    if state.attempts > seen_attempts {
                        if let Some(reason) = &state.last_error {
                            return Err(NoToken::FetchFailed {
                                source_name: self.source_name.clone(),
                                reason: reason.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// The current token if it is usable now; never waits.
    pub fn current(&self) -> Option<Arc<IdToken>> {
        self.rx.borrow().usable(Instant::now()).cloned()
    }

    /// The current token, or the outcome of the next fetch when none is usable.
    pub async fn get(&self) -> Result<Arc<IdToken>, NoToken> {
        let mut rx = self.rx.clone();
        let seen_attempts = {
            let state = rx.borrow_and_update();
            if let Some(token) = state.usable(Instant::now()) {
                return Ok(token.clone());
            }
            state.attempts
        };
        let deadline = Instant::now() + self.wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_elapsed) => {
                    return Err(NoToken::TimedOut {
                        source_name: self.source_name.clone(),
                        waited: self.wait,
                        last_error: rx.borrow().last_error.clone(),
                    });
                }
                Ok(Err(_closed)) => return Err(NoToken::Stopped),
                Ok(Ok(())) => {
                    let state = rx.borrow_and_update();
                    if let Some(token) = state.usable(Instant::now()) {
                        return Ok(token.clone());
                    }
                    if state.attempts > seen_attempts {
                        if let Some(reason) = &state.last_error {
                            return Err(NoToken::FetchFailed {
                                source_name: self.source_name.clone(),
                                reason: reason.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Seconds until the current token expires, for readiness and metrics.
    pub fn remaining(&self) -> Option<Duration> {
        let state = self.rx.borrow();
        let cached = state.cached.as_ref()?;
        cached
            .token
            .expires_at()
            .duration_since(SystemTime::now())
            .ok()
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }
}

async fn refresh_loop(
    source: Arc<dyn TokenSource>,
    policy: RefreshPolicy,
    tx: watch::Sender<State>,
    forced: Arc<Forced>,
) {
    let mut failures: u32 = 0;
    loop {
        let outcome = source.fetch().await;
        let now = Instant::now();
        let delay = match outcome {
            Ok(token) => {
                failures = 0;
                let lifetime = token
                    .expires_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let margin = (lifetime / 10).min(policy.max_expiry_margin);
                let delay = refresh_delay(lifetime, &policy);
                tracing::debug!(
                    source = %source.describe(),
                    lifetime_secs = lifetime.as_secs_f64(),
                    refresh_in_secs = delay.as_secs_f64(),
                    "fetched a new ID token"
                );
                tx.send_modify(|s| {
                    s.cached = Some(Cached {
                        token: Arc::new(token),
                        usable_until: now + lifetime - margin,
                    });
                    s.last_error = None;
                    s.attempts += 1;
                    s.serial += 1;
                });
                delay
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let holding = tx.borrow().usable(now).is_some();
                let delay = backoff(failures, holding, &policy);
                tracing::warn!(
                    source = %source.describe(),
                    error = %err,
                    attempt = failures,
                    retry_in_secs = delay.as_secs_f64(),
                    holding_valid_token = holding,
                    "ID token fetch failed"
                );
                let reason: Arc<str> = err.to_string().into();
                tx.send_modify(|s| {
                    s.last_error = Some(reason);
                    s.attempts += 1;
                });
                delay
            }
        };
        let next = now + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = forced.wake.notified() => {
                    if forced.wanted.load(Ordering::SeqCst) > tx.borrow().serial {
                        // Never sooner than min_refresh_delay after the last fetch: an
                        // upstream refusing every token must not get a fetch per request.
                        tokio::select! {
                            _ = tokio::time::sleep_until(now + policy.min_refresh_delay) => break,
                            _ = tx.closed() => return,
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
    }
}

fn refresh_delay(lifetime: Duration, policy: &RefreshPolicy) -> Duration {
    let (lo, hi) = policy.refresh_at;
    let share = if hi > lo {
        rand::rng().random_range(lo..hi)
    } else {
        lo
    };
    lifetime.mul_f64(share).max(policy.min_refresh_delay)
}

fn backoff(failures: u32, holding_token: bool, policy: &RefreshPolicy) -> Duration {
    let ceiling = if holding_token {
        policy.max_backoff
    } else {
        policy.max_backoff_without_token
    };
    let exp = policy
        .first_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    // Up to 20 % jitter, downwards, so many proxies restarted together spread their retries.
    let jitter = rand::rng().random_range(0.8..=1.0);
    exp.min(ceiling).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>> {
            Box::pin(async move {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if *self.fail.lock().unwrap() {
                    return Err(AuthError::Rejected {
                        endpoint: "test".into(),
                        status: 500,
                        detail: "boom".into(),
                    });
                }
                // Under paused time the wall clock stands still, so exp is taken from it too.
                IdToken::from_jwt(&jwt_expiring_in(self.lifetime))
            })
        }
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
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
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
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
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
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
        let err = cache.get().await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        *source.fail.lock().unwrap() = false;
        let token = cache.get().await.unwrap();
        assert!(token.expires_at() > SystemTime::now());
        assert!(source.fetches.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_last_good_token_while_refresh_fails() {
        let source = scripted(100, false);
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
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
    async fn force_refresh_fetches_once_for_many_callers() {
        let source = scripted(3600, false);
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
        let stale = cache.get().await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (cache, stale) = (cache.clone(), stale.clone());
                tokio::spawn(async move { cache.force_refresh(&stale).await })
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
        let again = cache.force_refresh(&stale).await.unwrap();
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
    async fn force_refresh_is_paced_and_reports_failure() {
        let source = scripted(3600, false);
        let cache = TokenCache::spawn(source.clone(), RefreshPolicy::default());
        let first = cache.get().await.unwrap();
        let started = Instant::now();
        let second = cache.force_refresh(&first).await.unwrap();
        assert!(started.elapsed() >= RefreshPolicy::default().min_refresh_delay);
        *source.fail.lock().unwrap() = true;
        let err = cache.force_refresh(&second).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RefreshPolicy::default();
        assert!(backoff(1, true, &p) <= p.first_backoff);
        assert!(backoff(3, true, &p) > p.first_backoff * 2);
        assert!(backoff(30, true, &p) <= p.max_backoff);
        assert!(backoff(30, false, &p) <= p.max_backoff_without_token);
        assert!(refresh_delay(Duration::ZERO, &p) >= p.min_refresh_delay);
    }
}
