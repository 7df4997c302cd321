//! A fake corporate HTTP proxy: answers CONNECT by tunnelling to a loopback target, counts
//! tunnels per target and records each Proxy-Authorization it was sent. Anything but
//! CONNECT (an absolute-form request) is counted and refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{AcceptLoop, spawn_accept_loop};

#[derive(Default)]
struct State {
    tunnels: Mutex<HashMap<String, usize>>,
    auth_seen: Mutex<Vec<Option<String>>>,
    not_connect: Mutex<Vec<String>>,
    /// When set, a CONNECT without exactly this Proxy-Authorization gets 407.
    require_auth: Mutex<Option<String>>,
}

pub struct ConnectProxy {
    addr: SocketAddr,
    state: Arc<State>,
    server: AcceptLoop,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.server.task.abort();
    }
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let server = spawn_accept_loop(listener, move |stream| handle(st.clone(), stream));
        ConnectProxy {
            addr,
            state,
            server,
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// Tunnels opened to `host:port`.
    pub fn tunnels_to(&self, target: &str) -> usize {
        self.state
            .tunnels
            .lock()
            .unwrap()
            .get(target)
            .copied()
            .unwrap_or(0)
    }
    pub fn total_tunnels(&self) -> usize {
        self.state.tunnels.lock().unwrap().values().sum()
    }
    /// Request lines of requests that were not CONNECT.
    pub fn not_connect(&self) -> Vec<String> {
        self.state.not_connect.lock().unwrap().clone()
    }
    /// The Proxy-Authorization of every CONNECT, in order.
    pub fn auth_seen(&self) -> Vec<Option<String>> {
        self.state.auth_seen.lock().unwrap().clone()
    }
    pub fn require_auth(&self, value: Option<&str>) {
        *self.state.require_auth.lock().unwrap() = value.map(str::to_owned);
    }
}

async fn handle(state: Arc<State>, mut client: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        state.not_connect.lock().unwrap().push(request_line);
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_owned();
    state.auth_seen.lock().unwrap().push(auth.clone());
    let required = state.require_auth.lock().unwrap().clone();
    if required.is_some() && required != auth {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"corp\"\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    // Tests only ever reach loopback; anything else is refused, never dialled.
    let host = target.rsplit_once(':').map(|(h, _)| h).unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "[::1]") {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    *state.tunnels.lock().unwrap().entry(target).or_default() += 1;
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
