//! `--max-concurrent-requests` with a bounded queue: past the limit a request waits, unless
//! `--max-queued-requests` already do; then it is answered 503 `overloaded` at once. It is
//! entered after admission, so a refused request (Host, Origin, client secret) never takes
//! a place.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ProxyError;

/// The limit one route's connections share.
pub(crate) struct Limit {
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// A request's place: running at once, or waiting its turn.
pub(crate) enum Place {
    Running(OwnedSemaphorePermit),
    Queued(Waiting, Arc<Semaphore>),
}

/// A place in the queue, given back however the wait ends.
pub(crate) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limit {
    pub(crate) fn new(max_concurrent: usize, max_queued: usize) -> Limit {
        Limit {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
        }
    }

    /// A place for one request, or `overloaded` when the queue is full.
    pub(crate) fn enter(&self) -> Result<Place, ProxyError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Place::Running(permit));
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(self.queued.clone());
        if queued >= self.max_queued {
            drop(waiting);
            let refused = ProxyError::Overloaded { queued };
            tracing::debug!(code = refused.code(), "request refused: the queue is full");
            return Err(refused);
        }
        Ok(Place::Queued(waiting, self.permits.clone()))
    }
}

impl Place {
    /// Waits for the request's turn; the permit it returns is its turn, until dropped.
    pub(crate) async fn wait(self) -> Option<OwnedSemaphorePermit> {
        match self {
            Place::Running(permit) => Some(permit),
            Place::Queued(waiting, permits) => {
                let permit = permits.acquire_owned().await;
                drop(waiting);
                // The semaphore is never closed.
                permit.ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_queue_requests_are_refused_at_once() {
        let limit = Limit::new(1, 1);
        let running = limit.enter().unwrap().wait().await.unwrap();
        let queued = limit.enter().unwrap();
        assert!(matches!(queued, Place::Queued(..)));
        let refused = limit.enter().err().unwrap().into_response();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused.headers()[super::super::error::ERROR_HEADER],
            "overloaded"
        );
        let waiter = tokio::spawn(queued.wait());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the one permit is taken");
        drop(running);
        let second = waiter.await.unwrap();
        assert!(second.is_some());
        // The queue is empty again: the next request waits rather than being refused.
        assert!(matches!(limit.enter(), Ok(Place::Queued(..))));
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_place_back() {
        let limit = Limit::new(1, 1);
        let _running = limit.enter().unwrap().wait().await.unwrap();
        let queued = limit.enter().unwrap();
        drop(queued);
        assert!(matches!(limit.enter(), Ok(Place::Queued(..))));
    }
}
