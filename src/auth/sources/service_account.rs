//! A service-account key file: sign a JWT assertion asking for an ID token for the IAP
//! audience, and trade it at the file's `token_uri`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};
use url::Url;

use crate::auth::access_token::{AccessToken, CLOUD_PLATFORM};
use crate::auth::error::AuthError;
use crate::auth::file::CredFile;
use crate::auth::jwt::{self, RsaSigner};
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::token_http::{self, TokenHttp};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google refuses assertions valid for longer than an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

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

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    target_audience: &'a str,
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
    ) -> Result<Self, AuthError> {
        let (path, fields) = (file.path.as_path(), &file.fields);
        let field_error = |field: &'static str, problem: &str| AuthError::Field {
            path: path.to_path_buf(),
            field,
            problem: problem.to_owned(),
        };
        let kind = string_field(fields, "type").map_err(|problem| {
            field_error("type", &format!("{problem} (expected \"service_account\")"))
        })?;
        if kind != "service_account" {
            let kind = kind.chars().take(64).collect();
            return Err(AuthError::UnsupportedType {
                path: path.to_path_buf(),
                kind,
            });
        }
        let get =
            |field: &'static str| string_field(fields, field).map_err(|p| field_error(field, p));
        let client_email = get("client_email")?;
        let private_key = get("private_key")?;
        let private_key_id = get("private_key_id")?;
        let token_uri_raw = get("token_uri")?;
        let signer = RsaSigner::from_pem(private_key, private_key_id)
            .map_err(|_| field_error("private_key", "is not a PEM-encoded RSA private key"))?;
        let token_uri = token_http::check_endpoint(token_uri_raw).map_err(|e| match e {
            AuthError::BadEndpoint { reason, .. } => {
                field_error("token_uri", &format!("is not a valid URL ({reason})"))
            }
            other => other,
        })?;
        Ok(ServiceAccount {
            path: path.to_path_buf(),
            client_email: client_email.to_owned(),
            signer,
            token_uri_raw: token_uri_raw.trim().to_owned(),
            token_uri,
            audience: audience.to_owned(),
            http,
        })
    }

    async fn fetch_token(&self) -> Result<IdToken, AuthError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = AssertionClaims {
            iss: &self.client_email,
            aud: &self.token_uri_raw,
            target_audience: &self.audience,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        let answer = self.exchange(&claims).await?;
        let Some(raw) = answer.get("id_token").and_then(Value::as_str) else {
            return Err(AuthError::BadToken(
                "the answer has no `id_token` (does the key file belong to a service account?)"
                    .into(),
            ));
        };
        let token = IdToken::from_jwt(raw)?;
        jwt::check_audience(&jwt::unverified_claims(token.expose())?, &self.audience)?;
        Ok(token)
    }
}

impl ServiceAccount {
    pub(crate) fn client_email(&self) -> &str {
        &self.client_email
    }

