//! Reloading the files the proxy reads at start-up: each credentials file, `--upstream-ca`
//! and each `--client-secret-file`, when they change (checked every `--reload-interval`)
//! or on SIGHUP (at once).
//!
//! Why read and compare rather than inotify: a Kubernetes Secret is rotated by swapping the
//! `..data` symlink its files point through, which a watch on the file never sees (it
//! would take watches on every directory along the symlinks, re-aimed after each swap), and
//! inotify misses changes on network and FUSE file systems. Reading three small files every
//! two seconds costs microseconds, sees every kind of change (a swap, a rename over the
//! file, an overwrite in place), needs no dependency, and two seconds is nothing next to
//! the minute a kubelet takes to update a Secret.
//!
//! A changed file is read twice, a moment apart, so a file being written is not taken half
//! written; then it is parsed and checked before anything uses it. A good one is put in use
//! at once: a credential's first token is fetched with it (and only if that works does it
//! replace the old source), a CA gives every route a new upstream pool. A bad one changes
//! nothing: the last good file stays in use, an ERROR names the file and what is wrong, and
//! `iap_proxy_reload_failures_total{what}` counts it. Nothing in flight is dropped: requests
//! keep the pool and token they started with.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use url::Url;

use crate::auth::cache::NotReplaced;
use crate::auth::{self, FoundBy, SourceOptions, TokenCache, TokenHttp};
use crate::config::{Env, Origin, TokenKind};
use crate::ops::metrics::{Metrics, ReloadLabels};
use crate::outbound::clients::Clients;
use crate::outbound::egress::Egress;
use crate::outbound::tls;
use crate::proxy::client_secret::ClientSecret;
use crate::proxy::shared::Shared;

/// A file seen as a half-written one is read again after this.
const SETTLE: Duration = Duration::from_millis(200);
/// A credential whose first token could not be fetched is tried again after this,
/// doubling up to `MAX_RETRY`, while the file stays as it is.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// A credentials file and how to build its source again: what the route asked for.
pub(crate) struct CredentialFile {
    pub(crate) path: PathBuf,
    /// How the file was found, for messages about it.
    pub(crate) found_by: FoundBy,
    /// Where the `credentials` setting came from, for messages.
    pub(crate) credentials_from: Origin,
    pub(crate) cache: TokenCache,
    pub(crate) audience: String,
    pub(crate) impersonate: Vec<String>,
    pub(crate) iam_endpoint: Url,
    pub(crate) token_kind: TokenKind,
    pub(crate) upstream: Url,
}

/// Everything that is reloaded, and what a reload replaces.
pub(crate) struct Reloads {
    pub(crate) credentials: Vec<CredentialFile>,
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Every route's data path, whose upstream pool a new CA replaces.
    pub(crate) routes: Vec<Arc<Shared>>,
    pub(crate) client_secrets: Vec<(PathBuf, ClientSecret)>,
    pub(crate) token_http: TokenHttp,
    pub(crate) egress: Egress,
    pub(crate) env: Env,
    pub(crate) metrics: Arc<Metrics>,
}

/// What set a check off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Interval,
    Signal,
}

/// What is known of one file: the fingerprint of what was last acted on.
struct Seen {
    path: PathBuf,
    what: &'static str,
    fingerprint: Option<u64>,
    /// The last change could not be put in use: the next SIGHUP tries it again.
    failed: bool,
    /// A credential refused only for want of a token is tried again at this time.
    retry: Option<(tokio::time::Instant, Duration)>,
}

enum Change {
    Unchanged,
    Changed(Vec<u8>),
}

impl Seen {
    /// Remembers the file as it is now, so only later changes count.
    async fn new(path: PathBuf, what: &'static str) -> Seen {
        let fingerprint = tokio::fs::read(&path).await.ok().map(|b| fingerprint(&b));
        Seen {
            path,
            what,
            fingerprint,
            failed: false,
            retry: None,
        }
    }

    /// The file's bytes if they differ from those last acted on (or on a SIGHUP after a
    /// failure, or when a retry is due); an unreadable file is reported and left alone.
    async fn check(&mut self, trigger: Trigger, metrics: &Metrics) -> Change {
        let Some(bytes) = self.read(trigger, metrics).await else {
            return Change::Unchanged;
        };
        let print = fingerprint(&bytes);
        let retry_due = self
            .retry
            .is_some_and(|(at, _)| tokio::time::Instant::now() >= at);
        let again = self.failed && trigger == Trigger::Signal;
        if Some(print) == self.fingerprint && !again && !retry_due {
            return Change::Unchanged;
        }
        if Some(print) != self.fingerprint {
            self.retry = None;
        }
        self.fingerprint = Some(print);
        Change::Changed(bytes)
    }

