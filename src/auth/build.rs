//! From a found credential to a token source: the file's `type` picks the source, and
//! `--impersonate-service-account` or `--token-kind self-signed-jwt` wrap it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::access_token::AccessTokenSource;
use super::adc::{self, Explicit, Found};
use super::error::{Conflict, CredentialError, FieldProblem, FoundBy, NotAKey, Unsupported};
use super::file::CredFile;
use super::sources::authorized_user::AuthorizedUser;
use super::sources::external_account::ExternalAccount;
use super::sources::gcloud::Gcloud;
use super::sources::impersonated::{self, Chain, Impersonated};
use super::sources::metadata::Metadata;
use super::sources::self_signed::SelfSigned;
use super::sources::service_account::ServiceAccount;
use super::token::TokenSource;
use super::token_http::TokenHttp;
use crate::config::{Env, Origin, TokenKind};

/// Everything that decides the source.
#[derive(Debug, Clone)]
pub(crate) struct SourceOptions<'a> {
    pub(crate) credentials: Option<&'a Path>,
    /// Where `credentials` came from, for messages.
    pub(crate) credentials_from: &'a Origin,
    /// How long to keep asking the metadata server when nothing else is found.
    pub(crate) metadata_wait: Duration,
    pub(crate) audience: &'a str,
    /// `EMAIL[,DELEGATE…]`; empty for none.
    pub(crate) impersonate: &'a [String],
    pub(crate) iam_endpoint: &'a Url,
    pub(crate) token_kind: TokenKind,
    /// Needed by `TokenKind::SelfSignedJwt` (its `aud`).
    pub(crate) upstream: Option<&'a Url>,
}

/// Finds the credential, checks it now (a bad file stops start-up), builds its source and
/// logs the choice.
pub(crate) async fn source_from_settings(
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Chosen, CredentialError> {
    let chosen = choose_source(opts, env, http).await?;
    tracing::info!(
        source = %chosen.source.describe(),
        kind = %chosen.kind.label(),
        found_by = %chosen.found_by,
        audience = %opts.audience,
        "credential source chosen"
    );
    Ok(chosen)
}

/// A built source and how it was found: what `iap-proxy check` tells the user.
pub(crate) struct Chosen {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) kind: SourceKind,
    /// The setting or variable that named it, the ADC file, or the metadata server probe.
    pub(crate) found_by: FoundBy,
    /// The credentials file, when the source was read from one.
    pub(crate) file: Option<PathBuf>,
}

/// The kind of credential a source is built from: what metrics label it with (never a
/// path or an email, which would make a series per file or account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    ServiceAccount,
    AuthorizedUser,
    ImpersonatedServiceAccount,
    ExternalAccount,
    Gcloud,
    MetadataServer,
    SelfSignedJwt,
}

impl SourceKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            SourceKind::ServiceAccount => "service_account",
            SourceKind::AuthorizedUser => "authorized_user",
            SourceKind::ImpersonatedServiceAccount => "impersonated_service_account",
            SourceKind::ExternalAccount => "external_account",
            SourceKind::Gcloud => "gcloud",
            SourceKind::MetadataServer => "metadata_server",
            SourceKind::SelfSignedJwt => "self_signed_jwt",
        }
    }
}

