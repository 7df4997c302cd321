//! The tokens the proxy holds: an ID token with its claims and ready-made header value, and
//! the trait every source implements.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::HeaderValue;

use super::error::{BadToken, FetchError};
use super::jwt::{self, Claims};
use super::redact::Secret;

/// A validated ID token: its claims read once from the JWT, and the header value built once.
#[derive(Clone)]
pub struct IdToken {
    raw: Secret,
    bearer: HeaderValue,
    claims: Claims,
}

impl IdToken {
    /// Reads the JWT's claims (it needs an `exp`) and builds the `Bearer` header value
    /// (marked sensitive).
    pub(crate) fn from_jwt(raw: &str) -> Result<Self, BadToken> {
        let raw = raw.trim();
        let claims = jwt::unverified_claims(raw)?;
        let mut bearer =
            HeaderValue::try_from(format!("Bearer {raw}")).map_err(|_| BadToken::NotHeaderSafe)?;
        bearer.set_sensitive(true);
        Ok(IdToken {
            raw: Secret::new(raw),
            bearer,
            claims,
        })
    }

    /// [`IdToken::from_jwt`] for a token that must have been issued for `audience`: one
    /// minted for another would only earn a 401 from IAP later, with a less helpful message.
    pub(crate) fn issued_for(raw: &str, audience: &str) -> Result<Self, FetchError> {
        let token = IdToken::from_jwt(raw)?;
        jwt::check_audience(&token.claims, audience)?;
        Ok(token)
    }

    pub fn expose(&self) -> &str {
        self.raw.expose()
    }
    /// `Bearer <token>`, cheap to clone (a reference count).
    pub(crate) fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }
    /// The claims, unverified: IAP checks the signature, the proxy only reads them.
    pub(crate) fn claims(&self) -> &Claims {
        &self.claims
    }
    /// `exp` as a time. Claims are bounded when read (`jwt::MAX_SECONDS`), so the sum
    /// cannot overflow; were it to, the token would count as long expired, never panic.
    pub(crate) fn expires_at(&self) -> SystemTime {
        at(self.claims.exp).unwrap_or(SystemTime::UNIX_EPOCH)
    }
    /// `iat` as a time, when the token has one.
    pub(crate) fn issued_at(&self) -> Option<SystemTime> {
        self.claims.iat.and_then(at)
    }
    /// Who the token speaks for, for logs: its `email`, else its issuer (a self-signed JWT's
    /// `iss` is the service account).
    pub(crate) fn principal(&self) -> &str {
        self.claims
            .email
            .as_deref()
            .or(self.claims.iss.as_deref())
            .unwrap_or("(no email claim)")
    }
}

fn at(unix_secs: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix_secs))
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at())
            .finish()
    }
}

/// Anything that can fetch a fresh ID token for a fixed audience.
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// What this source is, for logs: never a secret.
    fn describe(&self) -> String;
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(claims: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn claims_are_read_once_and_the_audience_checked() {
        let token = IdToken::issued_for(&jwt(r#"{"exp":42,"aud":"a","email":"e@x"}"#), "a");
        let token = token.unwrap();
        assert_eq!(token.claims().email.as_deref(), Some("e@x"));
        assert_eq!(
            token.expires_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(42)
        );
        assert!(!format!("{token:?}").contains("e30"));
        let err = IdToken::issued_for(&jwt(r#"{"exp":42,"aud":"b"}"#), "a").unwrap_err();
        assert!(
            matches!(err, FetchError::BadToken(BadToken::WrongAudience { .. })),
            "{err:?}"
        );
        let err = IdToken::from_jwt("ya29.not-a-jwt").unwrap_err();
        assert!(matches!(err, BadToken::NotAJwt { segments: 2 }), "{err:?}");
    }
}
