//! Running a credential helper (the gcloud CLI, an external account's executable) the one
//! safe way: only the injected environment (so tests never depend on the real one), no
//! stdin (a helper that prompts fails instead of hanging), a deadline, killed when the fetch
//! is dropped, and of its stderr only the scrubbed first lines (helpers print tokens).

use std::ffi::OsStr;
use std::time::Duration;

use super::error::ProcessError;
use super::redact::scrub_text;
use crate::config::Env;

/// One run of a helper program.
pub(crate) struct Helper<'a> {
    /// How messages name it, e.g. "`gcloud auth print-identity-token`".
    pub(crate) what: String,
    pub(crate) program: &'a OsStr,
    pub(crate) args: &'a [String],
    /// Its whole environment: the injected one, plus `extra`.
    pub(crate) env: &'a Env,
    pub(crate) extra: Vec<(&'static str, &'a OsStr)>,
    pub(crate) timeout: Duration,
    /// How many non-blank stderr lines a failure quotes.
    pub(crate) stderr_lines: usize,
}

impl Helper<'_> {
    /// Runs it to the end and returns its stdout; a non-zero exit is an error.
    pub(crate) async fn run(self) -> Result<Vec<u8>, ProcessError> {
        let mut cmd = tokio::process::Command::new(self.program);
        cmd.args(self.args)
            .env_clear()
            .envs(self.env.vars())
            .envs(self.extra.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Err(_elapsed) => {
                return Err(ProcessError::TimedOut {
                    what: self.what,
                    timeout: self.timeout,
                });
            }
            Ok(Err(error)) => {
                return Err(ProcessError::Spawn {
                    what: self.what,
                    error,
                });
            }
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let head: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(self.stderr_lines)
                .collect();
            return Err(ProcessError::Failed {
                what: self.what,
                status: output.status,
                stderr: scrub_text(&head.join(" | ")),
            });
        }
        Ok(output.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh<'a>(script: &'a [String], env: &'a Env, timeout: Duration) -> Helper<'a> {
        Helper {
            what: "the test script".into(),
            program: OsStr::new("/bin/sh"),
            args: script,
            env,
            extra: vec![("EXTRA", OsStr::new("x"))],
            timeout,
            stderr_lines: 2,
        }
    }

    #[tokio::test]
    async fn env_is_only_the_injected_one_and_failures_are_scrubbed() {
        let env = Env::from_pairs([("ONLY", "this")]);
        let script = ["-c".to_owned(), "echo \"$ONLY$EXTRA$HOME\"".to_owned()];
        let out = sh(&script, &env, Duration::from_secs(10))
            .run()
            .await
            .unwrap();
        assert_eq!(out, b"thisx\n");

        let script = [
            "-c".to_owned(),
            "echo; echo 'bad ya29.a0AfH6SMBxyz123456' >&2; echo two >&2; echo three >&2; exit 3"
                .to_owned(),
        ];
        let err = sh(&script, &env, Duration::from_secs(10))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Failed { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("the test script failed (exit status: 3): bad"),
            "{text}"
        );
        assert!(text.contains("two") && !text.contains("three") && !text.contains("ya29"));

        let script = ["-c".to_owned(), "sleep 5".to_owned()];
        let err = sh(&script, &env, Duration::from_millis(100))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        let mut missing = sh(&script, &env, Duration::from_secs(1));
        missing.program = OsStr::new("/nonexistent/helper");
        let err = missing.run().await.unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    }
}
