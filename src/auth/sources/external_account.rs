//! `external_account` files (workload identity federation): a subject token from a file,
//! a URL or an executable is exchanged at STS for a federated access token, which then
//! impersonates the file's service account (an ID token needs a service account).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::executable::parse_executable_response;
use super::impersonated;
use crate::auth::access_token::{AccessToken, AccessTokenSource, CLOUD_PLATFORM};
use crate::auth::error::AuthError;
use crate::auth::file::CredFile;
use crate::auth::token::Secret;
use crate::auth::token_http::{self, TokenHttp};
use crate::config::Env;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub(crate) const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
/// Google's libraries default to 30 s and accept 5 s to 120 s.
const DEFAULT_EXEC_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    Text,
    Json(String),
}

/// No `Debug`: a URL source's headers may carry a credential.
enum Subject {
    File(PathBuf, Format),
    Url(Url, Vec<(HeaderName, HeaderValue)>, Format),
    Executable {
        command: String,
        timeout: Duration,
        output_file: Option<PathBuf>,
    },
}

/// STS-exchanged access tokens for a workload identity pool provider.
pub(crate) struct ExternalAccount {
    path: PathBuf,
    audience: String,
    subject_token_type: String,
    token_url: Url,
    subject: Subject,
    /// Where the file says to impersonate: (email, generateIdToken URL on that host).
    pub(crate) impersonation: Option<(String, Url)>,
    env: Env,
    http: TokenHttp,
}

