//! When a request's stream last moved a byte, either way: the clock of the stream idle
//! timeout (`--stream-idle-timeout`), shared by the request body, the response body and the
//! wait for the response head.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// One stream's last activity. Cheap to touch: one clock read and one relaxed store.
#[derive(Clone, Debug)]
pub(crate) struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    base: Instant,
    /// Milliseconds from `base` to the last byte moved.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity(Arc::new(Inner {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }))
    }

    /// A byte moved now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the stream falls idle for `limit` if nothing moves from now on.
    pub(crate) fn deadline(&self, limit: Duration) -> Instant {
        let last = Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
        self.0.base + last + limit
    }

    /// Resolves once nothing has moved for `limit` (sleeping again whenever something did).
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.deadline(limit);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_a_full_quiet_period() {
        let a = Activity::new();
        let limit = Duration::from_secs(10);
        let idle = tokio::spawn({
            let a = a.clone();
            async move {
                a.idle_for(limit).await;
                Instant::now()
            }
        });
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(7)).await;
        a.touch();
        let fired = idle.await.unwrap();
        assert_eq!(fired - start, Duration::from_secs(17));
    }
}
