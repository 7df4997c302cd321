//! What stops start-up: finding, reading and validating the credential, and building its
//! source from the settings.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::file::{CredPath, FileAccess, NOT_FOUND_FIXES, WrongFile};

/// Why no token source could be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{}\nFix it with one of:\n{NOT_FOUND_FIXES}", not_found_summary(.looked))]
    NotFound { looked: Vec<Looked> },
    #[error("{file} {problem}{}", read_fix(.file, .problem))]
    ReadFile { file: CredPath, problem: FileAccess },
    /// Another kind of file than a credential: a client secret, a saved token.
    #[error("{file} {what}")]
    NotACredential { file: CredPath, what: WrongFile },
    #[error("{file} is malformed: {problem}")]
    Malformed { file: CredPath, problem: Malformed },
    /// `field` is the path to it, nested ones dotted: `credential_source.format.type`.
    #[error("{file}: field `{field}` {problem}")]
    Field {
        file: CredPath,
        field: String,
        problem: FieldProblem,
    },
    #[error(
        "{file}: field `type` is `{kind}`, which is not supported (expected service_account, \
         authorized_user, impersonated_service_account or external_account)"
    )]
    UnsupportedType { file: CredPath, kind: String },
    #[error("{file}: {what}")]
    Unsupported { file: CredPath, what: Unsupported },
    #[error(
        "{file} holds user credentials (authorized_user, OAuth client {client_id}):\n\
         their ID tokens carry aud = {client_id}, but the audience is {audience}. Either\n  \
         (1) impersonate a service account: pass --impersonate-service-account SA@PROJECT.iam.gserviceaccount.com;\n      \
         you need roles/iam.serviceAccountTokenCreator on it:\n      \
         `gcloud iam service-accounts add-iam-policy-binding SA@PROJECT.iam.gserviceaccount.com \\\n        \
         --member=user:YOU@EXAMPLE.COM --role=roles/iam.serviceAccountTokenCreator`\n  \
         (2) or add {client_id} to the IAP application's programmatic-access allowlist and pass --audience {client_id}:\n      \
         `gcloud iap settings set iap-settings.yaml --project=PROJECT --resource-type=iap_web`\n      \
         with iap-settings.yaml: `accessSettings: {{oauthSettings: {{programmaticClients: [\"{client_id}\"]}}}}`"
    )]
    UserAudience {
        file: CredPath,
        client_id: String,
        audience: String,
    },
    #[error("{0}")]
    Conflict(Conflict),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(
        "gcloud: gcloud is not on PATH; install the Google Cloud CLI \
         (https://cloud.google.com/sdk/docs/install) or choose another credential"
    )]
    GcloudNotFound,
}

/// What to do about a file that cannot be read, after the message: which setting to change,
/// or how to let this user read it.
fn read_fix(file: &CredPath, problem: &FileAccess) -> String {
    let path = file.path.display();
    match problem {
        FileAccess::Missing | FileAccess::Directory => {
            format!(";\n{}", file.found_by.how_to_change())
        }
        FileAccess::Denied {
            file: owner,
            process,
        } => {
            let group = process.map_or("GROUP".to_owned(), |p| p.gid.to_string());
            let owner = owner.map_or("its owner".to_owned(), |o| format!("uid {}", o.uid));
            format!(
                ".\nLet this user read it, e.g. `chgrp {group} {path} && chmod 0640 {path}`, or run \
                 iap-proxy as {owner};\nin a container, see the README's \"Key files in containers\""
            )
        }
        FileAccess::Other(_) => String::new(),
    }
}

/// What [`CredentialError::NotFound`] says before its fixes: every place looked at.
pub(crate) fn not_found_summary(looked: &[Looked]) -> String {
    let lines: Vec<String> = looked.iter().map(|l| format!("  - {l}")).collect();
    format!(
        "no Google credentials found. Looked at:\n{}",
        lines.join("\n")
    )
}

/// One place credential discovery looked at, in order, and why it found nothing there.
#[derive(Debug, thiserror::Error)]
pub enum Looked {
    #[error("--credentials: not given")]
    CredentialsFlag,
    #[error("GOOGLE_APPLICATION_CREDENTIALS: not set")]
    ApplicationCredentialsVar,
    #[error("gcloud's ADC file {}: absent", .0.display())]
    AdcFileAbsent(PathBuf),
    #[error("gcloud's ADC file: neither CLOUDSDK_CONFIG nor HOME is set")]
    NoGcloudConfigDir,
    #[error("the metadata server at {host}: {why}")]
    MetadataServer { host: String, why: ProbeFailure },
}

/// Why the metadata server probe found no metadata server.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("not a valid host ({0})")]
    BadHost(String),
    /// The name does not resolve: not on Google Cloud, so not worth waiting for.
    #[error("the name does not resolve ({0})")]
    NoSuchHost(String),
    #[error(
        "no answer within {}s ({attempts} attempt(s)); if it starts slowly (GKE), raise --metadata-wait",
        .waited.as_secs()
    )]
    NoAnswer { waited: Duration, attempts: u32 },
    #[error(
        "unreachable for {}s ({attempts} attempt(s), last: {reason}); if it starts slowly (GKE), \
         raise --metadata-wait",
        .waited.as_secs()
    )]
    Unreachable {
        reason: String,
        waited: Duration,
        attempts: u32,
    },
    #[error("answered {0} without Metadata-Flavor: Google")]
    NotMetadata(http::StatusCode),
}

