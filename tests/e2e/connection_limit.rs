//! `--max-connections`: past the limit a new client connection is answered 503
//! `too-many-connections` and closed; connections held below it keep working, and a closed
//! one frees its place.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::support::client::Connection;
use crate::support::fixture::World;
use crate::support::proxy::InProcess;

async fn connect(proxy: &InProcess) -> Connection<TcpStream> {
    Connection::handshake(TcpStream::connect(proxy.addr).await.unwrap()).await
}

#[tokio::test]
async fn connections_past_the_limit_get_503_and_are_closed() {
    let w = World::new().await;
    let mut settings = w.settings();
    settings.process.max_connections = 2;
    let proxy = InProcess::start(settings, w.env()).await;

    let mut first = connect(&proxy).await;
    let mut second = connect(&proxy).await;
    assert_eq!(first.get("/echo?n=1").await.status, 200);
    assert_eq!(second.get("/echo?n=2").await.status, 200);

    let mut third = connect(&proxy).await;
    let refused = third.get("/echo?n=3").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(
        refused.header("x-iap-proxy-error"),
        Some("too-many-connections")
    );
    assert!(
        refused
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        refused.headers
    );
    let body = refused.text();
    assert!(body.contains("--max-connections"), "{body}");
    assert!(body.contains('2'), "{body}");
    third.assert_closed_by_peer().await;
    // The refused request was not forwarded.
    assert_eq!(w.upstream.authorized_count(), 2);

    // The connections within the limit are untouched and still served.
    assert_eq!(first.get("/echo?n=4").await.status, 200);
    assert_eq!(second.get("/echo?n=5").await.status, 200);

    // Closing one frees its place. `close` returns once the proxy has closed its side too,
    // but the proxy gives the place back in its connection task just after that, and it
    // exposes no event for that moment: so a new connection may still be refused, and is
    // retried (bounded), each retry after the refused connection has been closed.
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = connect(&proxy).await;
        let answer = next.get("/echo?n=6").await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never freed"
        );
        next.assert_closed_by_peer().await;
    }
    assert_eq!(second.get("/echo?n=7").await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_is_a_setting_with_a_default() {
    use iap_proxy::config::{Env, Settings};
    let load = |extra: &[&str], env: &Env| {
        let mut args = vec!["--upstream", "https://app.example.com", "--audience", "aud"];
        args.extend_from_slice(extra);
        Settings::from_args(&args, env)
    };
    let env = Env::default();
    let s = load(&[], &env).unwrap();
    assert_eq!(s.process.max_connections, 1024);
    let s = load(&["--max-connections", "3"], &env).unwrap();
    assert_eq!(s.process.max_connections, 3);
    let err = load(&["--max-connections", "0"], &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_connections"), "{err}");
    let env = Env::from_pairs([("IAP_PROXY_MAX_CONNECTIONS", "7")]);
    let s = load(&[], &env).unwrap();
    assert_eq!(s.process.max_connections, 7);
}