impl ExternalAccount {
    pub(crate) fn from_file(
        file: &CredFile,
        env: &Env,
        http: TokenHttp,
    ) -> Result<ExternalAccount, AuthError> {
        let source = file.nested("credential_source")?;
        let problem = |field: &'static str, what: &str| file.problem(field, what);
        if source
            .optional("environment_id")
            .ok()
            .flatten()
            .is_some_and(|id| id.starts_with("aws"))
        {
            return Err(AuthError::Unsupported {
                path: file.path.clone(),
                reason: "AWS workload identity federation (credential_source.environment_id \
                         `aws…`) is not supported; use a file, url or executable credential \
                         source, or run iap-proxy with --credentials gcloud"
                    .into(),
            });
        }
        let format = match source.fields.get("format") {
            None | Some(Value::Null) => Format::Text,
            Some(Value::Object(f)) => match f.get("type").and_then(Value::as_str) {
                None | Some("text") => Format::Text,
                Some("json") => match f.get("subject_token_field_name").and_then(Value::as_str) {
                    Some(name) if !name.is_empty() => Format::Json(name.to_owned()),
                    _ => {
                        return Err(problem(
                            "credential_source.format.subject_token_field_name",
                            "is required when format.type is \"json\"",
                        ));
                    }
                },
                Some(_) => {
                    return Err(problem(
                        "credential_source.format.type",
                        "must be \"text\" or \"json\"",
                    ));
                }
            },
            Some(_) => return Err(problem("credential_source.format", "must be an object")),
        };
        let subject = if let Some(path) = source.optional("file")? {
            Subject::File(PathBuf::from(path), format)
        } else if let Some(raw) = source.optional("url")? {
            // Plain http is normal here (Azure's and other clouds' metadata endpoints).
            let url = Url::parse(raw).map_err(|e| {
                problem(
                    "credential_source.url",
                    &format!("is not a valid URL ({e})"),
                )
            })?;
            let mut headers = Vec::new();
            if let Some(Value::Object(h)) = source.fields.get("headers") {
                for (name, value) in h {
                    let pair = value.as_str().and_then(|v| {
                        Some((
                            HeaderName::try_from(name.as_str()).ok()?,
                            HeaderValue::try_from(v).ok()?,
                        ))
                    });
                    headers.push(pair.ok_or_else(|| {
                        problem(
                            "credential_source.headers",
                            "must map header names to string values",
                        )
                    })?);
                }
            }
            Subject::Url(url, headers, format)
        } else if let Some(Value::Object(exec)) = source.fields.get("executable") {
            if env.get(ALLOW_EXECUTABLES) != Some("1") {
                return Err(AuthError::Unsupported {
                    path: file.path.clone(),
                    reason: format!(
                        "its credential_source runs an executable, which is allowed only when \
                         {ALLOW_EXECUTABLES}=1 is set in the environment; set it if you trust the command"
                    ),
                });
            }
            let command = exec
                .get("command")
                .and_then(Value::as_str)
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| problem("credential_source.executable.command", "is missing"))?;
            let timeout_ms = match exec.get("timeout_millis") {
                None | Some(Value::Null) => DEFAULT_EXEC_TIMEOUT_MS,
                Some(v) => v
                    .as_u64()
                    .filter(|ms| (5_000..=120_000).contains(ms))
                    .ok_or_else(|| {
                        problem(
                            "credential_source.executable.timeout_millis",
                            "must be a number of milliseconds between 5000 and 120000",
                        )
                    })?,
            };
            let output_file = exec
                .get("output_file")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            Subject::Executable {
                command: command.to_owned(),
                timeout: Duration::from_millis(timeout_ms),
                output_file,
            }
        } else {
            return Err(problem(
                "credential_source",
                "has none of `file`, `url` or `executable`",
            ));
        };
        let impersonation = match file.optional("service_account_impersonation_url")? {
            None => None,
            Some(raw) => Some(impersonated::from_access_token_url(raw).ok_or_else(|| {
                problem(
                    "service_account_impersonation_url",
                    "must be an https URL ending /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken",
                )
            })?),
        };
        Ok(ExternalAccount {
            path: file.path.clone(),
            audience: file.string("audience")?.to_owned(),
            subject_token_type: file.string("subject_token_type")?.to_owned(),
            token_url: file.endpoint("token_url", Some("https://sts.googleapis.com/v1/token"))?,
            subject,
            impersonation,
            env: env.clone(),
            http,
        })
    }

    async fn subject_token(&self) -> Result<Secret, AuthError> {
        match &self.subject {
            Subject::File(path, format) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| AuthError::Subject {
                        path: self.path.clone(),
                        reason: format!(
                            "cannot read the subject token file {}: {e}",
                            path.display()
                        ),
                    })?;
                self.extract(&bytes, format, &path.display().to_string())
            }
            Subject::Url(url, headers, format) => {
                let response = self.http.get(url, headers).await?;
                if !response.status.is_success() {
                    return Err(token_http::rejected(url, &response));
                }
                self.extract(&response.body, format, &token_http::endpoint_name(url))
            }
            Subject::Executable {
                command,
                timeout,
                output_file,
            } => {
                self.run_executable(command, *timeout, output_file.as_deref())
                    .await
            }
        }
    }

    fn extract(&self, bytes: &[u8], format: &Format, from: &str) -> Result<Secret, AuthError> {
        let bad = |reason: String| AuthError::Subject {
            path: self.path.clone(),
            reason,
        };
        let token = match format {
            Format::Text => String::from_utf8_lossy(bytes).trim().to_owned(),
            Format::Json(field) => {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|_| bad(format!("the subject token from {from} is not JSON")))?;
                v.get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        bad(format!(
                            "the JSON from {from} has no string field `{field}`"
                        ))
                    })?
            }
        };
        if token.is_empty() {
            return Err(bad(format!("the subject token from {from} is empty")));
        }
        Ok(Secret::new(token))
    }

    async fn run_executable(
        &self,
        command: &str,
        timeout: Duration,
        output_file: Option<&Path>,
    ) -> Result<Secret, AuthError> {
        let fail = |reason: String| AuthError::Subject {
            path: self.path.clone(),
            reason,
        };
        if let Some(cached) = output_file.and_then(|p| std::fs::read(p).ok()) {
            // A stale or broken cache is not an error: the executable is asked again.
            if let Ok(Some(token)) = parse_executable_response(&cached, true) {
                return Ok(token);
            }
        }
        let mut words = command.split_whitespace();
        let program = words.next().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(words)
            .env_clear()
            .envs(self.env.vars())
            .env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", &self.audience)
            .env(
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
                &self.subject_token_type,
            )
            .env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(p) = output_file {
            cmd.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", p);
        }
        if let Some((email, _)) = &self.impersonation {
            cmd.env("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", email);
        }
        let output = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| {
                fail(format!(
                    "the executable `{program}` did not finish within {timeout:?}"
                ))
            })?
            .map_err(|e| fail(format!("cannot run the executable `{program}`: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let head: Vec<&str> = stderr.lines().take(3).collect();
            return Err(fail(format!(
                "the executable `{program}` failed ({}): {}",
                output.status,
                token_http::scrub_text(&head.join(" | "))
            )));
        }
        match parse_executable_response(&output.stdout, false) {
            Ok(Some(token)) => Ok(token),
            Ok(None) => Err(fail(format!(
                "the executable `{program}` returned an expired token"
            ))),
            Err(reason) => Err(fail(format!("the executable `{program}`: {reason}"))),
        }
    }

    async fn exchange(&self) -> Result<AccessToken, AuthError> {
        let subject = self.subject_token().await?;
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", self.audience.as_str()),
            ("scope", CLOUD_PLATFORM),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.expose()),
            ("subject_token_type", self.subject_token_type.as_str()),
        ];
        let response = self.http.post_form(&self.token_url, &form).await?;
        if !response.status.is_success() {
            return Err(token_http::rejected(&self.token_url, &response));
        }
        let answer: Value = serde_json::from_slice(&response.body)
            .map_err(|_| AuthError::BadToken("the STS answer is not JSON".into()))?;
        AccessToken::from_answer(&answer, &token_http::endpoint_name(&self.token_url))
    }
}

