//! End-to-end fixtures: local servers that behave like Google's token endpoints
//! (`FakeGoogle`), like an IAP-protected HTTPS app (`Upstream`) and like a corporate CONNECT
//! proxy (`ConnectProxy`); the proxy under test, in-process or as the real binary; one HTTP
//! client; and the files tests hand to the proxy (key files, ADC files, a fake `gcloud`).

pub mod admin;
pub mod app;
pub mod client;
pub mod connect_proxy;
pub mod fake_google;
pub mod fake_iam;
pub mod faulty_h1;
pub mod faulty_h2;
pub mod fixture;
mod google_http;
pub mod keys;
pub mod nginx;
pub mod proxy;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Current Unix time in whole seconds, as JWT `iat`/`exp` use it.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub(crate) fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
}

/// A fixture's accept loop. Aborting `task` (the fixtures do on drop) tears down the
/// listener and every open connection; `stopped` then resolves.
pub(crate) struct AcceptLoop {
    pub(crate) task: JoinHandle<()>,
    /// Resolves (with an error: nothing is ever sent) once the loop and its listener are
    /// gone, so a test can wait for a dropped fixture to let go of its port.
    pub(crate) stopped: Option<oneshot::Receiver<()>>,
}

/// What the accept loop owns. Fields drop in declaration order: the listener and the
/// connections go before `_stopped` tells anyone the loop is gone.
struct Serving {
    listener: TcpListener,
    conns: JoinSet<()>,
    _stopped: oneshot::Sender<()>,
}

/// Runs an accept loop on `listener`. Connection tasks live in a `JoinSet` owned by the
/// loop, so aborting the returned task also tears down every open connection: a dropped
/// fixture leaves nothing running.
pub(crate) fn spawn_accept_loop<F, Fut>(listener: TcpListener, handle: F) -> AcceptLoop
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, stopped) = oneshot::channel();
    let mut serving = Serving {
        listener,
        conns: JoinSet::new(),
        _stopped: tx,
    };
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = serving.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        serving.conns.spawn(handle(stream));
                    }
                    // Transient (e.g. EMFILE): back off briefly and keep serving rather than
                    // silently dying; there is no event for "descriptors available again".
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                },
                // Reap finished connections so the set doesn't grow without bound.
                Some(_) = serving.conns.join_next(), if !serving.conns.is_empty() => {}
            }
        }
    });
    AcceptLoop {
        task,
        stopped: Some(stopped),
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Lowercase hex, for sha256 digests in JSON bodies and assertions.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port nothing listens on (bound, then released), for "cannot connect" cases.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
