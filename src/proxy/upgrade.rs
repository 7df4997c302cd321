//! Upgraded connections (WebSocket): the protocol a client asks for, and the tunnel that
//! copies bytes both ways once both sides have switched. A tunnel is still a client
//! connection: it keeps the connection's `--max-connections` slot, is cut after
//! `--stream-idle-timeout` without a byte, and lives through the drain's grace period.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Version, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::conn::ConnSlot;
use crate::outbound::activity::Activity;
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

/// What a tunnel needs besides its two ends.
pub(super) struct TunnelOpts {
    /// The client connection's `--max-connections` slot, kept while the tunnel lives.
    pub(super) slot: Arc<ConnSlot>,
    pub(super) idle: Option<Duration>,
    /// Cancelled when the drain's grace period runs out.
    pub(super) cut: CancellationToken,
    /// A WebSocket gets a close frame (1001, going away) when the proxy ends it.
    pub(super) websocket: bool,
}

/// WebSocket close frame, server to client (unmasked): status 1001, "going away".
const CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
const TUNNEL_BUF: usize = 16 * 1024;

pub(super) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    opts: TunnelOpts,
) {
    let _slot = opts.slot;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(error = %chain(&err), "upgrade failed");
            return;
        }
    };
    let (mut client_rd, mut client_wr) = tokio::io::split(TokioIo::new(client));
    let (mut up_rd, mut up_wr) = tokio::io::split(TokioIo::new(upstream));
    let (mut up_buf, mut down_buf) = (vec![0; TUNNEL_BUF], vec![0; TUNNEL_BUF]);
    let activity = Activity::new();
    let mut frames = Frames::default();
    let mut client_open = true;
    let ended = loop {
        let idle = async {
            match opts.idle {
                Some(limit) => activity.idle_for(limit).await,
                None => std::future::pending().await,
            }
        };
        let moved = tokio::select! {
            read = client_rd.read(&mut up_buf), if client_open => match read {
                Ok(0) | Err(_) => { client_open = false; up_wr.shutdown().await }
                Ok(n) => up_wr.write_all(&up_buf[..n]).await,
            },
            read = up_rd.read(&mut down_buf) => match read {
                // The upstream ended the tunnel: so does the proxy, towards the client too
                // (a WebSocket client waits for the server to close first, RFC 6455 7.1.1).
                Ok(0) | Err(_) => {
                    let _ = client_wr.shutdown().await;
                    break None;
                }
                Ok(n) => {
                    frames.feed(&down_buf[..n]);
                    client_wr.write_all(&down_buf[..n]).await
                }
            },
            () = idle => break Some("idle (--stream-idle-timeout)"),
            () = opts.cut.cancelled() => break Some("the drain's grace period ran out"),
        };
        if let Err(err) = moved {
            tracing::debug!(error = %err, "upgraded connection ended with an error");
            break None;
        }
        activity.touch();
    };
    if let Some(why) = ended {
        tracing::info!(reason = why, "closing an upgraded connection");
        if opts.websocket && frames.at_boundary() {
            let _ = client_wr.write_all(&CLOSE_GOING_AWAY).await;
        }
        let _ = client_wr.shutdown().await;
        let _ = up_wr.shutdown().await;
    }
}

/// Where WebSocket frames from the upstream begin and end, so that a close frame of the
/// proxy's own is never written into the middle of one (RFC 6455 section 5.2).
#[derive(Default)]
struct Frames {
    header: [u8; 14],
    have: usize,
    payload_left: u64,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if let Some((len, payload)) = frame_header(&self.header[..self.have]) {
                if self.have == len {
                    self.payload_left = payload;
                    self.have = 0;
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

/// A frame header's length and its payload's, once enough of it is known.
fn frame_header(h: &[u8]) -> Option<(usize, u64)> {
    let second = *h.get(1)?;
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let (ext, payload) = match second & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes(h.get(2..4)?.try_into().ok()?)),
        ),
        127 => (8, u64::from_be_bytes(h.get(2..10)?.try_into().ok()?)),
        n => (0, u64::from(n)),
    };
    Some((2 + ext + mask, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_followed_across_reads() {
        let mut f = Frames::default();
        assert!(f.at_boundary());
        // "hello" in a text frame, split across reads.
        f.feed(&[0x81, 0x05, b'h']);
        assert!(!f.at_boundary());
        f.feed(b"ello");
        assert!(f.at_boundary());
        // A 300-byte binary frame: 16-bit length.
        f.feed(&[0x82, 126, 0x01]);
        f.feed(&[0x2c]);
        f.feed(&[0u8; 299]);
        assert!(!f.at_boundary());
        f.feed(&[0u8; 1]);
        assert!(f.at_boundary());
        // Two frames in one read, then a header alone.
        f.feed(&[0x89, 0x00, 0x8a, 0x01, 0x00, 0x81]);
        assert!(!f.at_boundary());
        f.feed(&[0x00]);
        assert!(f.at_boundary());
    }
}
