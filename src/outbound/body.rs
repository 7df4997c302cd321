//! The bodies relayed to and from the upstream, streamed and counted as they pass.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;

/// What the upstream clients send: the client's body, streamed as it comes and counted,
/// or nothing (a replay of a bodiless request, or a probe). Nothing is ever buffered.
pub(crate) type ReqBody = Either<CountingBody<Incoming>, Empty<Bytes>>;

/// Counts data bytes as they pass, without holding them.
pub(crate) struct CountingBody<B> {
    inner: B,
    counter: Counter,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, counter: Counter) -> Self {
        CountingBody { inner, counter }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
