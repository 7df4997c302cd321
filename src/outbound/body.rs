//! The request bodies sent upstream: the client's, streamed as it comes and counted, and
//! remembered while small so the request can be sent again.
//!
//! [`Replay`] owns the client's body. Each attempt gets an [`UpBody`] that first replays
//! what earlier attempts read, then reads on from the client, keeping each chunk while the
//! total stays within the retry buffer (`--retry-buffer-bytes`). Past it the chunks are
//! dropped and the request can no longer be replayed: a large body streams through without
//! being held.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use super::activity::Activity;

/// What the upstream clients send: one attempt of a client's body, or nothing (a probe).
pub(crate) type ReqBody = Either<UpBody<Incoming>, Empty<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, shared by the attempts that send it.
pub(crate) struct Replay<B> {
    state: Mutex<State<B>>,
    limit: usize,
    /// Bytes read from the client (replays are not counted again).
    counter: Counter,
    activity: Activity,
    /// True once the client's body has ended: `--upstream-timeout` starts then. A flag and
    /// a Notify rather than a watch channel: most requests have no body, and a watch
    /// channel's drop wakes its eight notifiers on every request.
    ended: AtomicBool,
    body_ends: Notify,
}

struct State<B> {
    source: B,
    /// What was read so far, while within the limit.
    chunks: Vec<Bytes>,
    held: usize,
    trailers: Option<HeaderMap>,
    /// The client's body ended (all of it is in `chunks` unless `dropped`).
    ended: bool,
    /// Chunks were dropped (over the limit) or the client's body failed: no replay.
    dropped: bool,
    /// The attempt allowed to read; an older attempt's body is cut.
    epoch: u64,
}

/// One attempt's view of the body.
pub(crate) struct UpBody<B> {
    replay: Arc<Replay<B>>,
    epoch: u64,
    /// Next chunk of `chunks` to replay.
    pos: usize,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("a newer attempt of this request took over its body")]
struct Superseded;

impl<B: Body<Data = Bytes> + Unpin> Replay<B> {
    pub(crate) fn new(source: B, limit: usize, counter: Counter, activity: Activity) -> Arc<Self> {
        let ended = source.is_end_stream();
        Arc::new(Replay {
            state: Mutex::new(State {
                source,
                chunks: Vec::new(),
                held: 0,
                trailers: None,
                ended,
                dropped: false,
                epoch: 0,
            }),
            limit,
            counter,
            activity,
            ended: AtomicBool::new(ended),
            body_ends: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The body for the next attempt; `None` when it could not be sent whole again.
    pub(crate) fn attempt(self: &Arc<Self>) -> Option<UpBody<B>> {
        let mut st = self.lock();
        if st.epoch > 0 && !self.whole(&st) {
            return None;
        }
        st.epoch += 1;
        Some(UpBody {
            replay: self.clone(),
            epoch: st.epoch,
            pos: 0,
            trailers_sent: false,
        })
    }

    /// Whether another attempt could send the whole body again.
    pub(crate) fn replayable(&self) -> bool {
        self.whole(&self.lock())
    }

    /// Everything read so far is held, and so will the rest be: the body has ended, or its
    /// known length fits the buffer. A body of unknown length still coming is not replayed,
    /// so whether a request goes again never depends on how far its upload got.
    fn whole(&self, st: &State<B>) -> bool {
        let rest = st.source.size_hint().upper();
        !st.dropped
            && (st.ended
                || rest.is_some_and(|r| (st.held as u64).saturating_add(r) <= self.limit as u64))
    }

    /// Whether the client's body has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Resolves once the client's body has ended.
    pub(crate) async fn ended(&self) {
        loop {
            let ends = self.body_ends.notified();
            if self.has_ended() {
                return;
            }
            ends.await;
        }
    }

    fn mark_ended(&self) {
        self.ended.store(true, Ordering::Release);
        self.body_ends.notify_waiters();
    }
}

impl<B> Body for UpBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let replay = this.replay.clone();
        let mut st = replay.lock();
        if st.epoch != this.epoch {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(chunk) = st.chunks.get(this.pos) {
            this.pos += 1;
            replay.activity.touch();
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if st.ended {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(st.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let frame = ready!(Pin::new(&mut st.source).poll_frame(cx));
        let st = &mut *st;
        match &frame {
            Some(Ok(frame)) => {
                replay.activity.touch();
                if let Some(data) = frame.data_ref() {
                    replay.counter.inc_by(data.len() as u64);
                    if !st.dropped && st.held + data.len() <= replay.limit {
                        st.held += data.len();
                        st.chunks.push(data.clone());
                        this.pos += 1;
                    } else if !st.dropped {
                        // Over the retry buffer: stream on without holding anything.
                        st.dropped = true;
                        st.chunks = Vec::new();
                        this.pos = 0;
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    st.trailers = Some(trailers.clone());
                    this.trailers_sent = true;
                }
                if frame.is_trailers() || st.source.is_end_stream() {
                    st.ended = true;
                    replay.mark_ended();
                }
            }
            None => {
                st.ended = true;
                this.trailers_sent = true;
                replay.mark_ended();
            }
            Some(Err(_)) => st.dropped = true,
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let st = self.replay.lock();
        let replayed_all = self.pos >= st.chunks.len();
        if st.ended {
            replayed_all && (self.trailers_sent || st.trailers.is_none())
        } else {
            replayed_all && st.source.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        let st = self.replay.lock();
        let pending: usize = st.chunks.iter().skip(self.pos).map(Bytes::len).sum();
        let pending = pending as u64;
        if st.ended {
            return SizeHint::with_exact(pending);
        }
        let rest = st.source.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(pending));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
