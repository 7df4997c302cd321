//! The token cache: one background task keeps a fresh ID token; requests only read it.
//!
//! Requests never fetch: the refresher is the only caller of [`TokenSource::fetch`], so a
//! thousand requests on a cold start still cause exactly one fetch. A request that finds a
//! usable token takes it without waiting; one that finds none waits (bounded) for the next
//! fetch to end, and is told why when it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::error::FetchError;
use super::token::{IdToken, TokenSource};

/// When to refresh and how to retry. The defaults suit Google's one-hour tokens and still
/// behave for the two-second tokens tests use.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    /// Refresh after this share of the token's remaining lifetime (a random point between).
    pub(crate) refresh_at: (f64, f64),
    /// Never refresh sooner than this after a fetch, so a token that is nearly expired on
    /// arrival cannot turn the refresher into a hot loop.
    pub(crate) min_refresh_delay: Duration,
    /// Stop handing out a token this long before it expires, bounded by a tenth of its
    /// lifetime: a request still needs time to reach IAP, whose clock may run ahead.
    pub(crate) max_expiry_margin: Duration,
    pub(crate) first_backoff: Duration,
    /// Backoff ceiling while a usable token is still held.
    pub(crate) max_backoff: Duration,
    /// Backoff ceiling while requests are waiting without a token: recover quickly.
    pub(crate) max_backoff_without_token: Duration,
    /// How long a request without a usable token waits for a fetch.
    pub(crate) wait: Duration,
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
/// nothing secret (fetch errors never carry tokens); the fetch error itself is kept, shared,
/// so the 503 can name its kind.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum NoToken {
    /// The fetch this request waited for failed.
    #[error("fetching an ID token from {source_name} failed: {error}")]
    FetchFailed {
        source_name: Arc<str>,
        error: Arc<FetchError>,
    },
    /// No fetch ended within the wait; the last one to fail, if any, says why.
    #[error("no ID token from {source_name} within {waited:?}{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    TimedOut {
        source_name: Arc<str>,
        waited: Duration,
        last_error: Option<Arc<FetchError>>,
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
    last_error: Option<Arc<FetchError>>,
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
pub(crate) struct TokenCache {
    rx: watch::Receiver<State>,
    source_name: Arc<str>,
    wait: Duration,
    forced: Arc<Forced>,
}

impl TokenCache {
    /// Starts the refresher task, counting fetch outcomes into `counters`
    /// (`iap_proxy_token_refreshes_total`); it stops when the last handle is dropped.
    pub(crate) fn spawn(
        source: Arc<dyn TokenSource>,
        policy: RefreshPolicy,
        counters: FetchCounters,
    ) -> TokenCache {
        let (tx, rx) = watch::channel(State::default());
        let source_name: Arc<str> = source.describe().into();
        let wait = policy.wait;
        let forced = Arc::new(Forced::default());
        tokio::spawn(refresh_loop(source, policy, tx, forced.clone(), counters));
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
    pub(crate) async fn force_refresh(
        &self,
        stale: &Arc<IdToken>,
    ) -> Result<Arc<IdToken>, NoToken> {
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
        self.wait_for(rx, seen_attempts, stale_serial + 1).await
    }

    /// The current token if it is usable now; never waits.
    pub(crate) fn current(&self) -> Option<Arc<IdToken>> {
        self.rx.borrow().usable(Instant::now()).cloned()
    }

    /// The current token, or the outcome of the next fetch when none is usable.
    pub(crate) async fn get(&self) -> Result<Arc<IdToken>, NoToken> {
        let mut rx = self.rx.clone();
        let seen_attempts = {
            let state = rx.borrow_and_update();
            if let Some(token) = state.usable(Instant::now()) {
                return Ok(token.clone());
            }
            state.attempts
        };
        self.wait_for(rx, seen_attempts, 0).await
    }

    /// Waits, at most `self.wait`, for a usable token of serial `min_serial` or later, or
    /// for a fetch attempt after `seen_attempts` to fail.
    async fn wait_for(
        &self,
        mut rx: watch::Receiver<State>,
        seen_attempts: u64,
        min_serial: u64,
    ) -> Result<Arc<IdToken>, NoToken> {
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
                    if state.serial >= min_serial {
                        if let Some(token) = state.usable(Instant::now()) {
                            return Ok(token.clone());
                        }
                    }
                    if state.attempts > seen_attempts {
                        if let Some(error) = &state.last_error {
                            return Err(NoToken::FetchFailed {
                                source_name: self.source_name.clone(),
                                error: error.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Seconds until the current token expires, for readiness and metrics.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let state = self.rx.borrow();
        let cached = state.cached.as_ref()?;
        cached
            .token
            .expires_at()
            .duration_since(SystemTime::now())
            .ok()
    }

    pub(crate) fn source_name(&self) -> &str {
        &self.source_name
    }
}

/// Counters for fetch outcomes; detached ones (the default) count into nothing.
#[derive(Clone, Default)]
pub(crate) struct FetchCounters {
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
}

async fn refresh_loop(
    source: Arc<dyn TokenSource>,
    policy: RefreshPolicy,
    tx: watch::Sender<State>,
    forced: Arc<Forced>,
    counters: FetchCounters,
) {
    let mut failures: u32 = 0;
    loop {
        let outcome = source.fetch().await;
        let now = Instant::now();
        let delay = match outcome {
            Ok(token) => {
                failures = 0;
                counters.success.inc();
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
                counters.failure.inc();
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
                let error = Arc::new(err);
                tx.send_modify(|s| {
                    s.last_error = Some(error);
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
#[path = "cache_tests.rs"]
mod tests;
