//! Why a token could not be had, one type per boundary:
//! - [`CredentialError`] stops start-up: the credential cannot be found, read or understood,
//!   or the settings ask it for something it cannot do. Nothing is served with it.
//! - [`FetchError`] fails one fetch: the token cache retries it, requests waiting meanwhile
//!   get a 503 whose code names its kind, and `iap-proxy check` explains it.
//!
//! Code that reacts to a failure matches on variants; the texts are for people. Each names
//! what failed, on which input, where that came from and what to do, and none quotes a
//! secret or a value from a credentials file. The types are `pub` only because
//! [`StartError`](crate::StartError) carries them.

mod fetch;
mod file;
mod setup;

pub(crate) use fetch::{
    BadToken, ExecutableResponseError, FetchError, MetadataHostProblem, ProcessError,
    SubjectProblem,
};
pub(crate) use file::{
    APPLICATION_CREDENTIALS, CredPath, FileAccess, FoundBy, NOT_FOUND_FIXES, WrongFile,
};
pub(crate) use setup::{
    Conflict, CredentialError, EndpointError, FieldProblem, JsonKind, Looked, Malformed, NotAKey,
    ProbeFailure, Unsupported, not_found_summary,
};
