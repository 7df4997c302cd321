//! Reading credential files. Each file type's fields are a `#[derive(Deserialize)]` struct
//! in its source's file; this one turns a file into such a struct, and every problem into a
//! [`CredentialError`] naming the file and the field (nested ones dotted, as
//! `credential_source.format.type`).
//!
//! The files hold keys and refresh tokens, so no message quotes a value. serde's own messages
//! do ("invalid type: string \"…\", expected u64"), so they are never shown: a refused field
//! is reported by its path (from `serde_path_to_error`) and the JSON type found there.
//! Fields the structs do not name are ignored: Google's files carry more than we read.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::error::{
    CredPath, CredentialError, EndpointError, FieldProblem, FileAccess, FoundBy, JsonKind,
    Malformed,
};
use super::not_credential::{client_secret, saved_token};
use super::token_http;

/// A credentials file parsed as a JSON object (or an object nested in one, such as
/// `source_credentials`), not yet read as any type.
pub(crate) struct CredFile {
    pub(crate) path: PathBuf,
    /// How the proxy came to read it, for every message about it.
    found_by: FoundBy,
    /// The dotted path of this object in the file, `""` for the whole file.
    prefix: String,
    json: Value,
}

/// Every file type's `type`.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl CredFile {
    pub(crate) fn read(path: &Path, found_by: FoundBy) -> Result<CredFile, CredentialError> {
        let bytes = std::fs::read(path).map_err(|error| CredentialError::ReadFile {
            problem: FileAccess::of(path, error),
            file: CredPath {
                path: path.to_path_buf(),
                found_by: found_by.clone(),
            },
        })?;
        CredFile::parse(path, found_by, &bytes)
    }

    pub(crate) fn parse(
        path: &Path,
        found_by: FoundBy,
        bytes: &[u8],
    ) -> Result<CredFile, CredentialError> {
        let file = CredPath {
            path: path.to_path_buf(),
            found_by,
        };
        if let Some(what) = saved_token(bytes) {
            return Err(CredentialError::NotACredential { file, what });
        }
        let malformed = |problem| CredentialError::Malformed {
            file: file.clone(),
            problem,
        };
        let json: Value = serde_json::from_slice(bytes).map_err(|e| {
            malformed(Malformed::NotJson {
                line: e.line(),
                column: e.column(),
            })
        })?;
        if !json.is_object() {
            return Err(malformed(Malformed::NotAnObject));
        }
        Ok(CredFile {
            path: file.path,
            found_by: file.found_by,
            prefix: String::new(),
            json,
        })
    }

    /// The file as messages name it.
    pub(crate) fn name(&self) -> CredPath {
        CredPath {
            path: self.path.clone(),
            found_by: self.found_by.clone(),
        }
    }

    /// The object read as `T`. A field of the wrong type is an error naming it; absent
    /// fields are `None` in `T`, for the caller to require.
    pub(crate) fn fields<T: DeserializeOwned>(&self) -> Result<T, CredentialError> {
        serde_path_to_error::deserialize(&self.json).map_err(|e| {
            let path: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
            let found = value_at(&self.json, &path).map_or(JsonKind::Null, JsonKind::of);
            self.problem(&e.path().to_string(), FieldProblem::WrongType { found })
        })
    }

    /// The required `type`, which picks the source. A file without one may be an OAuth
    /// client secret (the usual wrong download), which is then named as such.
    pub(crate) fn kind(&self) -> Result<String, CredentialError> {
        let kind: Kind = self.fields()?;
        if kind.kind.is_none() {
            if let Some(what) = client_secret(&self.json) {
                return Err(CredentialError::NotACredential {
                    file: self.name(),
                    what,
                });
            }
        }
        self.required("type", kind.kind)
    }

    /// A nested object (e.g. `source_credentials`), read with the same file name in errors
    /// and its fields named below it (`source_credentials.client_email`).
    pub(crate) fn nested(&self, name: &str) -> Result<CredFile, CredentialError> {
        match self.json.get(name) {
            Some(json @ Value::Object(_)) => Ok(CredFile {
                path: self.path.clone(),
                found_by: self.found_by.clone(),
                prefix: format!("{}{name}.", self.prefix),
                json: json.clone(),
            }),
            None | Some(Value::Null) => Err(self.problem(name, FieldProblem::Missing)),
            Some(other) => Err(self.problem(
                name,
                FieldProblem::WrongType {
                    found: JsonKind::of(other),
                },
            )),
        }
    }

    /// `problem` with `field`, a path relative to this object.
    pub(crate) fn problem(&self, field: &str, problem: FieldProblem) -> CredentialError {
        CredentialError::Field {
            file: self.name(),
            field: format!("{}{field}", self.prefix),
            problem,
        }
    }

    /// A required string field: present and not blank. Trimmed.
    pub(crate) fn required(
        &self,
        field: &str,
        value: Option<String>,
    ) -> Result<String, CredentialError> {
        self.optional(field, value)?
            .ok_or_else(|| self.problem(field, FieldProblem::Missing))
    }

    /// An optional string field: absent or null is `None`; blank is an error. Trimmed.
    pub(crate) fn optional(
        &self,
        field: &str,
        value: Option<String>,
    ) -> Result<Option<String>, CredentialError> {
        match value {
            Some(s) if s.trim().is_empty() => Err(self.problem(field, FieldProblem::Empty)),
            Some(s) => Ok(Some(s.trim().to_owned())),
            None => Ok(None),
        }
    }

    /// A list of non-blank strings (absent = empty). Trimmed.
    pub(crate) fn strings(
        &self,
        field: &str,
        value: Option<Vec<String>>,
    ) -> Result<Vec<String>, CredentialError> {
        let items = value.unwrap_or_default();
        if items.iter().any(|s| s.trim().is_empty()) {
            return Err(self.problem(field, FieldProblem::EmptyListItem));
        }
        Ok(items.iter().map(|s| s.trim().to_owned()).collect())
    }

    /// An endpoint field, `default` when absent: https, or http on loopback (tests' fakes).
    pub(crate) fn endpoint(
        &self,
        field: &str,
        value: Option<String>,
        default: Option<&str>,
    ) -> Result<Url, CredentialError> {
        let raw = match (self.optional(field, value)?, default) {
            (Some(raw), _) => raw,
            (None, Some(d)) => d.to_owned(),
            (None, None) => return Err(self.problem(field, FieldProblem::Missing)),
        };
        token_http::check_endpoint(&raw).map_err(|e| match e {
            EndpointError::Invalid { reason, .. } => {
                self.problem(field, FieldProblem::BadUrl(reason))
            }
            EndpointError::Insecure { .. } => self.problem(field, FieldProblem::NotHttps),
        })
    }
}

