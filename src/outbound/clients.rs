//! The pooled HTTPS clients to the upstream.

use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ReqBody;
use super::egress::{Egress, EgressConnector};
use super::reuse::Tracking;
use crate::config::UpstreamLiveness;

pub(crate) type UpstreamClient = Client<HttpsConnector<Tracking<EgressConnector>>, ReqBody>;

/// TCP keepalive on upstream sockets: a peer that vanished without a FIN or RST (a NAT or
/// firewall dropped the flow) is noticed within about 30 s + 3 × 10 s, on HTTP/1.1
/// connections too, which have no PING.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_PROBES: u32 = 3;

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
    /// Clients whose connections go out as `egress` says (direct or through a proxy), with
    /// the default liveness settings.
    pub(crate) fn with_egress(tls: rustls::ClientConfig, egress: &Egress) -> Clients {
        Clients::new(tls, egress, UpstreamLiveness::default())
    }

    pub(crate) fn new(
        tls: rustls::ClientConfig,
        egress: &Egress,
        liveness: UpstreamLiveness,
    ) -> Clients {
        Clients {
            main: build(tls.clone(), true, egress, liveness),
            http1: build(tls, false, egress, liveness),
        }
    }
}

fn build(
    tls: rustls::ClientConfig,
    allow_h2: bool,
    egress: &Egress,
    liveness: UpstreamLiveness,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(TCP_KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL));
    http.set_keepalive_retries(Some(TCP_KEEPALIVE_PROBES));
    let http = Tracking(egress.connector(http));
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if allow_h2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Closed before the upstream's own idle timeout would close it under a request.
        .pool_idle_timeout(liveness.idle_timeout);
    if let Some(interval) = liveness.ping_interval {
        // Idle pooled connections too: a dead one is dropped before a request picks it.
        builder
            .http2_keep_alive_interval(interval)
            .http2_keep_alive_timeout(liveness.ping_timeout)
            .http2_keep_alive_while_idle(true);
    }
    builder.build(connector)
}
