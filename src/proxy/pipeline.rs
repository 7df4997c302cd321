//! A connection's request path as one service, read top to bottom: track the request (in
//! flight, cancelled streams), mark secrets, observe it (metrics, access log), admit it
//! (Host, Origin, framing, client secret), take a place under `--max-concurrent-requests`,
//! forward it. One boxed future per request: a tower layer per step cost a clone of the
//! whole stack, a boxed future and a body wrapper each, on every request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use super::admit::Admission;
use super::body::ResBody;
use super::conn::ConnState;
use super::forward;
use super::headers;
use super::observe::Observed;
use super::queue::Limit;
use super::shared::Shared;
use super::track::{Pending, TrackedBody};
use crate::ops::request_counter::RequestCounter;

/// What every connection of a route shares: behind one `Arc`, so a request takes one
/// reference to all of it.
pub(crate) struct RouteParts {
    pub(crate) shared: Arc<Shared>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) limit: Limit,
    pub(crate) requests: RequestCounter,
    /// `--access-log`.
    pub(crate) access_log: bool,
}

/// One client connection's service.
pub(crate) struct Pipeline {
    route: Arc<RouteParts>,
    conn: Arc<ConnState>,
    /// The client, for X-Forwarded-For and the access log (none on a Unix socket).
    remote: Option<SocketAddr>,
}

impl Pipeline {
    pub(crate) fn new(
        route: Arc<RouteParts>,
        conn: Arc<ConnState>,
        remote: Option<SocketAddr>,
    ) -> Pipeline {
        Pipeline {
            route,
            conn,
            remote,
        }
    }
}

type Answer = Response<TrackedBody<ResBody>>;

impl hyper::service::Service<Request<Incoming>> for Pipeline {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let pending = Pending::start(&self.conn);
        headers::mark_sensitive(req.headers_mut(), &headers::SENSITIVE_REQUEST);
        let span = request_span(&req);
        let observed = Observed::start(&req, self.route.access_log);
        // Admission first: a refused request never takes a place in the queue.
        let admitted = self
            .route
            .admission
            .admit(req)
            .and_then(|req| Ok((req, self.route.limit.enter()?)));
        let route = self.route.clone();
        let (conn, remote) = (self.conn.clone(), self.remote);
        let answer = async move {
            let mut res = match admitted {
                Err(refused) => refused.into_response(),
                Ok((req, place)) => {
                    let _permit = place.wait().await;
                    forward::serve(&route.shared, remote, &conn, req).await
                }
            };
            headers::mark_sensitive(res.headers_mut(), &headers::SENSITIVE_RESPONSE);
            observed.record(&route.requests, remote, &res);
            Ok(pending.respond(res))
        };
        Box::pin(answer.instrument(span))
    }
}

/// The request's span: the path without its query, which often carries signed-URL
/// secrets or identifiers.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), version = ?req.version())
}
