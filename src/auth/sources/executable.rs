//! An external account's executable credential source: the command (allowed at start-up
//! only with `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`) prints Google's
//! executable-sourced credential response (`{"version": 1, "success": …}`), which may also
//! sit in its `output_file` cache.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::answer::lenient;
use crate::auth::error::{ExecutableResponseError, SubjectProblem};
use crate::auth::process::Helper;
use crate::auth::redact::{Secret, scrub_text};
use crate::config::Env;

/// How many stderr lines a failure quotes: executables print little.
const STDERR_LINES: usize = 3;

/// The command and how to run it, from the file's `credential_source.executable`.
pub(crate) struct Executable {
    pub(crate) command: String,
    pub(crate) timeout: Duration,
    pub(crate) output_file: Option<PathBuf>,
}

/// What the executable is told, in Google's `GOOGLE_EXTERNAL_ACCOUNT_*` variables.
pub(crate) struct Asked<'a> {
    pub(crate) env: &'a Env,
    pub(crate) audience: &'a str,
    pub(crate) token_type: &'a str,
    pub(crate) impersonated_email: Option<&'a str>,
}

impl Executable {
    /// The subject token: from an unexpired `output_file`, else from running the command.
    pub(crate) async fn subject_token(&self, asked: &Asked<'_>) -> Result<Secret, SubjectProblem> {
        if let Some(cached) = self
            .output_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
        {
            // A stale or broken cache is not an error: the executable is asked again.
            if let Ok(Some(token)) = parse_executable_response(&cached, true) {
                return Ok(token);
            }
        }
        let mut words = self.command.split_whitespace();
        let program = words.next().unwrap_or_default().to_owned();
        let args: Vec<String> = words.map(str::to_owned).collect();
        let mut extra = vec![
            (
                "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE",
                OsStr::new(asked.audience),
            ),
            (
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
                OsStr::new(asked.token_type),
            ),
            ("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", OsStr::new("0")),
        ];
        if let Some(p) = &self.output_file {
            extra.push(("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", p.as_os_str()));
        }
        if let Some(email) = asked.impersonated_email {
            extra.push((
                "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL",
                OsStr::new(email),
            ));
        }
        let helper = Helper {
            what: format!("the executable `{program}`"),
            program: OsStr::new(&program),
            args: &args,
            env: asked.env,
            extra,
            timeout: self.timeout,
            stderr_lines: STDERR_LINES,
        };
        let stdout = helper.run().await.map_err(SubjectProblem::Executable)?;
        match parse_executable_response(&stdout, false) {
            Ok(Some(token)) => Ok(token),
            Ok(None) => Err(SubjectProblem::Expired { program }),
            Err(problem) => Err(SubjectProblem::Response { program, problem }),
        }
    }
}

/// Google's executable-sourced credential response. Every field is lenient (a value of
/// another type counts as absent), as the checks below want it.
#[derive(Default, Deserialize)]
struct Response {
    #[serde(default, deserialize_with = "lenient")]
    version: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    success: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    token_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    expiration_time: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    id_token: Option<Secret>,
    #[serde(default, deserialize_with = "lenient")]
    saml_response: Option<Secret>,
    #[serde(default, deserialize_with = "lenient")]
    code: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
}

/// Reads a response. `Ok(None)`: valid but expired. From a cache file an `expiration_time`
/// is required (else the entry cannot be trusted).
pub(crate) fn parse_executable_response(
    bytes: &[u8],
    cached: bool,
) -> Result<Option<Secret>, ExecutableResponseError> {
    let json: Value =
        serde_json::from_slice(bytes).map_err(|_| ExecutableResponseError::NotJson)?;
    // JSON that is no object has none of the fields: the checks below say which is missing.
    let r = Response::deserialize(&json).unwrap_or_default();
    if r.version != Some(1) {
        return Err(ExecutableResponseError::Version);
    }
    match r.success {
        Some(true) => {}
        Some(false) => {
            // The executable's own words: scrubbed, since a confused one may print a token.
            let said = |t: Option<String>| scrub_text(t.as_deref().unwrap_or("(none)"));
            return Err(ExecutableResponseError::Reported {
                code: said(r.code),
                message: said(r.message),
            });
        }
        None => return Err(ExecutableResponseError::NoSuccess),
    }
    let (field, token) = match r.token_type.as_deref() {
        Some(
            "urn:ietf:params:oauth:token-type:jwt" | "urn:ietf:params:oauth:token-type:id_token",
        ) => ("id_token", r.id_token),
        Some("urn:ietf:params:oauth:token-type:saml2") => ("saml_response", r.saml_response),
        _ => return Err(ExecutableResponseError::TokenType),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match r.expiration_time {
        Some(exp) if exp <= now => return Ok(None),
        None if cached => return Ok(None),
        _ => {}
    }
    let token = token
        .filter(|t| !t.expose().is_empty())
        .ok_or(ExecutableResponseError::NoToken { field })?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_responses() {
        let ok = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:id_token","id_token":"abc","expiration_time":4000000000}"#;
        assert_eq!(
            parse_executable_response(ok, true)
                .unwrap()
                .unwrap()
                .expose(),
            "abc"
        );
        let expired = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"abc","expiration_time":5}"#;
        assert!(parse_executable_response(expired, false).unwrap().is_none());
        let no_exp = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:saml2","saml_response":"s"}"#;
        assert_eq!(
            parse_executable_response(no_exp, false)
                .unwrap()
                .unwrap()
                .expose(),
            "s"
        );
        assert!(parse_executable_response(no_exp, true).unwrap().is_none());
        let failed = br#"{"version":1,"success":false,"code":"401","message":"nope"}"#;
        let err = parse_executable_response(failed, false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("401") && text.contains("nope"), "{text}");
        assert!(matches!(
            parse_executable_response(b"{\"version\":2}", false),
            Err(ExecutableResponseError::Version)
        ));
        assert!(matches!(
            parse_executable_response(b"x", false),
            Err(ExecutableResponseError::NotJson)
        ));
    }

    #[test]
    fn typed_problems_that_never_quote_the_token() {
        let base = |rest: &str| format!(r#"{{"version":1,"success":true,{rest}}}"#);
        let cases = [
            (
                base(r#""token_type":"x","id_token":"eyJsecret-token-value""#),
                "token_type",
            ),
            (
                base(r#""token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":7"#),
                "`id_token`",
            ),
            (r#"{"version":"1","success":true}"#.to_owned(), "version"),
            (r#"["eyJsecret-token-value"]"#.to_owned(), "version"),
            (r#"{"version":1,"success":"yes"}"#.to_owned(), "`success`"),
        ];
        for (json, needle) in cases {
            let err = parse_executable_response(json.as_bytes(), false).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(needle) && !text.contains("eyJ"),
                "{json}: {text}"
            );
        }
        let leaky = br#"{"version":1,"success":false,"code":"x","message":"got eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"}"#;
        let text = parse_executable_response(leaky, false)
            .unwrap_err()
            .to_string();
        assert!(!text.contains("eyJ"), "{text}");
    }
}
