//! The body of every answer the proxy gives its clients: the upstream's streamed body
//! (counted as it passes, and cut when the stream falls idle), or the proxy's own short text.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use crate::outbound::activity::Activity;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Boxed once per response, so the upstream's body and the proxy's own answers share a type.
pub(crate) type ResBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
#[error("no byte moved either way for {}s (--stream-idle-timeout); the stream was cut", .0.as_secs())]
pub(crate) struct StreamIdle(pub(crate) Duration);

/// The upstream's response body: counted, and cut after `--stream-idle-timeout` without a
/// byte either way (the request body's bytes count too: they share `activity`).
pub(crate) struct DownBody {
    inner: Incoming,
    counter: Counter,
    activity: Activity,
    idle: Option<Duration>,
    /// Armed only once the body waits, so a body that never does costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl DownBody {
    pub(crate) fn new(
        inner: Incoming,
        counter: Counter,
        activity: Activity,
        idle: Option<Duration>,
    ) -> DownBody {
        DownBody {
            inner,
            counter,
            activity,
            idle,
            timer: None,
        }
    }

    /// Ready with the error once the stream has been idle for the limit.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<StreamIdle> {
        let Some(limit) = self.idle else {
            return Poll::Pending;
        };
        loop {
            let deadline = self.activity.deadline(limit);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            if self.activity.deadline(limit) <= tokio::time::Instant::now() {
                return Poll::Ready(StreamIdle(limit));
            }
        }
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(Ok(frame)) = &frame {
                    this.activity.touch();
                    if let Some(data) = frame.data_ref() {
                        this.counter.inc_by(data.len() as u64);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = ready!(this.poll_idle(cx));
                tracing::debug!(error = %idle, "response body cut");
                Poll::Ready(Some(Err(idle.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
