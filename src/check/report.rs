//! What `iap-proxy check` found: ordered steps, each with a verdict, plain words and a fix.

use std::fmt;

/// The verdict of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Worth knowing, but not a reason to fail: the authenticated request decides.
    Warn,
    Fail,
}

impl Outcome {
    fn mark(self) -> &'static str {
        match self {
            Outcome::Ok => "✓",
            Outcome::Warn => "!",
            Outcome::Fail => "✗",
        }
    }
}

/// Which of the usual mistakes a step recognised, for programs and tests; the words are in
/// the step's `detail` and `fix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    /// No credential anywhere Google's libraries look.
    NoCredentials,
    /// The credential yields something that is not an ID token (an access token, mostly).
    AccessToken,
    /// The token's `aud` is not the IAP OAuth client ID.
    WrongAudience,
    /// IAP's 403: the principal lacks `roles/iap.httpsResourceAccessor`.
    MissingAccessorRole,
    /// generateIdToken refused: the caller lacks the token-creator role on the target.
    ImpersonationDenied,
    /// A user login's ID token: its OAuth client is not on IAP's programmatic allowlist.
    UserClientNotAllowlisted,
    /// The token was already expired when received (clock skew, stale cache).
    ExpiredToken,
    /// The upstream's certificate is not trusted here.
    UpstreamTlsUntrusted,
    /// DNS, connect or timeout on the way to the upstream.
    UpstreamUnreachable,
    /// The upstream's unauthenticated answer is not IAP's sign-in redirect.
    NotIap,
    /// IAP never saw the token (it answered its sign-in redirect to an authenticated request).
    TokenNotSeen,
}

/// One line of the report (and its explanation).
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
    /// What was found, in plain words; may span lines.
    pub detail: String,
    /// What to do about it (usually a command); only for warnings and failures.
    pub fix: Option<String>,
    pub diagnosis: Option<Diagnosis>,
}

impl Step {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Step {
        Step {
            name,
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
            diagnosis: None,
        }
    }
    pub fn warn(name: &'static str, detail: impl Into<String>) -> Step {
        Step {
            outcome: Outcome::Warn,
            ..Step::ok(name, detail)
        }
    }
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Step {
        Step {
            outcome: Outcome::Fail,
            ..Step::ok(name, detail)
        }
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Step {
        self.fix = Some(fix.into());
        self
    }
    pub fn diagnosis(mut self, d: Diagnosis) -> Step {
        self.diagnosis = Some(d);
        self
    }
}

/// The steps of one route's check, in the order they are shown.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub route: String,
    pub upstream: String,
    pub steps: Vec<Step>,
}

/// The step whose success is the point of the whole check.
pub const REQUEST: &str = "request";

impl CheckReport {
    /// True only when the authenticated request went through IAP and nothing failed.
    pub fn passed(&self) -> bool {
        let request_ok = self
            .steps
            .iter()
            .any(|s| s.name == REQUEST && s.outcome == Outcome::Ok);
        request_ok && self.steps.iter().all(|s| s.outcome != Outcome::Fail)
    }

    /// 0 when [`passed`](Self::passed), else 1.
    pub fn exit_code(&self) -> u8 {
        if self.passed() { 0 } else { 1 }
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Every diagnosis made, in step order.
    pub fn diagnoses(&self) -> Vec<Diagnosis> {
        self.steps.iter().filter_map(|s| s.diagnosis).collect()
    }
}

/// Writes `text` with every line after the first indented by `indent` spaces.
fn indented(f: &mut fmt::Formatter<'_>, text: &str, indent: usize) -> fmt::Result {
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            write!(f, "\n{:indent$}", "")?;
        }
        f.write_str(line.trim_end())?;
    }
    Ok(())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "route {} → {}", self.route, self.upstream)?;
        for step in &self.steps {
            write!(f, "  {} {}: ", step.outcome.mark(), step.name)?;
            indented(f, &step.detail, 6)?;
            writeln!(f)?;
            if let Some(fix) = &step.fix {
                f.write_str("      fix: ")?;
                indented(f, fix, 11)?;
                writeln!(f)?;
            }
        }
        let failed = self
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Fail)
            .count();
        if self.passed() {
            writeln!(f, "  => OK: an authenticated request went through")
        } else if failed == 0 {
            writeln!(f, "  => FAILED: no authenticated request went through")
        } else {
            let s = if failed == 1 { "" } else { "s" };
            writeln!(f, "  => FAILED: {failed} problem{s} (see fix)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_verdict() {
        let mut r = CheckReport {
            route: "default".into(),
            upstream: "https://app.example.com/".into(),
            steps: vec![
                Step::ok("credentials", "key file /k.json"),
                Step::warn("IAP", "odd answer\nsecond line").fix("look"),
            ],
        };
        assert!(!r.passed(), "no request step yet");
        r.steps.push(Step::ok(REQUEST, "200"));
        assert!(r.passed());
        assert_eq!(r.exit_code(), 0);
        let text = r.to_string();
        assert!(text.starts_with("route default → https://app.example.com/\n"));
        assert!(text.contains("  ! IAP: odd answer\n      second line\n      fix: look\n"));
        assert!(text.contains("  ✓ request: 200\n"));
        r.steps.push(
            Step::fail("token", "expired")
                .fix("date -u\ngcloud auth login")
                .diagnosis(Diagnosis::ExpiredToken),
        );
        assert!(!r.passed());
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.diagnoses(), [Diagnosis::ExpiredToken]);
        let text = r.to_string();
        assert!(text.contains("      fix: date -u\n           gcloud auth login\n"));
        assert!(text.contains("FAILED: 1 problem"));
    }
}
