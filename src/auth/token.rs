//! The tokens the proxy holds: an ID token with its expiry and ready-made header value,
//! the trait every source implements, and a string that never shows itself.

use std::fmt;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use http::HeaderValue;

use super::error::AuthError;
use super::jwt;

/// A secret string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub(crate) fn expose(&self) -> &str {
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
    pub(crate) fn from_jwt(raw: &str) -> Result<Self, AuthError> {
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
    pub(crate) fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }
    pub(crate) fn expires_at(&self) -> SystemTime {
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
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// What this source is, for logs: never a secret.
    fn describe(&self) -> String;
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>>;
}
