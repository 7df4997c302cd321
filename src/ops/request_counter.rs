//! `iap_proxy_requests_total` for one route without a hash lookup per request: the label
//! values are closed sets (method, status class, who answered), so each combination's
//! counter is found by index and taken from the family once, on first use. A series still
//! appears in `/metrics` only after its first request, as with `get_or_create`.

use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::metrics::{Metrics, RequestLabels};

/// The method label: the standard methods by name, the rest as `other`, so a client cannot
/// grow the series count.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "other",
];
/// One label value per status class keeps the series count fixed.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Who produced the answer: the app, IAP itself (`x-goog-iap-generated-response`), or the
/// proxy (`x-iap-proxy-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    App,
    Iap,
    Proxy,
}

impl Origin {
    const ALL: [Origin; 3] = [Origin::App, Origin::Iap, Origin::Proxy];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Origin::App => "app",
            Origin::Iap => "iap",
            Origin::Proxy => "proxy",
        }
    }
}

/// A request's method as an index into [`METHODS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodLabel(usize);

impl MethodLabel {
    pub(crate) fn of(method: &Method) -> MethodLabel {
        MethodLabel(match *method {
            Method::GET => 0,
            Method::POST => 1,
            Method::PUT => 2,
            Method::DELETE => 3,
            Method::HEAD => 4,
            Method::OPTIONS => 5,
            Method::PATCH => 6,
            Method::CONNECT => 7,
            Method::TRACE => 8,
            _ => 9,
        })
    }
}

fn class_index(status: u16) -> usize {
    match status {
        0..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

const CELLS: usize = METHODS.len() * CLASSES.len() * Origin::ALL.len();

/// The request counters of one route.
pub(crate) struct RequestCounter {
    family: Family<RequestLabels, Counter>,
    route: Arc<str>,
    cells: Box<[OnceLock<Counter>]>,
}

impl RequestCounter {
    pub(crate) fn new(metrics: &Metrics, route: Arc<str>) -> RequestCounter {
        RequestCounter {
            family: metrics.requests.clone(),
            route,
            cells: (0..CELLS).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn route(&self) -> &Arc<str> {
        &self.route
    }

    pub(crate) fn inc(&self, method: MethodLabel, status: u16, origin: Origin) {
        let (m, c, o) = (method.0, class_index(status), origin as usize);
        let index = (m * CLASSES.len() + c) * Origin::ALL.len() + o;
        self.cells[index]
            .get_or_init(|| {
                self.family
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        method: METHODS[m],
                        status_class: CLASSES[c],
                        origin: Origin::ALL[o].label(),
                    })
                    .clone()
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_combination_counts_in_its_own_series() {
        let metrics = Metrics::new();
        let counter = RequestCounter::new(&metrics, "r".into());
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::PATCH,
            Method::CONNECT,
            Method::TRACE,
            Method::from_bytes(b"PROPFIND").unwrap(),
        ];
        let statuses = [101, 204, 302, 404, 503];
        for (i, method) in methods.iter().enumerate() {
            for (j, status) in statuses.iter().enumerate() {
                for (k, origin) in Origin::ALL.iter().enumerate() {
                    for _ in 0..(i * 100 + j * 10 + k + 1) {
                        counter.inc(MethodLabel::of(method), *status, *origin);
                    }
                }
            }
        }
        let text = metrics.encode().unwrap();
        for (i, method) in METHODS.iter().enumerate() {
            for (j, class) in CLASSES.iter().enumerate() {
                for (k, origin) in Origin::ALL.iter().enumerate() {
                    let line = format!(
                        "iap_proxy_requests_total{{route=\"r\",method=\"{method}\",status_class=\"{class}\",origin=\"{}\"}} {}\n",
                        origin.label(),
                        i * 100 + j * 10 + k + 1
                    );
                    assert!(text.contains(&line), "{line} missing in {text}");
                }
            }
        }
    }

    #[test]
    fn a_series_appears_only_once_used() {
        let metrics = Metrics::new();
        let counter = RequestCounter::new(&metrics, "r".into());
        counter.inc(MethodLabel::of(&Method::GET), 200, Origin::App);
        let text = metrics.encode().unwrap();
        assert_eq!(
            text.matches("iap_proxy_requests_total{").count(),
            1,
            "{text}"
        );
    }
}
