//! An HTTP/2 upstream over TLS, on the `h2` crate, that misbehaves as real front ends do:
//! GOAWAY after N streams while streams above its last-stream-id are in flight (written as a
//! raw frame: the `h2` server only ever names the last stream it received), REFUSED_STREAM
//! on chosen paths, or silence (no more reads, no PING answered) after N streams. It checks
//! no token: it records what it saw, per connection, for the test body to assert on.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::tls::TestCa;
use super::{AcceptLoop, spawn_accept_loop};

/// What the upstream does wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// After this many streams on a connection, GOAWAY naming the last of them (sent when
    /// the next one arrives): streams above it are never answered.
    pub goaway_after: Option<usize>,
    /// The first request for a path starting with `/refuse` is reset with REFUSED_STREAM.
    pub refuse_once: bool,
    /// After this many streams on a connection, it stops reading (PINGs go unanswered).
    pub silent_after: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Refused,
    /// Above the GOAWAY's last-stream-id: not processed.
    AboveGoaway,
    /// Arrived on a connection gone silent.
    Ignored,
}

/// One stream as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub conn: usize,
    pub stream: u32,
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub body_len: usize,
    pub outcome: Outcome,
}

struct Shared {
    faults: Faults,
    seen: Mutex<Vec<Seen>>,
    conns: AtomicUsize,
    refused: Mutex<std::collections::HashSet<String>>,
    /// Connections gone silent, held open until the fixture is dropped.
    silent: Mutex<Vec<tokio::task::AbortHandle>>,
}

pub struct FaultyH2 {
    shared: Arc<Shared>,
    server: AcceptLoop,
    port: u16,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for FaultyH2 {
    fn drop(&mut self) {
        self.server.task.abort();
        for t in self.shared.silent.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl FaultyH2 {
    pub async fn start(faults: Faults) -> FaultyH2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ca = TestCa::new();
        let dir = super::fixture::temp_dir();
        let ca_path = ca.write_ca(dir.path());
        let acceptor = TlsAcceptor::from(ca.server_config(&[b"h2"]));
        let shared = Arc::new(Shared {
            faults,
            seen: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
            refused: Mutex::new(Default::default()),
            silent: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let server = spawn_accept_loop(listener, move |tcp| {
            serve(sh.clone(), acceptor.clone(), tcp)
        });
        FaultyH2 {
            shared,
            server,
            port,
            ca_path,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::SeqCst)
    }
}

async fn serve(shared: Arc<Shared>, acceptor: TlsAcceptor, tcp: TcpStream) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let conn_no = shared.conns.fetch_add(1, Ordering::SeqCst);
    let inject = Arc::new(Mutex::new(Vec::new()));
    let io = Injecting {
        io: tls,
        inject: inject.clone(),
        unflushed: false,
    };
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    let mut count = 0;
    let mut last_answered: Option<u32> = None;
    let mut previous: Option<u32> = None;
    // Streams above the GOAWAY, kept unanswered (dropping them would reset them).
    let mut held = Vec::new();
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        count += 1;
        let stream = u32::from(respond.stream_id());
        let target = req
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string());
        let mut seen = Seen {
            conn: conn_no,
            stream,
            method: req.method().clone(),
            target: target.clone(),
            body_len: 0,
            outcome: Outcome::Answered,
        };
        // GOAWAY once stream N+1 has arrived, naming stream N: one stream at least is in
        // flight above its last-stream-id, whatever the client's timing.
        if shared.faults.goaway_after.is_some_and(|n| count == n + 1) {
            let last = previous.unwrap_or(0);
            last_answered = Some(last);
            let [a, b, c, d] = last.to_be_bytes();
            inject
                .lock()
                .unwrap()
                .extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, a, b, c, d, 0, 0, 0, 0]);
        }
        previous = Some(stream);
        if last_answered.is_some_and(|last| stream > last) {
            seen.outcome = Outcome::AboveGoaway;
            shared.seen.lock().unwrap().push(seen);
            held.push(respond);
            continue;
        }
        if shared.faults.silent_after.is_some_and(|n| count > n) {
            seen.outcome = Outcome::Ignored;
            shared.seen.lock().unwrap().push(seen);
            // Never polled again: no read, no PING answered, until the fixture goes.
            let task = tokio::spawn(async move {
                let _keep = (conn, respond, held);
                std::future::pending::<()>().await
            });
            shared.silent.lock().unwrap().push(task.abort_handle());
            return;
        }
        if shared.faults.refuse_once
            && target.starts_with("/refuse")
            && shared.refused.lock().unwrap().insert(target.clone())
        {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            seen.outcome = Outcome::Refused;
            shared.seen.lock().unwrap().push(seen);
            continue;
        }
        let sh = shared.clone();
        tokio::spawn(async move {
            let mut body = req.into_body();
            while let Some(Ok(chunk)) = body.data().await {
                seen.body_len += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let res = Response::builder().status(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(res, false) {
                let _ = send.send_data(Bytes::from(format!("ok {target}")), true);
            }
            sh.seen.lock().unwrap().push(seen);
        });
    }
}

/// The TLS stream with raw bytes to slip in between two of the `h2` server's frames.
struct Injecting {
    io: TlsStream<TcpStream>,
    inject: Arc<Mutex<Vec<u8>>>,
    /// The `h2` server wrote since its last flush: maybe in the middle of a frame.
    unflushed: bool,
}

impl Injecting {
    fn poll_inject(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.unflushed {
            return Poll::Ready(Ok(()));
        }
        loop {
            let pending = std::mem::take(&mut *self.inject.lock().unwrap());
            if pending.is_empty() {
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            match Pin::new(&mut self.io).poll_write(cx, &pending) {
                Poll::Ready(Ok(n)) => {
                    self.inject
                        .lock()
                        .unwrap()
                        .splice(0..0, pending[n..].iter().copied());
                }
                other => {
                    self.inject.lock().unwrap().splice(0..0, pending);
                    return other.map(|r| r.map(|_| ()));
                }
            }
        }
    }
}

impl AsyncRead for Injecting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        ready!(self.poll_inject(cx))?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Injecting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_inject(cx))?;
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.unflushed |= n > 0;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = false;
        self.poll_inject(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
