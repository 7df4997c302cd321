//! Routes: the top-level settings make one; each `[[routes]]` table in the file another.
//!
//! A route names its own `listen` and `upstream`; every other route key it leaves out is
//! inherited from the top level (flags, env and file merged), so shared credentials are
//! written once. Process-wide keys cannot be set per route.

use super::*;

/// Keys a `[[routes]]` table may hold.
pub(super) const ROUTE_KEYS: [&str; 13] = [
    "name",
    "listen",
    "upstream",
    "audience",
    "credentials",
    "header",
    "impersonate_service_account",
    "iam_endpoint",
    "token_kind",
    "client_secret_file",
    "no_rewrite_redirects",
    "upstream_timeout",
    "token_wait",
];

/// Settings that belong to the process, not to a route.
pub(super) struct ProcessFields {
    pub(super) upstream_ca: Option<PathBuf>,
    pub(super) allow_non_loopback: bool,
    pub(super) log_format: LogFormat,
    pub(super) shutdown_grace: Duration,
    pub(super) header_read_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) max_concurrent_requests: usize,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) max_sigterm_delay: Duration,
    pub(super) max_connections: usize,
    pub(super) access_log: bool,
}

pub(super) struct RouteFields {
    name: String,
    listen: ListenAddr,
    upstream: Url,
    audience: String,
    credentials: Option<PathBuf>,
    header: AuthHeader,
    impersonate_service_account: Vec<String>,
    iam_endpoint: Url,
    token_kind: TokenKind,
    client_secret_file: Option<PathBuf>,
    rewrite_redirects: bool,
    upstream_timeout: Duration,
    token_wait: Duration,
}

/// Reads and validates one route's keys; problems go to `l.errors`.
pub(super) fn load_route_fields(
    l: &mut Layered,
    name: String,
    allow_non_loopback: bool,
) -> Option<RouteFields> {
    let listen = l.listen("listen", allow_non_loopback);
    let upstream = l.upstream();
    let audience = l.audience();
    let credentials = l.credentials();
    // Every key below has a default, so a None comes with a reported problem and the
    // fallback values are never used.
    let header = l
        .parsed::<AuthHeader>("header")
        .unwrap_or(AuthHeader::Authorization);
    let (impersonate_service_account, iam_endpoint, token_kind) = l.token_keys();
    let client_secret_file = l.existing_file("client_secret_file");
    let rewrite_redirects = !l.boolean("no_rewrite_redirects");
    let upstream_timeout = l.seconds("upstream_timeout", 1).unwrap_or_default();
    let token_wait = l.seconds("token_wait", 1).unwrap_or_default();
    Some(RouteFields {
        name,
        listen: listen?,
        upstream: upstream?,
        audience: audience?,
        credentials,
        header,
        impersonate_service_account,
        iam_endpoint,
        token_kind,
        client_secret_file,
        rewrite_redirects,
        upstream_timeout,
        token_wait,
    })
}

/// The route's `name`, or `route-N` (1-based, as a person counts tables in the file).
pub(super) fn route_name(l: &mut Layered, index: usize) -> String {
    match l.string("name") {
        Some(name) if is_label(&name) => name,
        Some(_) => {
            l.problem(
                "name",
                "use letters, digits, '-' and '_' only (it becomes a metrics label)",
            );
            format!("route-{}", index + 1)
        }
        None => format!("route-{}", index + 1),
    }
}

fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Two routes cannot share a listener or a name.
pub(super) fn check_distinct(l: &mut Layered, routes: &[RouteFields]) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[..i] {
            if a.listen == b.listen {
                l.errors.push(format!(
                    "routes `{}` and `{}` both listen on {}; give each route its own listen address",
                    b.name, a.name, a.listen
                ));
            }
            if a.name == b.name {
                l.errors.push(format!(
                    "two routes are named `{}`; route names must be unique",
                    a.name
                ));
            }
        }
    }
}

impl RouteFields {
    pub(super) fn into_settings(self, p: &ProcessFields) -> Settings {
        Settings {
            name: self.name,
            listen: self.listen,
            upstream: self.upstream,
            audience: self.audience,
            credentials: self.credentials,
            header: self.header,
            upstream_ca: p.upstream_ca.clone(),
            allow_non_loopback: p.allow_non_loopback,
            log_format: p.log_format,
            rewrite_redirects: self.rewrite_redirects,
            shutdown_grace: p.shutdown_grace,
            upstream_timeout: self.upstream_timeout,
            token_wait: self.token_wait,
            header_read_timeout: p.header_read_timeout,
            max_header_bytes: p.max_header_bytes,
            max_concurrent_requests: p.max_concurrent_requests,
            impersonate_service_account: self.impersonate_service_account,
            iam_endpoint: self.iam_endpoint,
            token_kind: self.token_kind,
            admin_listen: p.admin_listen,
            max_sigterm_delay: p.max_sigterm_delay,
            max_connections: p.max_connections,
            access_log: p.access_log,
            client_secret_file: self.client_secret_file,
            extra_routes: Vec::new(),
        }
    }
}
