//! `--credentials gcloud`: ask the gcloud CLI (`gcloud auth print-identity-token`) for each
//! token, so whatever account gcloud is logged in with works, impersonation included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::impersonated::Chain;
use crate::auth::error::AuthError;
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::{jwt, token_http};
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
    ) -> Result<Gcloud, AuthError> {
        let program = find_on_path(env, "gcloud").ok_or_else(|| AuthError::Gcloud {
            reason: "gcloud is not on PATH; install the Google Cloud CLI \
                     (https://cloud.google.com/sdk/docs/install) or choose another credential"
                .into(),
        })?;
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

    async fn run(&self) -> Result<IdToken, AuthError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.vars())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(TIMEOUT, cmd.output())
            .await
            .map_err(|_| AuthError::Gcloud {
                reason: format!(
                    "`gcloud auth print-identity-token` did not finish within {}s",
                    TIMEOUT.as_secs()
                ),
            })?
            .map_err(|e| AuthError::Gcloud {
                reason: format!("cannot run {}: {e}", self.program.display()),
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let head: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(STDERR_LINES)
                .collect();
            return Err(AuthError::Gcloud {
                reason: format!(
                    "`gcloud auth print-identity-token` failed ({}): {}. Note: gcloud can mint a token \
                     for a custom audience only for a service account; logged in as a user, add \
                     --impersonate-service-account SA, or run `gcloud auth activate-service-account`",
                    output.status,
                    token_http::scrub_text(&head.join(" | ")),
                ),
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let token = IdToken::from_jwt(stdout.trim())?;
        jwt::check_audience(&jwt::unverified_claims(token.expose())?, &self.audience)?;
        Ok(token)
    }
}

impl TokenSource for Gcloud {
    fn describe(&self) -> String {
        format!("gcloud CLI at {}", self.program.display())
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, AuthError>> {
        Box::pin(self.run())
    }
}
