//! Settings: defaults < `--config FILE` (TOML) < env `IAP_PROXY_<KEY>` < flags.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ::config::{Config, ConfigError, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use url::Url;

mod cli;
mod gce;
mod keys;
mod layers;
mod routes;
#[cfg(test)]
mod tests;
mod values;

pub use cli::{CheckArgs, Cli, Command, ProxyArgs, TokenArgs};
use layers::{Flags, Layered};
use routes::{ProcessFields, RouteFields};
pub use values::{AuthHeader, ListenAddr, LogFormat, TokenKind};
pub(crate) use values::{is_loopback_host, is_loopback_ip};

/// The name of the route made of the top-level settings.
pub const DEFAULT_ROUTE: &str = "default";

/// The `audience` value (also its default) that asks the proxy to discover the audience
/// from the upstream at start-up.
pub const AUDIENCE_AUTO: &str = "auto";

/// Exit status for bad flags or settings (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: i32 = 64;

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
    /// The route's name in logs and metrics: `default` for the top-level route.
    pub name: String,
    pub listen: ListenAddr,
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
    /// `EMAIL[,DELEGATE…]`: impersonate EMAIL (through the delegates); empty for none.
    pub impersonate_service_account: Vec<String>,
    /// Base URL of the IAM Credentials API (generateIdToken).
    pub iam_endpoint: Url,
    pub token_kind: TokenKind,
    /// Process-wide: where the admin endpoints listen (off when `None`).
    pub admin_listen: Option<SocketAddr>,
    /// Process-wide: how long to keep serving after SIGTERM before the drain starts.
    pub max_sigterm_delay: Duration,
    /// A secret clients must present (`x-iap-proxy-secret`).
    pub client_secret_file: Option<PathBuf>,
    /// Further routes from `[[routes]]`, each complete (process-wide fields copied).
    pub extra_routes: Vec<Settings>,
    pub max_connections: usize,
    /// Process-wide: one log line per request.
    pub access_log: bool,
}

impl Settings {
    /// Settings for tests and embedders: defaults for everything but the three essentials.
    pub fn new(upstream: Url, audience: impl Into<String>) -> Self {
        Settings {
            name: DEFAULT_ROUTE.into(),
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080))),
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
            impersonate_service_account: Vec::new(),
            iam_endpoint: default_iam_endpoint(),
            token_kind: TokenKind::IdToken,
            admin_listen: None,
            max_sigterm_delay: Duration::ZERO,
            client_secret_file: None,
            extra_routes: Vec::new(),
            max_connections: 10_000,
            access_log: false,
        }
    }

    /// Every route this process serves: this one, then the `[[routes]]` after it.
    pub fn routes(&self) -> impl Iterator<Item = &Settings> {
        std::iter::once(self).chain(self.extra_routes.iter())
    }

    /// The configured audience, or `None` when it is to be discovered (`auto`).
    pub fn explicit_audience(&self) -> Option<&str> {
        let a = self.audience.trim();
        (!a.eq_ignore_ascii_case(AUDIENCE_AUTO)).then_some(a)
    }

    /// Layers defaults, the `--config` file, `IAP_PROXY_*` variables and flags, then validates.
    pub fn load(args: &ProxyArgs, env: &Env) -> Result<Settings, ConfigErrors> {
        let defaults: Vec<(&'static str, ValueKind)> = vec![
            ("listen", DEFAULT_LISTEN.to_owned().into()),
            ("audience", AUDIENCE_AUTO.to_owned().into()),
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
            ("iam_endpoint", DEFAULT_IAM_ENDPOINT.to_owned().into()),
            ("token_kind", TokenKind::IdToken.to_string().into()),
            ("max_sigterm_delay", 0u64.into()),
            ("max_connections", 10_000u64.into()),
            ("access_log", false.into()),
        ];
        let mut flags = Flags::default();
        flags.string("listen", args.listen.as_deref());
        flags.string("admin_listen", args.admin_listen.as_deref());
        flags.string("max_sigterm_delay", args.max_sigterm_delay.as_deref());
        flags.path("client_secret_file", args.client_secret_file.as_deref());
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
        flags.string(
            "impersonate_service_account",
            args.impersonate_service_account.as_deref(),
        );
        flags.string("iam_endpoint", args.iam_endpoint.as_deref());
        flags.string("token_kind", args.token_kind.as_deref());
        flags.string("max_connections", args.max_connections.as_deref());
        flags.switch("access_log", args.access_log);

        let mut l = Layered::new(args.config.as_deref(), env, defaults, flags);
        let allow_non_loopback = l.boolean("allow_non_loopback");
        // With [[routes]] and no top-level upstream there is no top-level route; the routes
        // still inherit every other top-level setting.
        let route_tables = l.take_routes();
        let top_level_route = l.has("upstream") || route_tables.is_empty();
        let process = ProcessFields {
            upstream_ca: l.upstream_ca(),
            allow_non_loopback,
            log_format: l
                .parsed::<LogFormat>("log_format")
                .unwrap_or(LogFormat::Text),
            shutdown_grace: l.seconds("shutdown_grace", 0).unwrap_or_default(),
            header_read_timeout: l.seconds("header_read_timeout", 1).unwrap_or_default(),
            // hyper refuses a smaller read buffer than 8 KiB.
            max_header_bytes: l
                .count("max_header_bytes", 8192, "bytes")
                .unwrap_or_default(),
            max_concurrent_requests: l
                .count("max_concurrent_requests", 1, "requests")
                .unwrap_or_default(),
            admin_listen: l.admin_listen(allow_non_loopback),
            max_sigterm_delay: l.seconds("max_sigterm_delay", 0).unwrap_or_default(),
            max_connections: l
                .count("max_connections", 1, "connections")
                .unwrap_or_default(),
            access_log: l.boolean("access_log"),
        };
        let top = if top_level_route {
            routes::load_route_fields(&mut l, DEFAULT_ROUTE.into(), allow_non_loopback)
        } else {
            None
        };
        let mut fields: Vec<RouteFields> = top.into_iter().collect();
        for (index, table) in route_tables.into_iter().enumerate() {
            let mut rl = l.route(index, table);
            let name = routes::route_name(&mut rl, index);
            if let Some(route) = routes::load_route_fields(&mut rl, name, allow_non_loopback) {
                fields.push(route);
            }
            l.errors.append(&mut rl.errors);
        }
        routes::check_distinct(&mut l, &fields);
        if !l.errors.is_empty() || fields.is_empty() {
            return Err(l.into_errors());
        }
        let mut all = fields.into_iter().map(|f| f.into_settings(&process));
        let Some(mut first) = all.next() else {
            return Err(l.into_errors());
        };
        first.extra_routes = all.collect();
        Ok(first)
    }
}

