//! Upgraded connections (WebSocket): the protocol a client asks for, and the tunnel that
//! copies bytes both ways once both sides have switched.

use http::{HeaderValue, Request, Version, header};
use hyper_util::rt::TokioIo;

use crate::outbound::chain;

/// The `Upgrade` a client asks for, when it asks in the HTTP/1.1 way (`Connection: upgrade`).
pub(super) fn asked<B>(req: &Request<B>) -> Option<&str> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        req.headers().get(header::UPGRADE)?.to_str().ok()
    } else {
        None
    }
}

/// The protocols to tunnel: what the client asked for (admission allowed it), less `h2c`:
/// an h2c upgrade is a plain request to the upstream, never a tunnel of raw HTTP/2 frames
/// past the proxy's own checks.
pub(super) fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    let asked = asked(req)?;
    let kept: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::try_from(kept.join(", ")).ok()
}

pub(super) async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(error = %chain(&err), "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(
            bytes_up = up,
            bytes_down = down,
            "upgraded connection closed"
        ),
        Err(err) => tracing::debug!(error = %err, "upgraded connection ended with an error"),
    }
}
