//! The trust roots every outbound connection shares: the upstream's and Google's alike.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = match extra_ca {
        // The system's roots are all there is: loaded now, so an empty store fails start-up.
        None => {
            let roots = system_roots();
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
            builder.with_root_certificates(roots)
        }
        Some(path) => {
            let verifier = CaFirst::new(ca_roots(path)?, provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    Ok(config.with_no_client_auth())
}

/// The system's trust roots, parsed (about 140 on Debian: ~300 KB of heap while parsing,
/// ~80 KB kept). Unreadable ones are skipped, as before.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system trust roots");
    roots
}

/// `--upstream-ca`'s certificates: at least one, each a usable trust anchor.
fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let read_error = |e: rustls_pki_types::pem::Error| TlsError::ReadCa {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCa {
            path: path.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Verifies against `--upstream-ca`'s roots alone first, and only when that fails against
/// the system's roots plus the CA's, loaded on that first need. A chain is accepted iff the
/// full set accepts it (a subset of the anchors accepts only what the full set accepts; a
/// rejection is answered by the full set, with its error), so trust is exactly as before; but
/// a proxy whose upstream is signed by `--upstream-ca`, and whose tokens come over plain HTTP
/// (the metadata server), never parses the system store: ~300 KB less idle RSS (issue 12).
#[derive(Debug)]
struct CaFirst {
    ca: Arc<WebPkiServerVerifier>,
    ca_roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// `None` only if the full set were empty, which the CA's roots rule out.
    all: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl CaFirst {
    fn new(ca_roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<CaFirst, TlsError> {
        let ca_roots = Arc::new(ca_roots);
        let ca = WebPkiServerVerifier::builder_with_provider(ca_roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(CaFirst {
            ca,
            ca_roots,
            provider,
            all: OnceLock::new(),
        })
    }

    /// The system's roots then the CA's, the order the one store had before.
    fn all(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.all
            .get_or_init(|| {
                let mut roots = system_roots();
                roots.roots.extend(self.ca_roots.roots.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

impl ServerCertVerifier for CaFirst {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .ca
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(verified) => Ok(verified),
            Err(first) => match self.all() {
                Some(all) => all.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(first),
            },
        }
    }

    // Signatures depend on the algorithms only, the same for both sets of roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.ca.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

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

    /// A CA named `name` (distinct names: webpki looks an issuer up by name).
    fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    /// What the CA's roots accept is accepted without the system's; what they refuse gets
    /// the full set's answer (here: no root of either set issued it).
    #[test]
    fn ca_first_accepts_the_cas_chains_and_refuses_with_the_full_sets_error() {
        let (ca_der, issuer) = ca("upstream CA");
        let mut roots = RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = CaFirst::new(roots, provider).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();
        verifier
            .verify_server_cert(&leaf(&issuer), &[], &name, &[], now)
            .unwrap();
        assert!(
            verifier.all.get().is_none(),
            "the system's roots were not needed"
        );

        let (_, stranger) = ca("another CA");
        let err = verifier
            .verify_server_cert(&leaf(&stranger), &[], &name, &[], now)
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        assert!(verifier.all.get().is_some(), "a refusal asks the full set");
    }
}
