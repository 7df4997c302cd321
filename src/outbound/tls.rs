//! The trust roots every outbound connection shares: the upstream's and Google's alike.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read --upstream-ca {path}: {reason}")]
    ReadCa { path: PathBuf, reason: String },
    #[error("--upstream-ca {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    EmptyCa { path: PathBuf },
    #[error("--upstream-ca {path}: a certificate was rejected: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "no trusted root certificates: the system store is empty and no --upstream-ca was given"
    )]
    NoRoots,
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// Trust roots: the system's, plus `--upstream-ca`. Used for the upstream and for Google's
/// endpoints alike, so a corporate TLS-inspecting CA works everywhere once given.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system trust roots");
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::ReadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::ReadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCa {
                path: path.to_path_buf(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::BadCa {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir =
            std::env::temp_dir().join(format!("iap-proxy-upstream-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
