//! What fails one fetch: Google's endpoints (unreachable, refusing, answering nonsense), a
//! local helper (the gcloud CLI, an external account's executable or subject token), or
//! signing.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why one fetch of a token failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting or sending failed; `reason` is the whole error chain.
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} did not answer in time ({seconds}s)")]
    Timeout { endpoint: String, seconds: u64 },
    /// A non-2xx answer; `detail` is Google's explanation, scrubbed of anything token-like.
    #[error("{endpoint} answered {status}: {detail}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("{endpoint} answered {status}: the answer is larger than {limit_kib} KiB")]
    TooLarge {
        endpoint: String,
        status: u16,
        limit_kib: usize,
    },
    #[error("the token endpoint returned an unusable ID token: {0}")]
    BadToken(BadToken),
    /// The IAM Credentials API refused with 403: the caller lacks the role on the target.
    #[error(
        "{caller} may not mint ID tokens as {target}{}: {detail}. Grant it \
         roles/iam.serviceAccountOpenIdTokenCreator (or roles/iam.serviceAccountTokenCreator) on {target}: \
         `gcloud iam service-accounts add-iam-policy-binding {target} --member=MEMBER \
         --role=roles/iam.serviceAccountOpenIdTokenCreator` (MEMBER: user:YOU@EXAMPLE.COM, \
         serviceAccount:SA_EMAIL or principal://… for a federated identity)",
        if delegates.is_empty() { String::new() } else { format!(" through delegates {}", delegates.join(", ")) }
    )]
    ImpersonationDenied {
        caller: String,
        target: String,
        delegates: Vec<String>,
        detail: String,
    },
    #[error("credentials file {path}: cannot get the subject token: {problem}")]
    Subject {
        path: PathBuf,
        problem: SubjectProblem,
    },
    #[error("gcloud: {0}{note}", note = gcloud_note(.0))]
    Gcloud(ProcessError),
    #[error("cannot sign the JWT assertion with the key in {path}: {reason}")]
    Sign { path: PathBuf, reason: String },
    /// The token's `exp` was already past by this machine's clock when it arrived: the
    /// clock is ahead of the issuer's by more than the token's lifetime (or the source handed
    /// out a stale token). Times are Unix seconds; neither is a secret.
    #[error(
        "the ID token had already expired when it arrived: its exp ({exp}) is {} before this \
         machine's clock ({now}, Unix seconds). Either this machine's clock is ahead of real time \
         (clock skew) or the credential handed out a stale token: compare `date -u` with the real \
         UTC time and fix the clock (e.g. `sudo timedatectl set-ntp true`); with gcloud, refresh \
         its login",
        human(now.saturating_sub(*exp))
    )]
    ExpiredOnArrival { exp: u64, now: u64 },
    /// `GCE_METADATA_HOST` cannot make a URL. Found on fetch, like an unreachable server.
    #[error("endpoint `{url}` is not a valid URL: GCE_METADATA_HOST {problem}")]
    MetadataHost {
        url: String,
        problem: MetadataHostProblem,
    },
}

/// Why gcloud usually fails for a user's login, appended to its stderr.
const GCLOUD_NOTE: &str = ". Note: gcloud can mint a token for a custom audience only for a \
     service account; logged in as a user, add --impersonate-service-account SA, or run \
     `gcloud auth activate-service-account`";

fn gcloud_note(failure: &ProcessError) -> &'static str {
    match failure {
        ProcessError::Failed { .. } => GCLOUD_NOTE,
        ProcessError::TimedOut { .. } | ProcessError::Spawn { .. } => "",
    }
}

