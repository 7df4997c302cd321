//! Who may use the proxy's identity: rebound Host names, other sites' pages, local users
//! of a Unix socket, smuggled upgrades and ambiguous framing are refused before anything is
//! forwarded; the browser's own same-origin traffic and plain clients keep working.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use iap_proxy::Listeners;
use iap_proxy::config::{AllowedOrigins, ListenAddr};
use iap_proxy::listener::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::client::{self, Connection, get_request, send};
use crate::support::fixture::{AUDIENCE, World};
use crate::support::proxy::{Binary, InProcess};
use crate::support::upstream::Alpn;

const WITHIN: Duration = Duration::from_secs(10);

/// A proxy that holds its first token, so a refused request cannot hide behind a fetch.
async fn started(w: &World) -> InProcess {
    let proxy = InProcess::start(w.settings(), w.env()).await;
    w.google.wait_for_issued(1, WITHIN).await;
    proxy
}

/// Sends `req` on a fresh HTTP/1.1 connection and returns the status and error code.
async fn answer(req: Request<client::Body>) -> (StatusCode, Option<String>) {
    let r = send(&client::http1(), req).await;
    (r.status, r.header("x-iap-proxy-error").map(str::to_owned))
}

/// Writes raw bytes and reads the whole answer (the request says `Connection: close`).
async fn raw(proxy: &InProcess, request: &str) -> String {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WITHIN, tcp.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_rebound_host_is_refused_and_nothing_is_forwarded_or_fetched() {
    let w = World::new().await;
    let proxy = started(&w).await;
    let port = proxy.addr.port();
    let issued = w.google.issued_count();
    let evil = format!("attacker.example:{port}");
    let get = get_request(&proxy.url("/echo"), &[("host", &evil)]);
    let post = Request::post(proxy.url("/echo"))
        .header("host", &evil)
        .header("content-type", "text/plain")
        .body(client::full("rm -rf"))
        .unwrap();
    for req in [get, post] {
        let (status, code) = answer(req).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(code.as_deref(), Some("host-not-allowed"));
    }
    assert!(
        w.upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
    assert_eq!(w.google.issued_count(), issued, "no token fetched for it");
    // The names a user reaches the proxy by keep working, with or without the port.
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _) = answer(get_request(&proxy.url("/echo"), &[("host", &host)])).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    assert_eq!(w.upstream.authorized_count(), 4);
}

/// The proxy's flags for `w`, listening on a free loopback port.
fn flags(w: &World) -> Vec<String> {
    [
        "--upstream",
        &w.upstream.url(),
        "--audience",
        AUDIENCE,
        "--credentials",
        w.key_file.to_str().unwrap(),
        "--upstream-ca",
        w.upstream.ca_path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .into()
}

#[tokio::test]
async fn a_listed_name_is_allowed() {
    let w = World::new().await;
    let mut args = flags(&w);
    args.extend([
        "--allowed-hosts".into(),
        "sidecar,iap-proxy.default.svc".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let binary = Binary::spawn_listening(&args, &[]).await;
    let http = client::http1();
    for host in ["sidecar:8080", "iap-proxy.default.svc"] {
        let r = send(&http, get_request(&binary.url("/echo"), &[("host", host)])).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.text());
    }
    let r = send(
        &http,
        get_request(&binary.url("/echo"), &[("host", "other")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    let (code, binary) = binary.terminate().await;
    assert_eq!(code, Some(0));
    assert!(
        binary.stderr().contains("refused a request naming a Host")
            && binary.stderr().contains("other"),
        "one WARN names the refused Host:\n{}",
        binary.stderr()
    );
}

#[tokio::test]
async fn other_sites_pages_are_refused_before_the_token_is_attached() {
    let w = World::new().await;
    let proxy = started(&w).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("origin", "http://attacker.example")], "cross-origin"),
        (&[("origin", "null")], "cross-origin"),
        // Same host, other port: another origin (a dev server must be listed).
        (&[("origin", "http://localhost:3000")], "cross-origin"),
        (&[("sec-fetch-site", "cross-site")], "cross-site"),
    ];
    for (headers, want) in cases {
        let mut b = Request::post(proxy.url("/echo"))
            .header("host", &host)
            .header("content-type", "text/plain");
        for (k, v) in *headers {
            b = b.header(*k, *v);
        }
        let (status, code) = answer(b.body(client::full("x")).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(code.as_deref(), Some(*want), "{headers:?}");
    }
    assert!(w.upstream.requests().is_empty());

    // The page the proxy itself serves, and clients that send no Origin, go through.
    let same_origin = Request::post(proxy.url("/echo"))
        .header("host", &host)
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .body(client::full("x"))
        .unwrap();
    assert_eq!(answer(same_origin).await.0, StatusCode::OK);
    let plain = get_request(&proxy.url("/echo"), &[]);
    assert_eq!(answer(plain).await.0, StatusCode::OK);
    assert_eq!(w.upstream.authorized_count(), 2);
}

#[tokio::test]
async fn allowed_origins_let_a_listed_page_in() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].allowed_origins = AllowedOrigins::parse("http://localhost:3000").unwrap();
    let proxy = InProcess::start(s, w.env()).await;
    let req = get_request(&proxy.url("/echo"), &[("origin", "http://localhost:3000")]);
    assert_eq!(answer(req).await.0, StatusCode::OK);
    let req = get_request(&proxy.url("/echo"), &[("origin", "http://localhost:4000")]);
    assert_eq!(answer(req).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_same_origin_websocket_handshake_is_tunnelled_and_a_foreign_one_refused() {
    let w = World::new().await;
    let proxy = started(&w).await;
    let origin = format!("http://localhost:{}", proxy.addr.port());
    let url = format!("ws://localhost:{}/ws", proxy.addr.port());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(tokio_tungstenite::tungstenite::Message::text("same origin"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "same origin");
    ws.close(None).await.unwrap();

    let mut foreign = url.as_str().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("origin", "http://attacker.example".parse().unwrap());
    match tokio_tungstenite::connect_async(foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }
        other => panic!("a foreign page's WebSocket must be refused: {other:?}"),
    }
    let ws_requests = w
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/ws")
        .count();
    assert_eq!(
        ws_requests, 1,
        "only the same-origin handshake reached the upstream"
    );
}

#[tokio::test]
async fn the_admin_port_refuses_csrf_and_rebound_hosts() {
    let w = World::new().await;
    let route = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let listeners = Listeners {
        routes: vec![Listener::Tcp(route)],
        admin: Some(admin),
    };
    let proxy = InProcess::start_listeners(listeners, w.settings(), w.env());
    let http = client::http1();
    let url = |path: &str| format!("http://{admin_addr}{path}");

    let rebound = send(
        &http,
        get_request(&url("/metrics"), &[("host", "attacker.example:9091")]),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        rebound.header("x-iap-proxy-error"),
        Some("host-not-allowed")
    );
    // A page's no-preflight POST (text/plain) must not stop the proxy, from any site.
    for (k, v) in [
        ("origin", "http://attacker.example"),
        ("sec-fetch-site", "same-site"),
    ] {
        let csrf = Request::post(url("/quitquitquit"))
            .header("content-type", "text/plain")
            .header(k, v)
            .body(client::full("x"))
            .unwrap();
        let r = send(&http, csrf).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{k}: {v}");
        assert_eq!(r.header("x-iap-proxy-error"), Some("cross-origin"));
    }
    // Probes name the pod's IP; the proxy is still up.
    let probe = send(
        &http,
        get_request(&url("/healthz"), &[("host", "10.1.2.3:9091")]),
    )
    .await;
    assert_eq!(probe.status, StatusCode::OK);
    // `curl -X POST` still stops it.
    let quit = send(
        &http,
        Request::post(url("/quitquitquit"))
            .body(client::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(quit.status, StatusCode::OK);
    proxy.stopped_within(WITHIN).await;
}

#[tokio::test]
async fn a_unix_socket_is_the_users_alone_whatever_the_umask() {
    let w = World::new().await;
    let private = w.path("private.sock");
    let group = w.path("group.sock");
    let config = w.write(
        "sockets.toml",
        format!(
            "[[routes]]\nlisten = \"unix:{}\"\nupstream = \"{}\"\n\n[[routes]]\nlisten = \"unix:{}\"\nupstream = \"{}\"\nsocket_mode = \"0660\"\n",
            private.display(),
            w.upstream.url(),
            group.display(),
            w.upstream.url()
        ),
    );
    let mut args = flags(&w);
    args.extend(["--config".into(), config.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The top-level route listens on TCP, so its "listening" line says start-up is done;
    // every listener is bound (and chmod'ed) before any route starts.
    let binary = Binary::spawn_listening_with_umask("000", &args, &[]).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&private),
        0o600,
        "umask 000 must not open the socket to everyone"
    );
    assert_eq!(mode(&group), 0o660, "socket_mode widens it on purpose");
    let (code, _) = binary.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_unix_socket_client_cannot_forge_x_forwarded_for() {
    let w = World::new().await;
    let path = w.path("xff.sock");
    let mut s = w.settings();
    s.routes[0].listen = ListenAddr::Unix(path.clone());
    let listeners = Listeners::bind(&s).await.unwrap();
    let _proxy = InProcess::start_listeners(listeners, s, w.env());
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let req = Request::get("/echo")
        .header("host", "anything")
        .header("x-forwarded-for", "6.6.6.6")
        .body(client::empty())
        .unwrap();
    let res = Connection::handshake(stream).await.send(req).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let seen = &w.upstream.wait_for_request("/echo", WITHIN).await.headers;
    assert!(seen.get("x-forwarded-for").is_none(), "{seen:?}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_a_plain_request_and_other_upgrades_are_refused() {
    let w = World::new().await;
    let proxy = started(&w).await;
    let h2c = raw(
        &proxy,
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(
        h2c.starts_with("HTTP/1.1 200"),
        "no 101, no raw HTTP/2 frames: {h2c}"
    );
    let seen = &w.upstream.wait_for_request("/echo", WITHIN).await.headers;
    for stripped in ["upgrade", "http2-settings"] {
        assert!(
            seen.get(stripped).is_none(),
            "{stripped} reached the upstream: {seen:?}"
        );
    }
    let other = raw(
        &proxy,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, close\r\nUpgrade: tls/1.3\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    assert!(other.contains("upgrade-not-allowed"), "{other}");
    assert_eq!(w.upstream.requests().len(), 1);
}

#[tokio::test]
async fn ambiguous_framing_is_refused() {
    let w = World::new().await;
    let proxy = started(&w).await;
    let gzip = raw(
        &proxy,
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(gzip.starts_with("HTTP/1.1 501"), "{gzip}");
    assert!(gzip.contains("unsupported-transfer-coding"), "{gzip}");
    let two_hosts = raw(
        &proxy,
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(two_hosts.contains("duplicate-host"), "{two_hosts}");
    assert!(w.upstream.requests().is_empty());
}

#[tokio::test]
async fn split_cookies_reach_an_http1_upstream_joined() {
    let w = World::with_alpn(Alpn::Http1Only).await;
    let proxy = started(&w).await;
    let req = Request::get(proxy.url("/echo"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(client::empty())
        .unwrap();
    let r = send(&client::h2c(), req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = &w.upstream.wait_for_request("/echo", WITHIN).await.headers;
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(
        cookies,
        ["a=1; b=2"],
        "one field, joined (RFC 9113 section 8.2.3)"
    );
}

#[tokio::test]
async fn discovery_refuses_a_redirect_that_is_not_googles() {
    let w = World::new().await;
    w.upstream
        .set_sign_in_origin("https://accounts.google.com.attacker.example");
    let mut s = w.settings();
    s.routes[0].audience = "auto".into();
    let err = InProcess::start_error(s, w.env()).await.to_string();
    assert!(err.contains("does not answer like IAP"), "{err}");
    assert!(err.contains("--audience"), "{err}");
    assert_eq!(
        w.google.issued_count(),
        0,
        "no token minted for an audience it chose"
    );
}

#[tokio::test]
async fn a_redirect_under_the_base_path_comes_back_without_it() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].upstream = format!("{}/base", w.upstream.url()).parse().unwrap();
    let proxy = InProcess::start(s, w.env()).await;
    let http = client::http1();
    let r = send(&http, get_request(&proxy.url("/redirect-under"), &[])).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        proxy.url("/next"),
        "the base path is the proxy's to add"
    );
    let followed = send(&http, get_request(&location, &[])).await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(followed.json()["path"], "/base/next", "not /base/base/next");
}

#[tokio::test]
async fn a_listener_beyond_this_machine_needs_a_secret_or_a_trusted_network() {
    let w = World::new().await;
    let mut binary = Binary::spawn(
        &[
            "--upstream",
            &w.upstream.url(),
            "--listen",
            "0.0.0.0:0",
            "--allow-non-loopback",
        ],
        &[],
    );
    assert_eq!(binary.wait_exit(WITHIN).await, Some(64));
    let err = binary.stderr();
    for needle in [
        "0.0.0.0:0",
        "without a client secret",
        "client_secret_file",
        "--trust-network",
    ] {
        assert!(err.contains(needle), "{needle}:\n{err}");
    }
}
