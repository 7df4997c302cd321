//! `--max-concurrent-requests` with a bounded queue: past the limit a request waits, unless
//! `--max-queued-requests` already do; then it is answered 503 `overloaded` at once. It sits
//! after admission, so a refused request (Host, Origin, client secret) never takes a place.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio::sync::Semaphore;

use super::body::ResBody;
use super::error::ProxyError;

/// The limit one route's connections share.
#[derive(Clone)]
pub(crate) struct QueueLayer {
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl QueueLayer {
    pub(crate) fn new(max_concurrent: usize, max_queued: usize) -> QueueLayer {
        QueueLayer {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
        }
    }
}

impl<S> tower::Layer<S> for QueueLayer {
    type Service = Queue<S>;
    fn layer(&self, inner: S) -> Queue<S> {
        Queue {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Queue<S> {
    inner: S,
    layer: QueueLayer,
}

/// A place in the queue, given back however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> tower::Service<Request<B>> for Queue<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready clone serves this request; the fresh one waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if let Ok(permit) = self.layer.permits.clone().try_acquire_owned() {
            return Box::pin(async move {
                let _permit = permit;
                inner.call(req).await
            });
        }
        let queued = self.layer.queued.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(self.layer.queued.clone());
        if queued >= self.layer.max_queued {
            drop(waiting);
            let refused = ProxyError::Overloaded { queued };
            tracing::debug!(code = refused.code(), "request refused: the queue is full");
            return Box::pin(std::future::ready(Ok(refused.into_response())));
        }
        let permits = self.layer.permits.clone();
        Box::pin(async move {
            let permit = permits.acquire_owned().await;
            drop(waiting);
            // The semaphore is never closed.
            let _permit = permit.ok();
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn past_the_queue_requests_are_refused_at_once() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let svc = {
            let gate = gate.clone();
            tower::service_fn(move |_req: Request<()>| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, Infallible>(Response::new(ResBody::default()))
                }
            })
        };
        let mut svc = QueueLayer::new(1, 1).layer(svc);
        let running = svc.ready().await.unwrap().call(Request::new(()));
        let running = tokio::spawn(running);
        let queued = tokio::spawn(svc.ready().await.unwrap().call(Request::new(())));
        tokio::task::yield_now().await;
        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused.headers()[super::super::error::ERROR_HEADER],
            "overloaded"
        );
        gate.notify_one();
        assert_eq!(running.await.unwrap().unwrap().status(), 200);
        gate.notify_one();
        assert_eq!(queued.await.unwrap().unwrap().status(), 200);
    }
}
