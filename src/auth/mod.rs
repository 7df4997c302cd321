//! Credentials: finding them (`adc`, in the order Google's libraries use), reading their
//! files (`file`), one file per kind of source (`sources/`), building the source the
//! settings ask for (`build`), and the cache that keeps one fresh ID token for the data path
//! (`cache`). What fails is typed by boundary (`error`): start-up or one fetch.

mod access_token;
mod adc;
mod answer;
mod build;
pub(crate) mod cache;
#[cfg(test)]
mod credential_file_tests;
pub(crate) mod error;
mod file;
pub(crate) mod jwt;
mod not_credential;
mod process;
mod redact;
mod sources;
#[cfg(test)]
mod test_server;
mod token;
mod token_http;

pub(crate) use build::{SourceOptions, choose_source, source_from_bytes, source_from_settings};
pub(crate) use cache::TokenCache;
pub(crate) use error::{CredentialError, FetchError, FoundBy};
pub(crate) use redact::scrub;
pub use token::IdToken;
pub(crate) use token_http::TokenHttp;
