//! Typed reads of the merged settings: each reports its problem (naming the key, the
//! value and where it came from) and returns `None`, so every problem is found in one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::config::ValueKind;
use clap::ValueEnum;
use url::Url;

use super::layers::Layered;
use super::table;
use super::values::{ListenAddr, is_loopback_host, is_loopback_ip};

/// The ceiling of every seconds setting: one day.
pub(super) const MAX_SECONDS: u64 = 86_400;

impl Layered {
    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => None,
            Some(ValueKind::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(key, "must be a string; quote it in TOML");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str) -> bool {
        let parsed = match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => Some(false),
            Some(ValueKind::Boolean(b)) => Some(*b),
            Some(ValueKind::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Some(_) => None,
        };
        parsed.unwrap_or_else(|| {
            self.problem(key, "must be true or false");
            false
        })
    }

    /// A comma-separated list read by `parse`; unset is the parse of nothing.
    pub(super) fn listed<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(key).unwrap_or_default();
        parse(&text).map_err(|e| self.problem(key, &e)).ok()
    }

    /// Unix permission bits in octal, e.g. `0600`.
    pub(super) fn file_mode(&mut self, key: &str) -> Option<u32> {
        let text = self.string(key)?;
        match u32::from_str_radix(text.trim().trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => Some(mode),
            _ => {
                self.problem(key, "must be octal permission bits, e.g. 0600 or 0660");
                None
            }
        }
    }

    /// One of a value enum's names, in any case; the message lists them all.
    pub(super) fn choice<T: ValueEnum>(&mut self, key: &str) -> Option<T> {
        let text = self.string(key)?;
        match T::from_str(text.trim(), true) {
            Ok(value) => Some(value),
            Err(_) => {
                let names: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
                    .collect();
                let expected = match names.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                };
                self.problem(key, &format!("expected {expected}"));
                None
            }
        }
    }

    /// A whole number from `min` to `max`: every count and duration has a ceiling, so an
    /// absurd value is a settings error here rather than an overflow or a panic later.
    pub(super) fn number(&mut self, key: &str, min: u64, max: u64, unit: &str) -> Option<u64> {
        let parsed = match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => return None,
            Some(ValueKind::I64(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::U64(n)) => Some(*n),
            Some(ValueKind::I128(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::U128(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    key,
                    &format!("must be a whole number of {unit}, at least {min} and at most {max}"),
                );
                None
            }
        }
    }

    /// Seconds, at most a day: no timeout here needs more, and every deadline stays far
    /// from `Instant`'s overflow.
    pub(super) fn seconds(&mut self, key: &str, min: u64) -> Option<Duration> {
        self.number(key, min, MAX_SECONDS, "seconds")
            .map(Duration::from_secs)
    }

    pub(super) fn count(&mut self, key: &str, min: u64, max: u64, unit: &str) -> Option<usize> {
        self.number(key, min, max, unit)
            .and_then(|n| usize::try_from(n).ok())
    }

    /// A listen address: `unix:PATH`, or IP:port under the loopback rule.
    pub(super) fn listen(&mut self, key: &str, allow_non_loopback: bool) -> Option<ListenAddr> {
        let text = self.string(key)?;
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                self.problem(
                    key,
                    "names no socket path; use e.g. unix:/run/iap-proxy.sock",
                );
                return None;
            }
            return Some(ListenAddr::Unix(PathBuf::from(path)));
        }
        self.socket_addr(key, text, allow_non_loopback)
            .map(ListenAddr::Tcp)
    }

    /// The admin listener: IP:port only, under the same loopback rule as `listen`.
    pub(super) fn admin_listen(&mut self, allow_non_loopback: bool) -> Option<SocketAddr> {
        let text = self.string("admin_listen")?;
        self.socket_addr("admin_listen", text.trim(), allow_non_loopback)
    }

    fn socket_addr(
        &mut self,
        key: &str,
        text: &str,
        allow_non_loopback: bool,
    ) -> Option<SocketAddr> {
        let Some(addr) = text.parse::<SocketAddr>().ok().or_else(|| localhost(text)) else {
            self.problem(
                key,
                "not an IP:port address; use e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080 \
                 (or unix:PATH for listen)",
            );
            return None;
        };
        if !allow_non_loopback && !is_loopback_ip(addr.ip()) {
            self.problem(
                key,
                "not a loopback address, and the proxy adds credentials to every request: anyone who \
                 can reach that port acts as the service account; listen on 127.0.0.1 or pass \
                 --allow-non-loopback (IAP_PROXY_ALLOW_NON_LOOPBACK=true)",
            );
            return None;
        }
        Some(addr)
    }

    /// A path that must name a file now (whether it can be read is found when it is).
    pub(super) fn existing_file(&mut self, key: &str) -> Option<PathBuf> {
        let path = PathBuf::from(self.string(key)?);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Some(path),
            Ok(_) => {
                self.problem(key, "is not a file");
                None
            }
            Err(e) => {
                self.problem(key, &format!("cannot be read: {}", missing_file(&e)));
                None
            }
        }
    }

    pub(super) fn required(&mut self, key: &str, example: &str) -> Option<String> {
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problem(key, &format!("must not be empty; e.g. {example}"));
                None
            }
            None => {
                // Not said when a reported typo or an unreadable config file may hold it.
                let explained = self.file_unreadable || self.suggested.contains(&key);
                if !self.values.contains_key(key) && !explained {
                    self.errors.push(format!(
                        "{key} is required: pass {}, set {} or put {key} = \"...\" in the config file (e.g. {example})",
                        table::flag_name(key),
                        table::env_name(key),
                    ));
                }
                None
            }
        }
    }

    pub(super) fn audience(&mut self) -> Option<String> {
        self.required(
            "audience",
            "123-abc.apps.googleusercontent.com, the IAP OAuth client ID",
        )
    }

    pub(super) fn upstream(&mut self) -> Option<Url> {
        let text = self.required("upstream", "https://app.example.com")?;
        let url = match Url::parse(text.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.problem(
                    "upstream",
                    &format!("not an absolute URL ({e}); use e.g. https://app.example.com"),
                );
                return None;
            }
        };
        let mut problems = Vec::new();
        let loopback = match url.host() {
            None => {
                problems.push("has no host; use e.g. https://app.example.com");
                false
            }
            Some(host) => is_loopback_host(host),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => problems.push(
                "uses http to a non-loopback host, which would send ID tokens across the network in clear; use https",
            ),
            _ => problems.push("scheme must be https (or http to localhost)"),
        }
        if !url.username().is_empty() || url.password().is_some() {
            problems
                .push("must not contain user:password@; the proxy authenticates with the ID token");
        }
        if url.query().is_some() {
            problems.push("must not have a ?query; the client's own query is forwarded");
        }
        if url.fragment().is_some() {
            problems.push("must not have a #fragment");
        }
        for p in &problems {
            self.problem("upstream", p);
        }
        problems.is_empty().then_some(url)
    }

    pub(super) fn credentials(&mut self) -> Option<PathBuf> {
        let path = PathBuf::from(self.string("credentials")?);
        // The gcloud CLI, not a file; `./gcloud` names a file of that name.
        if path == Path::new("gcloud") {
            return Some(path);
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.problem(
                    "credentials",
                    "is not a file; point it at a service account key or ADC JSON file",
                );
                None
            }
            Err(e) => {
                self.problem(
                    "credentials",
                    &format!("cannot be used: {}", missing_file(&e)),
                );
                None
            }
        }
    }

    pub(super) fn upstream_ca(&mut self) -> Option<PathBuf> {
        let path = PathBuf::from(self.string("upstream_ca")?);
        match std::fs::read(&path) {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                Some(path)
            }
            Ok(_) => {
                self.problem(
                    "upstream_ca",
                    "contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
                None
            }
            Err(e) => {
                self.problem("upstream_ca", &format!("cannot be read: {e}"));
                None
            }
        }
    }
}

/// `localhost:PORT` as a listen address: the IPv4 loopback address. Not looked up: the
/// name is loopback by definition (RFC 6761), whatever a hosts file says, and a listener
/// binds one address; clients that try `::1` first fall back to 127.0.0.1.
fn localhost(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_end_matches('.');
    let port: u16 = port.parse().ok()?;
    host.eq_ignore_ascii_case("localhost")
        .then(|| SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
}

/// Why a configured path cannot be looked at: in words for the usual cases, the system's
/// words (once) otherwise.
fn missing_file(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "there is no such file; check the path".into(),
        std::io::ErrorKind::PermissionDenied => {
            "a directory on its path may not be searched by this user (permission denied)".into()
        }
        _ => e.to_string(),
    }
}