/// Validated settings of the `token` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub audience: String,
    pub credentials: Option<PathBuf>,
    pub upstream_ca: Option<PathBuf>,
    pub impersonate_service_account: Vec<String>,
    pub iam_endpoint: Url,
    pub token_kind: TokenKind,
    /// Only needed (and then required) for `--token-kind self-signed-jwt`.
    pub upstream: Option<Url>,
}

impl TokenSettings {
    /// Same layering as [`Settings::load`], so one config file serves both commands.
    pub fn load(args: &TokenArgs, env: &Env) -> Result<TokenSettings, ConfigErrors> {
        let mut flags = Flags::default();
        flags.string("audience", args.audience.as_deref());
        flags.path("credentials", args.credentials.as_deref());
        flags.path("upstream_ca", args.upstream_ca.as_deref());
        flags.string(
            "impersonate_service_account",
            args.impersonate_service_account.as_deref(),
        );
        flags.string("iam_endpoint", args.iam_endpoint.as_deref());
        flags.string("token_kind", args.token_kind.as_deref());
        flags.string("upstream", args.upstream.as_deref());
        let defaults: Vec<(&'static str, ValueKind)> = vec![
            ("iam_endpoint", DEFAULT_IAM_ENDPOINT.to_owned().into()),
            ("token_kind", TokenKind::IdToken.to_string().into()),
        ];
        let mut l = Layered::new(args.config.as_deref(), env, defaults, flags);
        let audience = l.audience();
        let credentials = l.credentials();
        let upstream_ca = l.upstream_ca();
        if audience
            .as_deref()
            .is_some_and(|a| a.trim().eq_ignore_ascii_case(AUDIENCE_AUTO))
        {
            l.problem(
                "audience",
                "`auto` needs an upstream to ask; the token command takes the IAP OAuth client ID itself",
            );
        }
        let (impersonate_service_account, iam_endpoint, token_kind) = l.token_keys();
        // The upstream matters to the token command only as a self-signed JWT's audience.
        let upstream = match token_kind {
            TokenKind::SelfSignedJwt => l.upstream(),
            TokenKind::IdToken => None,
        };
        match audience {
            Some(audience) if l.errors.is_empty() => Ok(TokenSettings {
                audience,
                credentials,
                upstream_ca,
                impersonate_service_account,
                iam_endpoint,
                token_kind,
                upstream,
            }),
            _ => Err(l.into_errors()),
        }
    }
}

// Kept in step with `Settings::new` by the `defaults_match_settings_new` test.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";

fn default_iam_endpoint() -> Url {
    // A constant that parses; the fallback only keeps `unwrap` out of library code.
    Url::parse(DEFAULT_IAM_ENDPOINT)
        .unwrap_or_else(|_| Url::parse("https://localhost").expect("valid URL"))
}

/// Every settings key: the flag name with `-` → `_`, and `IAP_PROXY_` + uppercase in the environment.
pub const KEYS: [&str; 23] = [
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
    "impersonate_service_account",
    "iam_endpoint",
    "token_kind",
    "admin_listen",
    "max_sigterm_delay",
    "client_secret_file",
    "max_connections",
    "access_log",
];
