//! The two files most often given instead of a credential: an OAuth client's secret (what
//! the console's "Download JSON" of an OAuth client gives) and a token saved with `gcloud
//! auth print-access-token > file` or `print-identity-token`. Each is named as what it is.

use serde_json::Value;

use super::error::WrongFile;

/// A token saved to a file instead of a credential: an access token (`ya29.…`, what
/// `gcloud auth print-access-token` prints) or a JWT (an ID token).
pub(super) fn saved_token(bytes: &[u8]) -> Option<WrongFile> {
    let text = bytes.trim_ascii();
    if text.starts_with(b"ya29.") {
        return Some(WrongFile::AccessToken);
    }
    let dots = text.iter().filter(|b| **b == b'.').count();
    let token_chars = text
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(b));
    (text.starts_with(b"eyJ") && dots == 2 && token_chars).then_some(WrongFile::Jwt)
}

/// An OAuth client's secret file, as the Cloud console downloads it: one top-level object,
/// `installed` (desktop app) or `web`, holding `client_id` and `client_secret`.
pub(super) fn client_secret(json: &Value) -> Option<WrongFile> {
    let (section, client) = ["installed", "web"]
        .into_iter()
        .find_map(|s| json.get(s).filter(|v| v.is_object()).map(|v| (s, v)))?;
    // Named only when it has the shape of a client ID: the message quotes nothing else.
    let client_id = client
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|id| {
            id.len() <= 128
                && id.ends_with(".apps.googleusercontent.com")
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .map(str::to_owned);
    Some(WrongFile::OAuthClientSecret { section, client_id })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::auth::error::{CredentialError, FoundBy};
    use crate::auth::file::CredFile;

    #[test]
    fn client_secrets_and_saved_tokens_are_named_as_such() {
        let client = r#"{"installed":{"client_id":"123-abc.apps.googleusercontent.com","client_secret":"GOCSPX-hush"}}"#;
        let cases: [(&[u8], &str); 4] = [
            (client.as_bytes(), "OAuth client secret file"),
            (
                br#"{"web":{"client_id":"x y","client_secret":"hush"}}"#,
                "`web`), not",
            ),
            (b"ya29.a0AfH6SMhush\n", "OAuth access token"),
            (b"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.hush\n", "a JWT"),
        ];
        for (bytes, want) in cases {
            let err = match CredFile::parse(Path::new("/w.json"), FoundBy::flag(), bytes) {
                Ok(f) => f.kind().unwrap_err(),
                Err(e) => e,
            };
            assert!(
                matches!(err, CredentialError::NotACredential { .. }),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(want), "{text}");
            assert!(!text.contains("hush"), "{text}");
            assert!(text.contains("--credentials key.json"), "{text}");
        }
        let text = CredFile::parse(Path::new("/w.json"), FoundBy::flag(), client.as_bytes())
            .and_then(|f| f.kind())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("client 123-abc.apps.googleusercontent.com"),
            "{text}"
        );
        assert!(text.contains("--client-id-file"), "{text}");
    }
}
