//! The validated settings: the process's own, and one set per route. Each field is read
//! here from the merged layers, by the key its row in the table declares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use url::Url;

use super::cli::{Cli, ProxyArgs, TokenArgs};
use super::distinct;
use super::env::Env;
use super::hosts::{AllowedHosts, AllowedOrigins};
use super::layers::{ConfigErrors, For, Layered};
use super::origin::Origin;
use super::routes;
use super::values::{
    AuthHeader, ListenAddr, LogFormat, TokenKind, UpstreamLiveness, is_loopback_ip,
};

/// The name of the route made of the top-level settings.
pub const DEFAULT_ROUTE: &str = "default";

/// The `audience` value (also its default) that asks the proxy to discover the audience
/// from the upstream at start-up.
pub const AUDIENCE_AUTO: &str = "auto";

/// Validated settings of the proxy command.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub process: ProcessSettings,
    /// The top-level route (when there is a top-level upstream), then each `[[routes]]`.
    pub routes: Vec<RouteSettings>,
}

/// Settings that belong to the process, not to a route.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    pub upstream_ca: Option<PathBuf>,
    pub allow_non_loopback: bool,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Where the admin endpoints listen (off when `None`).
    pub admin_listen: Option<SocketAddr>,
    /// How long to keep serving after SIGTERM before the drain starts.
    pub max_sigterm_delay: Duration,
    pub max_connections: usize,
    /// One log line per request.
    pub access_log: bool,
    /// A non-loopback listener may go without a client secret.
    pub trust_network: bool,
    /// How long start-up keeps asking the metadata server before deciding there is none.
    pub metadata_wait: Duration,
    /// How often the files read at start-up are checked for changes (zero: only on SIGHUP).
    pub reload_interval: Duration,
    /// No byte either way on a body or tunnel for this long cuts it; `None` = never.
    pub stream_idle_timeout: Option<Duration>,
    /// An idle keep-alive client connection is closed after this long.
    pub client_idle_timeout: Duration,
    /// Requests that may wait for a `max_concurrent_requests` slot.
    pub max_queued_requests: usize,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Request bodies up to this many bytes are held for a replay.
    pub retry_buffer_bytes: usize,
    /// Upstream connections: pool idle timeout, HTTP/2 PINGs.
    pub upstream_liveness: UpstreamLiveness,
}

/// One route: where it listens, what it forwards to, and how it gets its token.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    /// The route's name in logs and metrics: `default` for the top-level route.
    pub name: String,
    pub listen: ListenAddr,
    pub upstream: Url,
    pub audience: String,
    pub credentials: Option<PathBuf>,
    /// Where `credentials` came from (a flag, a variable, the config file), for messages.
    pub credentials_from: Origin,
    pub header: AuthHeader,
    /// `EMAIL[,DELEGATE…]`: impersonate EMAIL (through the delegates); empty for none.
    pub impersonate_service_account: Vec<String>,
    /// Base URL of the IAM Credentials API (generateIdToken).
    pub iam_endpoint: Url,
    pub token_kind: TokenKind,
    /// A secret clients must present (`x-iap-proxy-secret`).
    pub client_secret_file: Option<PathBuf>,
    pub rewrite_redirects: bool,
    pub upstream_timeout: Duration,
    pub token_wait: Duration,
    pub allowed_hosts: AllowedHosts,
    pub allowed_origins: AllowedOrigins,
    /// Lowercase protocol names tunnelled besides `websocket`.
    pub allowed_upgrades: Vec<String>,
    /// Permissions of a Unix socket listener's file.
    pub socket_mode: u32,
}

impl RouteSettings {
    /// The configured audience, or `None` when it is to be discovered (`auto`).
    pub fn explicit_audience(&self) -> Option<&str> {
        let a = self.audience.trim();
        (!a.eq_ignore_ascii_case(AUDIENCE_AUTO)).then_some(a)
    }
}

impl Settings {
    /// Parses `args` as the proxy's command line (without the program name) and loads the
    /// settings, as the binary would: for tests and embedders.
    pub fn from_args(args: &[&str], env: &Env) -> Result<Settings, ConfigErrors> {
        let argv = std::iter::once("iap-proxy").chain(args.iter().copied());
        let cli = Cli::try_parse_from(argv).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Settings::load(&cli.proxy, env)
    }

