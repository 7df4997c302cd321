//! Logging: `RUST_LOG` picks the level (default info), `--log-format` the shape.
//!
//! JSON lines follow Cloud Logging's structured-logging fields: `severity`, `message`,
//! `timestamp`, and an `httpRequest` object for the access log, so a sidecar's logs land in
//! Cloud Logging already parsed. No header value is ever logged, so no token can be.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Fields of access-log events with this prefix are nested under `httpRequest`.
pub(crate) const HTTP_REQUEST_PREFIX: &str = "httpRequest.";

/// Installs the global subscriber, writing to stderr. Only the first call in a process
/// takes effect, which lets tests that run the proxy in-process call it freely.
pub fn init(format: LogFormat, rust_log: Option<&str>) {
    let filter = rust_log
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(CloudLoggingJson).try_init(),
    };
}

/// One JSON object per line, in Cloud Logging's shape.
pub(crate) struct CloudLoggingJson;

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let mut out = Map::new();
        out.insert("severity".into(), Value::from(severity(meta.level())));
        out.insert("timestamp".into(), Value::from(rfc3339_now()));
        out.insert(
            "message".into(),
            visitor.message.map(Value::from).unwrap_or(Value::Null),
        );
        out.insert("target".into(), Value::from(meta.target()));
        if !visitor.http.is_empty() {
            out.insert("httpRequest".into(), Value::Object(visitor.http));
        }
        for (k, v) in visitor.fields {
            out.entry(k).or_insert(v);
        }
        let line = serde_json::to_string(&Value::Object(out)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// RFC 3339 in UTC, using tracing-subscriber's own formatter rather than a date crate.
fn rfc3339_now() -> String {
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut out = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut out));
    out
}

#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    http: Map<String, Value>,
    fields: Map<String, Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if let Some(key) = name.strip_prefix(HTTP_REQUEST_PREFIX) {
            self.http.insert(key.to_string(), value);
        } else {
            self.fields.insert(name.to_string(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = rfc3339_now();
        assert!(
            t.len() >= 20 && t.as_bytes()[4] == b'-' && t.contains('T') && t.ends_with('Z'),
            "{t}"
        );
    }
}
