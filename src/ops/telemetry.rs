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

/// The level when `RUST_LOG` is unset or unusable.
const DEFAULT_LEVEL: &str = "info";

/// Targets this program logs under (its own and its libraries'): a bare word in `RUST_LOG`
/// that is neither a level nor one of these is a mistake, not a filter.
const KNOWN_TARGETS: &[&str] = &[
    "iap_proxy",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio",
    "tower",
    "mio",
];

/// Installs the global subscriber, writing to stderr. Only the first call in a process
/// takes effect, which lets tests that run the proxy in-process call it freely. An unusable
/// `RUST_LOG` is warned about and replaced by the default level, never left to silence
/// every line.
pub fn init(format: LogFormat, rust_log: Option<&str>) {
    let (directives, problem) = directives(rust_log);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(CloudLoggingJson).try_init(),
    };
    if let (Ok(()), Some(problem)) = (installed, problem) {
        tracing::warn!(
            rust_log = %rust_log.unwrap_or_default(),
            "{problem}; logging at {DEFAULT_LEVEL}. Use a level (error, warn, info, debug, trace) \
             or target=level, e.g. RUST_LOG=debug or RUST_LOG=iap_proxy=debug"
        );
    }
}

/// What is wrong with a `RUST_LOG` value.
#[derive(Debug, thiserror::Error)]
enum BadRustLog {
    /// Bare words that name neither a level nor a target of ours (quoted, comma-separated).
    #[error("RUST_LOG: {0} is neither a log level nor a target this program logs under")]
    Strangers(String),
    #[error("RUST_LOG is not a valid filter ({0})")]
    Unparsable(String),
}

/// The filter to install for `RUST_LOG`, and what was wrong with it. A bare word is a
/// target to tracing, so `RUST_LOG=verbose` would show only the (non-existent) target
/// `verbose`: such words are dropped, and nothing left means the default level.
fn directives(rust_log: Option<&str>) -> (String, Option<BadRustLog>) {
    let Some(text) = rust_log.map(str::trim).filter(|t| !t.is_empty()) else {
        return (DEFAULT_LEVEL.into(), None);
    };
    let mut kept = Vec::new();
    let mut strangers = Vec::new();
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        let level = directive
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok();
        if bare && !level && !KNOWN_TARGETS.contains(&directive) {
            strangers.push(format!("`{directive}`"));
        } else {
            kept.push(directive);
        }
    }
    let kept = kept.join(",");
    let problem = if strangers.is_empty() {
        EnvFilter::try_new(&kept)
            .err()
            .map(|e| BadRustLog::Unparsable(e.to_string()))
    } else {
        Some(BadRustLog::Strangers(strangers.join(", ")))
    };
    match (kept.is_empty(), &problem) {
        (true, _) | (_, Some(BadRustLog::Unparsable(_))) => (DEFAULT_LEVEL.into(), problem),
        (false, _) => (kept, problem),
    }
}

/// `2025-01-31T12:00:00Z`: a time in UTC to the second, for log fields such as an expiry.
pub(crate) fn utc_seconds(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
    fn rust_log_words_that_filter_nothing_are_refused() {
        let cases: &[(Option<&str>, &str, bool)] = &[
            (None, "info", false),
            (Some("debug"), "debug", false),
            (Some("WARN"), "WARN", false),
            (
                Some("iap_proxy=debug,hyper"),
                "iap_proxy=debug,hyper",
                false,
            ),
            (Some("verbose"), "info", true),
            (Some("verbose,hyper=debug"), "hyper=debug", true),
            (Some("debug=x=y"), "info", true),
        ];
        for (given, want, warned) in cases {
            let (got, problem) = directives(*given);
            assert_eq!(
                (got.as_str(), problem.is_some()),
                (*want, *warned),
                "{given:?}"
            );
        }
        let (_, problem) = directives(Some("verbose"));
        assert!(problem.unwrap().to_string().contains("`verbose`"));
    }

    #[test]
    fn utc_seconds_is_rfc3339() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(utc_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29
        assert_eq!(utc_seconds(t), "2000-02-29T01:01:01Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(utc_seconds(t), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = rfc3339_now();
        assert!(
            t.len() >= 20 && t.as_bytes()[4] == b'-' && t.contains('T') && t.ends_with('Z'),
            "{t}"
        );
    }
}
