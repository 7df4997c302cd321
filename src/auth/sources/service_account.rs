//! A service-account key file: sign a JWT assertion asking for an ID token for the IAP
//! audience, and trade it at the file's `token_uri`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::access_token::{AccessToken, CLOUD_PLATFORM};
use crate::auth::answer::TokenAnswer;
use crate::auth::error::{BadToken, CredentialError, FetchError, FieldProblem};
use crate::auth::file::CredFile;
use crate::auth::jwt::RsaSigner;
use crate::auth::redact::{Secret, endpoint_name};
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::token_http::TokenHttp;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google refuses assertions valid for longer than an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// The fields of a `service_account` key file that the proxy uses.
#[derive(Deserialize)]
struct KeyFile {
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// Credentials from a `service_account` key file, checked when loaded.
pub(crate) struct ServiceAccount {
    path: PathBuf,
    client_email: String,
    signer: RsaSigner,
    /// As written in the file: Google compares the assertion's `aud` with it verbatim.
    token_uri_raw: String,
    token_uri: Url,
    audience: String,
    http: TokenHttp,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("path", &self.path)
            .field("client_email", &self.client_email)
            .field("signer", &self.signer)
            .field("token_uri", &self.token_uri_raw)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The assertion's claims: `target_audience` buys an ID token, `scope` an access token.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_audience: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    iat: u64,
    exp: u64,
}

impl ServiceAccount {
    /// Loads and validates a key object, a whole file or one nested in another
    /// (`source_credentials`), so a bad key stops start-up with a message naming the file
    /// and the field, and never quoting the key.
    pub(crate) fn from_cred_file(
        file: &CredFile,
        audience: &str,
        http: TokenHttp,
    ) -> Result<Self, CredentialError> {
        let kind = file.kind()?;
        if kind != "service_account" {
            return Err(CredentialError::UnsupportedType {
                file: file.name(),
                kind: kind.chars().take(64).collect(),
            });
        }
        let f: KeyFile = file.fields()?;
        let client_email = file.required("client_email", f.client_email)?;
        let private_key = Secret::new(file.required("private_key", f.private_key)?);
        let private_key_id = file.required("private_key_id", f.private_key_id)?;
        let token_uri_raw = file.required("token_uri", f.token_uri)?;
        let signer = RsaSigner::from_pem(private_key.expose(), private_key_id)
            .map_err(|_| file.problem("private_key", FieldProblem::NotAnRsaKey))?;
        let token_uri = file.endpoint("token_uri", Some(token_uri_raw.clone()), None)?;
        Ok(ServiceAccount {
            path: file.path.clone(),
            client_email,
            signer,
            token_uri_raw,
            token_uri,
            audience: audience.to_owned(),
            http,
        })
    }

    pub(crate) fn client_email(&self) -> &str {
        &self.client_email
    }

    pub(crate) fn signer(&self) -> &RsaSigner {
        &self.signer
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    async fn fetch_token(&self) -> Result<IdToken, FetchError> {
        let answer = self.exchange(Some(&self.audience), None).await?;
        let raw = answer.id_token.ok_or(BadToken::NoIdTokenForKey)?;
        IdToken::issued_for(raw.expose(), &self.audience)
    }

    /// The same assertion with `scope` instead of `target_audience` buys an access token.
    async fn fetch_access_token(&self) -> Result<AccessToken, FetchError> {
        let answer = self.exchange(None, Some(CLOUD_PLATFORM)).await?;
        AccessToken::from_answer(answer, &endpoint_name(&self.token_uri))
    }

    /// Signs a jwt-bearer assertion and trades it at `token_uri`.
    async fn exchange(
        &self,
        target_audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<TokenAnswer, FetchError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = AssertionClaims {
            iss: &self.client_email,
            aud: &self.token_uri_raw,
            target_audience,
            scope,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        let assertion = self.signer.sign(&claims).map_err(|e| FetchError::Sign {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let form = [
            ("grant_type", GRANT_TYPE),
            ("assertion", assertion.as_str()),
        ];
        self.http.post_form_json(&self.token_uri, &form).await
    }
}

// Fully qualified so that `describe` stays unambiguous where `TokenSource` is in scope.
impl crate::auth::access_token::AccessTokenSource for ServiceAccount {
    fn describe(&self) -> String {
        TokenSource::describe(self)
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(self.fetch_access_token())
    }
}

impl TokenSource for ServiceAccount {
    fn describe(&self) -> String {
        format!(
            "service account key file {} ({})",
            self.path.display(),
            self.client_email
        )
    }

    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(self.fetch_token())
    }
}

#[cfg(test)]
#[path = "service_account_tests.rs"]
mod tests;
