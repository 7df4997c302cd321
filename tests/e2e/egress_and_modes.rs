//! End to end, in-process: audience discovery, header modes, the replay on IAP's 401, and
//! egress through a corporate CONNECT proxy.

use base64::Engine;
use http::{Request, StatusCode};
use iap_proxy::config::{AuthHeader, Env};
use url::Url;

use crate::support::client::{self, get, send, try_send};
use crate::support::connect_proxy::ConnectProxy;
use crate::support::fixture::{AUDIENCE, World};
use crate::support::proxy::InProcess;

#[tokio::test]
async fn audience_is_discovered_from_iaps_redirect() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].audience = "auto".into();
    let proxy = InProcess::start(s, w.env()).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let issued = w.google.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].audience, AUDIENCE);
    // The probe went out once, without a token, and was answered with IAP's 302.
    let probes: Vec<_> = w
        .upstream
        .requests()
        .into_iter()
        .filter(|r| !r.authorized())
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert!(probes[0].headers.get("authorization").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn discovery_fails_start_up_saying_what_came_back() {
    let w = World::new().await;
    // The fake Google's plain-http listener is no IAP: it answers 403 to GET /.
    let mut s = w.settings();
    s.routes[0].upstream = Url::parse(&format!("{}/", w.google.base_url())).unwrap();
    s.routes[0].audience = "auto".into();
    let err = InProcess::start_error(s, w.env()).await.to_string();
    assert!(err.contains("does not answer like IAP"), "{err}");
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(err.contains("content-type: text/plain"), "{err}");
    assert!(err.contains("--audience"), "{err}");
    assert_eq!(w.google.issued_count(), 0);
}

#[tokio::test]
async fn serverless_mode_leaves_the_apps_authorization_alone() {
    let w = World::new().await;
    w.upstream.set_serverless(true);
    let mut s = w.settings();
    s.routes[0].header = AuthHeader::XServerlessAuthorization;
    let proxy = InProcess::start(s, w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("authorization", "Bearer the-apps-own")
        .header("x-serverless-authorization", "Bearer forged-by-client")
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echo = r.json();
    assert_eq!(
        echo["headers"]["authorization"],
        serde_json::json!(["Bearer the-apps-own"])
    );
    let ours = echo["headers"]["x-serverless-authorization"]
        .as_array()
        .unwrap();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(
        ours[0].as_str().unwrap(),
        format!("Bearer {}", w.google.issued_tokens()[0].token)
    );
    let rec = w.upstream.requests();
    assert_eq!(rec[0].token_header, Some("x-serverless-authorization"));
    proxy.stop().await;
}

#[tokio::test]
async fn authorization_mode_replaces_the_clients_authorization() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let req = Request::get(proxy.url("/echo"))
        .header("authorization", "Bearer client-value")
        .body(client::empty())
        .unwrap();
    let r = send(&client::http1(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let values = r.json()["headers"]["authorization"].clone();
    assert_eq!(values.as_array().unwrap().len(), 1, "{values}");
    assert!(!values[0].as_str().unwrap().contains("client-value"));
    proxy.stop().await;
}

#[tokio::test]
async fn iaps_401_is_retried_once_for_requests_whose_body_is_held() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/warm")).await.status, StatusCode::OK);
    assert_eq!(w.google.issued_count(), 1);

    // IAP stops accepting the held token: the GET is replayed with a fresh one.
    w.upstream.reject_next_valid_tokens(1);
    let r = get(&http, &proxy.url("/echo?n=1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(w.google.issued_count(), 2);
    let seen: Vec<_> = w
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.query.as_deref() == Some("n=1"))
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].authorized() && seen[1].authorized());
    // A request whose body is held (up to --retry-buffer-bytes) is replayed too (see
    // resilience.rs); one whose body was streamed is not, but still refreshes the token for
    // the next request (see token_lifecycle.rs).
    proxy.stop().await;
}

#[tokio::test]
async fn many_requests_refused_at_once_share_one_fetch() {
    let w = World::new().await;
    let proxy = InProcess::start(w.settings(), w.env()).await;
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/warm")).await.status, StatusCode::OK);
    w.upstream.reject_next_valid_tokens(5);
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let http = http.clone();
            let req = client::get_request(&proxy.url(&format!("/echo?c={i}")), &[]);
            tokio::spawn(async move { try_send(&http, req).await.map(|r| (r.status, r.text())) })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    assert_eq!(w.google.issued_count(), 2);
    proxy.stop().await;
}

fn proxy_env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

#[tokio::test]
async fn upstream_traffic_tunnels_through_https_proxy_token_endpoint_goes_direct() {
    let w = World::new().await;
    let corp = ConnectProxy::start().await;
    let with_creds = format!("http://alice:pa%20ss@127.0.0.1:{}", corp.port());
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pa ss")
    );
    corp.require_auth(Some(&expected_auth));
    let mut s = w.settings();
    s.routes[0].audience = "auto".into();
    let proxy = InProcess::start(s, proxy_env(&[("HTTPS_PROXY", &with_creds)])).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let upstream = format!("127.0.0.1:{}", w.upstream.port());
    // Discovery's probe and the request itself (h2: maybe one pooled tunnel for both).
    assert!(corp.tunnels_to(&upstream) >= 1);
    assert_eq!(corp.total_tunnels(), corp.tunnels_to(&upstream));
    // The key file's token_uri is http://127.0.0.1: curl's rule sends http targets via
    // HTTP_PROXY only, so with HTTPS_PROXY alone it went direct.
    assert!(corp.not_connect().is_empty(), "{:?}", corp.not_connect());
    assert_eq!(w.google.issued_count(), 1);
    assert!(
        corp.auth_seen()
            .iter()
            .all(|a| a.as_deref() == Some(expected_auth.as_str()))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn no_proxy_bypasses_and_metadata_is_never_proxied() {
    let w = World::new().await;
    let corp = ConnectProxy::start().await;
    // Metadata source (no key file), the proxy set for everything but 127.0.0.1.
    let mut s = w.settings();
    s.routes[0].credentials = None;
    let metadata = w.google.metadata_host();
    let env = proxy_env(&[
        ("https_proxy", &corp.url()),
        ("NO_PROXY", "example.com, 127.0.0.1"),
        ("GCE_METADATA_HOST", &metadata),
    ]);
    let proxy = InProcess::start(s.clone(), env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(corp.total_tunnels(), 0);
    assert!(corp.not_connect().is_empty());
    proxy.stop().await;

    // Without NO_PROXY the upstream tunnels, the metadata server still does not.
    let env = proxy_env(&[
        ("HTTPS_PROXY", &corp.url()),
        ("GCE_METADATA_HOST", &metadata),
    ]);
    let proxy = InProcess::start(s, env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(corp.tunnels_to(&format!("127.0.0.1:{}", w.upstream.port())) >= 1);
    assert_eq!(corp.tunnels_to(&metadata), 0);
    assert!(corp.not_connect().is_empty());
    assert_eq!(w.google.issued_count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_refusing_the_tunnel_is_a_502_naming_the_proxy() {
    let w = World::new().await;
    let corp = ConnectProxy::start().await;
    corp.require_auth(Some("Basic bm9ib2R5Om5vcGU="));
    let env = proxy_env(&[("HTTPS_PROXY", &corp.url())]);
    let proxy = InProcess::start(w.settings(), env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let text = r.text();
    assert!(text.contains(&corp.url()), "{text}");
    assert!(text.contains("proxy authorization required"), "{text}");
    assert_eq!(w.upstream.requests().len(), 0);
    proxy.stop().await;
}
