//! Why the proxy could not start: each part's own error, kept whole, and the exit status
//! each one means.

use std::fmt;
use std::io;

use crate::auth::{CredentialError, FetchError};
use crate::config::{EXIT_FAILURE, EXIT_USAGE};
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
    /// The credential cannot be found, read or used as the settings ask.
    #[error(transparent)]
    Auth(#[from] CredentialError),
    /// `iap-proxy token`: the one fetch failed.
    #[error(transparent)]
    Token(#[from] FetchError),
    #[error(transparent)]
    UpstreamTarget(#[from] UpstreamTarget),
    #[error("cannot read the listener's address: {0}")]
    Listener(io::Error),
    /// The error is said once, with what to do about it (not kept as a `source`, which
    /// would print it twice).
    #[error("cannot listen on {addr} for {what}: {error}{}", bind_hint(.what, .addr, .error))]
    Bind {
        what: BindTarget,
        addr: String,
        error: io::Error,
    },
    #[error(transparent)]
    ClientSecret(#[from] SecretFileError),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

impl StartError {
    /// The process's exit status for this failure: [`EXIT_USAGE`] (64) when the settings or
    /// a file they name must change, [`EXIT_FAILURE`] (1) when something outside them failed
    /// and may work on the next try (a busy port, an unreachable upstream, a refused fetch).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Tls(_)
            | StartError::Auth(_)
            | StartError::UpstreamTarget(_)
            | StartError::ClientSecret(_)
            | StartError::Egress(_) => EXIT_USAGE,
            StartError::Token(_) | StartError::Listener(_) | StartError::Bind { .. } => {
                EXIT_FAILURE
            }
            StartError::Discovery(e) => match e {
                DiscoveryError::NotIap { .. } | DiscoveryError::UntrustedCertificate { .. } => {
                    EXIT_USAGE
                }
                DiscoveryError::Unreachable { .. } | DiscoveryError::Timeout { .. } => EXIT_FAILURE,
            },
        }
    }
}

/// Which listener failed to bind, with the setting that names its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    Route(String),
    Admin,
}

impl BindTarget {
    fn setting(&self) -> &'static str {
        match self {
            BindTarget::Route(_) => "--listen",
            BindTarget::Admin => "--admin-listen",
        }
    }
}

impl fmt::Display for BindTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindTarget::Route(name) => write!(f, "route `{name}` ({})", self.setting()),
            BindTarget::Admin => write!(f, "the admin endpoints ({})", self.setting()),
        }
    }
}

/// What to do about the usual bind failures.
fn bind_hint(what: &BindTarget, addr: &str, error: &io::Error) -> String {
    let setting = what.setting();
    let port = addr.rsplit(':').next().unwrap_or(addr);
    match error.kind() {
        io::ErrorKind::AddrInUse if addr.starts_with("unix:") => format!(
            ";\nanother process serves that socket; stop it, or choose another path with {setting}"
        ),
        io::ErrorKind::AddrInUse => format!(
            ";\nanother process listens there (perhaps another iap-proxy); \
             `ss -ltnp 'sport = :{port}'` shows which.\nStop it, or choose another port with \
             {setting}"
        ),
        io::ErrorKind::PermissionDenied if port.parse::<u16>().is_ok_and(|p| p < 1024) => {
            format!(
                ";\nports below 1024 need privileges; choose a port from 1024 up with {setting}"
            )
        }
        io::ErrorKind::AddrNotAvailable => {
            format!(";\nno network interface of this machine has that address; check {setting}")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_say_it_once_with_the_fix() {
        let err = StartError::Bind {
            what: BindTarget::Route("default".into()),
            addr: "127.0.0.1:8080".into(),
            error: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = err.to_string();
        assert_eq!(text.matches("in use").count(), 1, "{text}");
        assert!(
            text.contains("sport = :8080") && text.contains("--listen"),
            "{text}"
        );
        assert_eq!(err.exit_code(), EXIT_FAILURE);
        let err = StartError::Bind {
            what: BindTarget::Admin,
            addr: "127.0.0.1:80".into(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let text = err.to_string();
        assert!(
            text.contains("below 1024") && text.contains("--admin-listen"),
            "{text}"
        );
    }
}
