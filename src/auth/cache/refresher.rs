//! The refresher: the one task that fetches, and the supervisor that restarts it.
//!
//! It fetches when the schedule says (on the monotonic clock, or on the wall clock after a
//! suspend), when IAP refused the token (paced by the refusal backoff), when a request found
//! the token unusable, or when a reloaded credential is to be tried. A token is accepted
//! only with its clock arithmetic checked: one already expired is a failed fetch.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::policy::{RefreshPolicy, backoff, expiry_margin, refresh_delay};
use super::state::{Cached, Candidate, FetchCounters, Refusals, State};
use crate::auth::error::FetchError;
use crate::auth::token::{IdToken, TokenSource};

/// An `iat` this far in the future of the local clock means the clock is behind.
const SKEW_WARN: Duration = Duration::from_secs(60);

/// Everything the refresher works with; it outlives each run of the refresher, so a
/// restarted one continues with the same state and the same token.
pub(crate) struct Ctx {
    pub(crate) source: RwLock<Arc<dyn TokenSource>>,
    pub(crate) policy: RefreshPolicy,
    pub(crate) tx: watch::Sender<State>,
    pub(crate) refusals: Arc<Refusals>,
    pub(crate) candidates: tokio::sync::Mutex<mpsc::Receiver<Candidate>>,
    pub(crate) counters: FetchCounters,
}

/// When the next fetch is due, and what came before it. Each run starts afresh: due now.
struct Schedule {
    next: Instant,
    next_wall: SystemTime,
    failures: u32,
    last_fetch: Option<Instant>,
}

enum Wake {
    Fetch { forced: bool },
    Candidate(Candidate),
    Closed,
}

/// A fetched token that passed the clock checks, with its deadlines.
struct Fresh {
    token: IdToken,
    lifetime: Duration,
    usable_until: Instant,
    usable_until_wall: SystemTime,
}

