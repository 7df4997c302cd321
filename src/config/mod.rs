//! Settings: defaults < `--config FILE` (TOML) < env `IAP_PROXY_<KEY>` < flags.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ::config::{Config, ConfigError, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use url::{Host, Url};

#[cfg(test)]
mod tests;

/// Exit status for bad flags or settings (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: i32 = 64;

/// Which request header carries the ID token to IAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthHeader {
    /// `Authorization: Bearer <token>` (the usual choice).
    Authorization,
    /// `Proxy-Authorization: Bearer <token>`, leaving `Authorization` to the application.
    ProxyAuthorization,
}

impl AuthHeader {
    pub fn header_name(self) -> http::HeaderName {
        match self {
            AuthHeader::Authorization => http::header::AUTHORIZATION,
            AuthHeader::ProxyAuthorization => http::header::PROXY_AUTHORIZATION,
        }
    }
}

impl fmt::Display for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header_name().as_str())
    }
}

impl FromStr for AuthHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "authorization" => Ok(AuthHeader::Authorization),
            "proxy-authorization" => Ok(AuthHeader::ProxyAuthorization),
            _ => Err("expected authorization or proxy-authorization".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

/// The process environment, injected so tests never call `set_var`.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars().collect())
    }
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.0
    }
}

const LONG_ABOUT: &str = "\
iap-proxy listens on localhost and forwards each request to an HTTPS upstream behind \
Google Identity-Aware Proxy, adding a fresh Google-signed ID token for the configured audience.

Settings are layered; each source overrides the ones before it:
  defaults < --config FILE (TOML) < environment IAP_PROXY_<KEY> < flags
A KEY is the flag name with '-' replaced by '_': --upstream-ca is upstream_ca in the file \
and IAP_PROXY_UPSTREAM_CA in the environment. IAP_PROXY_CONFIG may name the file instead of --config.

RUST_LOG sets the log level (default info), e.g. RUST_LOG=debug.";

#[derive(clap::Parser, Debug)]
#[command(
    name = "iap-proxy",
    version,
    about = "Localhost proxy that adds Google IAP ID tokens to requests for an HTTPS upstream",
    long_about = LONG_ABOUT,
    // Proxy flags before `token` would silently do nothing; refuse them instead.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print one ID token and a newline (like `gcloud auth print-identity-token`).
    Token(TokenArgs),
}

// Value flags are Options so that an absent flag leaves the file/env value alone, and
// strings so that a bad value is reported together with every other problem (exit 64)
// rather than by clap alone.
#[derive(clap::Args, Debug, Default)]
pub struct ProxyArgs {
    /// TOML settings file (see config/iap-proxy.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, IPv4 or [IPv6]:port [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL of the IAP-protected service, e.g. https://app.example.com (required).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// ID token audience: the IAP OAuth client ID (required).
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Service account key or ADC file [default: GOOGLE_APPLICATION_CREDENTIALS, then ADC].
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Request header that carries the token [default: authorization].
    #[arg(long, value_name = "authorization|proxy-authorization")]
    pub header: Option<String>,
    /// Extra PEM CA certificates to trust for the upstream, besides the system roots.
    #[arg(long, value_name = "PEMFILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Allow listening on a non-loopback address (anyone reaching it acts as the service account).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Log output format [default: text].
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// Pass upstream redirects through unchanged instead of pointing them back at the proxy.
    #[arg(long)]
    pub no_rewrite_redirects: bool,
    /// Seconds to let in-flight requests finish after SIGTERM/Ctrl-C [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<String>,
    /// Seconds to wait for the upstream's response headers [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub upstream_timeout: Option<String>,
    /// Seconds a request without a valid token waits for one to be fetched [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub token_wait: Option<String>,
    /// Seconds a client has to send its request headers [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub header_read_timeout: Option<String>,
    /// Largest accepted request header block, in bytes (at least 8192) [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_header_bytes: Option<String>,
    /// Requests served at once; more wait their turn [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_concurrent_requests: Option<String>,
}

#[derive(clap::Args, Debug, Default)]
pub struct TokenArgs {
    /// TOML settings file; only audience, credentials and upstream_ca are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// ID token audience: the IAP OAuth client ID (required).
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Service account key or ADC file [default: GOOGLE_APPLICATION_CREDENTIALS, then ADC].
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Extra PEM CA certificates to trust, besides the system roots.
    #[arg(long, value_name = "PEMFILE")]
    pub upstream_ca: Option<PathBuf>,
}

