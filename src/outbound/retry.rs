//! Which failed upstream attempts may go again: those the upstream provably did not
//! process, and the keep-alive race for idempotent methods.
//!
//! hyper shows these cases only through the error's source chain (hyperium/hyper#2500:
//! its client retries none of them), so the reading of that chain is here, in one function
//! ([`classify`]), with unit tests (`retry_tests.rs`) that produce each error from a real
//! hyper client: a hyper upgrade that moves them fails those tests, not production.

use std::error::Error;
use std::io;
use std::time::Duration;

use http::Method;

/// Attempts per request, the first included, when an attempt may have been processed (the
/// keep-alive race, IAP's 401): bounded low, so a broken upstream cannot multiply load.
pub(crate) const MAX_ATTEMPTS: usize = 3;
/// Attempts when every failed one was provably not processed (GOAWAY, REFUSED_STREAM, no
/// connection): the upstream did no work for them, and under load a retried request may
/// meet the next GOAWAY too (a front end that rotates every 100 requests, with 128 in flight,
/// refuses about one stream in five), so more attempts are allowed; the pauses grow.
pub(crate) const MAX_UNPROCESSED_ATTEMPTS: usize = 10;

/// Why a request went again; the `reason` label of `iap_proxy_upstream_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RetryReason {
    /// The stream was above a GOAWAY's last-stream-id, or started after the GOAWAY.
    GoAway,
    /// RST_STREAM with REFUSED_STREAM.
    RefusedStream,
    /// A reused connection closed without answering an idempotent request.
    KeepAliveRace,
    /// IAP refused the token (its own 401); sent again with a fresh one.
    TokenRefused,
    /// No upstream connection was handed to the attempt in time: nothing was sent.
    NotSent,
}

impl RetryReason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            RetryReason::GoAway => "goaway",
            RetryReason::RefusedStream => "refused_stream",
            RetryReason::KeepAliveRace => "keepalive_race",
            RetryReason::TokenRefused => "token_refused",
            RetryReason::NotSent => "not_sent",
        }
    }

    /// How many attempts a request may take when this is why the last one failed.
    pub(crate) fn max_attempts(self) -> usize {
        match self {
            RetryReason::GoAway | RetryReason::RefusedStream | RetryReason::NotSent => {
                MAX_UNPROCESSED_ATTEMPTS
            }
            RetryReason::KeepAliveRace | RetryReason::TokenRefused => MAX_ATTEMPTS,
        }
    }
}

/// What a failed attempt says about whether the upstream processed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The upstream said it did not: RFC 9113 section 8.7 makes it safe to retry, whatever
    /// the method.
    NotProcessed(RetryReason),
    /// The connection closed or was reset before any answer: processed or not, nobody
    /// knows (RFC 9112 section 9.3.1).
    Closed,
    /// Anything else: a timeout, TLS, a protocol error, the upstream's own reset.
    Other,
}

/// Reads a failed attempt's error chain (hyper-util's error, then hyper's, then h2's or the
/// socket's).
pub(crate) fn classify(err: &(dyn Error + 'static)) -> Failure {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_go_away() && h2.is_remote() {
                return Failure::NotProcessed(RetryReason::GoAway);
            }
            if h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Failure::NotProcessed(RetryReason::RefusedStream);
            }
            if !h2.is_io() {
                return Failure::Other;
            }
        } else if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            // The connection ended before the response head; `canceled`: the request was
            // queued on a connection that closed first.
            if hyper.is_incomplete_message() || hyper.is_canceled() {
                return Failure::Closed;
            }
            if hyper.is_timeout() || hyper.is_parse() || hyper.is_user() {
                return Failure::Other;
            }
        } else if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Failure::Closed,
                _ => Failure::Other,
            };
        }
        cur = e.source();
    }
    Failure::Other
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110 section 9.2.2).
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The reason to send the request again, if there is one.
pub(crate) fn retry_reason(failure: Failure, method: &Method, reused: bool) -> Option<RetryReason> {
    match failure {
        Failure::NotProcessed(reason) => Some(reason),
        Failure::Closed if reused && idempotent(method) => Some(RetryReason::KeepAliveRace),
        Failure::Closed | Failure::Other => None,
    }
}

/// The pause before attempt `attempt` (1 = the first retry): a few milliseconds, random
/// so that the requests a GOAWAY failed together do not return together.
pub(crate) fn pause(attempt: usize) -> Duration {
    let base = 5 * attempt as u64;
    Duration::from_millis(base + rand::random_range(0..=base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_not_processed_goes_again_whatever_the_method() {
        let go_away = Failure::NotProcessed(RetryReason::GoAway);
        assert_eq!(
            retry_reason(go_away, &Method::POST, false),
            Some(RetryReason::GoAway)
        );
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert_eq!(
                retry_reason(Failure::Closed, &m, true),
                Some(RetryReason::KeepAliveRace),
                "{m}"
            );
            assert_eq!(retry_reason(Failure::Closed, &m, false), None, "{m}: fresh");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert_eq!(retry_reason(Failure::Closed, &m, true), None, "{m}");
        }
        assert_eq!(retry_reason(Failure::Other, &Method::GET, true), None);
    }

    #[test]
    fn pauses_are_short_and_grow() {
        for attempt in 1..MAX_UNPROCESSED_ATTEMPTS {
            let p = pause(attempt);
            let base = Duration::from_millis(5 * attempt as u64);
            assert!(p >= base && p <= base * 2, "{p:?}");
        }
    }

    #[test]
    fn what_was_not_processed_may_go_again_more_often() {
        assert_eq!(RetryReason::GoAway.max_attempts(), MAX_UNPROCESSED_ATTEMPTS);
        assert_eq!(
            RetryReason::NotSent.max_attempts(),
            MAX_UNPROCESSED_ATTEMPTS
        );
        assert_eq!(RetryReason::KeepAliveRace.max_attempts(), MAX_ATTEMPTS);
        let worst: Duration = (1..MAX_UNPROCESSED_ATTEMPTS).map(pause).sum();
        assert!(worst <= Duration::from_millis(450), "{worst:?}");
    }

    #[test]
    fn plain_socket_errors() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), Failure::Closed);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused), Failure::Other);
    }
}
