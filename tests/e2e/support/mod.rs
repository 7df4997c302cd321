//! End-to-end fixtures: local servers that behave like Google's token endpoints
//! (`FakeGoogle`) and like an IAP-protected HTTPS app (`Upstream`).
#![allow(dead_code)]

pub mod app;
pub mod client;
pub mod connect_proxy;
pub mod fake_google;
pub mod fake_iam;
pub mod fixture;
mod google_http;
pub mod keys;
pub mod proxy;
pub mod proxy_client;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

// Each test binary uses a different subset of these re-exports.
#[allow(unused_imports)]
pub use client::{HttpClient, HttpsClient, Resp, get, get_bearer, http_client, https_client, send};
#[allow(unused_imports)]
pub use fake_google::{FakeGoogle, IssuedIdToken, TokenPath};
#[allow(unused_imports)]
pub use keys::RsaKey;
#[allow(unused_imports)]
pub use tls::TestCa;
#[allow(unused_imports)]
pub use upstream::{Alpn, AuthOutcome, Recorded, Upstream, UpstreamOptions, expected_sha256};

/// Installs aws-lc-rs as rustls' process default. The fixtures never rely on it (they
/// pass a provider explicitly), but code under test may call `ClientConfig::builder()`.
pub fn init_crypto() {
    // Err only means some provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

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

/// A unique directory under the system temp dir, removed (recursively) on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // pid + counter + time: unique across parallel test binaries and reruns.
        let name = format!(
            "iap-proxy-test-{label}-{}-{n}-{}",
            std::process::id(),
            now_millis()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of `name` inside the directory (not created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs an accept loop on `listener`. Connection tasks live in a `JoinSet` owned by the
/// loop, so aborting the returned handle also tears down every open connection: a
/// dropped fixture leaves nothing running.
pub(crate) fn spawn_accept_loop<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(handle(stream));
                    }
                    // Transient (e.g. EMFILE): keep serving rather than silently dying.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                },
                // Reap finished connections so the set doesn't grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Lowercase hex, for sha256 digests in JSON bodies and assertions.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