/// Every problem found in the settings, so one run shows them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid settings:")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Validated settings of the proxy command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub upstream: Url,
    pub audience: String,
    pub credentials: Option<PathBuf>,
    pub header: AuthHeader,
    pub upstream_ca: Option<PathBuf>,
    pub allow_non_loopback: bool,
    pub log_format: LogFormat,
    pub rewrite_redirects: bool,
    pub shutdown_grace: Duration,
    pub upstream_timeout: Duration,
    pub token_wait: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_requests: usize,
}

impl Settings {
    /// Settings for tests and embedders: defaults for everything but the three essentials.
    pub fn new(upstream: Url, audience: impl Into<String>) -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream,
            audience: audience.into(),
            credentials: None,
            header: AuthHeader::Authorization,
            upstream_ca: None,
            allow_non_loopback: false,
            log_format: LogFormat::Text,
            rewrite_redirects: true,
            shutdown_grace: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(60),
            token_wait: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 4096,
        }
    }

    /// Layers defaults, the `--config` file, `IAP_PROXY_*` variables and flags, then validates.
    pub fn load(args: &ProxyArgs, env: &Env) -> Result<Settings, ConfigErrors> {
        let defaults: Vec<(&'static str, ValueKind)> = vec![
            ("listen", DEFAULT_LISTEN.to_owned().into()),
            ("header", AuthHeader::Authorization.to_string().into()),
            ("allow_non_loopback", false.into()),
            ("log_format", LogFormat::Text.to_string().into()),
            ("no_rewrite_redirects", false.into()),
            ("shutdown_grace", 30u64.into()),
            ("upstream_timeout", 60u64.into()),
            ("token_wait", 10u64.into()),
            ("header_read_timeout", 30u64.into()),
            ("max_header_bytes", 65536u64.into()),
            ("max_concurrent_requests", 4096u64.into()),
        ];
        let mut flags = Flags::default();
        flags.string("listen", args.listen.as_deref());
        flags.string("upstream", args.upstream.as_deref());
        flags.string("audience", args.audience.as_deref());
        flags.path("credentials", args.credentials.as_deref());
        flags.string("header", args.header.as_deref());
        flags.path("upstream_ca", args.upstream_ca.as_deref());
        flags.switch("allow_non_loopback", args.allow_non_loopback);
        flags.string("log_format", args.log_format.as_deref());
        flags.switch("no_rewrite_redirects", args.no_rewrite_redirects);
        flags.string("shutdown_grace", args.shutdown_grace.as_deref());
        flags.string("upstream_timeout", args.upstream_timeout.as_deref());
        flags.string("token_wait", args.token_wait.as_deref());
        flags.string("header_read_timeout", args.header_read_timeout.as_deref());
        flags.string("max_header_bytes", args.max_header_bytes.as_deref());
        flags.string(
            "max_concurrent_requests",
            args.max_concurrent_requests.as_deref(),
        );

        let mut l = Layered::new(args.config.as_deref(), env, defaults, flags);
        let allow_non_loopback = l.boolean("allow_non_loopback");
        let listen = l.listen(allow_non_loopback);
        let upstream = l.upstream();
        let audience = l.audience();
        let credentials = l.credentials();
        // Every key below has a default, so a None comes with a reported problem and the
        // fallback values are never returned.
        let header = l
            .parsed::<AuthHeader>("header")
            .unwrap_or(AuthHeader::Authorization);
        let upstream_ca = l.upstream_ca();
        let log_format = l
            .parsed::<LogFormat>("log_format")
            .unwrap_or(LogFormat::Text);
        let rewrite_redirects = !l.boolean("no_rewrite_redirects");
        let shutdown_grace = l.seconds("shutdown_grace", 0).unwrap_or_default();
        let upstream_timeout = l.seconds("upstream_timeout", 1).unwrap_or_default();
        let token_wait = l.seconds("token_wait", 1).unwrap_or_default();
        let header_read_timeout = l.seconds("header_read_timeout", 1).unwrap_or_default();
        // hyper refuses a smaller read buffer than 8 KiB.
        let max_header_bytes = l
            .count("max_header_bytes", 8192, "bytes")
            .unwrap_or_default();
        let max_concurrent_requests = l
            .count("max_concurrent_requests", 1, "requests")
            .unwrap_or_default();

        match (listen, upstream, audience) {
            (Some(listen), Some(upstream), Some(audience)) if l.errors.is_empty() => Ok(Settings {
                listen,
                upstream,
                audience,
                credentials,
                header,
                upstream_ca,
                allow_non_loopback,
                log_format,
                rewrite_redirects,
                shutdown_grace,
                upstream_timeout,
                token_wait,
                header_read_timeout,
                max_header_bytes,
                max_concurrent_requests,
            }),
            _ => Err(l.into_errors()),
        }
    }
}

