//! The pooled HTTPS clients to the upstream.

use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ReqBody;
use super::egress::{Egress, EgressConnector};

pub(crate) type UpstreamClient = Client<HttpsConnector<EgressConnector>, ReqBody>;

/// The pooled upstream clients: `main` offers HTTP/2 and HTTP/1.1 and lets ALPN decide;
/// `http1` offers HTTP/1.1 only. An HTTP/1.x client's requests (and upgrades: WebSocket
/// over HTTP/2 needs extended CONNECT, which neither IAP nor most apps offer) go over
/// `http1`, an HTTP/2 client's (gRPC) over `main`. Measured with `bench/run`, HTTP/2 to the
/// upstream cost an HTTP/1.1 client about 20 µs per request and half the download rate:
/// the never-indexed token is HPACK-encoded anew for every request, and every request
/// crosses to the h2 connection task and back.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) main: UpstreamClient,
    pub(crate) http1: UpstreamClient,
}

impl Clients {
    /// Clients whose connections go out as `egress` says (direct or through a proxy).
    pub(crate) fn with_egress(tls: rustls::ClientConfig, egress: &Egress) -> Clients {
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
