//! The proxy's admin listener as tests use it: an in-process proxy with one, its
//! endpoints, and its metrics read the way Prometheus would.

use std::time::{Duration, Instant};

use http::StatusCode;
use iap_proxy::Listeners;
use iap_proxy::config::{Env, Settings};
use iap_proxy::listener::Listener;
use tokio::net::TcpListener;

use super::client::{self, Resp, get};
use super::proxy::InProcess;

pub struct Admin {
    base: String,
}

impl Admin {
    /// The admin listener at `base` (`http://ADDR`).
    pub fn at(base: impl Into<String>) -> Admin {
        Admin { base: base.into() }
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(&client::http1(), &format!("{}{path}", self.base)).await
    }

    /// The value of `name{labels}`, or `None` when there is no such sample.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.get("/metrics").await.text();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        parsed.samples.into_iter().find_map(|s| {
            let same = s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v)
                    if same =>
                {
                    Some(v)
                }
                _ => None,
            }
        })
    }

    /// Polls `name{labels}` until it reaches `at_least` (bounded). Metrics are a probe: the
    /// proxy pushes no event when they change, and a scraper polls them too. Tests first
    /// cause the change, so this usually succeeds within a few tries.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
        within: Duration,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(name, labels).await.unwrap_or(0.0);
            if value >= at_least {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {value} after {within:?}, expected at least {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET path` answers `want` now.
    pub async fn assert_status(&self, path: &str, want: StatusCode) -> Resp {
        let r = self.get(path).await;
        assert_eq!(r.status, want, "{path}: {}", r.text());
        r
    }
}

/// A proxy for `settings` on 127.0.0.1:0 with an admin listener on 127.0.0.1:0.
pub async fn with_admin(settings: Settings, env: Env) -> (InProcess, Admin) {
    let route = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", admin.local_addr().unwrap());
    let listeners = Listeners {
        routes: vec![Listener::Tcp(route)],
        admin: Some(admin),
    };
    let proxy = InProcess::start_listeners(listeners, settings, env);
    (proxy, Admin { base })
}
