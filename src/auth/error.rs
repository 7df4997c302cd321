//! Why a token could not be had.

use std::path::PathBuf;

/// Why a token could not be had. Every message names the input and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("credentials file {path}: field `{field}` {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error(
        "credentials file {path}: field `type` is `{kind}`, which is not supported (expected service_account, authorized_user, impersonated_service_account or external_account)"
    )]
    UnsupportedType { path: PathBuf, kind: String },
    #[error("endpoint `{url}` is not a valid URL: {reason}")]
    BadEndpoint { url: String, reason: String },
    #[error("token endpoint {url} must use https (plain http is accepted only on a loopback host)")]
    InsecureEndpoint { url: String },
    #[error("cannot sign the JWT assertion with the key in {path}: {reason}")]
    Sign { path: PathBuf, reason: String },
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} answered {status}: {detail}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("{endpoint} did not answer in time ({seconds}s)")]
    Timeout { endpoint: String, seconds: u64 },
    #[error("the token endpoint returned an unusable ID token: {0}")]
    BadToken(String),
    #[error(
        "credentials file {path} holds user credentials (authorized_user, OAuth client {client_id}): \
         their ID tokens carry aud = {client_id}, but the audience is {audience}. Either \
         (1) impersonate a service account: pass --impersonate-service-account SA@PROJECT.iam.gserviceaccount.com \
         (you need roles/iam.serviceAccountTokenCreator on it: `gcloud iam service-accounts add-iam-policy-binding \
         SA@PROJECT.iam.gserviceaccount.com --member=user:YOU@EXAMPLE.COM --role=roles/iam.serviceAccountTokenCreator`), or \
         (2) add {client_id} to the IAP application's programmatic-access allowlist \
         (`gcloud iap settings set iap-settings.yaml --project=PROJECT --resource-type=iap_web` with iap-settings.yaml: \
         `accessSettings: {{oauthSettings: {{programmaticClients: [\"{client_id}\"]}}}}`) and pass --audience {client_id}"
    )]
    UserAudience {
        path: PathBuf,
        client_id: String,
        audience: String,
    },
    #[error(
        "{caller} may not mint ID tokens as {target}{}: {detail}. Grant it \
         roles/iam.serviceAccountOpenIdTokenCreator (or roles/iam.serviceAccountTokenCreator) on {target}: \
         `gcloud iam service-accounts add-iam-policy-binding {target} --member=MEMBER \
         --role=roles/iam.serviceAccountOpenIdTokenCreator` (MEMBER: user:YOU@EXAMPLE.COM, \
         serviceAccount:SA_EMAIL or principal://… for a federated identity)",
        if delegates.is_empty() { String::new() } else { format!(" through delegates {delegates}") }
    )]
    ImpersonationDenied {
        caller: String,
        target: String,
        delegates: String,
        detail: String,
    },
    #[error("credentials file {path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("credentials file {path}: cannot get the subject token: {reason}")]
    Subject { path: PathBuf, reason: String },
    #[error("gcloud: {reason}")]
    Gcloud { reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error(
        "no Google credentials found. Looked at:\n{looked}\nFix it with one of:\n  \
         - `gcloud auth application-default login` (then --impersonate-service-account SA, see README)\n  \
         - `gcloud iam service-accounts keys create key.json --iam-account=SA@PROJECT.iam.gserviceaccount.com` and --credentials key.json\n  \
         - --credentials gcloud, to use the gcloud CLI's login\n  \
         - run on Google Cloud (GCE, GKE, Cloud Run), where the metadata server provides credentials"
    )]
    NotFound { looked: String },
}
