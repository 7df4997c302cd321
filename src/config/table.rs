//! Every setting, declared once. A row names the key (the TOML key; the flag is `--` + the
//! key with `_` → `-`; the variable is `IAP_PROXY_` + the key in capitals), says whether it
//! belongs to the process or to each route, how the flag takes its value, the default, and
//! the help. The command line, the environment, the TOML file, route inheritance and the
//! list of known keys are all read off this table; `settings.rs` gives each key its type.

use super::row::row;
pub(crate) use super::row::{Arg, Scope, Setting, Token, choices};

use super::values::{AuthHeader, LogFormat, TokenKind};
use Arg::{Choice, Switch, Value};
use Scope::{Process, Route, RouteTable};

/// In the order `--help` shows them.
pub(crate) const SETTINGS: &[Setting] = &[
    row(
        "listen",
        Route,
        Value("ADDR"),
        Some("127.0.0.1:8080"),
        Token::No,
        "Address to listen on: IPv4:port, [IPv6]:port or localhost:port (127.0.0.1), or \
         unix:PATH for a Unix socket",
    ),
    row(
        "upstream",
        Route,
        Value("URL"),
        None,
        Token::Yes,
        "Base URL of the IAP-protected service, e.g. https://app.example.com (required)",
    ),
    row(
        "audience",
        Route,
        Value("AUD"),
        Some("auto"),
        Token::WithoutDefault,
        "ID token audience: the IAP OAuth client ID, or `auto` to ask the upstream at start-up",
    ),
    row(
        "credentials",
        Route,
        Value("FILE"),
        None,
        Token::Yes,
        "Credentials JSON file, or `gcloud` for the gcloud CLI [default: \
         GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, metadata server]",
    ),
    row(
        "header",
        Route,
        Choice(choices::<AuthHeader>),
        Some("authorization"),
        Token::No,
        "Request header that carries the token",
    ),
    row(
        "upstream_ca",
        Process,
        Value("PEMFILE"),
        None,
        Token::Yes,
        "Extra PEM CA certificates to trust for the upstream, besides the system roots",
    ),
    row(
        "allow_non_loopback",
        Process,
        Switch,
        Some("false"),
        Token::No,
        "Allow listening on a non-loopback address (anyone reaching it acts as the service account)",
    ),
    row(
        "log_format",
        Process,
        Choice(choices::<LogFormat>),
        Some("text"),
        Token::No,
        "Log output format",
    ),
    row(
        "no_rewrite_redirects",
        Route,
        Switch,
        Some("false"),
        Token::No,
        "Pass upstream redirects through unchanged instead of pointing them back at the proxy",
    ),
    row(
        "shutdown_grace",
        Process,
        Value("SECONDS"),
        Some("30"),
        Token::No,
        "Seconds to let in-flight requests finish after SIGTERM/Ctrl-C",
    ),
    row(
        "upstream_timeout",
        Route,
        Value("SECONDS"),
        Some("60"),
        Token::No,
        "Seconds to wait for the upstream's response headers",
    ),
    row(
        "token_wait",
        Route,
        Value("SECONDS"),
        Some("10"),
        Token::No,
        "Seconds a request without a valid token waits for one to be fetched",
    ),
    row(
        "header_read_timeout",
        Process,
        Value("SECONDS"),
        Some("30"),
        Token::No,
        "Seconds a client has to send its request headers",
    ),
    row(
        "max_header_bytes",
        Process,
        Value("N"),
        Some("65536"),
        Token::No,
        "Largest accepted request header block, in bytes (at least 8192)",
    ),
    row(
        "max_concurrent_requests",
        Process,
        Value("N"),
        Some("4096"),
        Token::No,
        "Requests served at once; more wait their turn",
    ),
    row(
        "impersonate_service_account",
        Route,
        Value("EMAIL[,DELEGATE...]"),
        None,
        Token::Yes,
        "Impersonate this service account (through the listed delegates) to get ID tokens",
    ),
    row(
        "iam_endpoint",
        Route,
        Value("URL"),
        Some("https://iamcredentials.googleapis.com"),
        Token::Yes,
        "IAM Credentials API base URL",
    ),
    row(
        "token_kind",
        Route,
        Choice(choices::<TokenKind>),
        Some("id-token"),
        Token::Yes,
        "Token to send: a Google ID token, or a JWT signed by the key file itself",
    ),
    row(
        "admin_listen",
        Process,
        Value("ADDR"),
        None,
        Token::No,
        "Admin listener for /healthz, /readyz, /metrics and POST /quitquitquit [default: off]",
    ),
    row(
        "max_sigterm_delay",
        Process,
        Value("SECONDS"),
        Some("0"),
        Token::No,
        "Seconds to keep serving after SIGTERM before draining (for sidecars whose app still runs)",
    ),
    row(
        "client_secret_file",
        Route,
        Value("FILE"),
        None,
        Token::No,
        "File holding a secret clients must send in x-iap-proxy-secret (for non-loopback listeners)",
    ),
    row(
        "max_connections",
        Process,
        Value("N"),
        Some("1024"),
        Token::No,
        "Client connections held open at once; past it a new one is answered 503 \
         (too-many-connections) and closed",
    ),
    row(
        "access_log",
        Process,
        Switch,
        Some("false"),
        Token::No,
        "Log one line per request (target iap_proxy::access; Cloud Logging's httpRequest in JSON)",
    ),
    row(
        "allowed_hosts",
        Route,
        Value("NAME[,NAME...]"),
        None,
        Token::No,
        "Host names clients may use for this listener, besides localhost and IP addresses \
         (e.g. a sidecar's service name); other Hosts get 421",
    ),
    row(
        "allowed_origins",
        Route,
        Value("ORIGIN[,ORIGIN...]"),
        None,
        Token::No,
        "Browser origins, besides the proxy's own, whose pages may send requests through it \
         (e.g. http://localhost:3000); other cross-origin requests get 403",
    ),
    row(
        "allowed_upgrades",
        Route,
        Value("PROTOCOL[,PROTOCOL...]"),
        None,
        Token::No,
        "Upgrade protocols tunnelled besides websocket (h2c is never: it is stripped)",
    ),
    row(
        "socket_mode",
        Route,
        Value("MODE"),
        Some("0600"),
        Token::No,
        "Permissions of a unix: listener's socket file, in octal (0660 lets the group in)",
    ),
    row(
        "trust_network",
        Process,
        Switch,
        Some("false"),
        Token::No,
        "Serve a non-loopback listener without a client secret: only trusted clients can reach it",
    ),
    row(
        "metadata_wait",
        Process,
        Value("SECONDS"),
        Some("10"),
        Token::Yes,
        "Seconds to keep asking the metadata server at start-up, when no other credential is \
         found, before deciding there is none (on GKE it may start after the pod)",
    ),
    row(
        "reload_interval",
        Process,
        Value("SECONDS"),
        Some("2"),
        Token::No,
        "Seconds between checks of the credentials, --upstream-ca and --client-secret-file \
         files for changes, which are then put in use (0: only on SIGHUP)",
    ),
    row(
        "stream_idle_timeout",
        Process,
        Value("SECONDS"),
        Some("300"),
        Token::No,
        "Seconds a request or response body, or a WebSocket tunnel, may move no byte either way \
         before it is cut (0 = never)",
    ),
    row(
        "client_idle_timeout",
        Process,
        Value("SECONDS"),
        Some("120"),
        Token::No,
        "Seconds an idle keep-alive client connection is kept open between requests",
    ),
    row(
        "max_queued_requests",
        Process,
        Value("N"),
        Some("1024"),
        Token::No,
        "Requests that may wait past --max-concurrent-requests; more get 503 (overloaded)",
    ),
    row(
        "max_concurrent_streams",
        Process,
        Value("N"),
        Some("100"),
        Token::No,
        "HTTP/2 streams one client connection may have open at once",
    ),
    row(
        "retry_buffer_bytes",
        Process,
        Value("N"),
        Some("65536"),
        Token::No,
        "Request bodies up to this size are held so that a request the upstream provably did \
         not process can be sent again (0 = only bodiless requests)",
    ),
    row(
        "upstream_idle_timeout",
        Process,
        Value("SECONDS"),
        Some("50"),
        Token::No,
        "Seconds an idle pooled upstream connection is kept (under the upstream's own idle timeout)",
    ),
    row(
        "upstream_ping_interval",
        Process,
        Value("SECONDS"),
        Some("15"),
        Token::No,
        "Seconds between HTTP/2 PINGs on upstream connections (0 = no PINGs)",
    ),
    row(
        "upstream_ping_timeout",
        Process,
        Value("SECONDS"),
        Some("10"),
        Token::No,
        "Seconds an HTTP/2 PING may go unanswered before the upstream connection is closed",
    ),
    row(
        "name",
        RouteTable,
        Value("NAME"),
        None,
        Token::No,
        "The route's name in logs and metrics (route-N when unset)",
    ),
];

/// Prefix of every settings variable.
pub(crate) const ENV_PREFIX: &str = "IAP_PROXY_";
/// The variable that names the config file (like `--config`); not a setting itself.
pub(crate) const ENV_CONFIG: &str = "IAP_PROXY_CONFIG";

pub(crate) fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Settings with a flag, a variable and a top-level TOML key.
pub(crate) fn top_level() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(|s| s.scope != RouteTable)
}

/// Keys a `[[routes]]` table may hold.
pub(crate) fn route_keys() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.scope != Process)
        .map(|s| s.key)
}

pub(crate) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

pub(crate) fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_snake_case_and_switches_default_to_false() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                s.key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                s.key
            );
            assert!(
                SETTINGS[..i].iter().all(|t| t.key != s.key),
                "{} twice",
                s.key
            );
            if matches!(s.arg, Switch) {
                assert_eq!(s.default, Some("false"), "{}", s.key);
            }
        }
        assert_eq!(flag_name("upstream_ca"), "--upstream-ca");
        assert_eq!(env_name("upstream_ca"), "IAP_PROXY_UPSTREAM_CA");
    }
}
