//! `--credentials gcloud`: ask the gcloud CLI (`gcloud auth print-identity-token`) for each
//! token, so whatever account gcloud is logged in with works, impersonation included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::impersonated::Chain;
use crate::auth::error::{CredentialError, FetchError};
use crate::auth::process::Helper;
use crate::auth::token::{IdToken, TokenSource};
use crate::config::Env;

/// gcloud may refresh its own credentials first; give it time, but not forever.
const TIMEOUT: Duration = Duration::from_secs(60);
const STDERR_LINES: usize = 5;

pub(crate) struct Gcloud {
    program: PathBuf,
    args: Vec<String>,
    audience: String,
    env: Env,
}

/// Finds `name` on the injected `PATH`, as a shell would.
pub(crate) fn find_on_path(env: &Env, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env.get("PATH")?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Gcloud {
    pub(crate) fn new(
        env: &Env,
        audience: &str,
        chain: Option<&Chain>,
    ) -> Result<Gcloud, CredentialError> {
        let program = find_on_path(env, "gcloud").ok_or(CredentialError::GcloudNotFound)?;
        let mut args = vec![
            "auth".to_owned(),
            "print-identity-token".to_owned(),
            format!("--audiences={audience}"),
        ];
        if let Some(chain) = chain {
            // gcloud's delegation list puts the target last.
            let mut list = chain.delegates.clone();
            list.push(chain.target.clone());
            args.push(format!("--impersonate-service-account={}", list.join(",")));
            // Impersonated ID tokens carry no email unless asked; IAP needs it.
            args.push("--include-email".to_owned());
        }
        Ok(Gcloud {
            program,
            args,
            audience: audience.to_owned(),
            env: env.clone(),
        })
    }

    async fn run(&self) -> Result<IdToken, FetchError> {
        let helper = Helper {
            what: "`gcloud auth print-identity-token`".into(),
            program: self.program.as_os_str(),
            args: &self.args,
            env: &self.env,
            extra: Vec::new(),
            timeout: TIMEOUT,
            stderr_lines: STDERR_LINES,
        };
        let stdout = helper.run().await.map_err(FetchError::Gcloud)?;
        IdToken::issued_for(&String::from_utf8_lossy(&stdout), &self.audience)
    }
}

impl TokenSource for Gcloud {
    fn describe(&self) -> String {
        format!("gcloud CLI at {}", self.program.display())
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(self.run())
    }
}
