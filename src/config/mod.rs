//! Settings: defaults < `--config FILE` (TOML) < env `IAP_PROXY_<KEY>` < flags.
//!
//! Each setting is declared once, in `table.rs`; the command line (`cli.rs`), the
//! environment and the file (`layers.rs`), route inheritance (`routes.rs`) and the typed
//! reads (`read.rs`, `read_credentials.rs`) follow the table, and `settings.rs` gives each
//! key its field. Adding a setting is a row in the table and a line where it is read.

mod cli;
mod distinct;
mod env;
mod gce;
mod hosts;
mod layers;
mod origin;
mod read;
mod read_credentials;
mod routes;
mod row;
mod settings;
mod suggest;
mod table;
#[cfg(test)]
mod tests;
mod values;

pub use cli::{CheckArgs, Cli, Command, EXIT_FAILURE, EXIT_USAGE, ProxyArgs, TokenArgs};
pub use env::Env;
pub(crate) use hosts::SEC_FETCH_SITE;
pub use hosts::{AllowedHosts, AllowedOrigins};
pub use layers::ConfigErrors;
pub use origin::Origin;
pub use settings::{
    AUDIENCE_AUTO, DEFAULT_ROUTE, ProcessSettings, RouteSettings, Settings, TokenSettings,
};
pub(crate) use values::is_loopback_host;
pub use values::{AuthHeader, ListenAddr, LogFormat, TokenKind, UpstreamLiveness};
