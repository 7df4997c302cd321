//! Operating the proxy: the admin endpoints, Prometheus metrics, the access log and the
//! process's logging.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod metrics;
pub(crate) mod request_counter;
pub mod telemetry;
pub(crate) mod throttle;
