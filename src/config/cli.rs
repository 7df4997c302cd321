//! The command line: flags and subcommands (clap).

use std::path::PathBuf;

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
    /// Run the route once and explain what is wrong, with the fix; exit 0 only when an
    /// authenticated request through IAP succeeds. Takes the proxy's flags and config file.
    Check(Box<CheckArgs>),
    /// Print a shell completion script, e.g. `iap-proxy completions bash > /etc/bash_completion.d/iap-proxy`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

// Value flags are Options so that an absent flag leaves the file/env value alone, and
// strings so that a bad value is reported together with every other problem (exit 64)
// rather than by clap alone.
#[derive(clap::Args, Debug, Default)]
pub struct ProxyArgs {
    /// TOML settings file (see config/iap-proxy.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on: IPv4 or [IPv6]:port, or unix:PATH for a Unix socket [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL of the IAP-protected service, e.g. https://app.example.com (required).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// ID token audience: the IAP OAuth client ID, or `auto` to ask the upstream at start-up
    /// [default: auto].
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Credentials JSON file, or `gcloud` for the gcloud CLI [default: GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, metadata server].
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Request header that carries the token [default: authorization].
    #[arg(
        long,
        value_name = "authorization|proxy-authorization|x-serverless-authorization"
    )]
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
    /// Impersonate this service account (through the listed delegates) to get ID tokens.
    #[arg(long, value_name = "EMAIL[,DELEGATE...]")]
    pub impersonate_service_account: Option<String>,
    /// IAM Credentials API base URL [default: https://iamcredentials.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// Token to send: a Google ID token, or a JWT signed by the key file itself [default: id-token].
    #[arg(long, value_name = "id-token|self-signed-jwt")]
    pub token_kind: Option<String>,
    /// Admin listener for /healthz, /readyz, /metrics and POST /quitquitquit [default: off].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Seconds to keep serving after SIGTERM before draining (for sidecars whose app still runs) [default: 0].
    #[arg(long, value_name = "SECONDS")]
    pub max_sigterm_delay: Option<String>,
    /// File holding a secret clients must send in x-iap-proxy-secret (for non-loopback listeners).
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Client connections held open at once; past it a new one is answered 503
    /// (too-many-connections) and closed [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Log one line per request (target iap_proxy::access; Cloud Logging's httpRequest in JSON).
    #[arg(long)]
    pub access_log: bool,
}

#[derive(clap::Args, Debug, Default)]
pub struct TokenArgs {
    /// TOML settings file; only audience, credentials and upstream_ca are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// ID token audience: the IAP OAuth client ID (required).
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Credentials JSON file, or `gcloud` for the gcloud CLI [default: GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, metadata server].
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Extra PEM CA certificates to trust, besides the system roots.
    #[arg(long, value_name = "PEMFILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Impersonate this service account (through the listed delegates) to get the ID token.
    #[arg(long, value_name = "EMAIL[,DELEGATE...]")]
    pub impersonate_service_account: Option<String>,
    /// IAM Credentials API base URL [default: https://iamcredentials.googleapis.com].
    #[arg(long, value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// id-token or self-signed-jwt [default: id-token].
    #[arg(long, value_name = "id-token|self-signed-jwt")]
    pub token_kind: Option<String>,
    /// Upstream URL: the audience of a self-signed JWT (only with --token-kind self-signed-jwt).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

/// `iap-proxy check`: the proxy's own settings, so the same flags and file are checked.
#[derive(clap::Args, Debug, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
}
