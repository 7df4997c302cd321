//! From a found credential to a token source: the file's `type` picks the source, and
//! `--impersonate-service-account` or `--token-kind self-signed-jwt` wrap it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use super::access_token::AccessTokenSource;
use super::adc::{self, Found};
use super::error::AuthError;
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
use crate::config::{Env, TokenKind};

/// Everything that decides the source.
#[derive(Debug, Clone)]
pub(crate) struct SourceOptions<'a> {
    pub(crate) credentials: Option<&'a Path>,
    pub(crate) audience: &'a str,
    /// `EMAIL[,DELEGATE…]`; empty for none.
    pub(crate) impersonate: &'a [String],
    pub(crate) iam_endpoint: &'a Url,
    pub(crate) token_kind: TokenKind,
    /// Needed by `TokenKind::SelfSignedJwt` (its `aud`).
    pub(crate) upstream: Option<&'a Url>,
}

/// Finds the credential, checks it now (a bad file stops start-up), and builds its source.
pub(crate) async fn source_from_settings(
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, AuthError> {
    let chosen = choose_source(opts, env, http).await?;
    tracing::info!(source = %chosen.source.describe(), found_by = chosen.found_by, audience = %opts.audience, "credential source chosen");
    Ok(chosen.source)
}

/// A built source and how it was found: what `iap-proxy check` tells the user.
pub(crate) struct Chosen {
    pub(crate) source: Arc<dyn TokenSource>,
    /// `--credentials`, `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud's application default
    /// credentials`, `--credentials gcloud` or `metadata server probe`.
    pub(crate) found_by: &'static str,
    /// The credentials file, when the source was read from one.
    pub(crate) file: Option<PathBuf>,
}

/// [`source_from_settings`], keeping how the credential was found.
pub(crate) async fn choose_source(
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Chosen, AuthError> {
    let found = adc::discover(opts.credentials, env).await?;
    let (found_by, file) = match &found {
        Found::File { origin, path } => (*origin, Some(path.clone())),
        Found::Gcloud => ("--credentials gcloud", None),
        Found::Metadata { .. } => ("metadata server probe", None),
    };
    let source = build(found, opts, env, http)?;
    Ok(Chosen {
        source,
        found_by,
        file,
    })
}

fn not_self_signed(opts: &SourceOptions<'_>, what: &str) -> Result<(), AuthError> {
    match opts.token_kind {
        TokenKind::IdToken => Ok(()),
        TokenKind::SelfSignedJwt => Err(AuthError::Conflict(format!(
            "--token-kind self-signed-jwt needs a service account key file (type service_account), \
             but the credential is {what}; use --token-kind id-token or a key file"
        ))),
    }
}

fn impersonate(
    base: Box<dyn AccessTokenSource>,
    chain: Chain,
    iam: &Url,
    opts: &SourceOptions<'_>,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, AuthError> {
    let url = impersonated::generate_id_token_url(iam, &chain.target)?;
    Ok(Arc::new(Impersonated::new(
        base,
        chain,
        opts.audience,
        url,
        http,
    )))
}

pub(crate) fn build(
    found: Found,
    opts: &SourceOptions<'_>,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, AuthError> {
    let chain = Chain::parse(opts.impersonate);
    match found {
        Found::Gcloud => {
            not_self_signed(opts, "the gcloud CLI")?;
            Ok(Arc::new(Gcloud::new(env, opts.audience, chain.as_ref())?))
        }
        Found::Metadata { .. } => {
            not_self_signed(opts, "the metadata server")?;
            let metadata = Metadata::new(env, opts.audience, http.clone());
            match chain {
                Some(chain) => {
                    impersonate(Box::new(metadata), chain, opts.iam_endpoint, opts, http)
                }
                None => Ok(Arc::new(metadata)),
            }
        }
        Found::File { path, .. } => from_file(&CredFile::read(&path)?, opts, chain, env, http),
    }
}

fn from_file(
    file: &CredFile,
    opts: &SourceOptions<'_>,
    chain: Option<Chain>,
    env: &Env,
    http: TokenHttp,
) -> Result<Arc<dyn TokenSource>, AuthError> {
    let kind = file.kind()?;
    if kind != "service_account" {
        not_self_signed(opts, &format!("a {kind} file ({})", file.path.display()))?;
    }
    match kind {
        "service_account" => {
            let key = ServiceAccount::from_cred_file(file, opts.audience, http.clone())?;
            match (opts.token_kind, chain) {
                (TokenKind::SelfSignedJwt, Some(_)) => Err(AuthError::Conflict(
                    "--token-kind self-signed-jwt signs as the key file's own service account; \
                     it cannot be combined with --impersonate-service-account"
                        .into(),
                )),
                (TokenKind::SelfSignedJwt, None) => {
                    let upstream = opts.upstream.ok_or_else(|| {
                        AuthError::Conflict(
                            "--token-kind self-signed-jwt needs --upstream (the JWT's audience is its URL)"
                                .into(),
                        )
                    })?;
                    Ok(Arc::new(SelfSigned::new(key, upstream)))
                }
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
            let raw = file.string("service_account_impersonation_url")?;
            let (email, url) = impersonated::from_access_token_url(raw).ok_or_else(|| {
                file.problem(
                    "service_account_impersonation_url",
                    "must be an https URL ending /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken",
                )
            })?;
            let delegates = file
                .strings("delegates")?
                .into_iter()
                .map(|d| {
                    d.trim_start_matches("projects/-/serviceAccounts/")
                        .to_owned()
                })
                .collect();
            let source = file.nested("source_credentials")?;
            let base: Box<dyn AccessTokenSource> = match source
                .kind()
                .map_err(|_| file.problem("source_credentials", "has no `type`"))?
            {
                "authorized_user" => Box::new(AuthorizedUser::from_file(&source, http.clone())?),
                "service_account" => Box::new(ServiceAccount::from_cred_file(
                    &source,
                    opts.audience,
                    http.clone(),
                )?),
                _ => {
                    return Err(file.problem(
                        "source_credentials",
                        "must be of type authorized_user or service_account",
                    ));
                }
            };
            let own = Chain {
                target: email,
                delegates,
            };
            // The file's host wins for this file: it may name a regional or private endpoint.
            let mut iam = url;
            iam.set_path("/");
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
                    let own = Chain { target: email, delegates: Vec::new() };
                    let chain = match outer {
                        Some(outer) => own.then(outer),
                        None => own,
                    };
                    impersonate(Box::new(external), chain, &url, opts, http)
                }
                (None, Some(chain)) => {
                    impersonate(Box::new(external), chain, opts.iam_endpoint, opts, http)
                }
                (None, None) => Err(AuthError::Unsupported {
                    path: file.path.clone(),
                    reason: "it has no service_account_impersonation_url, and an ID token needs a \
                             service account: recreate it with `gcloud iam workload-identity-pools \
                             create-cred-config … --service-account=SA@PROJECT.iam.gserviceaccount.com`, \
                             or pass --impersonate-service-account SA"
                        .into(),
                }),
            }
        }
        other => Err(AuthError::UnsupportedType {
            path: file.path.clone(),
            kind: other.chars().take(64).collect(),
        }),
    }
}
