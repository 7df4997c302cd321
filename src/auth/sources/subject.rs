//! Where an external account's subject token comes from (`credential_source`): a file, a
//! URL (plain http allowed: other clouds' metadata endpoints), or an executable; read as
//! text or as a JSON object's field.

use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::executable::{Asked, Executable};
use crate::auth::error::{FetchError, SubjectProblem};
use crate::auth::redact::{Secret, endpoint_name};
use crate::auth::token_http::TokenHttp;

/// How the subject token sits in what the source gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    /// A JSON object, the token in this field.
    Json(String),
}

/// No `Debug`: a URL source's headers may carry a credential.
pub(crate) enum Subject {
    File(PathBuf, Format),
    Url(Url, Vec<(HeaderName, HeaderValue)>, Format),
    Executable(Executable),
}

impl Subject {
    /// Fetches the subject token; `file` is the credentials file, which errors name.
    pub(crate) async fn token(
        &self,
        file: &Path,
        http: &TokenHttp,
        asked: &Asked<'_>,
    ) -> Result<Secret, FetchError> {
        let fail = |problem| FetchError::Subject {
            path: file.to_path_buf(),
            problem,
        };
        match self {
            Subject::File(path, format) => {
                let bytes = tokio::fs::read(path).await.map_err(|error| {
                    fail(SubjectProblem::ReadFile {
                        path: path.clone(),
                        error,
                    })
                })?;
                extract(&bytes, format, path.display().to_string()).map_err(fail)
            }
            Subject::Url(url, headers, format) => {
                let body = http.get(url, headers).await?.success(url)?;
                extract(&body, format, endpoint_name(url)).map_err(fail)
            }
            Subject::Executable(exec) => exec.subject_token(asked).await.map_err(fail),
        }
    }
}

/// The token in `bytes`, read from `from` (named in errors, never the content).
fn extract(bytes: &[u8], format: &Format, from: String) -> Result<Secret, SubjectProblem> {
    let token = match format {
        Format::Text => String::from_utf8_lossy(bytes).trim().to_owned(),
        Format::Json(field) => {
            // The field's name is the file's choice, so this is read as a map, not a struct.
            let json: Value = serde_json::from_slice(bytes)
                .map_err(|_| SubjectProblem::NotJson { from: from.clone() })?;
            match json.get(field) {
                Some(Value::String(token)) => token.clone(),
                _ => {
                    return Err(SubjectProblem::NoField {
                        from,
                        field: field.clone(),
                    });
                }
            }
        }
    };
    if token.is_empty() {
        return Err(SubjectProblem::Empty { from });
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_formats() {
        let json = Format::Json("value".into());
        let from = || "/t".to_owned();
        assert_eq!(
            extract(b" tok\n", &Format::Text, from()).unwrap().expose(),
            "tok"
        );
        let token = extract(br#"{"value":"tok","x":1}"#, &json, from()).unwrap();
        assert_eq!(token.expose(), "tok");
        for (body, format) in [
            (&b"eyJsecret"[..], &json),
            (br#"{"value":7}"#, &json),
            (br#"["eyJsecret"]"#, &json),
            (b"  ", &Format::Text),
        ] {
            let err = extract(body, format, from()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("/t") && !text.contains("eyJ"), "{text}");
        }
    }
}