/// [`source_from_settings`] without the log line, for `iap-proxy check`.
pub(crate) async fn choose_source(
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Chosen, CredentialError> {
    let explicit = Explicit {
        path: opts.credentials,
        origin: opts.credentials_from,
    };
    let found = adc::discover(explicit, env, opts.metadata_wait).await?;
    let found_by = found.found_by();
    let file = match &found {
        Found::File { path, .. } => Some(path.clone()),
        Found::Gcloud(_) | Found::Metadata { .. } => None,
    };
    let (source, kind) = build(found, opts, env, http)?;
    Ok(Chosen {
        source,
        kind,
        found_by,
        file,
    })
}

type Built = (Arc<dyn TokenSource>, SourceKind);

/// The source a credentials file's `bytes` (read from `path`, which `found_by` named) make,
/// checked as at start-up: for a reload, which must not put a broken file in use.
pub(crate) fn source_from_bytes(
    path: &Path,
    found_by: FoundBy,
    bytes: &[u8],
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, CredentialError> {
    let file = CredFile::parse(path, found_by, bytes)?;
    from_file(&file, opts, Chain::parse(opts.impersonate), env, http).map(|(source, _)| source)
}

fn not_self_signed(opts: &SourceOptions<'_>, credential: NotAKey) -> Result<(), CredentialError> {
    match opts.token_kind {
        TokenKind::IdToken => Ok(()),
        TokenKind::SelfSignedJwt => Err(CredentialError::Conflict(Conflict::NeedsKeyFile {
            credential,
        })),
    }
}

fn impersonate(
    base: Box<dyn AccessTokenSource>,
    chain: Chain,
    iam: &Url,
    opts: &SourceOptions<'_>,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, CredentialError> {
    let url = impersonated::generate_id_token_url(iam, &chain.target)?;
    Ok(Arc::new(Impersonated::new(
        base,
        chain,
        opts.audience,
        url,
        http,
    )))
}

fn build(
    found: Found,
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Built, CredentialError> {
    let chain = Chain::parse(opts.impersonate);
    match found {
        Found::Gcloud(_) => {
            not_self_signed(opts, NotAKey::GcloudCli)?;
            let gcloud = Gcloud::new(env, opts.audience, chain.as_ref())?;
            Ok((Arc::new(gcloud), SourceKind::Gcloud))
        }
        Found::Metadata { .. } => {
            not_self_signed(opts, NotAKey::MetadataServer)?;
            let metadata = Metadata::new(env, opts.audience, http.clone());
            let source = match chain {
                Some(chain) => {
                    impersonate(Box::new(metadata), chain, opts.iam_endpoint, opts, http)?
                }
                None => Arc::new(metadata),
            };
            Ok((source, SourceKind::MetadataServer))
        }
        Found::File { path, found_by } => {
            let file = CredFile::read(&path, found_by)?;
            from_file(&file, opts, chain, env, http)
        }
    }
}

fn from_file(
    file: &CredFile,
    opts: &SourceOptions<'_>,
    chain: Option<Chain>,
    env: &Env,
    http: TokenHttp,
) -> Result<Built, CredentialError> {
    let kind = file.kind()?;
    let label = match (kind.as_str(), opts.token_kind) {
        (_, TokenKind::SelfSignedJwt) => SourceKind::SelfSignedJwt,
        ("authorized_user", _) => SourceKind::AuthorizedUser,
        ("impersonated_service_account", _) => SourceKind::ImpersonatedServiceAccount,
        ("external_account", _) => SourceKind::ExternalAccount,
        _ => SourceKind::ServiceAccount,
    };
    from_typed_file(file, &kind, opts, chain, env, http).map(|source| (source, label))
}

fn from_typed_file(
    file: &CredFile,
    kind: &str,
    opts: &SourceOptions<'_>,
    chain: Option<Chain>,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, CredentialError> {
    if kind != "service_account" {
        let credential = NotAKey::File {
            kind: kind.to_owned(),
            path: file.path.clone(),
        };
        not_self_signed(opts, credential)?;
    }
    let conflict = |c| Err(CredentialError::Conflict(c));
    match kind {
        "service_account" => {
            let key = ServiceAccount::from_cred_file(file, opts.audience, http.clone())?;
            match (opts.token_kind, chain) {
                (TokenKind::SelfSignedJwt, Some(_)) => conflict(Conflict::WithImpersonation),
                (TokenKind::SelfSignedJwt, None) => match opts.upstream {
                    Some(upstream) => Ok(Arc::new(SelfSigned::new(key, upstream))),
                    None => conflict(Conflict::WithoutUpstream),
                },
                (TokenKind::IdToken, Some(chain)) => {
                    impersonate(Box::new(key), chain, opts.iam_endpoint, opts, http)
                }
                (TokenKind::IdToken, None) => Ok(Arc::new(key)),
            }
        }
        "authorized_user" => {
            let user = AuthorizedUser::from_file(file, http.clone())?;
            match chain {
                Some(chain) => impersonate(Box::new(user), chain, opts.iam_endpoint, opts, http),
                None => Ok(Arc::new(user.id_token_source(opts.audience)?)),
            }
        }
        "impersonated_service_account" => {
            // The file's host wins for this file: it may name a regional or private endpoint.
            let (own, iam) = impersonated::chain_of_file(file)?;
            let source = file.nested("source_credentials")?;
            let base: Box<dyn AccessTokenSource> = match source.kind()?.as_str() {
                "authorized_user" => Box::new(AuthorizedUser::from_file(&source, http.clone())?),
                "service_account" => Box::new(ServiceAccount::from_cred_file(
                    &source,
                    opts.audience,
                    http.clone(),
                )?),
                _ => return Err(file.problem("source_credentials", FieldProblem::NotUserOrKey)),
            };
            let chain = match chain {
                Some(outer) => own.then(outer),
                None => own,
            };
            impersonate(base, chain, &iam, opts, http)
        }
        "external_account" => {
            let external = ExternalAccount::from_file(file, env, http.clone())?;
            let own = external.impersonation.clone();
            match (own, chain) {
                (Some((email, mut url)), outer) => {
                    url.set_path("/");
                    let own = Chain {
                        target: email,
                        delegates: Vec::new(),
                    };
                    let chain = match outer {
                        Some(outer) => own.then(outer),
                        None => own,
                    };
                    impersonate(Box::new(external), chain, &url, opts, http)
                }
                (None, Some(chain)) => {
                    impersonate(Box::new(external), chain, opts.iam_endpoint, opts, http)
                }
                (None, None) => Err(CredentialError::Unsupported {
                    file: file.name(),
                    what: Unsupported::NoServiceAccount,
                }),
            }
        }
        other => Err(CredentialError::UnsupportedType {
            file: file.name(),
            kind: other.chars().take(64).collect(),
        }),
    }
}
