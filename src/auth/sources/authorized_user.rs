//! `authorized_user` files (from `gcloud auth application-default login`): a refresh-token
//! grant yields an access token, and an ID token whose audience is the file's own client ID.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::fmt;
use url::Url;

use crate::auth::access_token::{AccessToken, AccessTokenSource};
use crate::auth::answer::TokenAnswer;
use crate::auth::error::{BadToken, CredPath, CredentialError, FetchError};
use crate::auth::file::CredFile;
use crate::auth::redact::{Secret, endpoint_name};
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::token_http::TokenHttp;

pub(crate) const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The fields of an `authorized_user` file that the proxy uses.
#[derive(Deserialize)]
struct UserFile {
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
}

/// A user's refresh token and the OAuth client it was issued to.
pub(crate) struct AuthorizedUser {
    file: CredPath,
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_uri: Url,
    http: TokenHttp,
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("path", &self.file.path)
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl AuthorizedUser {
    pub(crate) fn from_file(
        file: &CredFile,
        http: TokenHttp,
    ) -> Result<AuthorizedUser, CredentialError> {
        let f: UserFile = file.fields()?;
        Ok(AuthorizedUser {
            file: file.name(),
            client_id: file.required("client_id", f.client_id)?,
            client_secret: Secret::new(file.required("client_secret", f.client_secret)?),
            refresh_token: Secret::new(file.required("refresh_token", f.refresh_token)?),
            token_uri: file.endpoint("token_uri", f.token_uri, Some(DEFAULT_TOKEN_URI))?,
            http,
        })
    }

    /// The IAP programmatic-access case: the user's ID token carries `aud` = the file's
    /// client ID, so it is only useful when that is the audience asked for.
    pub(crate) fn id_token_source(self, audience: &str) -> Result<UserIdToken, CredentialError> {
        if audience != self.client_id {
            return Err(CredentialError::UserAudience {
                file: self.file,
                client_id: self.client_id,
                audience: audience.to_owned(),
            });
        }
        Ok(UserIdToken(self))
    }

    async fn refresh(&self) -> Result<TokenAnswer, FetchError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", self.refresh_token.expose()),
        ];
        self.http.post_form_json(&self.token_uri, &form).await
    }
}

impl AccessTokenSource for AuthorizedUser {
    fn describe(&self) -> String {
        format!(
            "authorized_user file {} (client {})",
            self.file.path.display(),
            self.client_id
        )
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(async move {
            let answer = self.refresh().await?;
            AccessToken::from_answer(answer, &endpoint_name(&self.token_uri))
        })
    }
}

/// The user's own ID token, for an audience equal to the file's client ID.
pub(crate) struct UserIdToken(AuthorizedUser);

impl TokenSource for UserIdToken {
    fn describe(&self) -> String {
        AccessTokenSource::describe(&self.0)
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(async move {
            let answer = self.0.refresh().await?;
            let raw = answer.id_token.ok_or(BadToken::NoIdTokenForUser)?;
            IdToken::issued_for(raw.expose(), &self.0.client_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::error::{FieldProblem, JsonKind};
    use crate::auth::test_server;
    use std::path::Path;

    fn load(json: serde_json::Value) -> Result<AuthorizedUser, CredentialError> {
        let bytes = json.to_string();
        let file = CredFile::parse(
            Path::new("/adc.json"),
            crate::auth::error::FoundBy::flag(),
            bytes.as_bytes(),
        )?;
        AuthorizedUser::from_file(&file, test_server::client())
    }

    #[test]
    fn reads_the_file_and_hides_its_secrets() {
        let user = load(serde_json::json!({
            "type": "authorized_user", "client_id": "c.apps", "client_secret": "shh-secret",
            "refresh_token": "1//0refresh-token", "quota_project_id": "p", "extra": {"x": 1},
        }))
        .unwrap();
        assert_eq!(user.token_uri.as_str(), DEFAULT_TOKEN_URI);
        let debug = format!("{user:?}");
        assert!(!debug.contains("shh") && !debug.contains("1//0"), "{debug}");
        let err = user.id_token_source("other-aud").err().unwrap();
        assert!(
            matches!(err, CredentialError::UserAudience { .. }),
            "{err:?}"
        );

        let err = load(serde_json::json!({
            "client_id": "c", "client_secret": "s", "refresh_token": {"t": "1//0refresh-token"},
        }))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`refresh_token`") && !text.contains("1//0"),
            "{text}"
        );
        assert!(matches!(
            err,
            CredentialError::Field {
                problem: FieldProblem::WrongType {
                    found: JsonKind::Object
                },
                ..
            }
        ));
        let err = load(serde_json::json!({"client_id": "c", "client_secret": " "})).unwrap_err();
        assert!(matches!(
            err,
            CredentialError::Field {
                problem: FieldProblem::Empty,
                ..
            }
        ));
    }
}