/// The value a deserialization error points at, to name its JSON type.
fn value_at<'a>(root: &'a Value, path: &[&serde_path_to_error::Segment]) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(root, |v, segment| match segment {
        Segment::Seq { index } => v.get(index),
        Segment::Map { key } => v.get(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Some fields are never read: only their types matter, for serde to check.
    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Sample {
        a: Option<String>,
        e: Option<String>,
        l: Option<Vec<String>>,
        o: Option<Inner>,
    }
    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Inner {
        t: Option<String>,
        n: Option<u64>,
    }

    fn by_flag() -> FoundBy {
        FoundBy::Setting(crate::config::Origin::Flag("credentials"))
    }

    fn parse(json: &str) -> CredFile {
        CredFile::parse(Path::new("/c.json"), by_flag(), json.as_bytes()).unwrap()
    }

    #[test]
    fn fields_name_the_file_and_the_field() {
        let f = parse(r#"{"type":"x","a":" x ","e":"","l":["p",""],"o":{"t":"http://10.0.0.1/"}}"#);
        assert_eq!(f.kind().unwrap(), "x");
        let s: Sample = f.fields().unwrap();
        assert_eq!(f.required("a", s.a).unwrap(), "x");
        let text = f.required("e", s.e).unwrap_err().to_string();
        assert_eq!(
            text,
            "credentials file /c.json (from --credentials): field `e` is empty"
        );
        let text = f.required("m", None).unwrap_err().to_string();
        assert_eq!(
            text,
            "credentials file /c.json (from --credentials): field `m` is missing"
        );
        assert!(
            f.strings("l", s.l)
                .unwrap_err()
                .to_string()
                .contains("`l` must be a list")
        );
        let o = f.nested("o").unwrap();
        let inner: Inner = o.fields().unwrap();
        let err = o.endpoint("t", inner.t, None).unwrap_err().to_string();
        assert!(err.contains("`o.t` must use https"), "{err}");
        let err = o.endpoint("u", None, Some("not a url")).unwrap_err();
        assert!(matches!(
            err,
            CredentialError::Field {
                problem: FieldProblem::BadUrl(_),
                ..
            }
        ));
        assert!(f.nested("a").is_err() && f.nested("missing").is_err());
        let bad = CredFile::parse(Path::new("/s.json"), by_flag(), b"{\"secret\": nope").err();
        let text = bad.unwrap().to_string();
        assert!(!text.contains("nope") && text.contains("/s.json"), "{text}");
        let list = CredFile::parse(Path::new("/s.json"), by_flag(), b"[\"secret\"]")
            .err()
            .unwrap();
        assert!(matches!(
            list,
            CredentialError::Malformed {
                problem: Malformed::NotAnObject,
                ..
            }
        ));
    }

    /// serde would say `invalid type: string "…", expected …`: the value never gets through.
    #[test]
    fn a_wrong_type_is_named_by_path_and_kind_never_by_value() {
        let secret = "-----BEGIN PRIVATE KEY-----ya29.hush";
        for (json, field, found) in [
            (
                format!(r#"{{"a":{{"k":"{secret}"}}}}"#),
                "a",
                JsonKind::Object,
            ),
            (
                format!(r#"{{"l":["ok",["{secret}"]]}}"#),
                "l[1]",
                JsonKind::List,
            ),
            (
                format!(r#"{{"o":{{"n":"{secret}"}}}}"#),
                "o.n",
                JsonKind::String,
            ),
            (format!(r#"{{"o":"{secret}"}}"#), "o", JsonKind::String),
            (r#"{"type":7}"#.to_owned(), "type", JsonKind::Number),
        ] {
            let f = parse(&json);
            let err = match f.fields::<Sample>().and_then(|_| f.kind()) {
                Err(err) => err,
                Ok(_) => panic!("{json} accepted"),
            };
            let text = err.to_string();
            assert!(
                !text.contains("hush") && !text.contains("PRIVATE"),
                "{text}"
            );
            assert!(
                text.starts_with("credentials file /c.json (from --credentials): field `"),
                "{text}"
            );
            match err {
                CredentialError::Field {
                    field: named,
                    problem: FieldProblem::WrongType { found: got },
                    ..
                } => assert_eq!((named.as_str(), got), (field, found), "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