/// Why a credentials file is not JSON at all.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// serde's message is not kept: it can quote the content. The position is safe.
    #[error("not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("not a JSON object")]
    NotAnObject,
}

/// What is wrong with one field of a credentials file. None carries the field's value.
#[derive(Debug, thiserror::Error)]
pub enum FieldProblem {
    #[error("is missing")]
    Missing,
    #[error("is empty")]
    Empty,
    #[error("has the wrong type ({found})")]
    WrongType { found: JsonKind },
    #[error("must be a list of non-empty strings")]
    EmptyListItem,
    #[error("is not a valid URL ({0})")]
    BadUrl(url::ParseError),
    #[error("must use https (plain http is accepted only on a loopback host)")]
    NotHttps,
    #[error("is not a PEM-encoded RSA private key")]
    NotAnRsaKey,
    #[error("must be an https URL ending /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken")]
    NotAnImpersonationUrl,
    #[error("must be of type authorized_user or service_account")]
    NotUserOrKey,
    #[error("is required when format.type is \"json\"")]
    NeededForJsonFormat,
    #[error("must be \"text\" or \"json\"")]
    NotTextOrJson,
    #[error("must map header names to string values")]
    BadHeader,
    #[error("must be a number of milliseconds between 5000 and 120000")]
    TimeoutOutOfRange,
    #[error("has none of `file`, `url` or `executable`")]
    NoSubjectSource,
}

/// The JSON type of a value, which a message may name where it may not quote the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonKind {
    #[error("null")]
    Null,
    #[error("a boolean")]
    Bool,
    #[error("a number")]
    Number,
    #[error("a string")]
    String,
    #[error("a list")]
    List,
    #[error("a JSON object")]
    Object,
}

impl JsonKind {
    pub(crate) fn of(value: &Value) -> JsonKind {
        match value {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::List,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

/// A credentials file that is well-formed but asks for something the proxy does not do.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "AWS workload identity federation (credential_source.environment_id `aws…`) is not \
         supported; use a file, url or executable credential source, or run iap-proxy with \
         --credentials gcloud"
    )]
    Aws,
    #[error(
        "its credential_source runs an executable, which is allowed only when {var}=1 is set \
         in the environment; set it if you trust the command"
    )]
    ExecutablesNotAllowed { var: &'static str },
    #[error(
        "it has no service_account_impersonation_url, and an ID token needs a service account: \
         recreate it with `gcloud iam workload-identity-pools create-cred-config … \
         --service-account=SA@PROJECT.iam.gserviceaccount.com`, or pass \
         --impersonate-service-account SA"
    )]
    NoServiceAccount,
}

/// Settings that contradict each other or the credential: today all of them about
/// `--token-kind self-signed-jwt`.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error(
        "--token-kind self-signed-jwt needs a service account key file (type service_account), \
         but the credential is {credential}; use --token-kind id-token or a key file"
    )]
    NeedsKeyFile { credential: NotAKey },
    #[error(
        "--token-kind self-signed-jwt signs as the key file's own service account; it cannot \
         be combined with --impersonate-service-account"
    )]
    WithImpersonation,
    #[error("--token-kind self-signed-jwt needs --upstream (the JWT's audience is its URL)")]
    WithoutUpstream,
}

/// A credential that cannot sign a JWT itself.
#[derive(Debug, thiserror::Error)]
pub enum NotAKey {
    #[error("the gcloud CLI")]
    GcloudCli,
    #[error("the metadata server")]
    MetadataServer,
    #[error("a {kind} file ({})", .path.display())]
    File { kind: String, path: PathBuf },
}

/// An endpoint from the settings (not from a credentials file) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint `{url}` is not a valid URL: {reason}")]
    Invalid {
        url: String,
        reason: url::ParseError,
    },
    #[error("token endpoint {url} must use https (plain http is accepted only on a loopback host)")]
    Insecure { url: String },
}

#[cfg(test)]
mod tests {
    use super::super::file::{FoundBy, Ids, Owner};
    use super::*;

    fn read_error(found_by: FoundBy, problem: FileAccess) -> String {
        CredentialError::ReadFile {
            file: CredPath {
                path: PathBuf::from("/key.json"),
                found_by,
            },
            problem,
        }
        .to_string()
    }

    #[test]
    fn unreadable_files_say_what_to_change() {
        let text = read_error(FoundBy::ApplicationCredentials, FileAccess::Missing);
        assert!(
            text.starts_with(
                "credentials file /key.json (from GOOGLE_APPLICATION_CREDENTIALS) does not exist;\n"
            ),
            "{text}"
        );
        assert!(text.contains("unset it"), "{text}");
        let denied = FileAccess::Denied {
            file: Some(Owner {
                uid: 1000,
                gid: 1000,
                mode: 0o600,
            }),
            process: Some(Ids {
                uid: 65532,
                gid: 65532,
            }),
        };
        let text = read_error(FoundBy::flag(), denied);
        for want in [
            "(from --credentials) cannot be read: permission denied",
            "mode 0600",
            "runs as uid 65532",
            "chgrp 65532 /key.json && chmod 0640 /key.json",
            "run iap-proxy as uid 1000",
            "Key files in containers",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        assert!(text.lines().all(|l| l.len() <= 120), "{text}");
    }
}
