//! Properties of the header rules, for any headers a client sends.

use super::*;
use proptest::prelude::*;

/// Header names: the rules' own (hop-by-hop, token, forwarding) mixed with arbitrary ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "http2-settings",
            "proxy-authorization",
            "proxy-authenticate",
            "authorization",
            "x-serverless-authorization",
            "host",
            "cookie",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-custom",
        ])
        .prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

/// Values, including lists of header names (for `Connection`).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,24}",
        prop::collection::vec(name(), 0..4).prop_map(|names| names.join(", ")),
        Just("trailers".to_owned()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((name(), value()), 0..16).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(n), HeaderValue::try_from(v)) {
                map.append(n, v);
            }
        }
        map
    })
}

fn mode() -> impl Strategy<Value = AuthHeader> {
    prop::sample::select(vec![
        AuthHeader::Authorization,
        AuthHeader::ProxyAuthorization,
        AuthHeader::XServerlessAuthorization,
    ])
}

/// What the proxy itself puts on every request: the rules below do not apply to these.
fn set_by_the_proxy(name: &HeaderName, mode: AuthHeader) -> bool {
    name == mode.header_name()
        || name == header::TE
        || ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].contains(&name.as_str())
}

proptest! {
    #[test]
    fn the_token_goes_out_exactly_once_and_nothing_hop_by_hop_does(
        incoming in headers(),
        mode in mode(),
        with_peer in any::<bool>(),
    ) {
        let bearer = HeaderValue::from_static("Bearer the-token");
        let named: Vec<String> = incoming
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        let mut out = incoming.clone();
        let peer = with_peer.then(|| IpAddr::from([127, 0, 0, 1]));
        prepare_request(&mut out, peer, None, mode, &bearer);

        let tokens: Vec<_> = out.get_all(mode.header_name()).iter().collect();
        prop_assert_eq!(tokens, vec![&bearer]);
        for name in out.keys() {
            if set_by_the_proxy(name, mode) {
                continue;
            }
            prop_assert!(!HOP_BY_HOP.contains(name), "{} went out", name);
            prop_assert!(name != header::UPGRADE && name != header::HOST, "{} went out", name);
            prop_assert!(!named.contains(&name.as_str().to_owned()), "Connection named {}", name);
        }
        if let Some(te) = out.get(header::TE) {
            prop_assert_eq!(te, "trailers");
        }
        // The other modes leave the client's Authorization to the app, untouched.
        if mode != AuthHeader::Authorization && !named.iter().any(|n| n == "authorization") {
            let before: Vec<_> = incoming.get_all(header::AUTHORIZATION).iter().collect();
            let after: Vec<_> = out.get_all(header::AUTHORIZATION).iter().collect();
            prop_assert_eq!(before, after);
        }
    }

    #[test]
    fn a_location_is_only_ever_rewritten_to_the_proxy_itself(
        location in prop_oneof![
            "[ -~]{0,40}",
            "(https?)://(app\\.example\\.com|127\\.0\\.0\\.1|evil\\.example)(:[0-9]{1,5})?/[ -~]{0,20}",
            "https://app\\.example\\.com(/base)?[/@:?#.%a-z]{0,20}",
        ],
        base in prop::sample::select(vec!["", "/base", "/base/"]),
    ) {
        let upstream = Url::parse(&format!("https://app.example.com{base}")).unwrap();
        let Ok(value) = HeaderValue::try_from(location.clone()) else { return Ok(()) };
        if let Some(new) = rewrite_location(&value, &upstream, "127.0.0.1:8080") {
            let new = Url::parse(new.to_str().unwrap()).unwrap();
            prop_assert_eq!(new.host_str(), Some("127.0.0.1"), "{} became {}", location, new);
            prop_assert_eq!(new.port(), Some(8080));
            let old = Url::parse(&location).unwrap();
            prop_assert_eq!(old.host_str(), Some("app.example.com"), "only the upstream's own");
        }
    }
}
