//! One client connection beyond what hyper tracks: its `--max-connections` slot (which a
//! WebSocket tunnel keeps), its requests in flight, the header-read and idle deadlines, and
//! the budget of streams a client may cancel right after opening them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// A connection's place under `--max-connections` and in the open-connections gauge. The
/// connection task holds it, and so does each tunnel the connection became.
pub(crate) struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl ConnSlot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, open: Gauge) -> ConnSlot {
        open.inc();
        ConnSlot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Streams a client opened and cancelled within this long count against it.
const PREMATURE: Duration = Duration::from_secs(1);
/// Past this many streams, a connection that cancelled at least half of them prematurely
/// is told to calm down (GOAWAY ENHANCE_YOUR_CALM) and closed: Envoy's rule against the
/// rapid-reset attack (CVE-2023-44487), which a browser or gRPC client never comes near.
const RESET_MIN_STREAMS: u64 = 100;

/// What hyper does not track about one connection. Times are milliseconds since `accepted`.
pub(crate) struct ConnState {
    pub(crate) slot: Arc<ConnSlot>,
    accepted: Instant,
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Response heads produced by the service / seen written (see `conn_io`).
    pub(crate) produced: AtomicU64,
    pub(crate) seen: AtomicU64,
    idle_since_ms: AtomicU64,
    /// First byte read while idle, `u64::MAX` when none: a request head in progress.
    read_while_idle_ms: AtomicU64,
    pub(crate) h2: AtomicBool,
    /// The connection became a tunnel: its bytes are no longer HTTP.
    pub(crate) upgraded: AtomicBool,
    premature_resets: AtomicU64,
    /// Set when the client must be told to calm down; `waker` wakes the connection's I/O.
    pub(crate) calm: AtomicBool,
    pub(crate) waker: AtomicWaker,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No complete request head within `--header-read-timeout`.
    HeaderRead,
    /// Idle for `--client-idle-timeout` between requests.
    Idle,
}

impl ConnState {
    pub(crate) fn new(slot: ConnSlot) -> Arc<ConnState> {
        Arc::new(ConnState {
            slot: Arc::new(slot),
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            read_while_idle_ms: AtomicU64::new(u64::MAX),
            h2: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            premature_resets: AtomicU64::new(0),
            calm: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request head arrived; the returned guard ends the request when dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.read_while_idle_ms.store(u64::MAX, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Bytes arrived from the client.
    pub(crate) fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.started.load(Ordering::Relaxed) > 0
            && !self.h2.load(Ordering::Relaxed)
            && self.read_while_idle_ms.load(Ordering::Relaxed) == u64::MAX
        {
            self.read_while_idle_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A stream ended without an answer (the client reset it, or the connection closed)
    /// `after` it was opened.
    pub(crate) fn stream_cancelled(&self, after: Duration) {
        if after >= PREMATURE || !self.h2.load(Ordering::Relaxed) {
            return;
        }
        let resets = self.premature_resets.fetch_add(1, Ordering::Relaxed) + 1;
        let streams = self.started.load(Ordering::Relaxed);
        if streams >= RESET_MIN_STREAMS
            && resets * 2 >= streams
            && !self.calm.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(
                streams,
                resets,
                "a client cancelled most of its streams right after opening them (rapid reset); closing its connection with ENHANCE_YOUR_CALM"
            );
            self.waker.wake();
        }
    }

    /// Resolves when the connection should be closed: no complete request head within
    /// `header_read`, or idle between requests for `idle`.
    ///
    /// It is not told of each request: any deadline an event sets (a request ending, the
    /// first byte of the next head) lies at least `min(header_read, idle)` after the event,
    /// so looking that often, and at each deadline, closes on time. Being woken twice per
    /// request cost a notification, a timer and a poll of the whole connection each time.
    pub(crate) async fn watchdog(&self, header_read: Duration, idle: Duration) -> Expired {
        let header_read = u64::try_from(header_read.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let period = header_read.min(idle).max(1);
        loop {
            let now = self.now_ms();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else if self.started.load(Ordering::Relaxed) == 0 {
                Some((header_read, Expired::HeaderRead))
            } else {
                match self.read_while_idle_ms.load(Ordering::Relaxed) {
                    u64::MAX => Some((
                        self.idle_since_ms
                            .load(Ordering::Relaxed)
                            .saturating_add(idle),
                        Expired::Idle,
                    )),
                    first => Some((first.saturating_add(header_read), Expired::HeaderRead)),
                }
            };
            let next_look = now.saturating_add(period);
            let wake = match deadline {
                Some((at, why)) if now >= at => return why,
                Some((at, _)) => at.min(next_look),
                None => next_look,
            };
            tokio::time::sleep_until(self.accepted + Duration::from_millis(wake)).await;
        }
    }
}

/// One request in flight on the connection; dropped when its response is over.
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        state.idle_since_ms.store(state.now_ms(), Ordering::Relaxed);
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
