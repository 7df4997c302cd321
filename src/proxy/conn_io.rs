//! A client connection's socket as hyper sees it, watched by the proxy:
//! - every read tells the connection's watchdog that bytes arrived (a request head in
//!   progress after an idle spell);
//! - on HTTP/1.1, the answers hyper makes itself for a request head it could not parse
//!   (431 past its buffer or header count, 400, 414) are replaced by the proxy's own, with
//!   `x-iap-proxy-error`, as every answer the proxy makes carries;
//! - on HTTP/2, a connection told to calm down (see `conn`) gets a GOAWAY with
//!   ENHANCE_YOUR_CALM at a frame boundary, and is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::ConnState;
use super::error::ProxyError;

/// GOAWAY (type 7) on stream 0, 8 bytes of payload: last-stream-id 2^31-1 (the client may
/// not assume any of its streams unprocessed) and ENHANCE_YOUR_CALM (0xb).
const GOAWAY_CALM: [u8; 17] = [
    0, 0, 8, 7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0x0b,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Http1,
    Http2,
}

pub(crate) struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
    mode: Mode,
    /// Bytes of the proxy's own to write before anything else.
    pending: Bytes,
    /// hyper wrote since its last completed flush: maybe mid-frame.
    unflushed: bool,
    /// The GOAWAY was queued: once written, every operation fails.
    calmed: bool,
    header_limit: usize,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>, header_limit: usize) -> Watched<T> {
        Watched {
            io,
            state,
            mode: Mode::Unknown,
            pending: Bytes::new(),
            unflushed: false,
            calmed: false,
            header_limit,
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed: too many streams cancelled",
    )
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    /// Writes `pending` out; ready when it is all written and flushed.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// On a connection told to calm down, at a frame boundary: GOAWAY, then an error.
    fn poll_calm(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Error>> {
        if self.mode != Mode::Http2 || !self.state.calm.load(Ordering::Acquire) || self.unflushed {
            return None;
        }
        if !self.calmed {
            self.calmed = true;
            self.pending = Bytes::from_static(&GOAWAY_CALM);
        }
        Some(match self.poll_pending(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(aborted()),
        })
    }

    /// What the first slice of a write is. Nothing is counted here: a write that comes
    /// back Pending is offered again.
    fn look(&self, first: &[u8]) -> Look {
        if self.mode != Mode::Http1 || self.state.upgraded.load(Ordering::Relaxed) {
            return Look::Other;
        }
        let produced = self.state.produced.load(Ordering::Acquire);
        let seen = self.state.seen.load(Ordering::Relaxed);
        if produced > seen {
            let head = first.starts_with(b"HTTP/1.") && !first.starts_with(b"HTTP/1.1 1");
            return if head { Look::Head } else { Look::Other };
        }
        match hypers_own_answer(first) {
            Some(status) => Look::HypersOwn(status),
            None => Look::Other,
        }
    }
}

/// A write, as `conn_io` tells them apart.
enum Look {
    /// The head of a response the service produced.
    Head,
    /// An answer hyper made itself, to be replaced by the proxy's own.
    HypersOwn(StatusCode),
    Other,
}

/// The status of an answer hyper wrote by itself: a 4xx head with an empty body and no
/// header but `content-length`, `date` and `connection`, when the service produced none.
fn hypers_own_answer(head: &[u8]) -> Option<StatusCode> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 4")?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse::<u16>().ok()?;
    let empty = lines.all(|l| {
        let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
        l.eq_ignore_ascii_case("content-length: 0") || name == "date" || name == "connection"
    });
    (empty && !rest.is_empty()).then_some(StatusCode::from_u16(status).ok()?)
}

fn own_error(status: StatusCode, limit: usize) -> ProxyError {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ProxyError::HeadTooLarge { limit },
        StatusCode::URI_TOO_LONG => ProxyError::UriTooLong,
        _ => ProxyError::MalformedHead,
    }
}

/// The proxy's error answer as HTTP/1.1 bytes, closing the connection.
fn render(err: ProxyError) -> Bytes {
    let body = format!("{err}\n");
    let res = err.into_response();
    let status = res.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in res.headers() {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(value.to_str().unwrap_or_default());
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    Bytes::from(out)
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.mode == Mode::Http2 {
            this.state.waker.register(cx.waker());
            if let Some(calm) = this.poll_calm(cx) {
                return calm.map(Err);
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            if this.mode == Mode::Unknown {
                // hyper's own detection looks for the whole preface; "PRI" starts only it.
                this.mode = if new.starts_with(b"PRI") {
                    this.state.h2.store(true, Ordering::Relaxed);
                    Mode::Http2
                } else {
                    Mode::Http1
                };
            }
            this.state.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.calmed {
            return Poll::Ready(Err(aborted()));
        }
        if !this.pending.is_empty() {
            ready!(this.poll_pending(cx))?;
        }
        let first = bufs.iter().find(|b| !b.is_empty());
        let look = first.map_or(Look::Other, |first| this.look(first));
        if let Look::HypersOwn(status) = look {
            this.pending = render(own_error(status, this.header_limit));
            // Claimed as written: hyper's answer is replaced by `pending`.
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.unflushed = true;
            if let Look::Head = look {
                this.state.seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() && !this.calmed {
            ready!(this.poll_pending(cx))?;
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        this.unflushed = false;
        if let Some(calm) = this.poll_calm(cx) {
            return calm.map(Err);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            ready!(this.poll_pending(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::conn::ConnSlot;
    use tokio::io::AsyncWriteExt;

    /// The service produced one answer shaped like hyper's own (an upstream's empty 404),
    /// written in pieces through a small pipe; then hyper answers a head it could not parse.
    #[tokio::test]
    async fn only_answers_hyper_made_itself_are_replaced() {
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let state = ConnState::new(ConnSlot::new(permit, Default::default()));
        let (ours, mut peer) = tokio::io::duplex(16);
        let mut w = Watched::new(ours, state.clone(), 8192);
        w.mode = Mode::Http1;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut got)
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let date = "date: Thu, 03 Dec 2026 08:00:00 GMT";
        let upstream = format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{date}\r\n\r\n");
        state.produced.fetch_add(1, Ordering::AcqRel);
        w.write_all(upstream.as_bytes()).await.unwrap();
        let auto = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{date}\r\n\r\n"
        );
        w.write_all(auto.as_bytes()).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        let rest = got
            .strip_prefix(&upstream)
            .unwrap_or_else(|| panic!("{got}"));
        assert!(rest.starts_with("HTTP/1.1 431 "), "{rest}");
        assert!(
            rest.contains("x-iap-proxy-error: headers-too-large"),
            "{rest}"
        );
    }

    #[test]
    fn hypers_own_answers_are_recognised() {
        let date = "date: Thu, 03 Dec 2026 08:00:00 GMT";
        let auto = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n{date}\r\n\r\n"
        );
        assert_eq!(
            hypers_own_answer(auto.as_bytes()),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let with_type = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n{date}\r\n\r\n"
        );
        assert_eq!(hypers_own_answer(with_type.as_bytes()), None);
        assert_eq!(
            hypers_own_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        let ours = render(own_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, 8192));
        let text = String::from_utf8(ours.to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(
            text.contains("x-iap-proxy-error: headers-too-large\r\n"),
            "{text}"
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
