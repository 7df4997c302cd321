//! Operating the proxy: admin endpoints, readiness, metrics, several routes, Unix sockets,
//! the client secret, /quitquitquit and --max-sigterm-delay.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use iap_proxy::config::{ListenAddr, Settings};
use iap_proxy::listener::Listener;
use iap_proxy::{Drain, Listeners};
use tokio::net::TcpListener;
use url::Url;

use crate::support::client::{self, Connection, Resp, get, send};
use crate::support::fixture::{AUDIENCE, World};
use crate::support::proxy::InProcess;
use crate::support::upstream::{Upstream, UpstreamOptions};

struct Admin {
    base: String,
}

impl Admin {
    async fn get(&self, path: &str) -> Resp {
        get(&client::http1(), &format!("{}{path}", self.base)).await
    }
}

/// A proxy for `w` with an admin listener, both on 127.0.0.1:0.
async fn with_admin(w: &World, settings: Settings) -> (InProcess, Admin) {
    let route = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", admin.local_addr().unwrap());
    let listeners = Listeners {
        routes: vec![Listener::Tcp(route)],
        admin: Some(admin),
    };
    let proxy = InProcess::start_listeners(listeners, settings, w.env());
    (proxy, Admin { base })
}

/// Polls `path` on the admin listener until it answers `want` (bounded). Readiness is a
/// probe: the proxy pushes no event when it changes, and its consumers (a kubelet) poll it
/// too. Tests first wait for the cause (a token issued, the shutdown signal sent), so this
/// usually succeeds at the first or second try.
async fn wait_for_status(admin: &Admin, path: &str, want: StatusCode) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin.get(path).await;
        if r.status == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (metric name, sorted labels) → value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Samples parsed the way a Prometheus scraper would.
fn scrape(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.sort();
            Some(((s.metric, labels), v))
        })
        .collect()
}

