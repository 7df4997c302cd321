//! A shared secret for non-loopback listeners (`--client-secret-file`).
//!
//! On a non-loopback address anyone who reaches the port would act as the service account;
//! with a client secret, only clients that present it in `x-iap-proxy-secret` do. The
//! header is removed before forwarding, so the upstream never sees it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderName;

pub(crate) const SECRET_HEADER: HeaderName = HeaderName::from_static("x-iap-proxy-secret");

/// Shortest secret accepted: guessing it must be hopeless.
const MIN_LEN: usize = 16;

#[derive(Clone)]
pub(crate) struct ClientSecret(Arc<[u8]>);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read --client-secret-file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--client-secret-file {path} holds {len} bytes; use at least {MIN_LEN} (e.g. `openssl rand -hex 32 > {}`)", .path.display())]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "--client-secret-file {path} holds characters not allowed in an HTTP header; use printable ASCII (e.g. hex)"
    )]
    NotHeaderSafe { path: PathBuf },
}

impl ClientSecret {
    /// Reads the file; surrounding whitespace (a trailing newline) is not part of the secret.
    pub(crate) fn from_file(path: &Path) -> Result<ClientSecret, SecretFileError> {
        let raw = std::fs::read(path).map_err(|source| SecretFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = raw.trim_ascii();
        if trimmed.len() < MIN_LEN {
            return Err(SecretFileError::TooShort {
                path: path.to_path_buf(),
                len: trimmed.len(),
            });
        }
        if !trimmed.iter().all(|b| b.is_ascii_graphic()) {
            return Err(SecretFileError::NotHeaderSafe {
                path: path.to_path_buf(),
            });
        }
        Ok(ClientSecret(trimmed.into()))
    }

    /// Compares in time independent of where the first difference is.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        let expected = &self.0;
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, b) in expected.iter().enumerate() {
            diff |= b ^ presented.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iap-proxy-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn file_rules_and_matching() {
        let s = ClientSecret::from_file(&secret_file("ok", b"0123456789abcdef0123\n")).unwrap();
        assert!(s.matches(b"0123456789abcdef0123"));
        assert!(!s.matches(b"0123456789abcdef012"));
        assert!(!s.matches(b"0123456789abcdef01234"));
        assert!(!s.matches(b"x123456789abcdef0123"));
        assert!(!format!("{s:?}").contains("0123"));
        let err = ClientSecret::from_file(&secret_file("short", b"abc")).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        let err =
            ClientSecret::from_file(&secret_file("bin", b"0123456789abcdef\x01\x02")).unwrap_err();
        assert!(err.to_string().contains("printable"), "{err}");
    }
}
