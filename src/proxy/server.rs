//! Serving one route's listener: accept (up to `--max-connections`), HTTP/1.1 and h2c on
//! each connection, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Semaphore;

use super::admit::Admission;
use super::conn::{ConnSlot, ConnState, Expired};
use super::conn_io::Watched;
use super::error::ProxyError;
use super::listener::{Conn, Listener};
use super::pipeline::{Pipeline, RouteParts};
use super::queue::Limit;
use super::shared::Shared;
use crate::ops::metrics::Metrics;
use crate::ops::request_counter::RequestCounter;

#[derive(Clone)]
pub(crate) struct ServerOptions {
    pub(crate) shutdown_grace: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) max_queued_requests: usize,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) client_idle_timeout: Duration,
    /// The route's name in logs and metrics.
    pub(crate) route: Arc<str>,
    pub(crate) metrics: Arc<Metrics>,
    /// What a request must satisfy before it is queued (Host, Origin, client secret…).
    pub(crate) admission: Arc<Admission>,
    pub(crate) max_connections: usize,
    /// One log line per request (`--access-log`).
    pub(crate) access_log: bool,
}

/// Connections past `--max-connections` still get a 503 that says why, from at most this
/// many at once and within `REFUSAL_TIME`; past that they are closed unanswered, so a flood
/// cannot grow memory either.
const REFUSING_AT_ONCE: usize = 64;
const REFUSAL_TIME: Duration = Duration::from_secs(5);
/// After the grace period, how long tunnels get to send their close frames.
const CUT_TIME: Duration = Duration::from_secs(1);

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight request finished within the grace period.
    Clean,
    /// The grace period ran out with connections (or WebSocket tunnels) still open; they
    /// were cut.
    TimedOut,
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests and
/// tunnels finish within the grace period.
pub(crate) async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's watchdog (`conn`) keeps --header-read-timeout for every protocol,
        // the first request's head included; hyper's own would also end idle keep-alive
        // connections, which is --client-idle-timeout's job.
        .header_read_timeout(None)
        // Our check (with the error header) sits at max_header_bytes; past hyper's buffer
        // `conn_io` answers for hyper, so leave room for the request line and body bytes.
        .max_buf_size(opts.max_header_bytes.saturating_mul(2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // h2 counts 32 bytes per field where we count 4: eight times ours is never reached
        // before our own check answers with the error header.
        .max_header_list_size(
            u32::try_from(opts.max_header_bytes.saturating_mul(8)).unwrap_or(u32::MAX),
        )
        .max_concurrent_streams(opts.max_concurrent_streams)
        // Streams reset before hyper accepted them, and streams hyper reset for errors: h2's
        // GOAWAY past these; streams reset after being accepted are counted in `conn`.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    let route = Arc::new(RouteParts {
        shared: shared.clone(),
        admission: opts.admission.clone(),
        limit: Limit::new(opts.max_concurrent_requests, opts.max_queued_requests),
        requests: RequestCounter::new(&opts.metrics, opts.route.clone()),
        access_log: opts.access_log,
    });
    let connections = Arc::new(Semaphore::new(opts.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    // Turns true when the drain starts: every connection then closes once idle.
    let (draining, drain_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Running out of file descriptors must not end the proxy: wait and retry.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(held) = connections.clone().try_acquire_owned() else {
            refuse(&builder, stream, remote, opts.max_connections, &refusing);
            continue;
        };
        let state = ConnState::new(ConnSlot::new(held, opts.metrics.open_connections.clone()));
        let svc = Pipeline::new(route.clone(), state.clone(), remote);
        let io = Watched::new(stream, state.clone(), opts.max_header_bytes);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        let deadlines = (opts.header_read_timeout, opts.client_idle_timeout);
        tokio::spawn(run_connection(
            conn,
            state,
            deadlines,
            drain_rx.clone(),
            remote,
        ));
    }
    drop(listener);
    tracing::info!(
        grace_secs = opts.shutdown_grace.as_secs(),
        "shutting down: no longer accepting, draining in-flight requests and tunnels"
    );
    // Every slot back: every connection closed, tunnels included.
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    let _ = draining.send(true);
    let drained = async {
        let _ = connections.acquire_many(all).await;
    };
    match tokio::time::timeout(opts.shutdown_grace, drained).await {
        Ok(()) => {
            tracing::info!("drained; exiting");
            Drain::Clean
        }
        Err(_) => {
            tracing::warn!(
                "grace period ran out with requests or tunnels still open; cutting them"
            );
            shared.tunnels.cancel();
            let _ = tokio::time::timeout(CUT_TIME, connections.acquire_many(all)).await;
            Drain::TimedOut
        }
    }
}

/// How long an HTTP/2 connection closed for idleness gets to see its GOAWAY out.
const GOAWAY_TIME: Duration = Duration::from_secs(5);

/// One client connection until it ends: closed by its watchdog (no complete request head
/// in time: dropped; idle: dropped on HTTP/1.1, a GOAWAY first on HTTP/2), or gracefully
/// once the drain starts (hyper finishes what is in flight and closes idle connections).
async fn run_connection<C>(
    conn: C,
    state: Arc<ConnState>,
    (header_read, idle): (Duration, Duration),
    mut drain: tokio::sync::watch::Receiver<bool>,
    remote: Option<SocketAddr>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let open = closing.is_none();
        let draining = async {
            let _ = drain.wait_for(|d| *d).await;
        };
        let goaway_sent = async {
            match closing.as_mut() {
                Some(deadline) => deadline.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(error = %err, remote = ?remote, "connection ended with an error");
                }
                return;
            }
            why = state.watchdog(header_read, idle), if open => {
                tracing::debug!(?why, remote = ?remote, "connection closed by its deadline");
                if why != Expired::Idle || !state.h2.load(Ordering::Relaxed) {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(GOAWAY_TIME)));
            }
            () = draining, if open => {
                conn.as_mut().graceful_shutdown();
                // The grace period bounds the drain; this only stops re-arming.
                closing = Some(Box::pin(tokio::time::sleep(Duration::from_secs(86_400))));
            }
            () = goaway_sent => return,
        }
    }
}

/// Answers a connection past `--max-connections` with a 503 `too-many-connections` (HTTP/1.1
/// or h2c, whichever the client speaks) and closes it.
fn refuse(
    builder: &auto::Builder<TokioExecutor>,
    stream: Conn,
    remote: Option<SocketAddr>,
    limit: usize,
    refusing: &Arc<Semaphore>,
) {
    tracing::debug!(?remote, limit, "connection over --max-connections refused");
    let Ok(slot) = refusing.clone().try_acquire_owned() else {
        return; // dropping the stream closes it
    };
    let svc = service_fn(move |_req: Request<Incoming>| async move {
        let mut res = ProxyError::TooManyConnections { limit }.into_response();
        // HTTP/1.1: hyper closes after this response (h2: it drops the header itself).
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(res)
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
    });
}
