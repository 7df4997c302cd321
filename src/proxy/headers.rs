//! Header rewriting in both directions: hop-by-hop removal, forwarding headers, the token
//! header, and `Location` rewriting.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::config::AuthHeader;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// pre-standard ones still seen in the wild, and h2c's upgrade settings (RFC 7540 §3.2.1),
/// which must never reach an upstream even when the client forgot to name them.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("http2-settings"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and every header named in `Connection`. `TE: trailers` is
/// kept on requests: gRPC needs it end to end and it says nothing about this hop.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most requests name nothing in Connection: collect only when there is something to find.
    let named: Vec<HeaderName> = if headers.contains_key(header::CONNECTION) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    // One pass over the names present (a handful) instead of a hashed removal per
    // hop-by-hop name: most messages carry none of them.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k) || *k == header::UPGRADE || named.contains(k))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    let wants_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in &doomed {
        headers.remove(name);
    }
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A client's request headers made ready for the upstream: hop-by-hop and Connection-named
/// headers gone, `Host` gone (the client sets the upstream's), forwarding headers set, the
/// token in its header, cookies in one field.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    client: Option<IpAddr>,
    original_host: Option<&HeaderValue>,
    mode: AuthHeader,
    bearer: &HeaderValue,
) {
    strip_hop_by_hop(headers, true);
    headers.remove(header::HOST);
    set_forwarded(headers, client, original_host);
    set_token(headers, mode, bearer);
    // Even the h2 client may land on an HTTP/1.1 upstream (ALPN), and one field is valid on h2.
    join_cookies(headers);
}

/// Sets X-Forwarded-For (appended, as nginx's `$proxy_add_x_forwarded_for` does),
/// X-Forwarded-Proto and X-Forwarded-Host. Without a peer address (a Unix socket) there is
/// nothing to vouch for, so a client's own X-Forwarded-For is dropped rather than passed on
/// as if the proxy had checked it.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: Option<IpAddr>,
    original_host: Option<&HeaderValue>,
) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    match client {
        Some(ip) => {
            let value = match headers.get(&XFF).and_then(|v| v.to_str().ok()) {
                Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
                _ => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(XFF, value);
            }
        }
        None => {
            headers.remove(XFF);
        }
    }
    headers.insert(XFP, HeaderValue::from_static("http"));
    match original_host {
        Some(host) => {
            headers.insert(XFH, host.clone());
        }
        None => {
            headers.remove(XFH);
        }
    }
}

/// Puts the token in its header, replacing whatever the client sent there: a client's
/// value must never be appended to, or travel beside, ours. The other modes leave the
/// client's own `Authorization` untouched, for the application behind IAP.
pub(crate) fn set_token(headers: &mut HeaderMap, mode: AuthHeader, bearer: &HeaderValue) {
    const SERVERLESS: HeaderName = HeaderName::from_static("x-serverless-authorization");
    let name = match mode {
        AuthHeader::Authorization => header::AUTHORIZATION,
        AuthHeader::ProxyAuthorization => header::PROXY_AUTHORIZATION,
        AuthHeader::XServerlessAuthorization => SERVERLESS,
    };
    headers.insert(name, bearer.clone());
}

/// Request headers whose values are secrets: marked so that no `Debug` output (a log line
/// at any level, an error) shows them.
pub(crate) const SENSITIVE_REQUEST: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];
pub(crate) const SENSITIVE_RESPONSE: [HeaderName; 1] = [header::SET_COOKIE];

pub(crate) fn mark_sensitive(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// HTTP/2 lets a client split `cookie` into several fields (RFC 9113 §8.2.3); an HTTP/1.1
/// upstream must get them as one, joined with `; ` (which HTTP/2 accepts too).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let parts: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let joined = parts.join(&b"; "[..]);
    if let Ok(mut value) = HeaderValue::from_bytes(&joined) {
        value.set_sensitive(true);
        headers.insert(header::COOKIE, value);
    }
}

/// Rewrites a `Location` under the upstream URL to the proxy's own address, so the client's
/// next request comes back through the proxy (and gets a token) instead of going to IAP
/// directly. The upstream's base path is taken off, as the proxy puts it back on every
/// request (nginx's `proxy_redirect default`). Relative locations, other origins and paths
/// outside the base are left alone.
pub(crate) fn rewrite_location(
    value: &HeaderValue,
    upstream: &Url,
    proxy_host: &str,
) -> Option<HeaderValue> {
    let location = Url::parse(value.to_str().ok()?).ok()?;
    let same_origin = location.scheme() == upstream.scheme()
        && location.host_str() == upstream.host_str()
        && location.port_or_known_default() == upstream.port_or_known_default();
    if !same_origin {
        return None;
    }
    let base = upstream.path().trim_end_matches('/');
    let path = location.path().strip_prefix(base)?;
    let path = match path {
        "" => "/",
        p if p.starts_with('/') => p,
        _ => return None, // /basement is not under /base
    };
    let mut rewritten = format!("http://{proxy_host}{path}");
    if let Some(q) = location.query() {
        rewritten.push('?');
        rewritten.push_str(q);
    }
    if let Some(f) = location.fragment() {
        rewritten.push('#');
        rewritten.push_str(f);
    }
    HeaderValue::try_from(rewritten).ok()
}

