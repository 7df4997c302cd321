//! IAP's own 401: the token was refused before the application saw the request. The
//! token cache decides on the refresh (once per token, backing off when fresh tokens are
//! refused too); this decides what the request does: sent once more with a newer token
//! when its body (if any) is still held in the retry buffer, else its 401 passed on. When IAP refuses fresh tokens too, one
//! warning per token says so, quoting IAP's 401 body, which still reaches the client whole.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;

use super::body::{BoxError, ResBody};
use crate::auth::cache::Repeated;
use crate::auth::{IdToken, TokenCache, scrub};

/// IAP's 401 bodies are a line of text (or a small page); this much is enough to quote.
const MESSAGE_BYTES: usize = 4096;
/// Reading them must not hold the client's answer up for long.
const MESSAGE_WAIT: Duration = Duration::from_secs(2);
/// How much of IAP's message the log quotes.
const QUOTED_CHARS: usize = 300;

/// What the refusal handling needs of the route.
pub(crate) struct Context<'a> {
    pub(crate) tokens: &'a TokenCache,
    pub(crate) route: &'a str,
    /// `iap_proxy_iap_refusals_total{route}`.
    pub(crate) counter: &'a Counter,
}

/// What to do with a request IAP refused.
pub(crate) enum Decision {
    /// Send it once more with this newer token.
    Replay(Arc<IdToken>),
    /// Pass IAP's 401 on as it is.
    PassOn(Response<Incoming>),
    /// Pass IAP's 401 on: its body was read to quote it in a warning, and is whole again.
    Quoted(Response<ResBody>),
}

/// IAP refused `token` (its own 401). The refresh it calls for is asked for whether or not
/// the request can be sent again (`replayable`: its body is held and it was not replayed
/// already), so the next request has a fresh token even when this one cannot go again. A
/// replayable request goes once more with a newer token when there is one, or one is being
/// fetched without backoff. When IAP keeps refusing fresh tokens, one warning per token
/// quotes its 401.
pub(crate) async fn decide(
    cx: Context<'_>,
    res: Response<Incoming>,
    token: &Arc<IdToken>,
    replayable: bool,
) -> Decision {
    cx.counter.inc();
    let refused = cx.tokens.refused(token);
    if let Some(repeated) = refused.repeated {
        return Decision::Quoted(warn_repeated(res, &cx, token, repeated).await);
    }
    if !replayable {
        // Debug: with IAP refusing everything, one line per request would flood the log
        // (the WARN above says what matters, once per token).
        tracing::debug!(
            "IAP refused the token (401) of a request that cannot be sent again; passing the 401 on and refreshing the token for the next request"
        );
        return Decision::PassOn(res);
    }
    let fresh = match refused.newer {
        Some(newer) => newer,
        None if refused.fetching_now => match cx.tokens.newer_than(token).await {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::warn!(error = %err, "IAP refused the token (401) and no fresh one came; passing the 401 on");
                return Decision::PassOn(res);
            }
        },
        None => {
            tracing::debug!(
                "IAP refused the token (401); token refreshes are backing off, passing the 401 on"
            );
            return Decision::PassOn(res);
        }
    };
    tracing::info!("IAP refused the token (401); replaying once with a fresh one");
    Decision::Replay(fresh)
}

/// Logs that IAP refused `token` although it was fetched because its predecessor was
/// refused: a new token does not help, so something else is wrong. Returns the response
/// with its body intact.
async fn warn_repeated(
    res: Response<Incoming>,
    cx: &Context<'_>,
    token: &IdToken,
    repeated: Repeated,
) -> Response<ResBody> {
    let (route, audience) = (cx.route, cx.tokens.audience());
    let (parts, (head, message)) = {
        let (parts, body) = res.into_parts();
        (parts, read_head(body).await)
    };
    tracing::warn!(
        route,
        audience,
        principal = token.principal(),
        iap_message = %message,
        refused_in_a_row = repeated.in_a_row,
        next_refresh_in_secs = repeated.next_refresh_in.as_secs_f64(),
        "IAP refused a freshly fetched ID token too, so fetching another will not help. \
         IAP said: {message:?}. Check the audience {audience} (the IAP OAuth client ID) and \
         that {principal} has roles/iap.httpsResourceAccessor, or whether the application \
         sets x-goog-iap-generated-response on its own 401s: run `iap-proxy check` with the \
         same settings. Meanwhile IAP's 401s are passed on and forced token refreshes back off \
         (the next in {next}s)",
        principal = token.principal(),
        next = repeated.next_refresh_in.as_secs(),
    );
    Response::from_parts(parts, head)
}

/// Reads up to `MESSAGE_BYTES` of `body` (within `MESSAGE_WAIT`), and returns a body that
/// yields what was read and then the rest, with the text read as one scrubbed line.
async fn read_head(mut body: Incoming) -> (ResBody, String) {
    let mut read = BytesMut::new();
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::new();
    let mut done = false;
    let _ = tokio::time::timeout(MESSAGE_WAIT, async {
        while read.len() < MESSAGE_BYTES {
            match body.frame().await {
                None => {
                    done = true;
                    break;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => read.extend_from_slice(&data),
                    // Trailers end the body.
                    Err(frame) => {
                        frames.push(Ok(frame));
                        done = true;
                        break;
                    }
                },
                Some(Err(err)) => {
                    frames.push(Err(err.into()));
                    done = true;
                    break;
                }
            }
        }
    })
    .await;
    let message = one_line(&read);
    frames.insert(0, Ok(Frame::data(read.freeze())));
    let head = futures_util::stream::iter(frames);
    let body = if done {
        BodyExt::boxed(StreamBody::new(head))
    } else {
        let rest = BodyStream::new(body).map(|frame| frame.map_err(BoxError::from));
        BodyExt::boxed(StreamBody::new(head.chain(rest)))
    };
    (body, message)
}

/// The text as one line for a log: tags and runs of white space collapsed, token-like
/// words blanked, cut at `QUOTED_CHARS`.
fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c => out.push(c),
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let line = scrub(&words.join(" "));
    if line.is_empty() {
        return "(no message)".to_owned();
    }
    line.chars().take(QUOTED_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iaps_message_becomes_one_scrubbed_line() {
        assert_eq!(
            one_line(b"<html><body>You don't have access.\n  Request it.</body></html>"),
            "You don't have access. Request it."
        );
        assert_eq!(
            one_line(b"Invalid IAP credentials: JWT audience doesn't match"),
            "Invalid IAP credentials: JWT audience doesn't match"
        );
        let token = format!("eyJ{}", "a".repeat(40));
        assert!(!one_line(format!("bad token {token}").as_bytes()).contains("eyJ"));
        assert_eq!(one_line(b"  "), "(no message)");
        let long = "no access ".repeat(100);
        assert_eq!(one_line(long.as_bytes()).chars().count(), QUOTED_CHARS);
    }
}
