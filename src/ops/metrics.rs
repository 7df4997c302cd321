//! Prometheus metrics, prefix `iap_proxy_`, served by the admin listener's `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Marks every answer the proxy makes itself (its value names the failure), so clients and
/// the metrics can tell them from the upstream's.
pub(crate) const ERROR_HEADER: &str = "x-iap-proxy-error";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: Arc<str>,
    /// A standard method's name, or `other`.
    pub(crate) method: &'static str,
    pub(crate) status_class: &'static str,
    pub(crate) origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetryLabels {
    pub(crate) route: Arc<str>,
    /// `goaway`, `refused_stream`, `keepalive_race` or `token_refused`.
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefreshLabels {
    /// The kind of credential (`service_account`, `metadata_server`…): never a path or an
    /// email, which would make a series per file or account.
    pub(crate) source: &'static str,
    /// `success` or `failure`.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabels {
    /// The credential's kind (`service_account`, …), never a path or an email.
    pub(crate) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    /// `credentials`, `upstream_ca` or `client_secret`.
    pub(crate) what: &'static str,
}

/// Every metric, registered once; handles are cheap to clone (atomics behind `Arc`s).
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) upstream_latency: Family<RouteLabels, Histogram>,
    pub(crate) bytes_in: Family<RouteLabels, Counter>,
    pub(crate) bytes_out: Family<RouteLabels, Counter>,
    pub(crate) open_connections: Gauge,
    pub(crate) token_refreshes: Family<RefreshLabels, Counter>,
    pub(crate) token_expiry: Family<RouteLabels, Gauge<f64, AtomicU64>>,
    pub(crate) iap_refusals: Family<RouteLabels, Counter>,
    pub(crate) refresher_restarts: Family<SourceLabels, Counter>,
    pub(crate) reloads: Family<ReloadLabels, Counter>,
    pub(crate) reload_failures: Family<ReloadLabels, Counter>,
    pub(crate) upstream_retries: Family<RetryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("iap_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method, status class and who answered (app, iap, proxy)",
            requests.clone(),
        );
        let upstream_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~16 s: loopback sidecars up to slow app pages.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            ))
        });
        registry.register_with_unit(
            "upstream_latency",
            "Time from sending a request upstream to its response headers",
            prometheus_client::registry::Unit::Seconds,
            upstream_latency.clone(),
        );
        let bytes_in = Family::<RouteLabels, Counter>::default();
        registry.register_with_unit(
            "request_body",
            "Request body bytes forwarded upstream",
            prometheus_client::registry::Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Family::<RouteLabels, Counter>::default();
        registry.register_with_unit(
            "response_body",
            "Response body bytes relayed to clients",
            prometheus_client::registry::Unit::Bytes,
            bytes_out.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "ID token fetches, by credential source and result",
            token_refreshes.clone(),
        );
        let token_expiry = Family::<RouteLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "token_expiry",
            "Time until the route's current ID token expires (0 when it holds none)",
            prometheus_client::registry::Unit::Seconds,
            token_expiry.clone(),
        );
        // The usual `_build_info` gauge: always 1, the version in its label, so a dashboard
        // can tell which release each process runs.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version of iap-proxy in the label",
            build_info,
        );
        let iap_refusals = Family::<RouteLabels, Counter>::default();
        registry.register(
            "iap_refusals",
            "IAP's own 401s (x-goog-iap-generated-response): tokens IAP refused, replays included",
            iap_refusals.clone(),
        );
        let refresher_restarts = Family::<SourceLabels, Counter>::default();
        registry.register(
            "token_refresher_restarts",
            "Token refreshers restarted after a crash, by credential source",
            refresher_restarts.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Changed files put in use: credentials, upstream_ca, client_secret",
            reloads.clone(),
        );
        let reload_failures = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reload_failures",
            "Changed files refused (the previous one stays in use): credentials, upstream_ca, client_secret",
            reload_failures.clone(),
        );
        let upstream_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream attempts sent again, by route and reason",
            upstream_retries.clone(),
        );
        Metrics {
            registry,
            upstream_retries,
            requests,
            upstream_latency,
            bytes_in,
            bytes_out,
            open_connections,
            token_refreshes,
            token_expiry,
            iap_refusals,
            refresher_restarts,
            reloads,
            reload_failures,
        }
    }

    /// The registry in Prometheus' text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        let route: Arc<str> = "default".into();
        m.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: "GET",
                status_class: "2xx",
                origin: "app",
            })
            .inc();
        m.upstream_latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(0.003);
        m.token_expiry
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .set(42.0);
        m.iap_refusals.get_or_create(&RouteLabels { route }).inc();
        m.reload_failures
            .get_or_create(&ReloadLabels {
                what: "credentials",
            })
            .inc();
        let text = m.encode().unwrap();
        assert!(text.contains("iap_proxy_requests_total{route=\"default\",method=\"GET\",status_class=\"2xx\",origin=\"app\"} 1"), "{text}");
        assert!(
            text.contains("iap_proxy_upstream_latency_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("iap_proxy_token_expiry_seconds{route=\"default\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE iap_proxy_open_connections gauge"),
            "{text}"
        );
        let build = format!(
            "iap_proxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        assert!(
            text.contains("iap_proxy_iap_refusals_total{route=\"default\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iap_proxy_reload_failures_total{what=\"credentials\"} 1"),
            "{text}"
        );
    }
}
