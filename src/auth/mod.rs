//! Credential sources behind one [`TokenSource`] trait, and the cache that keeps a fresh
//! ID token for the data path.

pub mod cache;
mod client;
pub mod jwt;
pub mod metadata;
pub mod service_account;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use http::HeaderValue;

pub use cache::TokenCache;

use crate::config::Env;
pub use client::TokenHttp;

/// A secret string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A validated ID token: its expiry read from the JWT, and the header value built once.
#[derive(Clone)]
pub struct IdToken {
    raw: Secret,
    bearer: HeaderValue,
    expires_at: SystemTime,
}

impl IdToken {
    /// Parses `exp` out of the JWT and builds the `Bearer` header value (marked sensitive).
    pub fn from_jwt(raw: &str) -> Result<Self, AuthError> {
        let raw = raw.trim();
        let claims = jwt::unverified_claims(raw)?;
        let expires_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(claims.exp);
        let mut bearer = HeaderValue::try_from(format!("Bearer {raw}")).map_err(|_| {
            AuthError::BadToken("it contains characters not allowed in a header".into())
        })?;
        bearer.set_sensitive(true);
        Ok(IdToken {
            raw: Secret::new(raw),
            bearer,
            expires_at,
        })
    }
    pub fn expose(&self) -> &str {
        self.raw.expose()
    }
    /// `Bearer <token>`, cheap to clone (a reference count).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Anything that can fetch a fresh ID token for a fixed audience.
pub trait TokenSource: Send + Sync + 'static {
    /// What this source is, for logs: never a secret.
    fn describe(&self) -> String;
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>>;
}

/// Why a token could not be had. Every message names the input and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("credentials file {path}: field `{field}` {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error(
        "credentials file {path} has type `{kind}`, which this version does not support (use a service_account key file or the metadata server)"
    )]
    UnsupportedType { path: PathBuf, kind: String },
    #[error("endpoint `{url}` is not a valid URL: {reason}")]
    BadEndpoint { url: String, reason: String },
    #[error("cannot set up TLS for the token endpoints: {0}")]
    Tls(String),
    #[error("token endpoint {url} must use https (plain http is accepted only on a loopback host)")]
    InsecureEndpoint { url: String },
    #[error("cannot sign the JWT assertion with the key in {path}: {reason}")]
    Sign { path: PathBuf, reason: String },
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} answered {status}: {detail}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("{endpoint} did not answer in time ({seconds}s)")]
    Timeout { endpoint: String, seconds: u64 },
    #[error("the token endpoint returned an unusable ID token: {0}")]
    BadToken(String),
}

/// Picks the credential source: `--credentials`, else `GOOGLE_APPLICATION_CREDENTIALS`,
/// else the metadata server. A file is read and checked now, so a bad one stops start-up.
pub fn source_from_settings(
    credentials: Option<&Path>,
    audience: &str,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, AuthError> {
    let file = credentials
        .map(Path::to_path_buf)
        .or_else(|| env.get("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from));
    let source: Arc<dyn TokenSource> = match file {
        Some(path) => Arc::new(service_account::ServiceAccount::from_file(
            &path, audience, http,
        )?),
        None => Arc::new(metadata::Metadata::new(env, audience, http)),
    };
    tracing::info!(source = %source.describe(), %audience, "credential source chosen");
    Ok(source)
}