fn sample(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    *m.get(&(name.to_string(), want.clone())).unwrap_or_else(|| {
        panic!(
            "no sample {name}{want:?} in {:?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn health_readiness_and_metrics_follow_the_traffic() {
    let w = World::new().await;
    w.google.set_delay(Duration::from_millis(700));
    let (proxy, admin) = with_admin(&w, w.settings()).await;

    assert_eq!(admin.get("/healthz").await.status, StatusCode::OK);
    let r = admin.get("/readyz").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ready before any token: {}",
        r.text()
    );
    assert!(r.text().contains("no valid ID token"), "{}", r.text());
    // Ready once the start-up fetch has its token (after the fake's 700 ms delay), with no
    // request needed.
    w.google.wait_for_issued(1, Duration::from_secs(10)).await;
    wait_for_status(&admin, "/readyz", StatusCode::OK).await;

    let http = client::http1();
    let mut body_bytes = 0usize;
    for _ in 0..5 {
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::OK);
        body_bytes += r.body.len();
    }
    let r = get(&http, &proxy.url("/redirect")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let up = send(
        &http,
        Request::post(proxy.url("/upload"))
            .body(client::full(vec![7u8; 1000]))
            .unwrap(),
    )
    .await;
    assert_eq!(up.status, StatusCode::OK);

    let m = admin.get("/metrics").await;
    // Shown with --nocapture: what a scraper sees after this traffic.
    eprintln!("{}", m.text());
    assert_eq!(m.status, StatusCode::OK);
    let samples = scrape(&m.text());
    let req = |method: &str, class: &str, origin: &str| {
        sample(
            &samples,
            "iap_proxy_requests_total",
            &[
                ("route", "default"),
                ("method", method),
                ("status_class", class),
                ("origin", origin),
            ],
        )
    };
    assert_eq!(req("GET", "2xx", "app"), 5.0);
    assert_eq!(req("GET", "3xx", "app"), 1.0);
    assert_eq!(req("POST", "2xx", "app"), 1.0);
    let out = sample(
        &samples,
        "iap_proxy_response_body_bytes_total",
        &[("route", "default")],
    );
    assert!(out >= body_bytes as f64, "{out} < {body_bytes}");
    assert_eq!(
        sample(
            &samples,
            "iap_proxy_request_body_bytes_total",
            &[("route", "default")]
        ),
        1000.0
    );
    let expiry = sample(
        &samples,
        "iap_proxy_token_expiry_seconds",
        &[("route", "default")],
    );
    assert!((3000.0..=3600.0).contains(&expiry), "{expiry}");
    let source = samples
        .keys()
        .find(|(n, _)| n == "iap_proxy_token_refreshes_total")
        .map(|(_, l)| l.iter().find(|(k, _)| k == "source").unwrap().1.clone())
        .expect("refresh counter");
    assert_eq!(
        sample(
            &samples,
            "iap_proxy_token_refreshes_total",
            &[("source", &source), ("result", "success")]
        ),
        1.0
    );
    assert!(
        m.text()
            .contains("iap_proxy_upstream_latency_seconds_count{route=\"default\"} 7"),
        "{}",
        m.text()
    );
    assert!(m.text().contains("# TYPE iap_proxy_open_connections gauge"));
    // Nothing secret in what a scraper sees.
    for t in w.google.issued_tokens() {
        assert!(!m.text().contains(&t.token));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn answers_from_iap_and_from_the_proxy_are_labelled() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].audience = "999-not-this-one.apps.googleusercontent.com".into();
    let (proxy, admin) = with_admin(&w, s).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &client::http1(),
        Request::builder()
            .method("CONNECT")
            .uri(proxy.url("/"))
            .body(client::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let samples = scrape(&admin.get("/metrics").await.text());
    fn labels<'a>(m: &'a str, class: &'a str, o: &'a str) -> [(&'a str, &'a str); 4] {
        [
            ("route", "default"),
            ("method", m),
            ("status_class", class),
            ("origin", o),
        ]
    }
    assert_eq!(
        sample(
            &samples,
            "iap_proxy_requests_total",
            &labels("GET", "4xx", "iap")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "iap_proxy_requests_total",
            &labels("CONNECT", "4xx", "proxy")
        ),
        1.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn readiness_reflects_token_failures_and_draining() {
    let w = World::new().await;
    w.google.set_failing(Some(503));
    let mut s = w.settings();
    s.process.max_sigterm_delay = Duration::from_secs(2);
    let (mut proxy, admin) = with_admin(&w, s).await;
    let r = wait_for_status(&admin, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(r.text().contains("no valid ID token"), "{}", r.text());
    w.google.set_failing(None);
    // The proxy's own retry gets a token (its backoff without one is at most 4 s).
    w.google.wait_for_issued(1, Duration::from_secs(10)).await;
    wait_for_status(&admin, "/readyz", StatusCode::OK).await;

    // SIGTERM with --max-sigterm-delay: not ready at once, but still serving for the delay.
    let started = Instant::now();
    proxy.signal_shutdown();
    let r = wait_for_status(&admin, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(r.text().contains("draining"), "{}", r.text());
    let served = get(&client::http1(), &proxy.url("/echo")).await;
    assert_eq!(
        served.status,
        StatusCode::OK,
        "requests are still served during the delay"
    );
    assert_eq!(
        proxy.stopped_within(Duration::from_secs(10)).await,
        Drain::Clean
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "stopped before --max-sigterm-delay"
    );
}

#[tokio::test]
async fn quitquitquit_drains_and_exits() {
    let w = World::new().await;
    let (proxy, admin) = with_admin(&w, w.settings()).await;
    assert_eq!(
        get(&client::http1(), &proxy.url("/echo")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin.get("/quitquitquit").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = send(
        &client::http1(),
        Request::post(format!("{}/quitquitquit", admin.base))
            .body(client::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        proxy.stopped_within(Duration::from_secs(10)).await,
        Drain::Clean
    );
}

#[tokio::test]
async fn two_routes_with_different_audiences_in_one_process() {
    let w = World::new().await;
    let other_aud = "222-second.apps.googleusercontent.com";
    let second = Upstream::start(UpstreamOptions::new(&w.google, other_aud)).await;
    // One CA file trusted for both upstreams.
    let both = w.write(
        "both-cas.pem",
        format!(
            "{}{}",
            std::fs::read_to_string(w.upstream.ca_path()).unwrap(),
            std::fs::read_to_string(second.ca_path()).unwrap()
        ),
    );
    let mut s = w.settings();
    s.process.upstream_ca = Some(both);
    let mut r2 = s.routes[0].clone();
    r2.name = "second".into();
    r2.upstream = Url::parse(&second.url()).unwrap();
    r2.audience = other_aud.into();
    // A third route sharing the first one's credentials and audience shares its token.
    let mut r3 = s.routes[0].clone();
    r3.name = "third".into();
    s.routes.extend([r2, r3]);

    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l3 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a2, a3) = (l2.local_addr().unwrap(), l3.local_addr().unwrap());
    let listeners = Listeners {
        routes: [l1, l2, l3].map(Listener::Tcp).into(),
        admin: None,
    };
    let proxy = InProcess::start_listeners(listeners, s, w.env());
    let http = client::http1();
    assert_eq!(get(&http, &proxy.url("/echo")).await.status, StatusCode::OK);
    assert_eq!(
        get(&http, &format!("http://{a2}/echo")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&http, &format!("http://{a3}/echo")).await.status,
        StatusCode::OK
    );
    assert_eq!(w.upstream.authorized_count(), 2, "routes 1 and 3");
    assert_eq!(second.authorized_count(), 1);
    assert_eq!(
        (w.upstream.rejected_count(), second.rejected_count()),
        (0, 0)
    );
    let audiences: Vec<String> = w
        .google
        .issued_tokens()
        .into_iter()
        .map(|t| t.audience)
        .collect();
    assert_eq!(
        audiences.len(),
        2,
        "one token per (credentials, audience): {audiences:?}"
    );
    assert!(
        audiences.contains(&AUDIENCE.to_string()) && audiences.contains(&other_aud.to_string())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn unix_socket_listener() {
    let w = World::new().await;
    let path = w.path("iap-proxy.sock");
    let mut s = w.settings();
    s.routes[0].listen = ListenAddr::Unix(path.clone());
    let listeners = Listeners::bind(&s).await.unwrap();
    let proxy = InProcess::start_listeners(listeners, s, w.env());
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let res = Connection::handshake(stream).await.get("/echo").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let echo = res.json();
    assert!(
        echo["headers"]["x-forwarded-for"].is_null(),
        "no client IP on a Unix socket: {echo}"
    );
    assert_eq!(w.upstream.authorized_count(), 1);
    proxy.stop().await;
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn client_secret_guards_a_non_loopback_listener() {
    let w = World::new().await;
    let secret = "s3cret-0123456789abcdef";
    let mut s = w.settings();
    s.process.allow_non_loopback = true;
    s.routes[0].client_secret_file = Some(w.write("client-secret", format!("{secret}\n")));
    // Bound on every interface; the test still only connects to 127.0.0.1.
    let any = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = any.local_addr().unwrap().port();
    let listeners = Listeners {
        routes: vec![Listener::Tcp(any)],
        admin: None,
    };
    let proxy = InProcess::start_listeners(listeners, s, w.env());
    let url = format!("http://127.0.0.1:{port}/echo");
    let http = client::http1();
    let r = get(&http, &url).await;
    assert_eq!(r.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(r.header("x-iap-proxy-error"), Some("client-secret"));
    // RFC 9110 section 15.5.8: a 407 names how to authenticate.
    assert_eq!(
        r.header("proxy-authenticate"),
        Some("IapProxySecret realm=\"iap-proxy\", header=\"x-iap-proxy-secret\"")
    );
    let wrong = send(
        &http,
        Request::get(&url)
            .header("x-iap-proxy-secret", "s3cret-0123456789abcdeX")
            .body(client::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(
        w.upstream.requests().len(),
        0,
        "nothing forwarded without the secret"
    );
    let ok = send(
        &http,
        Request::get(&url)
            .header("x-iap-proxy-secret", secret)
            .body(client::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert!(
        ok.json()["headers"].get("x-iap-proxy-secret").is_none(),
        "the secret reached the upstream"
    );
    proxy.stop().await;
}
