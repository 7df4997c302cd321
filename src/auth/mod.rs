//! Credentials: finding them (`adc`, in the order Google's libraries use), one file per
//! kind of source (`sources/`), building the source the settings ask for (`build`), and the
//! cache that keeps one fresh ID token for the data path (`cache`).

mod access_token;
mod adc;
mod build;
pub(crate) mod cache;
mod error;
mod file;
pub(crate) mod jwt;
mod sources;
mod token;
mod token_http;

pub(crate) use build::{SourceOptions, choose_source, source_from_settings};
pub(crate) use cache::TokenCache;
pub(crate) use error::AuthError;
pub use token::IdToken;
pub(crate) use token_http::TokenHttp;
