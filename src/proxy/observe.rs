//! The layer that records every answered request (metrics, and the access log when on)
//! when its response headers go out.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};

use super::body::ResBody;
use super::error::ERROR_HEADER;
use crate::iap;
use crate::ops::access_log::{self, Answered, RequestFacts};
use crate::ops::metrics::{Metrics, origin};

#[derive(Clone)]
pub(crate) struct ObserveLayer {
    route: Arc<str>,
    metrics: Arc<Metrics>,
    remote: Option<SocketAddr>,
    /// `--access-log`.
    log: bool,
}

impl ObserveLayer {
    pub(crate) fn new(
        route: Arc<str>,
        metrics: Arc<Metrics>,
        remote: Option<SocketAddr>,
        log: bool,
    ) -> Self {
        ObserveLayer {
            route,
            metrics,
            remote,
            log,
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, B> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = access_log::method_label(req.method());
        let facts = self.layer.log.then(|| RequestFacts::of(&req));
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let answered = Answered {
                route: &layer.route,
                remote: layer.remote,
                method,
                status: res.status().as_u16(),
                origin: answered_by(&res),
                response_headers: res.headers(),
                latency: start.elapsed(),
            };
            access_log::record(&layer.metrics, &answered, facts);
            Ok(res)
        })
    }
}

/// Who made the answer: the proxy itself, IAP, or the application behind it.
fn answered_by<B>(res: &Response<B>) -> &'static str {
    if res.headers().contains_key(ERROR_HEADER) {
        origin::PROXY
    } else if iap::generated(res.headers()) {
        origin::IAP
    } else {
        origin::APP
    }
}
