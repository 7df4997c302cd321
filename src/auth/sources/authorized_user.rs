//! `authorized_user` files (from `gcloud auth application-default login`): a refresh-token
//! grant yields an access token, and an ID token whose audience is the file's own client ID.

use std::fmt;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use serde_json::Value;
use url::Url;

use crate::auth::access_token::{AccessToken, AccessTokenSource};
use crate::auth::error::AuthError;
use crate::auth::file::CredFile;
use crate::auth::jwt;
use crate::auth::token::{IdToken, Secret, TokenSource};
use crate::auth::token_http::{self, TokenHttp};

pub(crate) const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A user's refresh token and the OAuth client it was issued to.
pub(crate) struct AuthorizedUser {
    path: PathBuf,
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_uri: Url,
    http: TokenHttp,
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl AuthorizedUser {
    pub(crate) fn from_file(file: &CredFile, http: TokenHttp) -> Result<AuthorizedUser, AuthError> {
        Ok(AuthorizedUser {
            path: file.path.clone(),
            client_id: file.string("client_id")?.to_owned(),
            client_secret: Secret::new(file.string("client_secret")?),
            refresh_token: Secret::new(file.string("refresh_token")?),
            token_uri: file.endpoint("token_uri", Some(DEFAULT_TOKEN_URI))?,
            http,
        })
    }

    /// The IAP programmatic-access case: the user's ID token carries `aud` = the file's
    /// client ID, so it is only useful when that is the audience asked for.
    pub(crate) fn id_token_source(self, audience: &str) -> Result<UserIdToken, AuthError> {
        if audience != self.client_id {
            return Err(AuthError::UserAudience {
                path: self.path,
                client_id: self.client_id,
                audience: audience.to_owned(),
            });
        }
        Ok(UserIdToken(self))
    }

    async fn refresh(&self) -> Result<Value, AuthError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", self.refresh_token.expose()),
        ];
        let response = self.http.post_form(&self.token_uri, &form).await?;
        if !response.status.is_success() {
            return Err(token_http::rejected(&self.token_uri, &response));
        }
        serde_json::from_slice(&response.body)
            .map_err(|_| AuthError::BadToken("the token endpoint's answer is not JSON".into()))
    }
}

impl AccessTokenSource for AuthorizedUser {
    fn describe(&self) -> String {
        format!(
            "authorized_user file {} (client {})",
            self.path.display(),
            self.client_id
        )
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let answer = self.refresh().await?;
            AccessToken::from_answer(&answer, &token_http::endpoint_name(&self.token_uri))
        })
    }
}

/// The user's own ID token, for an audience equal to the file's client ID.
pub(crate) struct UserIdToken(AuthorizedUser);

impl TokenSource for UserIdToken {
    fn describe(&self) -> String {
        AccessTokenSource::describe(&self.0)
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>> {
        Box::pin(async move {
            let answer = self.0.refresh().await?;
            let Some(raw) = answer.get("id_token").and_then(Value::as_str) else {
                return Err(AuthError::BadToken(
                    "the refresh-token answer has no `id_token` (was the login made with the openid scope? \
                     run `gcloud auth application-default login` again)"
                        .into(),
                ));
            };
            let token = IdToken::from_jwt(raw)?;
            jwt::check_audience(&jwt::unverified_claims(token.expose())?, &self.0.client_id)?;
            Ok(token)
        })
    }
}