/// `1h 2m 3s`: how far apart two clocks are, for people.
fn human(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

// Not `#[from]`: that would also make it the source, and `{:#}` would print it twice.
impl From<BadToken> for FetchError {
    fn from(bad: BadToken) -> Self {
        FetchError::BadToken(bad)
    }
}

/// What is wrong with a token or an answer that should have carried one. Never quotes it.
#[derive(Debug, thiserror::Error)]
pub enum BadToken {
    #[error("it is not a JWT (expected 3 dot-separated segments, found {segments})")]
    NotAJwt { segments: usize },
    #[error("its payload is not base64url")]
    PayloadNotBase64,
    #[error("its payload is not JSON")]
    PayloadNotJson,
    #[error("its payload is not a JSON object")]
    PayloadNotAnObject,
    #[error("it has no `exp` claim")]
    NoExp,
    #[error("its `exp` claim is not a non-negative number")]
    BadExp,
    /// No real token expires after the year 9999; a larger `exp` would overflow the clock
    /// arithmetic it is used in, so it is refused here, once.
    #[error("its `exp` claim ({exp}) lies beyond the year 9999, so it is no expiry time")]
    ExpOutOfRange { exp: String },
    /// `got` is the token's `aud` claim: an OAuth client ID or a URL, not a secret.
    #[error("it was issued for audience `{got}`, but `{expected}` was requested")]
    WrongAudience { got: String, expected: String },
    #[error("it contains characters not allowed in a header")]
    NotHeaderSafe,
    #[error("the access token contains characters not allowed in a header")]
    AccessTokenNotHeaderSafe,
    #[error("the answer of {endpoint} is not a JSON object")]
    AnswerNotJson { endpoint: String },
    #[error("the metadata server's answer is not text")]
    AnswerNotText,
    #[error("the answer has no `id_token` (does the key file belong to a service account?)")]
    NoIdTokenForKey,
    #[error(
        "the refresh-token answer has no `id_token` (was the login made with the openid scope? \
         run `gcloud auth application-default login` again)"
    )]
    NoIdTokenForUser,
    #[error("generateIdToken answered without a `token`")]
    NoGeneratedToken,
    #[error("{endpoint} answered without an `access_token`")]
    NoAccessToken { endpoint: String },
}

/// Why an external account's subject token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SubjectProblem {
    #[error("cannot read the subject token file {}: {error}", .path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the subject token from {from} is not JSON")]
    NotJson { from: String },
    #[error("the JSON from {from} has no string field `{field}`")]
    NoField { from: String, field: String },
    #[error("the subject token from {from} is empty")]
    Empty { from: String },
    #[error("{0}")]
    Executable(ProcessError),
    #[error("the executable `{program}` returned an expired token")]
    Expired { program: String },
    #[error("the executable `{program}`: {problem}")]
    Response {
        program: String,
        problem: ExecutableResponseError,
    },
}

/// What is wrong with an executable's answer (Google's executable-sourced credential format).
#[derive(Debug, thiserror::Error)]
pub enum ExecutableResponseError {
    #[error("its output is not JSON")]
    NotJson,
    #[error("its output must have \"version\": 1")]
    Version,
    /// `code` and `message` are the executable's own words, scrubbed.
    #[error("it reported failure: code {code}, message {message}")]
    Reported { code: String, message: String },
    #[error("its output has no boolean `success`")]
    NoSuccess,
    #[error("its `token_type` must be a jwt, id_token or saml2 token type URN")]
    TokenType,
    #[error("its output has no `{field}`")]
    NoToken { field: &'static str },
}

/// Why a helper program gave no answer. `what` names it for people, e.g.
/// "`gcloud auth print-identity-token`" or "the executable `/usr/bin/get-token`".
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what} did not finish within {timeout:?}")]
    TimedOut { what: String, timeout: Duration },
    #[error("cannot run {what}: {error}")]
    Spawn { what: String, error: std::io::Error },
    /// `stderr` is the head of its stderr, scrubbed of anything token-like.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Why `GCE_METADATA_HOST` makes no URL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataHostProblem {
    #[error("must be a host name or host:port")]
    NotAHost,
    #[error("is not a valid host ({0})")]
    Invalid(url::ParseError),
}
