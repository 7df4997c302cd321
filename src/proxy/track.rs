//! The outermost layer of a connection's service: marks each request in flight until its
//! response body is over (so the connection's watchdog knows when it is idle), counts the
//! response heads the service produced (so `conn_io` can tell hyper's own answers from
//! ours), and reports streams the client cancelled before their answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::conn::{ConnState, InFlight};

#[derive(Clone)]
pub(crate) struct TrackLayer(pub(crate) Arc<ConnState>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    state: Arc<ConnState>,
}

/// A request until its future completes: dropped before that, the stream was cancelled.
struct Pending {
    state: Arc<ConnState>,
    opened: Instant,
    in_flight: Option<InFlight>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.in_flight.is_some() {
            self.state.stream_cancelled(self.opened.elapsed());
        }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Track<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<TrackedBody<RB>>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut pending = Pending {
            in_flight: Some(self.state.request_started()),
            state: self.state.clone(),
            opened: Instant::now(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            pending
                .state
                .produced
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let in_flight = pending.in_flight.take();
            Ok(res.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
