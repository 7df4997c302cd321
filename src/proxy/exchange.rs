//! One request's exchange with the upstream: attempts until one is answered, each bounded
//! by the timeouts.
//!
//! An attempt goes again, on a fresh connection and after a short jittered pause, when the
//! upstream provably did not process it (a GOAWAY'd stream, REFUSED_STREAM, no connection
//! handed out: any method), when a reused connection closed under an idempotent request
//! (the keep-alive race), or once when IAP itself refused the token (with a fresh one) —
//! always only while the body is still whole in the retry buffer (`outbound::body::Replay`),
//! and at most `RetryReason::max_attempts` times.
//!
//! Timeouts, one meaning each: `--stream-idle-timeout` while the client's body is still
//! coming (no byte either way), `--upstream-timeout` from the end of that body to the
//! response head.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};
use tokio::time::Instant;

use super::body::ResBody;
use super::error::ProxyError;
use super::headers;
use super::refusal::{self, Decision};
use super::shared::Shared;
use crate::auth::IdToken;
use crate::iap;
use crate::outbound::activity::Activity;
use crate::outbound::body::{Replay, UpBody};
use crate::outbound::chain;
use crate::outbound::clients::UpstreamClient;
use crate::outbound::retry::{self, RetryReason};
use crate::outbound::reuse;

/// How the upstream answered.
pub(super) enum Answer {
    /// Its response, the body still streaming.
    Upstream(Response<Incoming>),
    /// IAP's refusal, its body read in part to quote it in a warning (and whole again).
    Quoted(Response<ResBody>),
}

/// What every attempt sends: the rewritten request head.
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
}

/// How one attempt ended without a response.
enum Unanswered {
    Failed(hyper_util::client::legacy::Error),
    Timeout,
    Idle,
    /// No connection was handed to it: nothing was sent.
    NotSent,
}

/// How long an attempt may wait for a connection from the pool (the connect timeout is
/// 10 s, plus the TLS handshake). hyper-util's pool can leave a request waiting for an HTTP/2
/// connection that went away before it was handed out; such a request was never sent, so
/// it goes again rather than waiting out `--upstream-timeout`.
const CHECKOUT_LIMIT: Duration = Duration::from_secs(15);

/// Sends the request until an attempt is answered or none may follow.
pub(super) async fn exchange(
    shared: &Shared,
    http: &UpstreamClient,
    mut head: Head,
    mut token: Arc<IdToken>,
    replay: &Arc<Replay<Incoming>>,
    activity: &Activity,
) -> Result<Answer, ProxyError> {
    let mut attempts = 0;
    let mut token_replayed = false;
    // One --upstream-timeout for the request, however many attempts it takes: set when
    // the client's body has ended.
    let until = OnceLock::new();
    loop {
        attempts += 1;
        let Some(body) = replay.attempt() else {
            return Err(ProxyError::UpstreamFailed {
                upstream: shared.upstream.to_string(),
                reason: "the request body can no longer be sent again".into(),
            });
        };
        let mut out = Request::new(Either::Left(body));
        *out.method_mut() = head.method.clone();
        *out.uri_mut() = head.uri.clone();
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = head.headers.clone();
        let mut captured = capture_connection(&mut out);
        let waits = Waits {
            replay,
            until: &until,
            activity,
        };
        let sent = attempt(shared, http, out, waits, &mut captured).await;
        let reused = reuse::was_reused(&captured).unwrap_or(false);
        let again = |reason: RetryReason| attempts < reason.max_attempts() && replay.replayable();
        let err = match sent {
            Ok(res) => {
                if !iap::refused_token(res.status(), res.headers()) {
                    return Ok(Answer::Upstream(res));
                }
                let replayable = !token_replayed && again(RetryReason::TokenRefused);
                let cx = refusal::Context {
                    tokens: &shared.tokens,
                    route: &shared.route,
                    counter: &shared.iap_refusals,
                };
                match refusal::decide(cx, res, &token, replayable).await {
                    Decision::Replay(fresh) => {
                        token_replayed = true;
                        headers::set_token(&mut head.headers, shared.header, fresh.bearer());
                        token = fresh;
                        shared.count_retry(RetryReason::TokenRefused);
                        continue;
                    }
                    Decision::PassOn(res) => return Ok(Answer::Upstream(res)),
                    Decision::Quoted(res) => return Ok(Answer::Quoted(res)),
                }
            }
            Err(Unanswered::Timeout) => {
                return Err(ProxyError::UpstreamTimeout {
                    upstream: shared.upstream.to_string(),
                    waited: shared.upstream_timeout,
                });
            }
            Err(Unanswered::Idle) => {
                return Err(ProxyError::StreamIdle {
                    waited: shared.stream_idle.unwrap_or_default(),
                });
            }
            Err(Unanswered::NotSent) if again(RetryReason::NotSent) => {
                tracing::debug!(
                    attempts,
                    "no upstream connection came in time; sending again"
                );
                shared.count_retry(RetryReason::NotSent);
                continue;
            }
            Err(Unanswered::NotSent) => {
                return Err(ProxyError::UpstreamConnect {
                    upstream: shared.upstream.to_string(),
                    reason: format!("no connection within {}s", CHECKOUT_LIMIT.as_secs()),
                });
            }
            Err(Unanswered::Failed(err)) => err,
        };
        let reason = retry::retry_reason(retry::classify(&err), &head.method, reused);
        match reason {
            Some(reason) if again(reason) => {
                tracing::debug!(reason = reason.label(), attempts, error = %chain(&err), "the upstream did not process the request; sending it again");
                shared.count_retry(reason);
                tokio::time::sleep(retry::pause(attempts)).await;
            }
            _ => return Err(failed(shared, &err, reason)),
        }
    }
}

