//! Building a route's runtime pieces: its audience and its (possibly shared) token cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::error::StartError;
use super::reload::CredentialFile;
use crate::auth::cache::{FetchCounters, RefreshPolicy};
use crate::auth::{self, TokenCache, TokenHttp};
use crate::config::{Env, RouteSettings, TokenKind};
use crate::iap::discovery;
use crate::ops::metrics::{Metrics, RefreshLabels, SourceLabels};
use crate::outbound::clients::Clients;

/// The route's audience: configured, or discovered from the upstream (`auto`).
pub(crate) async fn audience(
    route: &RouteSettings,
    clients: &Clients,
) -> Result<String, StartError> {
    if let Some(audience) = route.explicit_audience() {
        return Ok(audience.to_owned());
    }
    let found = discovery::discover(&clients.main, &route.upstream, route.upstream_timeout).await?;
    tracing::info!(
        route = %route.name,
        audience = %found.audience(),
        from = found.source(),
        "audience discovered; pin it with --audience in production, so the upstream's answer cannot choose it"
    );
    Ok(found.audience().to_owned())
}

/// What makes two routes' tokens interchangeable: the same credential asked for the same
/// token. Routes that agree on all of it share one cache and one refresher.
#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    credentials: Option<PathBuf>,
    audience: String,
    impersonate: Vec<String>,
    iam_endpoint: Url,
    token_kind: TokenKind,
    /// A self-signed JWT's audience is the upstream itself.
    upstream: Option<Url>,
}

/// Every token cache, and the credentials files they were built from (for reloads).
#[derive(Default)]
pub(crate) struct Caches {
    caches: HashMap<CacheKey, TokenCache>,
    pub(crate) files: Vec<CredentialFile>,
}

impl Caches {
    pub(crate) async fn get_or_spawn(
        &mut self,
        route: &RouteSettings,
        audience: &str,
        env: &Env,
        http: &TokenHttp,
        metrics: &Metrics,
        metadata_wait: Duration,
    ) -> Result<TokenCache, StartError> {
        let key = CacheKey {
            credentials: route.credentials.clone(),
            audience: audience.to_owned(),
            impersonate: route.impersonate_service_account.clone(),
            iam_endpoint: route.iam_endpoint.clone(),
            token_kind: route.token_kind,
            upstream: (route.token_kind == TokenKind::SelfSignedJwt)
                .then(|| route.upstream.clone()),
        };
        if let Some(cache) = self.caches.get(&key) {
            tracing::info!(route = %route.name, source = %cache.source_name(), "sharing the token of an earlier route");
            return Ok(cache.clone());
        }
        let options = auth::SourceOptions {
            credentials: route.credentials.as_deref(),
            credentials_from: &route.credentials_from,
            metadata_wait,
            audience,
            impersonate: &route.impersonate_service_account,
            iam_endpoint: &route.iam_endpoint,
            token_kind: route.token_kind,
            upstream: Some(&route.upstream),
        };
        let chosen = auth::source_from_settings(&options, env, http.clone()).await?;
        let counter = |result| {
            metrics
                .token_refreshes
                .get_or_create(&RefreshLabels {
                    source: chosen.kind.label(),
                    result,
                })
                .clone()
        };
        let restarts = metrics.refresher_restarts.get_or_create(&SourceLabels {
            source: chosen.kind.label(),
        });
        let counters = FetchCounters {
            success: counter("success"),
            failure: counter("failure"),
            restarts: restarts.clone(),
        };
        let policy = RefreshPolicy {
            wait: route.token_wait,
            ..RefreshPolicy::default()
        };
        let cache = TokenCache::spawn(chosen.source, audience, policy, counters);
        if let Some(path) = chosen.file {
            self.files.push(CredentialFile {
                path,
                found_by: chosen.found_by,
                cache: cache.clone(),
                audience: audience.to_owned(),
                impersonate: route.impersonate_service_account.clone(),
                iam_endpoint: route.iam_endpoint.clone(),
                token_kind: route.token_kind,
                upstream: route.upstream.clone(),
                credentials_from: route.credentials_from.clone(),
            });
        }
        self.caches.insert(key, cache.clone());
        Ok(cache)
    }
}
