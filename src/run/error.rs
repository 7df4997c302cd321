//! Why the proxy could not start: each part's own error, kept whole.

use crate::auth::AuthError;
use crate::iap::discovery::DiscoveryError;
use crate::outbound::egress::EgressError;
use crate::outbound::tls::TlsError;
use crate::proxy::client_secret::SecretFileError;
use crate::proxy::shared::UpstreamTarget;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
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