    pub(crate) fn signer(&self) -> &RsaSigner {
        &self.signer
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Signs `claims` as a jwt-bearer assertion and trades it at `token_uri`.
    async fn exchange(&self, claims: &impl Serialize) -> Result<Value, AuthError> {
        let assertion = self.signer.sign(claims).map_err(|e| AuthError::Sign {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let form = [
            ("grant_type", GRANT_TYPE),
            ("assertion", assertion.as_str()),
        ];
        let response = self.http.post_form(&self.token_uri, &form).await?;
        if !response.status.is_success() {
            return Err(token_http::rejected(&self.token_uri, &response));
        }
        serde_json::from_slice(&response.body)
            .map_err(|_| AuthError::BadToken("the token endpoint's answer is not JSON".into()))
    }

    /// The same assertion with `scope` instead of `target_audience` buys an access token.
    async fn fetch_access_token(&self) -> Result<AccessToken, AuthError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = ScopeClaims {
            iss: &self.client_email,
            aud: &self.token_uri_raw,
            scope: CLOUD_PLATFORM,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        let answer = self.exchange(&claims).await?;
        AccessToken::from_answer(&answer, &token_http::endpoint_name(&self.token_uri))
    }
}

#[derive(Serialize)]
struct ScopeClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
}

// Fully qualified so that `describe` stays unambiguous where `TokenSource` is in scope.
impl crate::auth::access_token::AccessTokenSource for ServiceAccount {
    fn describe(&self) -> String {
        TokenSource::describe(self)
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, AuthError>> {
        Box::pin(self.fetch_access_token())
    }
}

/// A required, non-empty string field; the error is the problem, worded for a message.
fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, &'static str> {
    match fields.get(name) {
        None | Some(Value::Null) => Err("is missing"),
        Some(Value::String(s)) if s.trim().is_empty() => Err("is empty"),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err("must be a string"),
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

    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>> {
        Box::pin(self.fetch_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token_http::test_server;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use serde_json::json;

    fn key_file(key: &rcgen::KeyPair, token_uri: &str) -> Value {
        json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "kid-123",
            "private_key": key.serialize_pem(),
            "client_email": "sa@proj.iam.gserviceaccount.com",
            "client_id": "1234",
            "token_uri": token_uri,
        })
    }

    /// A key file's bytes through the same path `from_file` takes.
    fn from_json(
        path: &Path,
        bytes: &[u8],
        audience: &str,
        http: TokenHttp,
    ) -> Result<ServiceAccount, AuthError> {
        ServiceAccount::from_cred_file(&CredFile::parse(path, bytes)?, audience, http)
    }

    fn load(file: &Value) -> Result<ServiceAccount, AuthError> {
        let bytes = serde_json::to_vec(file).unwrap();
        from_json(
            Path::new("/keys/sa.json"),
            &bytes,
            "aud-1",
            test_server::client(),
        )
    }

    fn rsa() -> rcgen::KeyPair {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
    }

    #[test]
    fn names_each_missing_or_empty_field() {
        let key = rsa();
        for field in [
            "type",
            "client_email",
            "private_key",
            "private_key_id",
            "token_uri",
        ] {
            for value in [None, Some(json!("")), Some(json!(7))] {
                let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
                match &value {
                    None => drop(file.as_object_mut().unwrap().remove(field)),
                    Some(v) => file[field] = v.clone(),
                }
                match load(&file).unwrap_err() {
                    AuthError::Field {
                        field: named, path, ..
                    } => {
                        assert_eq!((named, path.as_path()), (field, Path::new("/keys/sa.json")));
                    }
                    other => panic!("{field} {value:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn malformed_json_names_the_file_not_the_content() {
        let tests = from_json(
            Path::new("/k.json"),
            b"{\"secret\": oops",
            "a",
            test_server::client(),
        );
        let err = tests.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AuthError::Malformed { .. }), "{err:?}");
        assert!(
            text.contains("/k.json") && text.contains("line 1") && !text.contains("oops"),
            "{text}"
        );
        let err = CredFile::read(Path::new("/nonexistent/sa.json")).err();
        assert!(matches!(err, Some(AuthError::ReadFile { .. })));
    }

    #[test]
    fn wrong_type_and_bad_key_and_endpoints() {
        let key = rsa();
        let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
        file["type"] = json!("authorized_user");
        let err = load(&file).unwrap_err();
        assert!(
            matches!(&err, AuthError::UnsupportedType { kind, .. } if kind == "authorized_user")
        );

        let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
        file["private_key"] =
            json!("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
        let err = load(&file).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Field {
                    field: "private_key",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            !err.to_string().contains("bm90") && err.to_string().contains("RSA"),
            "{err}"
        );

        let err = load(&key_file(&key, "http://oauth2.googleapis.com/token")).unwrap_err();
        assert!(matches!(err, AuthError::InsecureEndpoint { .. }), "{err:?}");
        let err = load(&key_file(&key, "::nope")).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Field {
                    field: "token_uri",
                    ..
                }
            ),
            "{err:?}"
        );
        let sa = load(&key_file(&key, "http://127.0.0.1:9/token")).unwrap();
        assert_eq!(
            sa.describe(),
            "service account key file /keys/sa.json (sa@proj.iam.gserviceaccount.com)"
        );
        let debug = format!("{sa:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && debug.contains("kid-123"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn fetch_trades_a_signed_assertion_for_an_id_token() {
        let key = rsa();
        let public = DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap();
        let issuer = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap();
        let addr = test_server::serve(move |req| {
            let form: Map<String, Value> = url::form_urlencoded::parse(req.body())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            assert_eq!(form["grant_type"], GRANT_TYPE);
            let assertion = form["assertion"].as_str().unwrap();
            let header = jsonwebtoken::decode_header(assertion).unwrap();
            assert_eq!(header.kid.as_deref(), Some("kid-123"));
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_audience(&[format!("http://{}/token", req.headers()["host"].to_str().unwrap())]);
            let claims = jsonwebtoken::decode::<Value>(assertion, &public, &validation).unwrap().claims;
            assert_eq!(claims["iss"], "sa@proj.iam.gserviceaccount.com");
            assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
            let aud = claims["target_audience"].as_str().unwrap();
            if aud == "deny" {
                let body = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
                return http::Response::builder().status(400).body(body.to_owned()).unwrap();
            }
            let id = json!({"aud": if aud == "mismatch" { "other" } else { aud }, "exp": 4_000_000_000u64});
            let id_token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &id, &issuer).unwrap();
            http::Response::new(json!({ "id_token": id_token }).to_string())
        })
        .await;
        let file = key_file(&key, &format!("http://{addr}/token"));
        let source = |audience: &str| {
            let bytes = serde_json::to_vec(&file).unwrap();
            from_json(
                Path::new("/k.json"),
                &bytes,
                audience,
                test_server::client(),
            )
            .unwrap()
        };
        let token = source("aud-1").fetch().await.unwrap();
        assert_eq!(
            jwt::unverified_claims(token.expose())
                .unwrap()
                .aud
                .as_deref(),
            Some("aud-1")
        );

        let err = source("deny").fetch().await.unwrap_err();
        assert!(
            matches!(err, AuthError::Rejected { status: 400, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("invalid_grant: Invalid JWT Signature."),
            "{err}"
        );
        let err = source("mismatch").fetch().await.unwrap_err();
        assert!(
            matches!(err, AuthError::BadToken(_)) && err.to_string().contains("`other`"),
            "{err}"
        );
    }
}