#[cfg(test)]
#[path = "headers_prop_tests.rs"]
mod prop_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic abc"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-app"], "kept");
        assert_eq!(h["te"], "trailers");
        let mut h = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("localhost:8080");
        set_forwarded(&mut h, Some("127.0.0.1".parse().unwrap()), Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "localhost:8080");
    }

    #[test]
    fn token_replaces_client_value() {
        let mut h = map(&[
            ("authorization", "Bearer client"),
            ("authorization", "Basic x"),
        ]);
        set_token(
            &mut h,
            AuthHeader::Authorization,
            &HeaderValue::from_static("Bearer ours"),
        );
        assert_eq!(
            h.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Bearer ours"]
        );
        let mut h = map(&[("authorization", "Bearer app")]);
        set_token(
            &mut h,
            AuthHeader::ProxyAuthorization,
            &HeaderValue::from_static("Bearer ours"),
        );
        assert_eq!(h["authorization"], "Bearer app");
        assert_eq!(h["proxy-authorization"], "Bearer ours");
        let mut h = map(&[
            ("authorization", "Bearer app"),
            ("x-serverless-authorization", "Bearer client"),
            ("x-serverless-authorization", "Bearer client2"),
        ]);
        set_token(
            &mut h,
            AuthHeader::XServerlessAuthorization,
            &HeaderValue::from_static("Bearer ours"),
        );
        assert_eq!(h["authorization"], "Bearer app");
        assert_eq!(
            h.get_all("x-serverless-authorization")
                .iter()
                .collect::<Vec<_>>(),
            ["Bearer ours"]
        );
    }

    #[test]
    fn location_rewrite_only_on_upstream_origin() {
        let up = Url::parse("https://app.example.com").unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        let got = rewrite_location(
            &v("https://app.example.com/a/b?x=1#f"),
            &up,
            "127.0.0.1:8080",
        );
        assert_eq!(got.unwrap(), "http://127.0.0.1:8080/a/b?x=1#f");
        assert!(rewrite_location(&v("https://app.example.com:8443/a"), &up, "h").is_none());
        assert!(rewrite_location(&v("http://app.example.com/a"), &up, "h").is_none());
        assert!(rewrite_location(&v("https://accounts.google.com/o"), &up, "h").is_none());
        assert!(rewrite_location(&v("/relative"), &up, "h").is_none());
    }

    #[test]
    fn location_rewrite_takes_the_base_path_off() {
        let up = Url::parse("https://h/base").unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        let got = |s| {
            rewrite_location(&v(s), &up, "localhost:8080").map(|h| h.to_str().unwrap().to_owned())
        };
        assert_eq!(
            got("https://h/base/next?x=1").as_deref(),
            Some("http://localhost:8080/next?x=1")
        );
        assert_eq!(
            got("https://h/base").as_deref(),
            Some("http://localhost:8080/")
        );
        assert_eq!(
            got("https://h/base/").as_deref(),
            Some("http://localhost:8080/")
        );
        assert_eq!(got("https://h/basement"), None);
        assert_eq!(got("https://h/other"), None);
        let slash = Url::parse("https://h/base/").unwrap();
        assert_eq!(
            rewrite_location(&v("https://h/base/next"), &slash, "p").unwrap(),
            "http://p/next"
        );
    }

    #[test]
    fn cookies_join_for_http1_and_xff_is_dropped_without_a_peer() {
        let mut h = map(&[
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        set_forwarded(&mut h, None, None);
        assert!(h.get("x-forwarded-for").is_none());
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn secrets_are_marked_sensitive_and_other_headers_are_not() {
        let mut h = map(&[
            ("authorization", "Bearer a"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("accept", "*/*"),
        ]);
        mark_sensitive(&mut h, &SENSITIVE_REQUEST);
        assert!(h.get_all("cookie").iter().all(HeaderValue::is_sensitive));
        assert!(h["authorization"].is_sensitive());
        assert!(!h["accept"].is_sensitive());
        assert!(!format!("{h:?}").contains("Bearer a"));
    }
}