impl AccessTokenSource for ExternalAccount {
    fn describe(&self) -> String {
        format!(
            "external_account file {} (provider {})",
            self.path.display(),
            self.audience
        )
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, AuthError>> {
        Box::pin(self.exchange())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token_http::test_server;
    use serde_json::json;

    fn load(source: Value, env: &[(&str, &str)]) -> Result<ExternalAccount, AuthError> {
        let v = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": source,
        });
        let file = CredFile::parse(Path::new("/w.json"), v.to_string().as_bytes()).unwrap();
        ExternalAccount::from_file(
            &file,
            &Env::from_pairs(env.iter().copied()),
            test_server::client(),
        )
    }

    #[test]
    fn credential_source_errors_name_the_field() {
        let cases = [
            (
                json!({"file": "/t", "format": {"type": "json"}}),
                "credential_source.format.subject_token_field_name",
            ),
            (
                json!({"file": "/t", "format": {"type": "xml"}}),
                "credential_source.format.type",
            ),
            (
                json!({"url": "http://169.254.169.254/t", "headers": {"bad header": "v"}}),
                "credential_source.headers",
            ),
            (
                json!({"executable": {"command": "/bin/x", "timeout_millis": 10}}),
                "timeout_millis",
            ),
            (
                json!({"executable": {}}),
                "credential_source.executable.command",
            ),
            (json!({}), "none of `file`, `url` or `executable`"),
        ];
        let allow = [(ALLOW_EXECUTABLES, "1")];
        for (source, want) in cases {
            let err = load(source.clone(), &allow)
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains("/w.json") && err.contains(want),
                "{source}: {err}"
            );
        }
        let ok = load(
            json!({"url": "http://169.254.169.254/t", "headers": {"Metadata": "True"}}),
            &[],
        )
        .unwrap();
        let (email, url) = ok.impersonation.clone().unwrap();
        assert_eq!(email, "sa@p.iam.gserviceaccount.com");
        assert_eq!(
            url.path(),
            "/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateIdToken"
        );
    }
}
