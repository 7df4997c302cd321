//! When the refresher fetches, and how long it waits after a failure or a refusal: the
//! numbers, and the clocks they are read on.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// The wall clock. A token's `exp` is wall-clock time; the refresher's timers run on the
/// monotonic clock, which stands still while a laptop sleeps. Tests replace the wall clock
/// to play a suspend (the wall clock jumps, the monotonic one does not) under paused time.
#[derive(Clone, Default)]
pub(crate) struct WallClock(Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>);

impl WallClock {
    pub(crate) fn now(&self) -> SystemTime {
        match &self.0 {
            None => SystemTime::now(),
            Some(clock) => clock(),
        }
    }

    #[cfg(test)]
    pub(crate) fn fake(clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> WallClock {
        WallClock(Some(Arc::new(clock)))
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "fake" } else { "system" })
    }
}

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
    /// The wait before the forced refresh that follows the second refusal in a row; it
    /// doubles with each further one. The first refusal's refresh is not delayed.
    pub(crate) first_refusal_backoff: Duration,
    /// The ceiling of that wait: with IAP refusing every token (a wrong audience), the
    /// token endpoint is asked about once per this, not once per request.
    pub(crate) max_refusal_backoff: Duration,
    /// A refused token fetched because its predecessor was refused continues that run of
    /// refusals when fetched less than this long ago; otherwise a new run starts.
    pub(crate) refusal_window: Duration,
    /// How often a waiting refresher looks at the wall clock: after a suspend the monotonic
    /// timers are late by the time asleep, the wall clock is not.
    pub(crate) wall_check: Duration,
    /// A token claiming to live longer is scheduled as if it lived this long.
    pub(crate) max_lifetime: Duration,
    /// Restarts in a row of a refresher that keeps crashing before it is given up (and
    /// `/healthz` fails). A successful fetch in between resets the count.
    pub(crate) max_restarts: u32,
    pub(crate) clock: WallClock,
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
            first_refusal_backoff: Duration::from_secs(1),
            max_refusal_backoff: Duration::from_secs(60),
            refusal_window: Duration::from_secs(600),
            wall_check: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(24 * 3600),
            max_restarts: 5,
            clock: WallClock::default(),
        }
    }
}

/// When to refresh a token that lives `lifetime` from now.
pub(crate) fn refresh_delay(lifetime: Duration, policy: &RefreshPolicy) -> Duration {
    let (lo, hi) = policy.refresh_at;
    let share = if hi > lo {
        rand::rng().random_range(lo..hi)
    } else {
        lo
    };
    lifetime.mul_f64(share).max(policy.min_refresh_delay)
}

/// How long a token that lives `lifetime` is not handed out before it expires.
pub(crate) fn expiry_margin(lifetime: Duration, policy: &RefreshPolicy) -> Duration {
    (lifetime / 10).min(policy.max_expiry_margin)
}

/// The wait after `failures` failed fetches in a row.
pub(crate) fn backoff(failures: u32, holding_token: bool, policy: &RefreshPolicy) -> Duration {
    let ceiling = if holding_token {
        policy.max_backoff
    } else {
        policy.max_backoff_without_token
    };
    // Up to 20 % jitter, downwards, so many proxies restarted together spread their retries.
    let jitter = rand::rng().random_range(0.8..=1.0);
    doubled(policy.first_backoff, failures)
        .min(ceiling)
        .mul_f64(jitter)
}

/// The wait before the forced refresh after the `in_a_row`-th refused token in a row: none
/// for the first, then `first_refusal_backoff`, doubling, capped.
pub(crate) fn refusal_backoff(in_a_row: u32, policy: &RefreshPolicy) -> Duration {
    if in_a_row <= 1 {
        return Duration::ZERO;
    }
    doubled(policy.first_refusal_backoff, in_a_row - 1).min(policy.max_refusal_backoff)
}

/// `first`, doubled `n - 1` times, saturating.
fn doubled(first: Duration, n: u32) -> Duration {
    first.saturating_mul(1u32 << n.saturating_sub(1).min(16))
}
