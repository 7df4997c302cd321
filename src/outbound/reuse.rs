//! Whether a request went out on a reused upstream connection.
//!
//! A connection that the upstream closed while idle in the pool fails the next request
//! written on it without any answer: the keep-alive race (RFC 9112 section 9.3.1). Only on
//! a reused connection does that failure mean "not processed" for an idempotent request; a
//! fresh connection that fails the same way may have crashed the app. hyper-util's pool does
//! not say which connection a request took, so every upstream connection carries a use
//! counter in its `Connected` extras, and the request captures it
//! ([`hyper_util::client::legacy::connect::capture_connection`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Extensions, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{CaptureConnection, Connected, Connection};

/// How many requests an upstream connection has carried, shared by its `Connected`
/// extras (cloned into every capture).
#[derive(Clone, Debug, Default)]
pub(crate) struct Uses(Arc<AtomicU64>);

impl Uses {
    /// Counts one more request on the connection; true when an earlier one used it.
    fn count_one(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) > 0
    }
}

/// After an attempt: counts the attempt on the connection it took and says whether that
/// connection had carried a request before. `None` when no connection was taken.
pub(crate) fn was_reused(captured: &CaptureConnection) -> Option<bool> {
    let connected = captured.connection_metadata();
    let connected = connected.as_ref()?;
    let mut extensions = Extensions::new();
    connected.get_extras(&mut extensions);
    extensions.get::<Uses>().map(Uses::count_one)
}

/// A connector whose connections carry a [`Uses`] counter.
#[derive(Clone)]
pub(crate) struct Tracking<C>(pub(crate) C);

/// A connection with its use counter.
pub(crate) struct Tracked<T> {
    io: T,
    uses: Uses,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<Uri> for Tracking<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Tracked<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?;
            Ok(Tracked {
                io,
                uses: Uses::default(),
            })
        })
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_use_is_fresh_and_later_ones_reused() {
        let uses = Uses::default();
        assert!(!uses.count_one());
        assert!(uses.count_one());
        assert!(uses.clone().count_one(), "clones share the count");
    }
}