impl Fresh {
    fn new(
        token: IdToken,
        now: Instant,
        wall: SystemTime,
        policy: &RefreshPolicy,
    ) -> Result<Fresh, FetchError> {
        let exp = token.expires_at();
        let remaining = exp
            .duration_since(wall)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| FetchError::ExpiredOnArrival {
                exp: token.claims().exp,
                now: unix_secs(wall),
            })?;
        if let Some(ahead) = token
            .issued_at()
            .and_then(|iat| iat.duration_since(wall).ok())
        {
            if ahead > SKEW_WARN {
                tracing::warn!(
                    ahead_secs = ahead.as_secs(),
                    "the ID token was issued {}s in this machine's future: its clock is behind; \
                     fix it (e.g. `sudo timedatectl set-ntp true`). The token's own lifetime \
                     (exp - iat) is used, so it is not sent after it expires",
                    ahead.as_secs()
                );
            }
        }
        // A clock behind real time sees more of the token left than there is: its stated
        // lifetime (exp - iat) bounds the monotonic deadline.
        let stated = token
            .issued_at()
            .and_then(|iat| exp.duration_since(iat).ok())
            .filter(|d| !d.is_zero());
        let lifetime = stated
            .map_or(remaining, |s| s.min(remaining))
            .min(policy.max_lifetime);
        let margin = expiry_margin(lifetime, policy);
        Ok(Fresh {
            usable_until: now.checked_add(lifetime - margin).unwrap_or(now),
            usable_until_wall: exp.checked_sub(margin).unwrap_or(exp),
            token,
            lifetime,
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ctx {
    fn source(&self) -> Arc<dyn TokenSource> {
        self.source
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a fetch now answers a refusal: a token newer than the cached one is wanted.
    fn forced_wanted(&self, serial: u64) -> bool {
        self.refusals.book().wanted > serial
    }

    async fn next_wake(&self, s: &Schedule, candidates: &mut mpsc::Receiver<Candidate>) -> Wake {
        loop {
            let now = Instant::now();
            let wall = self.policy.clock.now();
            let (serial, unusable) = {
                let state = self.tx.borrow();
                (state.serial, state.usable(now, wall).is_none())
            };
            if now >= s.next || wall >= s.next_wall {
                return Wake::Fetch {
                    forced: self.forced_wanted(serial),
                };
            }
            let mut wake_at = s.next.min(now + self.policy.wall_check);
            // After a failure its backoff decides; otherwise a refusal or an unusable token
            // brings the fetch forward, never sooner than min_refresh_delay after the last.
            if s.failures == 0 {
                let paced = s
                    .last_fetch
                    .map_or(now, |t| t + self.policy.min_refresh_delay);
                let forced_at = {
                    let book = self.refusals.book();
                    (book.wanted > serial).then(|| book.not_before.unwrap_or(now).max(paced))
                };
                let early = match (forced_at, unusable) {
                    (Some(at), true) => Some(at.min(paced)),
                    (Some(at), false) => Some(at),
                    (None, true) => Some(paced),
                    (None, false) => None,
                };
                if let Some(at) = early {
                    if at <= now {
                        return Wake::Fetch {
                            forced: forced_at.is_some(),
                        };
                    }
                    wake_at = wake_at.min(at);
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.refusals.wake.notified() => {}
                c = candidates.recv() => return c.map_or(Wake::Closed, Wake::Candidate),
                () = self.tx.closed() => return Wake::Closed,
            }
        }
    }

    async fn fetch(&self, forced: bool, s: &mut Schedule) {
        let source = self.source();
        let outcome = source.fetch().await;
        let now = Instant::now();
        let wall = self.policy.clock.now();
        s.last_fetch = Some(now);
        match outcome.and_then(|t| Fresh::new(t, now, wall, &self.policy)) {
            Ok(fresh) => self.install(fresh, forced, source.as_ref(), s, now, wall),
            Err(err) => self.failed(err, source.as_ref(), s, now, wall),
        }
    }

    /// Tries a reloaded credential with one fetch; only a token from it replaces the
    /// current source. A failure leaves the source, the token and the schedule alone.
    async fn try_candidate(&self, candidate: Candidate, s: &mut Schedule) {
        let source = candidate.source;
        let outcome = source.fetch().await;
        let now = Instant::now();
        let wall = self.policy.clock.now();
        match outcome.and_then(|t| Fresh::new(t, now, wall, &self.policy)) {
            Ok(fresh) => {
                *self.source.write().unwrap_or_else(PoisonError::into_inner) = source.clone();
                s.last_fetch = Some(now);
                self.install(fresh, false, source.as_ref(), s, now, wall);
                tracing::info!(source = %source.describe(), "reloaded credential in use: its first token is fetched");
                let _ = candidate.reply.send(Ok(()));
            }
            Err(err) => {
                self.counters.failure.inc();
                let _ = candidate.reply.send(Err(Arc::new(err)));
            }
        }
    }

    fn install(
        &self,
        fresh: Fresh,
        forced: bool,
        source: &dyn TokenSource,
        s: &mut Schedule,
        now: Instant,
        wall: SystemTime,
    ) {
        self.counters.success.inc();
        let delay = refresh_delay(fresh.lifetime, &self.policy);
        s.failures = 0;
        s.next = now + delay;
        s.next_wall = wall.checked_add(delay).unwrap_or(wall);
        let name = source.describe();
        tracing::debug!(
            source = %name,
            lifetime_secs = fresh.lifetime.as_secs_f64(),
            refresh_in_secs = delay.as_secs_f64(),
            forced,
            "fetched a new ID token"
        );
        let token = Arc::new(fresh.token);
        self.tx.send_modify(|state| {
            state.serial += 1;
            state.cached = Some(Cached {
                token,
                serial: state.serial,
                fetched_at: now,
                usable_until: fresh.usable_until,
                usable_until_wall: fresh.usable_until_wall,
                forced,
            });
            state.last_error = None;
            state.attempts += 1;
            if *state.source_name != *name {
                state.source_name = name.into();
            }
        });
    }

    fn failed(
        &self,
        err: FetchError,
        source: &dyn TokenSource,
        s: &mut Schedule,
        now: Instant,
        wall: SystemTime,
    ) {
        s.failures = s.failures.saturating_add(1);
        self.counters.failure.inc();
        let holding = self.tx.borrow().usable(now, wall).is_some();
        let delay = backoff(s.failures, holding, &self.policy);
        s.next = now + delay;
        s.next_wall = wall.checked_add(delay).unwrap_or(wall);
        tracing::warn!(
            source = %source.describe(),
            error = %err,
            attempt = s.failures,
            retry_in_secs = delay.as_secs_f64(),
            holding_valid_token = holding,
            "ID token fetch failed; `iap-proxy check` with the same flags, variables and config \
             file explains the usual causes"
        );
        let error = Arc::new(err);
        self.tx.send_modify(|state| {
            state.last_error = Some(error);
            state.attempts += 1;
        });
    }
}

/// One run of the refresher, until every handle is gone (or it panics).
async fn run(ctx: Arc<Ctx>) {
    let mut candidates = ctx.candidates.lock().await;
    let mut schedule = Schedule {
        next: Instant::now(),
        next_wall: ctx.policy.clock.now(),
        failures: 0,
        last_fetch: None,
    };
    loop {
        match ctx.next_wake(&schedule, &mut candidates).await {
            Wake::Fetch { forced } => ctx.fetch(forced, &mut schedule).await,
            Wake::Candidate(c) => ctx.try_candidate(c, &mut schedule).await,
            Wake::Closed => return,
        }
    }
}

/// Runs the refresher and restarts it when it panics: a bug in one fetch must not leave the
/// route without tokens for good. A refresher that keeps crashing without fetching a token
/// in between is given up after `max_restarts`, and the state says why (`/healthz` fails).
pub(crate) async fn supervise(ctx: Arc<Ctx>) {
    let mut crashes: u32 = 0;
    loop {
        let serial_before = ctx.tx.borrow().serial;
        let outcome = tokio::spawn(run(ctx.clone())).await;
        let panic = match outcome {
            Ok(()) => return,
            Err(join) if join.is_panic() => panic_text(join.into_panic()),
            // The runtime is shutting down.
            Err(_) => return,
        };
        if ctx.tx.borrow().serial > serial_before {
            crashes = 0;
        }
        crashes += 1;
        let source = ctx.source().describe();
        if crashes > ctx.policy.max_restarts {
            let why: Arc<str> = format!(
                "the token refresher for {source} crashed {crashes} times in a row without \
                 fetching a token (last: {panic}); restart iap-proxy, and report the crash"
            )
            .into();
            tracing::error!(%source, "{why}");
            ctx.tx.send_modify(|s| s.gave_up = Some(why));
            return;
        }
        ctx.counters.restarts.inc();
        let delay = backoff(crashes, true, &ctx.policy);
        tracing::error!(
            %source,
            panic = %panic,
            crashes,
            restart_in_secs = delay.as_secs_f64(),
            "the token refresher crashed; restarting it"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.tx.closed() => return,
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
