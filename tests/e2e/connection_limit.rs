//! `--max-connections`: past the limit a new client connection is answered 503
//! `too-many-connections` and closed; connections held below it keep working, and a closed
//! one frees its place.

use std::time::{Duration, Instant};

use crate::support::fixture::World;
use crate::support::proxy::InProcess;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 GET on an open connection, read back by Content-Length.
async fn get(conn: &mut BufReader<TcpStream>, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let answer = Answer {
        status,
        headers,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    Answer {
        body: String::from_utf8(body).unwrap(),
        ..answer
    }
}

async fn connect(proxy: &InProcess) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(proxy.addr).await.unwrap())
}

/// Reads to EOF (bounded): the proxy must close a refused connection.
async fn assert_closed(conn: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "connection not closed: {read:?}");
}

#[tokio::test]
async fn connections_past_the_limit_get_503_and_are_closed() {
    let w = World::new().await;
    let mut settings = w.settings();
    settings.max_connections = 2;
    let proxy = InProcess::start(settings, w.env()).await;

    let mut first = connect(&proxy).await;
    let mut second = connect(&proxy).await;
    assert_eq!(get(&mut first, "/echo?n=1").await.status, 200);
    assert_eq!(get(&mut second, "/echo?n=2").await.status, 200);

    let mut third = connect(&proxy).await;
    let refused = get(&mut third, "/echo?n=3").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
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
    assert!(
        refused.body.contains("--max-connections"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains('2'), "{}", refused.body);
    assert_closed(&mut third).await;
    // The refused request was not forwarded.
    assert_eq!(w.upstream.authorized_count(), 2);

    // The connections within the limit are untouched and still served.
    assert_eq!(get(&mut first, "/echo?n=4").await.status, 200);
    assert_eq!(get(&mut second, "/echo?n=5").await.status, 200);

    // Closing one frees its place (once the proxy has seen the close: bounded retry).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = connect(&proxy).await;
        let answer = get(&mut next, "/echo?n=6").await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&mut second, "/echo?n=7").await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_is_a_setting_with_a_default() {
    use iap_proxy::config::{Env, ProxyArgs, Settings};
    let args = |extra: &[&str]| ProxyArgs {
        upstream: Some("https://app.example.com".into()),
        audience: Some("aud".into()),
        max_connections: extra.first().map(|s| (*s).to_owned()),
        ..ProxyArgs::default()
    };
    let env = Env::default();
    let s = Settings::load(&args(&[]), &env).unwrap();
    assert_eq!(s.max_connections, 10_000);
    let s = Settings::load(&args(&["3"]), &env).unwrap();
    assert_eq!(s.max_connections, 3);
    let err = Settings::load(&args(&["0"]), &env).unwrap_err().to_string();
    assert!(err.contains("max_connections"), "{err}");
    let env = Env::from_pairs([("IAP_PROXY_MAX_CONNECTIONS", "7")]);
    let s = Settings::load(&args(&[]), &env).unwrap();
    assert_eq!(s.max_connections, 7);
}
