//! Outbound connections: the TLS trust roots every outbound connection shares, and the
//! pooled clients to the upstream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

use crate::access::CountingBody;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::egress::{Egress, EgressConnector};

/// What the upstream clients send: the client's body, streamed as it comes, or nothing (a
/// replay of a bodiless request, or the discovery probe). Nothing is ever buffered.
/// The client's streamed body (counted as it passes), or nothing for a replay.
pub type ReqBody = Either<CountingBody<Incoming>, Empty<Bytes>>;

pub type UpstreamClient = Client<HttpsConnector<EgressConnector>, ReqBody>;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read --upstream-ca {path}: {reason}")]
    ReadCa { path: PathBuf, reason: String },
    #[error("--upstream-ca {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    EmptyCa { path: PathBuf },
    #[error("--upstream-ca {path}: a certificate was rejected: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "no trusted root certificates: the system store is empty and no --upstream-ca was given"
    )]
    NoRoots,
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// Trust roots: the system's, plus `--upstream-ca`. Used for the upstream and for Google's
/// endpoints alike, so a corporate TLS-inspecting CA works everywhere once given.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system trust roots");
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::ReadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::ReadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCa {
                path: path.to_path_buf(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::BadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The pooled upstream clients: `main` offers HTTP/2 and HTTP/1.1 and lets ALPN decide;
/// `http1` offers HTTP/1.1 only. An HTTP/1.x client's requests (and upgrades: WebSocket
/// over HTTP/2 needs extended CONNECT, which neither IAP nor most apps offer) go over
/// `http1`, an HTTP/2 client's (gRPC) over `main`. Measured with `bench/run`, HTTP/2 to the
/// upstream cost an HTTP/1.1 client about 20 µs per request and half the download rate:
/// the never-indexed token is HPACK-encoded anew for every request, and every request
/// crosses to the h2 connection task and back.
#[derive(Clone)]
pub struct Clients {
    pub main: UpstreamClient,
    pub http1: UpstreamClient,
}

impl Clients {
    pub fn new(tls: rustls::ClientConfig) -> Clients {
        Clients::with_egress(tls, &Egress::direct())
    }

    /// Clients whose connections go out as `egress` says (direct or through a proxy).
    pub fn with_egress(tls: rustls::ClientConfig, egress: &Egress) -> Clients {
        Clients {
            main: build(tls.clone(), true, egress),
            http1: build(tls, false, egress),
        }
    }
}

fn build(tls: rustls::ClientConfig, allow_h2: bool, egress: &Egress) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let http = egress.connector(http);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if allow_h2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir =
            std::env::temp_dir().join(format!("iap-proxy-upstream-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = tls_config(Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.join("missing.pem");
        let err = tls_config(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
