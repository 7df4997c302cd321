//! From a found credential to a token source: the file's `type` picks the source, and
//! `--impersonate-service-account` or `--token-kind self-signed-jwt` wrap it.

use std::sync::Arc;

use url::Url;

use super::access_token::AccessTokenSource;
use super::adc::{Found, SourceOptions};
use super::file::CredFile;
use super::sources::authorized_user::AuthorizedUser;
use super::sources::external_account::ExternalAccount;
use super::sources::gcloud::Gcloud;
use super::sources::impersonated::{self, Chain, Impersonated};
use super::sources::metadata::Metadata;
use super::sources::self_signed::SelfSigned;
use super::sources::service_account::ServiceAccount;
use super::{AuthError, TokenHttp, TokenSource};
use crate::config::{Env, TokenKind};

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
