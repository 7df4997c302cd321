//! The token cache: one background task keeps a fresh ID token; requests only read it.
//!
//! Requests never fetch: the refresher (`refresher`) is the only caller of
//! [`TokenSource::fetch`], so a thousand requests on a cold start still cause exactly one
//! fetch. A request that finds a usable token takes it without waiting; one that finds none
//! waits (bounded) for the next fetch to end, and is told why when it fails.
//!
//! The rules, each for a reason:
//! - A token is usable while both its monotonic deadline and its wall-clock `exp` (each
//!   less the margin) are ahead: the monotonic clock stands still while a laptop sleeps, the
//!   wall clock can be set; either alone would send expired tokens.
//! - A token already expired on arrival is a failed fetch (clock skew), retried with backoff.
//! - IAP refusing a token brings its refresh forward, once per token; refusals in a row
//!   (the token fetched because of a refusal is refused too) back off exponentially, so a
//!   wrong audience costs one fetch a minute, not one per request (`policy`).
//! - A refresher that panics is restarted; one that keeps crashing is given up, and
//!   [`TokenCache::gave_up`] says so for `/healthz`.
//! - A reloaded credential is tried with one fetch before it replaces the current one
//!   ([`TokenCache::replace_source`]).

mod policy;
mod refresher;
mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub(crate) use policy::RefreshPolicy;
use refresher::Ctx;
use state::{Candidate, Refusals, State};
pub(crate) use state::{FetchCounters, NoToken};

use super::error::FetchError;
use super::token::{IdToken, TokenSource};

/// What happened with IAP's refusal of a token, for the request that met it.
#[derive(Debug, Default)]
pub(crate) struct Refusal {
    /// A newer token is already usable: the request can be sent again with it now.
    pub(crate) newer: Option<Arc<IdToken>>,
    /// A fresh token is being fetched without delay: worth waiting for ([`TokenCache::newer_than`]).
    pub(crate) fetching_now: bool,
    /// Set once per token, when the refused token was itself fetched because its
    /// predecessor was refused: IAP refuses fresh tokens, and someone should look.
    pub(crate) repeated: Option<Repeated>,
}

/// IAP refused fresh tokens in a row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Repeated {
    /// Refused tokens in a row, this one included.
    pub(crate) in_a_row: u32,
    /// When the next forced refresh may happen.
    pub(crate) next_refresh_in: Duration,
}

/// Why a reloaded credential did not replace the current one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotReplaced {
    #[error("the first token from it could not be fetched: {0}")]
    Fetch(Arc<FetchError>),
    #[error("the token refresher has stopped")]
    Stopped,
}

/// A cheap handle on the shared token; clone it freely.
#[derive(Clone)]
pub(crate) struct TokenCache {
    rx: watch::Receiver<State>,
    audience: Arc<str>,
    policy: Arc<RefreshPolicy>,
    refusals: Arc<Refusals>,
    candidates: mpsc::Sender<Candidate>,
}

impl TokenCache {
    /// Starts the refresher for `source`, whose tokens are for `audience`, counting into
    /// `counters`; it stops when the last handle is dropped.
    pub(crate) fn spawn(
        source: Arc<dyn TokenSource>,
        audience: &str,
        policy: RefreshPolicy,
        counters: FetchCounters,
    ) -> TokenCache {
        let (tx, rx) = watch::channel(State {
            source_name: source.describe().into(),
            ..State::default()
        });
        let (candidates, mailbox) = mpsc::channel(1);
        let refusals = Arc::new(Refusals::default());
        let cache = TokenCache {
            rx,
            audience: audience.into(),
            policy: Arc::new(policy.clone()),
            refusals: refusals.clone(),
            candidates,
        };
        let ctx = Ctx {
            source: RwLock::new(source),
            policy,
            tx,
            refusals,
            candidates: tokio::sync::Mutex::new(mailbox),
            counters,
        };
        tokio::spawn(refresher::supervise(Arc::new(ctx)));
        cache
    }

    /// The current token if it is usable now; never waits.
    pub(crate) fn current(&self) -> Option<Arc<IdToken>> {
        self.rx
            .borrow()
            .usable(Instant::now(), self.policy.clock.now())
            .cloned()
    }

    /// The current token, or the outcome of the next fetch when none is usable.
    pub(crate) async fn get(&self) -> Result<Arc<IdToken>, NoToken> {
        let mut rx = self.rx.clone();
        let seen_attempts = {
            let state = rx.borrow_and_update();
            if let Some(token) = state.usable(Instant::now(), self.policy.clock.now()) {
                return Ok(token.clone());
            }
            state.attempts
        };
        // The refresher may not know yet: after a suspend its timers are late.
        self.refusals.wake.notify_one();
        self.wait_for(rx, seen_attempts, 0).await
    }

