//! `--token-kind self-signed-jwt`: IAP also accepts a JWT the service account signs itself
//! (`iss` = `sub` = its email, `aud` = the URL or a URL prefix ending `/*`). No round trip
//! to Google, so it keeps working when the token endpoints are unreachable.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use url::Url;

use super::service_account::ServiceAccount;
use crate::auth::error::FetchError;
use crate::auth::token::{IdToken, TokenSource};

/// IAP refuses self-signed JWTs that live longer than an hour.
const LIFETIME_SECS: u64 = 3600;

pub(crate) struct SelfSigned {
    key: ServiceAccount,
    audience: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// `https://host[:port]/*`: the whole upstream origin.
pub(crate) fn audience_for(upstream: &Url) -> String {
    format!("{}/*", upstream.origin().ascii_serialization())
}

impl SelfSigned {
    pub(crate) fn new(key: ServiceAccount, upstream: &Url) -> SelfSigned {
        SelfSigned {
            key,
            audience: audience_for(upstream),
        }
    }

    fn sign(&self) -> Result<IdToken, FetchError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let email = self.key.client_email();
        let claims = Claims {
            iss: email,
            sub: email,
            aud: &self.audience,
            iat,
            exp: iat + LIFETIME_SECS,
        };
        let jwt = self
            .key
            .signer()
            .sign(&claims)
            .map_err(|e| FetchError::Sign {
                path: self.key.path().to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(IdToken::from_jwt(&jwt)?)
    }
}

impl TokenSource for SelfSigned {
    fn describe(&self) -> String {
        format!(
            "self-signed JWT for {} from key file {} ({})",
            self.audience,
            self.key.path().display(),
            self.key.client_email()
        )
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(async move { self.sign() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_is_the_origin_prefix() {
        let u = Url::parse("https://app.example.com/some/path").unwrap();
        assert_eq!(audience_for(&u), "https://app.example.com/*");
        let u = Url::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(audience_for(&u), "https://127.0.0.1:8443/*");
    }
}
