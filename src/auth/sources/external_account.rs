//! `external_account` files (workload identity federation): a subject token from a file,
//! a URL or an executable is exchanged at STS for a federated access token, which then
//! impersonates the file's service account (an ID token needs a service account).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::executable::{Asked, Executable};
use super::impersonated;
use super::subject::{Format, Subject};
use crate::auth::access_token::{AccessToken, AccessTokenSource, CLOUD_PLATFORM};
use crate::auth::answer::TokenAnswer;
use crate::auth::error::{CredentialError, FetchError, FieldProblem, Unsupported};
use crate::auth::file::CredFile;
use crate::auth::redact::endpoint_name;
use crate::auth::token_http::TokenHttp;
use crate::config::Env;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
pub(crate) const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
/// Google's libraries default to 30 s and accept 5 s to 120 s.
const DEFAULT_EXEC_TIMEOUT_MS: f64 = 30_000.0;
const EXEC_TIMEOUT_MS: std::ops::RangeInclusive<f64> = 5_000.0..=120_000.0;

/// The fields of an `external_account` file that the proxy uses.
#[derive(Deserialize)]
struct ExternalFile {
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    credential_source: Option<CredentialSource>,
}

#[derive(Deserialize)]
struct CredentialSource {
    environment_id: Option<String>,
    file: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    executable: Option<ExecutableSource>,
    format: Option<FormatField>,
}

#[derive(Deserialize)]
struct FormatField {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

#[derive(Deserialize)]
struct ExecutableSource {
    command: Option<String>,
    /// A number, not `u64`, so that `-5` or `1.5` is "out of range", not a type error.
    timeout_millis: Option<f64>,
    output_file: Option<String>,
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
    ) -> Result<ExternalAccount, CredentialError> {
        let f: ExternalFile = file.fields()?;
        let source = f
            .credential_source
            .ok_or_else(|| file.problem("credential_source", FieldProblem::Missing))?;
        let subject = subject(file, source, env)?;
        let field = "service_account_impersonation_url";
        let impersonation = match file.optional(field, f.service_account_impersonation_url)? {
            None => None,
            Some(raw) => Some(
                impersonated::from_access_token_url(&raw)
                    .ok_or_else(|| file.problem(field, FieldProblem::NotAnImpersonationUrl))?,
            ),
        };
        Ok(ExternalAccount {
            path: file.path.clone(),
            audience: file.required("audience", f.audience)?,
            subject_token_type: file.required("subject_token_type", f.subject_token_type)?,
            token_url: file.endpoint("token_url", f.token_url, Some(DEFAULT_TOKEN_URL))?,
            subject,
            impersonation,
            env: env.clone(),
            http,
        })
    }

    async fn exchange(&self) -> Result<AccessToken, FetchError> {
        let asked = Asked {
            env: &self.env,
            audience: &self.audience,
            token_type: &self.subject_token_type,
            impersonated_email: self.impersonation.as_ref().map(|(email, _)| email.as_str()),
        };
        let subject = self.subject.token(&self.path, &self.http, &asked).await?;
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", self.audience.as_str()),
            ("scope", CLOUD_PLATFORM),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.expose()),
            ("subject_token_type", self.subject_token_type.as_str()),
        ];
        let answer: TokenAnswer = self.http.post_form_json(&self.token_url, &form).await?;
        AccessToken::from_answer(answer, &endpoint_name(&self.token_url))
    }
}

