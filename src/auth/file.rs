//! Reading credential files: JSON objects whose errors name the file and the field, and
//! never quote the content (it holds secrets).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use url::Url;

use super::error::AuthError;
use super::token_http;

/// A parsed credentials file (or a nested credentials object of one).
pub(crate) struct CredFile {
    pub(crate) path: PathBuf,
    pub(crate) fields: Map<String, Value>,
}

impl CredFile {
    pub(crate) fn read(path: &Path) -> Result<CredFile, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        CredFile::parse(path, &bytes)
    }

    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<CredFile, AuthError> {
        let malformed = |reason: String| AuthError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        // serde's messages can quote content; only its position is safe to repeat.
        let json: Value = serde_json::from_slice(bytes).map_err(|e| {
            malformed(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(fields) = json else {
            return Err(malformed("not a JSON object".into()));
        };
        Ok(CredFile {
            path: path.to_path_buf(),
            fields,
        })
    }

    /// A nested object (e.g. `source_credentials`) read with the same file name in errors.
    pub(crate) fn nested(&self, name: &'static str) -> Result<CredFile, AuthError> {
        match self.fields.get(name) {
            Some(Value::Object(fields)) => Ok(CredFile {
                path: self.path.clone(),
                fields: fields.clone(),
            }),
            None | Some(Value::Null) => Err(self.problem(name, "is missing")),
            Some(_) => Err(self.problem(name, "must be a JSON object")),
        }
    }

    pub(crate) fn problem(&self, field: &'static str, problem: &str) -> AuthError {
        AuthError::Field {
            path: self.path.clone(),
            field,
            problem: problem.to_owned(),
        }
    }

    /// A required, non-empty string field.
    pub(crate) fn string(&self, name: &'static str) -> Result<&str, AuthError> {
        self.optional(name)?
            .ok_or_else(|| self.problem(name, "is missing"))
    }

    /// An optional string field: absent or null is `None`; empty or not a string is an error.
    pub(crate) fn optional(&self, name: &'static str) -> Result<Option<&str>, AuthError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.problem(name, "is empty")),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(_) => Err(self.problem(name, "must be a string")),
        }
    }

    /// An endpoint field: https, or http on loopback (tests' fakes).
    pub(crate) fn endpoint(
        &self,
        name: &'static str,
        default: Option<&str>,
    ) -> Result<Url, AuthError> {
        let raw = match (self.optional(name)?, default) {
            (Some(raw), _) => raw,
            (None, Some(d)) => d,
            (None, None) => return Err(self.problem(name, "is missing")),
        };
        token_http::check_endpoint(raw).map_err(|e| match e {
            AuthError::BadEndpoint { reason, .. } => {
                self.problem(name, &format!("is not a valid URL ({reason})"))
            }
            AuthError::InsecureEndpoint { .. } => self.problem(
                name,
                "must use https (plain http is accepted only on a loopback host)",
            ),
            other => other,
        })
    }

    /// A list of strings (absent = empty).
    pub(crate) fn strings(&self, name: &'static str) -> Result<Vec<String>, AuthError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| self.problem(name, "must be a list of non-empty strings"))
                })
                .collect(),
            Some(_) => Err(self.problem(name, "must be a list of strings")),
        }
    }

    pub(crate) fn kind(&self) -> Result<&str, AuthError> {
        self.string("type")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_the_file_and_the_field() {
        let f = CredFile::parse(
            Path::new("/c.json"),
            br#"{"a":"x","e":"","n":3,"l":["p",""],"o":{"t":"http://10.0.0.1/"}}"#,
        )
        .unwrap();
        assert_eq!(f.string("a").unwrap(), "x");
        for (field, want) in [
            ("missing", "is missing"),
            ("e", "is empty"),
            ("n", "must be a string"),
        ] {
            let text = f.string(field).unwrap_err().to_string();
            assert!(text.contains("/c.json") && text.contains(want), "{text}");
        }
        assert!(f.strings("l").unwrap_err().to_string().contains("`l`"));
        let o = f.nested("o").unwrap();
        let err = o.endpoint("t", None).unwrap_err().to_string();
        assert!(err.contains("`t` must use https"), "{err}");
        assert!(f.nested("a").is_err());
        let bad = CredFile::parse(Path::new("/s.json"), b"{\"secret\": nope").err();
        let text = bad.unwrap().to_string();
        assert!(!text.contains("nope") && text.contains("/s.json"), "{text}");
    }
}
