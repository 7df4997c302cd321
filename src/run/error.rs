//! Why the proxy could not start: each part's own error, kept whole.

use crate::auth::{CredentialError, FetchError};
use crate::iap::discovery::DiscoveryError;
use crate::outbound::egress::EgressError;
use crate::outbound::tls::TlsError;
use crate::proxy::client_secret::SecretFileError;
use crate::proxy::forward::UpstreamTarget;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The credential cannot be found, read or used as the settings ask.
    #[error(transparent)]
    Auth(#[from] CredentialError),
    /// `iap-proxy token`: the one fetch failed.
    #[error(transparent)]
    Token(#[from] FetchError),
    #[error(transparent)]
    UpstreamTarget(#[from] UpstreamTarget),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: String,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    ClientSecret(#[from] SecretFileError),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}