/// The subject token's source, from `credential_source`.
fn subject(
    file: &CredFile,
    source: CredentialSource,
    env: &Env,
) -> Result<Subject, CredentialError> {
    let problem = |field: &str, p| file.problem(&format!("credential_source.{field}"), p);
    let text = |field: &str, value| file.optional(&format!("credential_source.{field}"), value);
    if source
        .environment_id
        .is_some_and(|id| id.starts_with("aws"))
    {
        return Err(CredentialError::Unsupported {
            file: file.name(),
            what: Unsupported::Aws,
        });
    }
    let format = match source.format {
        None => Format::Text,
        Some(FormatField {
            kind,
            subject_token_field_name,
        }) => match kind.as_deref() {
            None | Some("text") => Format::Text,
            Some("json") => match text("format.subject_token_field_name", subject_token_field_name)
            {
                Ok(Some(name)) => Format::Json(name),
                _ => {
                    return Err(problem(
                        "format.subject_token_field_name",
                        FieldProblem::NeededForJsonFormat,
                    ));
                }
            },
            Some(_) => return Err(problem("format.type", FieldProblem::NotTextOrJson)),
        },
    };
    if let Some(path) = text("file", source.file)? {
        return Ok(Subject::File(PathBuf::from(path), format));
    }
    if let Some(raw) = text("url", source.url)? {
        // Plain http is normal here (Azure's and other clouds' metadata endpoints).
        let url = Url::parse(&raw).map_err(|e| problem("url", FieldProblem::BadUrl(e)))?;
        let headers = source
            .headers
            .unwrap_or_default()
            .iter()
            .map(|(name, value)| {
                Some((
                    HeaderName::try_from(name.as_str()).ok()?,
                    HeaderValue::try_from(value.as_str()).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| problem("headers", FieldProblem::BadHeader))?;
        return Ok(Subject::Url(url, headers, format));
    }
    let Some(exec) = source.executable else {
        return Err(file.problem("credential_source", FieldProblem::NoSubjectSource));
    };
    if env.get(ALLOW_EXECUTABLES) != Some("1") {
        return Err(CredentialError::Unsupported {
            file: file.name(),
            what: Unsupported::ExecutablesNotAllowed {
                var: ALLOW_EXECUTABLES,
            },
        });
    }
    let command = text("executable.command", exec.command)?
        .ok_or_else(|| problem("executable.command", FieldProblem::Missing))?;
    let timeout_ms = exec.timeout_millis.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS);
    if !EXEC_TIMEOUT_MS.contains(&timeout_ms) || timeout_ms.fract() != 0.0 {
        return Err(problem(
            "executable.timeout_millis",
            FieldProblem::TimeoutOutOfRange,
        ));
    }
    Ok(Subject::Executable(Executable {
        command,
        timeout: Duration::from_millis(timeout_ms as u64),
        output_file: exec
            .output_file
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    }))
}

impl AccessTokenSource for ExternalAccount {
    fn describe(&self) -> String {
        format!(
            "external_account file {} (provider {})",
            self.path.display(),
            self.audience
        )
    }
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
        Box::pin(self.exchange())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::error::JsonKind;
    use crate::auth::test_server;
    use serde_json::{Value, json};
    use std::path::Path;

    fn load(source: Value, env: &[(&str, &str)]) -> Result<ExternalAccount, CredentialError> {
        let v = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": source,
        });
        let file = CredFile::parse(
            Path::new("/w.json"),
            crate::auth::error::FoundBy::flag(),
            v.to_string().as_bytes(),
        )
        .unwrap();
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

    #[test]
    fn nested_wrong_types_name_the_path_and_never_the_value() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0";
        let cases = [
            (
                json!({"file": "/t", "format": {"type": [secret]}}),
                "credential_source.format.type",
                JsonKind::List,
            ),
            (
                json!({"url": "http://x/", "headers": {"Authorization": {"v": secret}}}),
                "credential_source.headers.Authorization",
                JsonKind::Object,
            ),
            (
                json!({"executable": {"command": "/x", "timeout_millis": secret}}),
                "credential_source.executable.timeout_millis",
                JsonKind::String,
            ),
            (
                json!({"file": 7}),
                "credential_source.file",
                JsonKind::Number,
            ),
            (json!(secret), "credential_source", JsonKind::String),
        ];
        for (source, path, kind) in cases {
            let err = load(source.clone(), &[(ALLOW_EXECUTABLES, "1")])
                .err()
                .expect("refused");
            let text = err.to_string();
            assert!(!text.contains("eyJ") && !text.contains("c2Vj"), "{text}");
            assert!(
                text.contains(&format!("field `{path}` has the wrong type")),
                "{text}"
            );
            assert!(
                matches!(&err, CredentialError::Field { field, problem: FieldProblem::WrongType { found }, .. }
                    if field == path && *found == kind),
                "{err:?}"
            );
        }
    }

    #[test]
    fn refusals_and_the_executable_source() {
        let err = load(json!({"environment_id": "aws1"}), &[]).err().unwrap();
        assert!(matches!(
            err,
            CredentialError::Unsupported {
                what: Unsupported::Aws,
                ..
            }
        ));
        let exec = json!({"executable": {"command": "/bin/get-token --flag", "output_file": ""}});
        let err = load(exec.clone(), &[]).err().unwrap();
        assert!(matches!(
            err,
            CredentialError::Unsupported {
                what: Unsupported::ExecutablesNotAllowed { .. },
                ..
            }
        ));
        let ok = load(exec, &[(ALLOW_EXECUTABLES, "1")]).unwrap();
        let Subject::Executable(e) = &ok.subject else {
            panic!("not an executable source")
        };
        assert_eq!(
            (e.command.as_str(), e.timeout, e.output_file.is_none()),
            ("/bin/get-token --flag", Duration::from_secs(30), true)
        );
        let fractional = json!({"executable": {"command": "/x", "timeout_millis": 5000.5}});
        assert!(load(fractional, &[(ALLOW_EXECUTABLES, "1")]).is_err());
    }
}
