//! An HTTP/1.1 upstream over TLS, written by hand so that it can misbehave at the byte
//! level: close a reused connection after reading a request without answering it (the
//! keep-alive race), or answer a head and part of a body and then stall. It checks no
//! token: it records what it saw, per connection, for the test body to assert on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::tls::TestCa;
use super::{AcceptLoop, spawn_accept_loop};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H1Fault {
    /// Every second request on a connection is read, then the connection is closed
    /// without an answer.
    DropEverySecond,
    /// Every answer is its head and 10 of its 100 body bytes, then nothing.
    StallBody,
    /// None: every request answered 200 (500 for paths under `/status/500`).
    Healthy,
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct SeenH1 {
    pub conn: usize,
    /// 1 for the first request on its connection.
    pub on_conn: usize,
    pub method: String,
    pub target: String,
    pub body_len: usize,
    pub answered: bool,
}

pub struct FaultyH1 {
    seen: Arc<Mutex<Vec<SeenH1>>>,
    /// Connections the proxy closed (end of stream between requests), counted.
    closed: tokio::sync::watch::Sender<usize>,
    server: AcceptLoop,
    port: u16,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for FaultyH1 {
    fn drop(&mut self) {
        self.server.task.abort();
    }
}

impl FaultyH1 {
    pub async fn start(fault: H1Fault) -> FaultyH1 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ca = TestCa::new();
        let dir = super::fixture::temp_dir();
        let ca_path = ca.write_ca(dir.path());
        let acceptor = TlsAcceptor::from(ca.server_config(&[b"http/1.1"]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = tokio::sync::watch::channel(0).0;
        let (rec, closes) = (seen.clone(), closed.clone());
        let server = spawn_accept_loop(listener, move |tcp| {
            let conn = conns.fetch_add(1, Ordering::SeqCst);
            let (rec, closes) = (rec.clone(), closes.clone());
            let acceptor = acceptor.clone();
            async move {
                serve(fault, acceptor, tcp, conn, rec).await;
                closes.send_modify(|n| *n += 1);
            }
        });
        FaultyH1 {
            seen,
            closed,
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
    pub fn seen(&self) -> Vec<SeenH1> {
        self.seen.lock().unwrap().clone()
    }
    /// Waits (bounded) until `n` connections have ended.
    pub async fn wait_closed(&self, n: usize, within: std::time::Duration) {
        let mut rx = self.closed.subscribe();
        let done = tokio::time::timeout(within, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(done, Ok(Ok(_))),
            "fewer than {n} connections ended within {within:?}"
        );
    }
}

async fn serve(
    fault: H1Fault,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    conn: usize,
    seen: Arc<Mutex<Vec<SeenH1>>>,
) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let mut buf = Vec::new();
    for on_conn in 1.. {
        let Some((method, target, body_len)) = read_request(&mut tls, &mut buf).await else {
            return;
        };
        let mut record = SeenH1 {
            conn,
            on_conn,
            method: method.clone(),
            target,
            body_len,
            answered: false,
        };
        if fault == H1Fault::DropEverySecond && on_conn % 2 == 0 {
            seen.lock().unwrap().push(record);
            return; // closed without an answer
        }
        record.answered = true;
        let is_500 = record.target.starts_with("/status/500");
        seen.lock().unwrap().push(record);
        if fault == H1Fault::StallBody {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
            let _ = tls.flush().await;
            std::future::pending::<()>().await;
        }
        let status = if is_500 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let body = if method == "HEAD" { "" } else { "ok" };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\n{body}");
        let answer = answer.as_bytes();
        if tls.write_all(answer).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
}

/// Reads one request (head, then a `Content-Length` body) from `io`, keeping what follows
/// in `buf`; `None` at end of stream.
async fn read_request(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Option<(String, String, usize)> {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..len);
    Some((method, target, len))
}