/// Validated settings of the `token` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub audience: String,
    pub credentials: Option<PathBuf>,
    pub upstream_ca: Option<PathBuf>,
}

impl TokenSettings {
    /// Same layering as [`Settings::load`], so one config file serves both commands.
    pub fn load(args: &TokenArgs, env: &Env) -> Result<TokenSettings, ConfigErrors> {
        let mut flags = Flags::default();
        flags.string("audience", args.audience.as_deref());
        flags.path("credentials", args.credentials.as_deref());
        flags.path("upstream_ca", args.upstream_ca.as_deref());
        let mut l = Layered::new(args.config.as_deref(), env, Vec::new(), flags);
        let audience = l.audience();
        let credentials = l.credentials();
        let upstream_ca = l.upstream_ca();
        match audience {
            Some(audience) if l.errors.is_empty() => Ok(TokenSettings {
                audience,
                credentials,
                upstream_ca,
            }),
            _ => Err(l.into_errors()),
        }
    }
}

// Kept in step with `Settings::new` by the `defaults_match_settings_new` test.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Every settings key: the flag name with `-` → `_`, and `IAP_PROXY_` + uppercase in the environment.
pub const KEYS: [&str; 15] = [
    "listen",
    "upstream",
    "audience",
    "credentials",
    "header",
    "upstream_ca",
    "allow_non_loopback",
    "log_format",
    "no_rewrite_redirects",
    "shutdown_grace",
    "upstream_timeout",
    "token_wait",
    "header_read_timeout",
    "max_header_bytes",
    "max_concurrent_requests",
];

