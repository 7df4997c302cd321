//! What is recorded about every answered request (metrics, and the access log when on),
//! when its response headers go out.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Request, Response};

use super::error::ERROR_HEADER;
use crate::iap;
use crate::ops::access_log::{self, Answered, RequestFacts};
use crate::ops::request_counter::{MethodLabel, Origin, RequestCounter};

/// What is taken from a request when it arrives, to be recorded with its answer.
pub(crate) struct Observed {
    started: Instant,
    method: MethodLabel,
    /// Only when the access log is on (`--access-log`): copying them costs.
    facts: Option<RequestFacts>,
}

impl Observed {
    pub(crate) fn start<B>(req: &Request<B>, access_log: bool) -> Observed {
        Observed {
            started: Instant::now(),
            method: MethodLabel::of(req.method()),
            facts: access_log.then(|| RequestFacts::of(req)),
        }
    }

    pub(crate) fn record<B>(
        self,
        counter: &RequestCounter,
        remote: Option<SocketAddr>,
        res: &Response<B>,
    ) {
        let answered = Answered {
            remote,
            method: self.method,
            status: res.status().as_u16(),
            origin: answered_by(res),
            response_headers: res.headers(),
            latency: self.started.elapsed(),
        };
        tracing::debug!(status = answered.status, latency = ?answered.latency, "answered");
        access_log::record(counter, &answered, self.facts);
    }
}

/// Who made the answer: the proxy itself, IAP, or the application behind it.
fn answered_by<B>(res: &Response<B>) -> Origin {
    if res.headers().contains_key(ERROR_HEADER) {
        Origin::Proxy
    } else if iap::generated(res.headers()) {
        Origin::Iap
    } else {
        Origin::App
    }
}