    /// Layers defaults, the `--config` file, `IAP_PROXY_*` variables and flags, then validates.
    pub fn load(args: &ProxyArgs, env: &Env) -> Result<Settings, ConfigErrors> {
        let mut l = Layered::new(args.given(), env, For::Proxy);
        // With [[routes]] and no top-level upstream there is no top-level route; the routes
        // still inherit every other top-level setting.
        let tables = routes::take_tables(&mut l);
        let top_level_route = l.has("upstream") || tables.is_empty();
        let process = ProcessSettings::load(&mut l);
        let allow_non_loopback = process.as_ref().is_some_and(|p| p.allow_non_loopback);
        let mut routes = Vec::new();
        if top_level_route {
            routes.extend(RouteSettings::load(
                &mut l,
                DEFAULT_ROUTE.into(),
                allow_non_loopback,
            ));
        }
        for (index, table) in tables.into_iter().enumerate() {
            let mut rl = routes::layers_of(&l, index, table);
            let name = routes::route_name(&mut rl, index);
            routes.extend(RouteSettings::load(&mut rl, name, allow_non_loopback));
            l.errors.append(&mut rl.errors);
        }
        let named: Vec<distinct::Named<'_>> = routes
            .iter()
            .map(|r| distinct::Named {
                name: &r.name,
                listen: &r.listen,
            })
            .collect();
        distinct::check(
            &mut l,
            &named,
            process.as_ref().and_then(|p| p.admin_listen),
        );
        if let Some(p) = &process {
            check_exposure(&mut l, p, &routes);
        }
        match process {
            Some(process) if l.errors.is_empty() && !routes.is_empty() => {
                Ok(Settings { process, routes })
            }
            _ => Err(l.into_errors()),
        }
    }
}

impl ProcessSettings {
    fn load(l: &mut Layered) -> Option<ProcessSettings> {
        let allow_non_loopback = l.boolean("allow_non_loopback");
        let upstream_ca = l.upstream_ca();
        let log_format = l.choice::<LogFormat>("log_format");
        let shutdown_grace = l.seconds("shutdown_grace", 0);
        let header_read_timeout = l.seconds("header_read_timeout", 1);
        // hyper refuses a smaller read buffer than 8 KiB.
        let max_header_bytes = l.count("max_header_bytes", 8192, 1 << 20, "bytes");
        let max_concurrent_requests = l.count("max_concurrent_requests", 1, MAX_COUNT, "requests");
        let admin_listen = l.admin_listen(allow_non_loopback);
        let max_sigterm_delay = l.seconds("max_sigterm_delay", 0);
        let max_connections = l.count("max_connections", 1, MAX_COUNT, "connections");
        let access_log = l.boolean("access_log");
        let trust_network = l.boolean("trust_network");
        let metadata_wait = l.seconds("metadata_wait", 1);
        let reload_interval = l.seconds("reload_interval", 0);
        let stream_idle_timeout = l.seconds("stream_idle_timeout", 0);
        let client_idle_timeout = l.seconds("client_idle_timeout", 1);
        let max_queued_requests = l.count("max_queued_requests", 0, MAX_COUNT, "requests");
        let max_concurrent_streams = l.number("max_concurrent_streams", 1, 10_000, "streams");
        let retry_buffer_bytes = l.count("retry_buffer_bytes", 0, 16 << 20, "bytes");
        let idle_timeout = l.seconds("upstream_idle_timeout", 1);
        let ping_interval = l.seconds("upstream_ping_interval", 0);
        let ping_timeout = l.seconds("upstream_ping_timeout", 1);
        Some(ProcessSettings {
            upstream_ca,
            allow_non_loopback,
            log_format: log_format?,
            shutdown_grace: shutdown_grace?,
            header_read_timeout: header_read_timeout?,
            max_header_bytes: max_header_bytes?,
            max_concurrent_requests: max_concurrent_requests?,
            admin_listen,
            max_sigterm_delay: max_sigterm_delay?,
            max_connections: max_connections?,
            access_log,
            trust_network,
            metadata_wait: metadata_wait?,
            reload_interval: reload_interval?,
            stream_idle_timeout: stream_idle_timeout.map(|d| (!d.is_zero()).then_some(d))?,
            client_idle_timeout: client_idle_timeout?,
            max_queued_requests: max_queued_requests?,
            max_concurrent_streams: u32::try_from(max_concurrent_streams?).ok()?,
            retry_buffer_bytes: retry_buffer_bytes?,
            upstream_liveness: UpstreamLiveness {
                idle_timeout: idle_timeout?,
                ping_interval: ping_interval.map(|d| (!d.is_zero()).then_some(d))?,
                ping_timeout: ping_timeout?,
            },
        })
    }
}

/// The ceiling of connection and request counts: far above what one process serves, far
/// below what a semaphore can hold.
const MAX_COUNT: u64 = 1_000_000;