    /// Reads the file; after a change seen by the interval, reads it again a moment later
    /// and gives up this round if it is still changing.
    async fn read(&mut self, trigger: Trigger, metrics: &Metrics) -> Option<Vec<u8>> {
        let first = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(err) => {
                // Reported once per disappearance, not every interval.
                if self.fingerprint.is_some() || trigger == Trigger::Signal {
                    self.fingerprint = None;
                    let text = format!("cannot read it: {err}");
                    self.refused(&text, metrics);
                }
                return None;
            }
        };
        if trigger == Trigger::Signal || Some(fingerprint(&first)) == self.fingerprint {
            return Some(first);
        }
        tokio::time::sleep(SETTLE).await;
        let second = tokio::fs::read(&self.path).await.ok()?;
        (second == first).then_some(second)
    }

    fn put_in_use(&mut self, metrics: &Metrics, detail: &str) {
        self.failed = false;
        self.retry = None;
        let path = self.path.display();
        tracing::info!(what = self.what, path = %path, "reloaded {path}: {detail}");
        metrics.reloads.get_or_create(&self.labels()).inc();
    }

    fn refused(&mut self, why: &str, metrics: &Metrics) {
        self.failed = true;
        let path = self.path.display();
        tracing::error!(
            what = self.what,
            path = %path,
            "{path} changed, but it cannot be used, so the previous one stays in use: {why}. \
             Fix the file; it is read again when it changes, or on SIGHUP"
        );
        metrics.reload_failures.get_or_create(&self.labels()).inc();
    }

    fn labels(&self) -> ReloadLabels {
        ReloadLabels { what: self.what }
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Checks every file each `interval` (never when it is zero) and on each item of `signals`
/// (SIGHUP), until dropped.
pub(crate) async fn watch(
    mut files: Files,
    interval: Duration,
    mut signals: impl Stream<Item = ()> + Unpin,
) {
    let mut ticks = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut signals_open = true;
    loop {
        let tick = async {
            match ticks.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            () = tick => Trigger::Interval,
            signal = signals.next(), if signals_open => match signal {
                Some(()) => {
                    tracing::info!(
                        files = files.count(),
                        "SIGHUP: reading the credentials, CA and client secret files again"
                    );
                    Trigger::Signal
                }
                None => {
                    signals_open = false;
                    continue;
                }
            },
        };
        files.check(trigger).await;
    }
}

/// The files and what was last seen of each.
pub(crate) struct Files {
    r: Reloads,
    credentials: Vec<Seen>,
    ca: Option<Seen>,
    secrets: Vec<Seen>,
}

impl Files {
    /// Reads every file once, so that only later changes count: call it before serving,
    /// so a change made once the proxy answers is never taken for the start-up version.
    pub(crate) async fn new(r: Reloads) -> Files {
        let mut credentials = Vec::new();
        for c in &r.credentials {
            credentials.push(Seen::new(c.path.clone(), "credentials").await);
        }
        let ca = match &r.upstream_ca {
            Some(path) => Some(Seen::new(path.clone(), "upstream_ca").await),
            None => None,
        };
        let mut secrets = Vec::new();
        for (path, _) in &r.client_secrets {
            secrets.push(Seen::new(path.clone(), "client_secret").await);
        }
        Files {
            r,
            credentials,
            ca,
            secrets,
        }
    }

    fn count(&self) -> usize {
        self.credentials.len() + self.secrets.len() + usize::from(self.ca.is_some())
    }

    async fn check(&mut self, trigger: Trigger) {
        // The CA first: a credential tried next already fetches through the new roots.
        if let Some(seen) = &mut self.ca {
            if let Change::Changed(_) = seen.check(trigger, &self.r.metrics).await {
                reload_ca(seen, &self.r);
            }
        }
        for (seen, file) in self.credentials.iter_mut().zip(&self.r.credentials) {
            if let Change::Changed(bytes) = seen.check(trigger, &self.r.metrics).await {
                reload_credentials(seen, file, &bytes, &self.r).await;
            }
        }
        for (seen, (_, secret)) in self.secrets.iter_mut().zip(&self.r.client_secrets) {
            if let Change::Changed(_) = seen.check(trigger, &self.r.metrics).await {
                match secret.reload(&seen.path) {
                    Ok(()) => {
                        seen.put_in_use(&self.r.metrics, "clients must now send the new secret")
                    }
                    Err(err) => seen.refused(&err.to_string(), &self.r.metrics),
                }
            }
        }
    }
}

fn reload_ca(seen: &mut Seen, r: &Reloads) {
    match tls::client_config(Some(&seen.path)) {
        Ok(config) => {
            let clients = Clients::with_egress(config.clone(), &r.egress);
            for route in &r.routes {
                route.replace_clients(clients.clone());
            }
            r.token_http.use_tls(config, &r.egress);
            seen.put_in_use(
                &r.metrics,
                "new upstream connections (and token fetches) trust it; open ones finish as they are",
            );
        }
        Err(err) => seen.refused(&err.to_string(), &r.metrics),
    }
}

async fn reload_credentials(seen: &mut Seen, file: &CredentialFile, bytes: &[u8], r: &Reloads) {
    let opts = SourceOptions {
        credentials: Some(&file.path),
        credentials_from: &file.credentials_from,
        // Only a file is reloaded: nothing here asks the metadata server.
        metadata_wait: Duration::ZERO,
        audience: &file.audience,
        impersonate: &file.impersonate,
        iam_endpoint: &file.iam_endpoint,
        token_kind: file.token_kind,
        upstream: Some(&file.upstream),
    };
    let source = match auth::source_from_bytes(
        &file.path,
        file.found_by.clone(),
        bytes,
        &opts,
        &r.env,
        r.token_http.clone(),
    ) {
        Ok(source) => source,
        Err(err) => return seen.refused(&err.to_string(), &r.metrics),
    };
    let name = source.describe();
    match file.cache.replace_source(source).await {
        Ok(()) => seen.put_in_use(&r.metrics, &format!("tokens now come from {name}")),
        Err(err) => {
            if let NotReplaced::Fetch(_) = err {
                // Perhaps only Google was unreachable: try the same file again later.
                let wait = seen
                    .retry
                    .map_or(FIRST_RETRY, |(_, last)| (last * 2).min(MAX_RETRY));
                seen.retry = Some((tokio::time::Instant::now() + wait, wait));
            }
            seen.refused(&format!("{name}: {err}"), &r.metrics);
        }
    }
}