fn failed(
    shared: &Shared,
    err: &hyper_util::client::legacy::Error,
    retryable: Option<RetryReason>,
) -> ProxyError {
    let upstream = shared.upstream.to_string();
    let mut reason = chain(err);
    if retryable.is_some() {
        reason.push_str(" (not sent again: attempts used up, or the body was too large to hold)");
    }
    if err.is_connect() {
        ProxyError::UpstreamConnect { upstream, reason }
    } else {
        ProxyError::UpstreamFailed { upstream, reason }
    }
}

/// What an attempt waits on besides the upstream: the end of the client's body, the
/// request's upstream deadline (once that body ended), the stream's activity.
struct Waits<'a> {
    replay: &'a Replay<Incoming>,
    until: &'a OnceLock<Instant>,
    activity: &'a Activity,
}

/// One attempt: the response head, or why there is none.
async fn attempt(
    shared: &Shared,
    http: &UpstreamClient,
    out: Request<Either<UpBody<Incoming>, http_body_util::Empty<bytes::Bytes>>>,
    waits: Waits<'_>,
    captured: &mut CaptureConnection,
) -> Result<Response<Incoming>, Unanswered> {
    let Waits {
        replay,
        until,
        activity,
    } = waits;
    let started = std::time::Instant::now();
    let sending = http.request(out);
    let timeout = shared.upstream_timeout;
    let idle = shared.stream_idle;
    // --upstream-timeout: from the end of the client's body to the response head.
    let upstream_timeout = async move {
        replay.ended().await;
        let deadline = *until.get_or_init(|| Instant::now() + timeout);
        tokio::time::sleep_until(deadline).await;
    };
    // --stream-idle-timeout: only while the client's body is still coming.
    let stalled = async move {
        let Some(limit) = idle else {
            return std::future::pending().await;
        };
        if replay.has_ended() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = replay.ended() => std::future::pending().await,
            () = activity.idle_for(limit) => {}
        }
    };
    let not_sent = async {
        let assigned = tokio::time::timeout(CHECKOUT_LIMIT, async {
            // The watch guard is dropped here, not held across the wait below.
            let _ = captured.wait_for_connection_metadata().await;
        });
        if assigned.await.is_ok() {
            std::future::pending::<()>().await;
        }
    };
    // In this order: a pooled connection is checked out in `sending`'s first poll, so
    // `not_sent` then finds it assigned and never arms its timer.
    let result = tokio::select! {
        biased;
        sent = sending => sent.map_err(Unanswered::Failed),
        () = upstream_timeout => Err(Unanswered::Timeout),
        () = stalled => Err(Unanswered::Idle),
        () = not_sent => Err(Unanswered::NotSent),
    };
    shared
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    result
}