impl RouteSettings {
    /// Reads and validates one route's keys; problems go to `l.errors`.
    fn load(l: &mut Layered, name: String, allow_non_loopback: bool) -> Option<RouteSettings> {
        let listen = l.listen("listen", allow_non_loopback);
        let upstream = l.upstream();
        let audience = l.audience();
        let credentials = l.credentials();
        let credentials_from = l.origin("credentials");
        let header = l.choice::<AuthHeader>("header");
        let token_keys = l.token_keys();
        let client_secret_file = l.existing_file("client_secret_file");
        let rewrite_redirects = !l.boolean("no_rewrite_redirects");
        let upstream_timeout = l.seconds("upstream_timeout", 1);
        let token_wait = l.seconds("token_wait", 1);
        let allowed_hosts = l.listed("allowed_hosts", AllowedHosts::parse);
        let allowed_origins = l.listed("allowed_origins", AllowedOrigins::parse);
        let allowed_upgrades = l.listed("allowed_upgrades", protocols);
        let socket_mode = l.file_mode("socket_mode");
        let (impersonate_service_account, iam_endpoint, token_kind) = token_keys?;
        Some(RouteSettings {
            name,
            listen: listen?,
            upstream: upstream?,
            audience: audience?,
            credentials,
            credentials_from,
            header: header?,
            impersonate_service_account,
            iam_endpoint,
            token_kind,
            client_secret_file,
            rewrite_redirects,
            upstream_timeout: upstream_timeout?,
            token_wait: token_wait?,
            allowed_hosts: allowed_hosts?,
            allowed_origins: allowed_origins?,
            allowed_upgrades: allowed_upgrades?,
            socket_mode: socket_mode?,
        })
    }
}

/// Upgrade protocol names, e.g. `connect-udp`; `websocket` is always allowed and `h2c` never.
fn protocols(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let name = item.to_ascii_lowercase();
        if name == "h2c" {
            return Err("h2c cannot be tunnelled: the proxy speaks h2c to clients itself".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        {
            return Err(format!("`{item}` is not a protocol name, e.g. connect-udp"));
        }
        out.push(name);
    }
    Ok(out)
}

/// A listener beyond this machine hands the service account's identity to whoever reaches
/// it: it needs a client secret, or the operator's word that the network is trusted.
fn check_exposure(l: &mut Layered, process: &ProcessSettings, routes: &[RouteSettings]) {
    if process.trust_network {
        return;
    }
    for r in routes {
        let exposed = matches!(r.listen, ListenAddr::Tcp(addr) if !is_loopback_ip(addr.ip()));
        if exposed && r.client_secret_file.is_none() {
            l.errors.push(format!(
                "route `{}` listens on {}, beyond this machine, without a client secret: anyone \
                 who can reach it acts as the service account. Set client_secret_file (clients \
                 then send it in x-iap-proxy-secret), or, when only trusted clients can reach \
                 that network, pass --trust-network (IAP_PROXY_TRUST_NETWORK=true)",
                r.name, r.listen
            ));
        }
    }
}

/// Validated settings of the `token` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// `None` for a self-signed JWT, whose audience is the upstream.
    pub audience: Option<String>,
    pub credentials: Option<PathBuf>,
    /// Where `credentials` came from, for messages.
    pub credentials_from: Origin,
    pub upstream_ca: Option<PathBuf>,
    pub impersonate_service_account: Vec<String>,
    pub iam_endpoint: Url,
    pub token_kind: TokenKind,
    /// Only needed (and then required) for `--token-kind self-signed-jwt`.
    pub upstream: Option<Url>,
    pub metadata_wait: Duration,
}

impl TokenSettings {
    /// Same layering as [`Settings::load`], so one config file serves both commands.
    pub fn load(args: &TokenArgs, env: &Env) -> Result<TokenSettings, ConfigErrors> {
        let mut l = Layered::new(args.given(), env, For::Token);
        let token_keys = l.token_keys();
        // A self-signed JWT's audience is the upstream: then that is required, not --audience.
        let self_signed = matches!(token_keys, Some((_, _, TokenKind::SelfSignedJwt)));
        let (audience, upstream) = if self_signed {
            (None, l.upstream())
        } else {
            (l.audience(), None)
        };
        let credentials = l.credentials();
        let credentials_from = l.origin("credentials");
        let upstream_ca = l.upstream_ca();
        let metadata_wait = l.seconds("metadata_wait", 1);
        if audience
            .as_deref()
            .is_some_and(|a| a.trim().eq_ignore_ascii_case(AUDIENCE_AUTO))
        {
            l.problem(
                "audience",
                "`auto` needs an upstream to ask; the token command takes the IAP OAuth client ID itself",
            );
        }
        let ready = audience.is_some() || upstream.is_some();
        match (token_keys, metadata_wait) {
            (
                Some((impersonate_service_account, iam_endpoint, token_kind)),
                Some(metadata_wait),
            ) if ready && l.errors.is_empty() => Ok(TokenSettings {
                audience,
                credentials,
                credentials_from,
                upstream_ca,
                impersonate_service_account,
                iam_endpoint,
                token_kind,
                upstream,
                metadata_wait,
            }),
            _ => Err(l.into_errors()),
        }
    }
}