    /// Records that IAP refused `stale`, and says what the request can do about it.
    ///
    /// The first refusal of a token brings its refresh forward (one fetch, however many
    /// requests refuse it at once). If that token was itself fetched because of a refusal,
    /// the refresh waits `refusal_backoff` (1 s, 2 s, … up to a minute), and the request
    /// is told so ([`Refusal::repeated`], once per token) rather than made to wait.
    pub(crate) fn refused(&self, stale: &Arc<IdToken>) -> Refusal {
        let now = Instant::now();
        let (serial, consecutive) = {
            let state = self.rx.borrow();
            match &state.cached {
                Some(c) if Arc::ptr_eq(&c.token, stale) => (
                    c.serial,
                    c.forced && now.duration_since(c.fetched_at) < self.policy.refusal_window,
                ),
                // Refused an older token: the current one may be fine.
                _ => {
                    return Refusal {
                        newer: state.usable(now, self.policy.clock.now()).cloned(),
                        ..Refusal::default()
                    };
                }
            }
        };
        let mut book = self.refusals.book();
        if book.refreshed_for >= serial {
            return Refusal {
                fetching_now: book.immediate_for == serial,
                ..Refusal::default()
            };
        }
        book.refreshed_for = serial;
        book.in_a_row = if consecutive {
            book.in_a_row.saturating_add(1)
        } else {
            1
        };
        let delay = policy::refusal_backoff(book.in_a_row, &self.policy);
        book.wanted = book.wanted.max(serial + 1);
        book.not_before = Some(now + delay);
        if delay.is_zero() {
            book.immediate_for = serial;
        }
        let repeated = consecutive.then_some(Repeated {
            in_a_row: book.in_a_row,
            next_refresh_in: delay,
        });
        drop(book);
        self.refusals.wake.notify_one();
        Refusal {
            newer: None,
            fetching_now: delay.is_zero(),
            repeated,
        }
    }

    /// A token newer than `stale` (which IAP refused): taken at once if the refresher already
    /// has one, else the outcome of the fetch [`TokenCache::refused`] asked for, the wait
    /// bounded as in [`TokenCache::get`].
    pub(crate) async fn newer_than(&self, stale: &Arc<IdToken>) -> Result<Arc<IdToken>, NoToken> {
        let mut rx = self.rx.clone();
        let (min_serial, seen_attempts) = {
            let state = rx.borrow_and_update();
            let is_stale = state
                .cached
                .as_ref()
                .is_none_or(|c| Arc::ptr_eq(&c.token, stale));
            if !is_stale {
                if let Some(token) = state.usable(Instant::now(), self.policy.clock.now()) {
                    return Ok(token.clone());
                }
            }
            (state.serial + u64::from(is_stale), state.attempts)
        };
        self.wait_for(rx, seen_attempts, min_serial).await
    }

    /// Tries `source` (built from a changed credentials file) with one fetch; if it yields a
    /// token, that token is current at once and `source` replaces the old one. Otherwise
    /// the old source and its token stay.
    pub(crate) async fn replace_source(
        &self,
        source: Arc<dyn TokenSource>,
    ) -> Result<(), NotReplaced> {
        let (reply, answer) = oneshot::channel();
        let candidate = Candidate { source, reply };
        self.candidates
            .send(candidate)
            .await
            .map_err(|_| NotReplaced::Stopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(NotReplaced::Fetch(error)),
            Err(_) => Err(NotReplaced::Stopped),
        }
    }

    /// Waits, at most `self.wait`, for a usable token of serial `min_serial` or later, or
    /// for a fetch attempt after `seen_attempts` to fail.
    async fn wait_for(
        &self,
        mut rx: watch::Receiver<State>,
        seen_attempts: u64,
        min_serial: u64,
    ) -> Result<Arc<IdToken>, NoToken> {
        let deadline = Instant::now() + self.policy.wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_elapsed) => {
                    let state = rx.borrow();
                    return Err(NoToken::TimedOut {
                        source_name: state.source_name.clone(),
                        waited: self.policy.wait,
                        last_error: state.last_error.clone(),
                    });
                }
                Ok(Err(_closed)) => return Err(NoToken::Stopped),
                Ok(Ok(())) => {
                    let state = rx.borrow_and_update();
                    if state.serial >= min_serial {
                        if let Some(token) = state.usable(Instant::now(), self.policy.clock.now()) {
                            return Ok(token.clone());
                        }
                    }
                    if state.attempts > seen_attempts {
                        if let Some(error) = &state.last_error {
                            return Err(NoToken::FetchFailed {
                                source_name: state.source_name.clone(),
                                error: error.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Time until the current token expires by the wall clock, for readiness and metrics.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let state = self.rx.borrow();
        let cached = state.cached.as_ref()?;
        cached
            .token
            .expires_at()
            .duration_since(self.policy.clock.now())
            .ok()
    }

    /// What the current source is (it may change when its file is reloaded).
    pub(crate) fn source_name(&self) -> Arc<str> {
        self.rx.borrow().source_name.clone()
    }

    /// The audience the tokens are for.
    pub(crate) fn audience(&self) -> &str {
        &self.audience
    }

    /// Why the refresher is not running any more, once it crashed too often to restart.
    pub(crate) fn gave_up(&self) -> Option<Arc<str>> {
        self.rx.borrow().gave_up.clone()
    }
}

#[cfg(test)]
mod refusal_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
#[cfg(test)]
mod time_tests;