const ENV_PREFIX: &str = "IAP_PROXY_";
const ENV_CONFIG: &str = "IAP_PROXY_CONFIG";
// `Environment` labels every value it produces with this origin.
const ENV_ORIGIN: &str = "the environment";

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Flags actually given, as config overrides.
#[derive(Default)]
struct Flags(Vec<(&'static str, ValueKind)>);

impl Flags {
    fn string(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.0.push((key, v.to_owned().into()));
        }
    }
    fn path(&mut self, key: &'static str, value: Option<&Path>) {
        self.string(key, value.map(|p| p.to_string_lossy()).as_deref());
    }
    fn switch(&mut self, key: &'static str, given: bool) {
        if given {
            self.0.push((key, true.into()));
        }
    }
}

/// The merged layers, plus what is needed to say where each value came from.
struct Layered {
    values: Map<String, Value>,
    flags: Vec<&'static str>,
    errors: Vec<String>,
}

impl Layered {
    fn new(
        config: Option<&Path>,
        env: &Env,
        defaults: Vec<(&'static str, ValueKind)>,
        flags: Flags,
    ) -> Layered {
        let mut errors = Vec::new();
        let config = config
            .map(Path::to_path_buf)
            .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
        // Loaded on its own first so that a bad file is one reported problem, not the end of validation.
        let file = config.and_then(|path| match load_file(&path) {
            Ok(file) => Some(file),
            Err(e) => {
                errors.push(e);
                None
            }
        });

        let mut env_source = Map::new();
        let mut unknown_env: Vec<&String> = Vec::new();
        for (name, value) in env.vars() {
            let Some(suffix) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if KEYS.contains(&suffix.to_ascii_lowercase().as_str()) {
                env_source.insert(name.clone(), value.clone());
            } else if !name.eq_ignore_ascii_case(ENV_CONFIG) {
                unknown_env.push(name);
            }
        }
        unknown_env.sort();
        for name in unknown_env {
            errors.push(format!(
                "unknown environment variable {name}: probably a typo; known ones are {}",
                KEYS.map(env_name).join(", ")
            ));
        }

        let flag_keys = flags.0.iter().map(|(k, _)| *k).collect();
        let values = match build(defaults, file, env_source, flags) {
            Ok(values) => values,
            Err(e) => {
                errors.push(format!("cannot merge settings: {e}"));
                Map::new()
            }
        };
        Layered {
            values,
            flags: flag_keys,
            errors,
        }
    }

    fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    fn origin(&self, key: &str) -> String {
        match self.values.get(key).and_then(Value::origin) {
            Some(ENV_ORIGIN) => env_name(key),
            Some(file) => format!("config file {file}"),
            None if self.flags.contains(&key) => flag_name(key),
            None => "default".into(),
        }
    }

    /// `key = "value" (from ORIGIN)`, the prefix of every message about a value.
    fn describe(&self, key: &str) -> String {
        let value = match self.values.get(key).map(|v| &v.kind) {
            Some(ValueKind::String(s)) => format!("{s:?}"),
            Some(other) => other.to_string(),
            None => "(unset)".into(),
        };
        format!("{key} = {value} (from {})", self.origin(key))
    }

    fn problem(&mut self, key: &str, what: &str) {
        let message = format!("{}: {what}", self.describe(key));
        self.errors.push(message);
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => None,
            Some(ValueKind::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(key, "must be a string; quote it in TOML");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> bool {
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

    fn parsed<T: FromStr<Err = String>>(&mut self, key: &str) -> Option<T> {
        let text = self.string(key)?;
        T::from_str(&text).map_err(|e| self.problem(key, &e)).ok()
    }

    fn number(&mut self, key: &str, min: u64, unit: &str) -> Option<u64> {
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
            Some(n) if n >= min => Some(n),
            _ => {
                self.problem(
                    key,
                    &format!("must be a whole number of {unit}, at least {min}"),
                );
                None
            }
        }
    }

    fn seconds(&mut self, key: &str, min: u64) -> Option<Duration> {
        self.number(key, min, "seconds").map(Duration::from_secs)
    }

    fn count(&mut self, key: &str, min: u64, unit: &str) -> Option<usize> {
        self.number(key, min, unit)
            .and_then(|n| usize::try_from(n).ok())
    }

    fn listen(&mut self, allow_non_loopback: bool) -> Option<SocketAddr> {
        let text = self.string("listen")?;
        let Ok(addr) = text.trim().parse::<SocketAddr>() else {
            self.problem(
                "listen",
                "not an IP:port address; use e.g. 127.0.0.1:8080 or [::1]:8080",
            );
            return None;
        };
        // to_canonical: ::ffff:127.0.0.1 is loopback too.
        if !allow_non_loopback && !addr.ip().to_canonical().is_loopback() {
            self.problem(
                "listen",
                "not a loopback address, and the proxy adds credentials to every request: anyone who \
                 can reach that port acts as the service account; listen on 127.0.0.1 or pass \
                 --allow-non-loopback (IAP_PROXY_ALLOW_NON_LOOPBACK=true)",
            );
            return None;
        }
        Some(addr)
    }

    fn required(&mut self, key: &str, example: &str) -> Option<String> {
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problem(key, &format!("must not be empty; e.g. {example}"));
                None
            }
            None => {
                if !self.values.contains_key(key) {
                    self.errors.push(format!(
                        "{key} is required: pass {}, set {} or put {key} = \"...\" in the config file (e.g. {example})",
                        flag_name(key),
                        env_name(key),
                    ));
                }
                None
            }
        }
    }

    fn audience(&mut self) -> Option<String> {
        self.required(
            "audience",
            "123-abc.apps.googleusercontent.com, the IAP OAuth client ID",
        )
    }

    fn upstream(&mut self) -> Option<Url> {
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
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).to_canonical().is_loopback(),
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

    fn credentials(&mut self) -> Option<PathBuf> {
        let path = PathBuf::from(self.string("credentials")?);
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
                self.problem("credentials", &format!("cannot be used: {e}"));
                None
            }
        }
    }

    fn upstream_ca(&mut self) -> Option<PathBuf> {
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

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Reads the TOML file and rejects keys we do not know, which are almost surely typos.
fn load_file(path: &Path) -> Result<Config, String> {
    let file = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table = file
        .collect()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let mut unknown: Vec<&String> = table
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(file);
    }
    unknown.sort();
    let unknown: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
    Err(format!(
        "config file {}: unknown key {}; known keys are {}",
        path.display(),
        unknown.join(", "),
        KEYS.join(", ")
    ))
}

fn build(
    defaults: Vec<(&'static str, ValueKind)>,
    file: Option<Config>,
    env: Map<String, String>,
    flags: Flags,
) -> Result<Map<String, Value>, ConfigError> {
    let mut builder = Config::builder();
    for (key, value) in defaults {
        builder = builder.set_default(key, value)?;
    }
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    // try_parsing stays off: it would turn an audience like "0123" into 123; values are typed by `Layered`.
    builder = builder.add_source(
        Environment::with_prefix("IAP_PROXY")
            .prefix_separator("_")
            .ignore_empty(true)
            .source(Some(env)),
    );
    for (key, value) in flags.0 {
        builder = builder.set_override(key, value)?;
    }
    builder.build()?.collect()
}
