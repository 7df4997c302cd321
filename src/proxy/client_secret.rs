//! A shared secret for non-loopback listeners (`--client-secret-file`).
//!
//! On a non-loopback address anyone who reaches the port would act as the service account;
//! with a client secret, only clients that present it in `x-iap-proxy-secret` do. The
//! header is removed before forwarding, so the upstream never sees it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use http::HeaderName;

pub(crate) const SECRET_HEADER: HeaderName = HeaderName::from_static("x-iap-proxy-secret");

/// Shortest secret accepted: guessing it must be hopeless.
const MIN_LEN: usize = 16;

/// Clones share the secret, so a reloaded file ([`ClientSecret::reload`]) changes it for
/// every listener that uses it.
#[derive(Clone)]
pub(crate) struct ClientSecret(Arc<RwLock<Arc<[u8]>>>);

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
    /// Reads the file.
    pub(crate) fn from_file(path: &Path) -> Result<ClientSecret, SecretFileError> {
        Ok(ClientSecret(Arc::new(RwLock::new(read(path)?))))
    }

    /// Reads the file again; if it holds a good secret, that one is checked from now on,
    /// else the old one stays and the error says why.
    pub(crate) fn reload(&self, path: &Path) -> Result<(), SecretFileError> {
        let secret = read(path)?;
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = secret;
        Ok(())
    }

    /// Compares in time independent of where the first difference is.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        let expected = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, b) in expected.iter().enumerate() {
            diff |= b ^ presented.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// The file's secret: surrounding whitespace (a trailing newline) is not part of it.
fn read(path: &Path) -> Result<Arc<[u8]>, SecretFileError> {
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
    Ok(trimmed.into())
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
        // A reload puts a good secret in use for every clone and keeps the old one otherwise.
        let clone = s.clone();
        s.reload(&secret_file("new", b"new-secret-0123456789\n"))
            .unwrap();
        assert!(clone.matches(b"new-secret-0123456789"));
        assert!(s.reload(&secret_file("short", b"abc")).is_err());
        assert!(clone.matches(b"new-secret-0123456789"));
    }
}
