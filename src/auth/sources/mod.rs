//! One file per kind of credential: each turns its input into ID tokens (a
//! [`TokenSource`](super::token::TokenSource)) or into access tokens for impersonation.

pub(crate) mod authorized_user;
pub(crate) mod executable;
pub(crate) mod external_account;
pub(crate) mod gcloud;
pub(crate) mod impersonated;
pub(crate) mod metadata;
pub(crate) mod self_signed;
pub(crate) mod service_account;
pub(crate) mod subject;
