//! The first and last step of a connection's service: marks each request in flight until its
//! response body is over (so the connection's watchdog knows when it is idle), counts the
//! response heads the service produced (so `conn_io` can tell hyper's own answers from
//! ours), and reports streams the client cancelled before their answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::conn::{ConnState, InFlight};

/// A request until its answer is produced: dropped before that, the stream was cancelled.
pub(crate) struct Pending {
    state: Arc<ConnState>,
    opened: Instant,
    in_flight: Option<InFlight>,
}

impl Pending {
    pub(crate) fn start(state: &Arc<ConnState>) -> Pending {
        Pending {
            in_flight: Some(state.request_started()),
            state: state.clone(),
            opened: Instant::now(),
        }
    }

    /// The answer, its request kept in flight until its body is over.
    pub(crate) fn respond<RB>(mut self, res: Response<RB>) -> Response<TrackedBody<RB>> {
        self.state.produced.fetch_add(1, Ordering::AcqRel);
        let in_flight = self.in_flight.take();
        res.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.in_flight.is_some() {
            self.state.stream_cancelled(self.opened.elapsed());
        }
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
