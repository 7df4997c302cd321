//! What the refresher and the request handles share: the published state (a watch), the
//! book of IAP's refusals, and the mailbox for a reloaded credential.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::super::error::FetchError;
use super::super::token::{IdToken, TokenSource};

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
    #[error("the token refresher has stopped (see /healthz and the log)")]
    Stopped,
}

/// The token held, with the two deadlines it is usable until.
#[derive(Clone)]
pub(crate) struct Cached {
    pub(crate) token: Arc<IdToken>,
    /// The state's `serial` when it was fetched.
    pub(crate) serial: u64,
    pub(crate) fetched_at: Instant,
    /// On the monotonic clock: from the fetch, its lifetime less the margin. Immune to the
    /// wall clock being set, but it stands still while the machine sleeps.
    pub(crate) usable_until: Instant,
    /// On the wall clock: `exp` less the margin. Catches the sleep the monotonic clock missed.
    pub(crate) usable_until_wall: SystemTime,
    /// Fetched early because IAP refused the token before it.
    pub(crate) forced: bool,
}

#[derive(Clone, Default)]
pub(crate) struct State {
    pub(crate) cached: Option<Cached>,
    pub(crate) last_error: Option<Arc<FetchError>>,
    /// Counts finished fetch attempts, so a waiter can tell a new failure from an old one.
    pub(crate) attempts: u64,
    /// Counts successful fetches: the serial number of the cached token.
    pub(crate) serial: u64,
    /// Set when the refresher crashed too often in a row to be restarted again: why.
    pub(crate) gave_up: Option<Arc<str>>,
    /// What the current source is, for messages (a reloaded file may name another account).
    pub(crate) source_name: Arc<str>,
}

impl State {
    /// The token, if both of its deadlines are ahead.
    pub(crate) fn usable(&self, now: Instant, wall: SystemTime) -> Option<&Arc<IdToken>> {
        self.cached
            .as_ref()
            .filter(|c| now < c.usable_until && wall < c.usable_until_wall)
            .map(|c| &c.token)
    }
}

/// IAP's refusals, as requests report them; the refresher reads it to decide on an early
/// fetch. Touched only when IAP refuses a token, never on the ordinary request path.
#[derive(Default)]
pub(crate) struct Refusals {
    book: Mutex<RefusalBook>,
    /// Wakes the refresher: a refusal asked for a fetch, or a request found no usable token.
    pub(crate) wake: Notify,
}

#[derive(Default)]
pub(crate) struct RefusalBook {
    /// A token of at least this serial is wanted early: the one before it was refused.
    pub(crate) wanted: u64,
    /// Not before this: the backoff after refusals in a row.
    pub(crate) not_before: Option<Instant>,
    /// The serial of the last token a forced refresh was granted for (one per token).
    pub(crate) refreshed_for: u64,
    /// The serial of the last token whose refresh was granted without delay.
    pub(crate) immediate_for: u64,
    /// Refused tokens in a row, each fetched because the one before was refused.
    pub(crate) in_a_row: u32,
}

impl Refusals {
    pub(crate) fn book(&self) -> MutexGuard<'_, RefusalBook> {
        // The book holds plain numbers, consistent after any single assignment.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A source built from a changed credentials file, to be tried with one fetch before it
/// replaces the current one.
pub(crate) struct Candidate {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) reply: oneshot::Sender<Result<(), Arc<FetchError>>>,
}

/// Counters for fetch outcomes and refresher restarts; detached ones (the default) count
/// into nothing.
#[derive(Clone, Default)]
pub(crate) struct FetchCounters {
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) restarts: Counter,
}
