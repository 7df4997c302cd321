//! First-run feedback, per route: one INFO "ready" line when its first token arrives (who
//! it is for, which audience, until when, and the URL to send requests to), and while it
//! has none, one WARN that says how to find out why. Until then a new user sees only the
//! "listening" line, which does not mean the proxy works.

use crate::auth::TokenCache;
use crate::auth::cache::NoToken;
use crate::config::ListenAddr;
use crate::ops::telemetry::utc_seconds;

/// Where a route's clients send requests, as a person would type it.
pub(crate) fn client_url(local: &ListenAddr) -> String {
    match local {
        ListenAddr::Tcp(addr) => format!("http://{addr}/"),
        ListenAddr::Unix(path) => format!(
            "unix:{0} (e.g. curl --unix-socket {0} http://localhost/)",
            path.display()
        ),
    }
}

/// Waits for the route's first token and says so; returns after that line (or when the
/// token cache stops). The caller aborts it at shutdown.
pub(crate) async fn announce(route: String, url: String, audience: String, tokens: TokenCache) {
    let mut warned = false;
    loop {
        let why = match tokens.get().await {
            Ok(token) => {
                let claims = token.claims();
                // A self-signed JWT names its account in `iss` only.
                let principal = claims
                    .email
                    .as_deref()
                    .or(claims.iss.as_deref().filter(|iss| iss.contains('@')))
                    .unwrap_or("(the token names no email)");
                tracing::info!(
                    route = %route,
                    url = %url,
                    principal = %principal,
                    audience = %audience,
                    expires = %utc_seconds(token.expires_at()),
                    "ready: the first ID token is here; send requests to {url}"
                );
                return;
            }
            Err(NoToken::Stopped) => return,
            Err(why @ (NoToken::FetchFailed { .. } | NoToken::TimedOut { .. })) => why,
        };
        if !warned {
            warned = true;
            tracing::warn!(
                route = %route,
                error = %why,
                "no ID token yet, so requests get 503 until one arrives (the proxy keeps trying); \
                 run `iap-proxy check` with the same flags, variables and config file to see why"
            );
        }
    }
}
