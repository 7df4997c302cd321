//! One request's way: rewrite it for the fixed upstream, put the token on it, forward it,
//! and stream the answer back.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{DownBody, ResBody};
use super::conn::ConnState;
use super::error::ProxyError;
use super::exchange::{Answer, Head, exchange};
use super::shared::Shared;
use super::upgrade::TunnelOpts;
use super::{headers, upgrade};
use crate::outbound::activity::Activity;
use crate::outbound::body::Replay;

/// The upstream's answer to `req`, or the proxy's own when it could not be had.
pub(crate) async fn serve(
    shared: &Shared,
    client: Option<SocketAddr>,
    conn: &Arc<ConnState>,
    req: Request<Incoming>,
) -> Response<ResBody> {
    match forward(shared, client, conn, req).await {
        Ok(res) => res,
        Err(err) => {
            tracing::warn!(code = err.code(), error = %err, "request not served by the upstream");
            err.into_response()
        }
    }
}

async fn forward(
    shared: &Shared,
    client: Option<SocketAddr>,
    conn: &Arc<ConnState>,
    mut req: Request<Incoming>,
) -> Result<Response<ResBody>, ProxyError> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > shared.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: shared.max_header_bytes,
        });
    }
    let upgrade = upgrade::requested(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    // Fetch the token before touching the body: without one nothing is forwarded.
    let token = shared.tokens.get().await?;

    let client_version = req.version();
    let (parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut head = Head {
        method: parts.method,
        uri: shared.target_uri(&parts.uri)?,
        headers: parts.headers,
    };
    let h = &mut head.headers;
    let ip = client.map(|c| c.ip());
    headers::prepare_request(h, ip, original_host.as_ref(), shared.header, token.bearer());
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }

    let clients = shared.clients();
    let http = if client_version == http::Version::HTTP_2 && upgrade.is_none() {
        &clients.main
    } else {
        &clients.http1
    };
    let activity = Activity::new();
    let replay = Replay::new(
        body,
        shared.retry_buffer,
        shared.bytes_in.clone(),
        activity.clone(),
    );
    let mut res = match exchange(shared, http, head, token, &replay, &activity).await? {
        Answer::Upstream(res) => res,
        // IAP's refusal, quoted in a warning: its body was partly read, and is whole again.
        Answer::Quoted(res) => {
            let (mut parts, body) = res.into_parts();
            answer_head(shared, &mut parts, original_host.as_ref(), client_version);
            return Ok(Response::from_parts(parts, body));
        }
    };

    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(client_upgrade), Some(proto)) = (client_upgrade, &upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            conn.upgraded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let websocket = proto
                .to_str()
                .is_ok_and(|p| p.to_ascii_lowercase().contains("websocket"));
            let opts = TunnelOpts {
                slot: conn.slot.clone(),
                idle: shared.stream_idle,
                cut: shared.tunnels.clone(),
                websocket,
            };
            tokio::spawn(upgrade::tunnel(client_upgrade, upstream_upgrade, opts));
            let (mut parts, _) = res.into_parts();
            let proto = parts.headers.get(header::UPGRADE).cloned();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(proto) = proto {
                parts.headers.insert(header::UPGRADE, proto);
            }
            parts.version = client_version;
            return Ok(Response::from_parts(
                parts,
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            ));
        }
    }

    let (mut parts, body) = res.into_parts();
    answer_head(shared, &mut parts, original_host.as_ref(), client_version);
    let body = DownBody::new(body, shared.bytes_out.clone(), activity, shared.stream_idle);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The answer's head as the client gets it: hop-by-hop headers gone, a `Location` under the
/// upstream pointed back at the proxy, the client's own HTTP version.
fn answer_head(
    shared: &Shared,
    parts: &mut http::response::Parts,
    original_host: Option<&HeaderValue>,
    client_version: http::Version,
) {
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if shared.rewrite_redirects {
        if let Some(location) = parts.headers.get(header::LOCATION) {
            let host = original_host
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| shared.listen_host.clone());
            if let Some(new) = headers::rewrite_location(location, &shared.upstream, &host) {
                parts.headers.insert(header::LOCATION, new);
            }
        }
    }
    parts.version = client_version;
}
