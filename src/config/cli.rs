//! The command line: subcommands (clap's derive) and the settings flags, generated from the
//! table of settings and read back through `ArgMatches`.

use std::path::PathBuf;

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use clap::{ArgAction, ArgMatches, FromArgMatches, ValueHint};

use super::table::{self, Arg, Setting, Token};

/// Exit status for bad flags or settings, or a file they name, found before serving
/// (`EX_USAGE` from sysexits.h). The README's table lists every exit status.
pub const EXIT_USAGE: u8 = 64;
/// Exit status for a failure while running, or at start-up outside the settings' control
/// (a busy port, an unreachable upstream, a refused token fetch).
pub const EXIT_FAILURE: u8 = 1;

const LONG_ABOUT: &str = "\
iap-proxy listens on localhost and forwards each request to an HTTPS upstream behind \
Google Identity-Aware Proxy, adding a fresh Google-signed ID token for the configured audience.

Settings are layered; each source overrides the ones before it:
  defaults < --config FILE (TOML) < environment IAP_PROXY_<KEY> < flags
A KEY is the flag name with '-' replaced by '_': --upstream-ca is upstream_ca in the file \
and IAP_PROXY_UPSTREAM_CA in the environment. IAP_PROXY_CONFIG may name the file instead of --config.

RUST_LOG sets the log level (default info), e.g. RUST_LOG=debug.";

#[derive(clap::Parser, Debug)]
#[command(
    name = "iap-proxy",
    version,
    about = "Localhost proxy that adds Google IAP ID tokens to requests for an HTTPS upstream",
    long_about = LONG_ABOUT,
    // Proxy flags before `token` would silently do nothing; refuse them instead.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print one ID token and a newline (like `gcloud auth print-identity-token`).
    Token(TokenArgs),
    /// Run the route once and explain what is wrong, with the fix; exit 0 only when an
    /// authenticated request through IAP succeeds. Takes the proxy's flags and config file.
    Check(CheckArgs),
    /// Print a shell completion script, e.g. `iap-proxy completions bash > /etc/bash_completion.d/iap-proxy`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `iap-proxy check`: the proxy's own settings, so the same flags and file are checked.
#[derive(clap::Args, Debug, Default)]
pub struct CheckArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// The settings flags of the proxy (and `check`): every row of the table with a flag.
#[derive(Debug, Default, Clone)]
pub struct ProxyArgs(Given);

/// The settings flags of `iap-proxy token`: the rows the token command takes.
#[derive(Debug, Default, Clone)]
pub struct TokenArgs(Given);

/// What the command line gave: `--config`, and each settings flag present, as text.
/// Values stay strings so that a bad one is reported together with every other problem
/// (exit 64) rather than by clap alone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Given {
    pub(crate) config: Option<PathBuf>,
    pub(crate) flags: Vec<(&'static str, Flag)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flag {
    Value(String),
    Switch,
}

impl Given {
    /// The text given to `--KEY`, if any.
    #[cfg(test)]
    pub(crate) fn value(&self, key: &str) -> Option<&str> {
        self.flags.iter().find_map(|(k, f)| match f {
            Flag::Value(v) if *k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether the switch `--KEY` was given.
    #[cfg(test)]
    pub(crate) fn switch(&self, key: &str) -> bool {
        self.flags
            .iter()
            .any(|(k, f)| *k == key && *f == Flag::Switch)
    }

    fn augment(
        cmd: clap::Command,
        rows: &[&'static Setting],
        config_help: &'static str,
        for_token: bool,
    ) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(config_help);
        rows.iter().fold(cmd.arg(config), |cmd, s| {
            let default = match s.token {
                Token::WithoutDefault if for_token => None,
                _ => s.default,
            };
            let default = match default {
                Some(d) if !matches!(s.arg, Arg::Switch) => format!(" [default: {d}]"),
                _ => String::new(),
            };
            // Shown, not read by clap: the settings layer reads the environment itself, so
            // that it can say where each value came from.
            let set = if matches!(s.arg, Arg::Switch) {
                "=true"
            } else {
                ""
            };
            let help = format!("{}{default} [env: {}{set}]", s.help, table::env_name(s.key));
            let arg = clap::Arg::new(s.key)
                .long(table::flag_name(s.key).trim_start_matches("--").to_owned())
                .help(help);
            cmd.arg(match s.arg {
                Arg::Value(name) => arg
                    .value_name(name)
                    .value_hint(hint(name))
                    .action(ArgAction::Set),
                Arg::Choice(names) => {
                    let shown: Vec<String> =
                        names().iter().map(|p| p.get_name().to_owned()).collect();
                    arg.value_name(shown.join("|"))
                        .value_parser(Offered(names))
                        .action(ArgAction::Set)
                }
                Arg::Switch => arg.action(ArgAction::SetTrue),
            })
        })
    }

    fn read(m: &ArgMatches, rows: &[&'static Setting]) -> Given {
        let flags = rows
            .iter()
            .filter_map(|s| match s.arg {
                Arg::Value(_) | Arg::Choice(_) => m
                    .get_one::<String>(s.key)
                    .map(|v| (s.key, Flag::Value(v.clone()))),
                Arg::Switch => m.get_flag(s.key).then_some((s.key, Flag::Switch)),
            })
            .collect();
        Given {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags,
        }
    }
}

/// What a shell may complete a value with, from the help's name for it: files for files,
/// nothing (rather than file names) for numbers, addresses and names.
fn hint(value_name: &str) -> ValueHint {
    match value_name {
        "FILE" | "PEMFILE" => ValueHint::FilePath,
        "URL" => ValueHint::Url,
        _ => ValueHint::Other,
    }
}

/// A choice's value parser: it takes any text, so a bad value is reported by the settings
/// layer with every other problem (exit 64), yet tells `--help` and the completion scripts
/// the names it expects.
#[derive(Clone)]
struct Offered(fn() -> Vec<PossibleValue>);

impl TypedValueParser for Offered {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new((self.0)().into_iter()))
    }
}

fn proxy_rows() -> Vec<&'static Setting> {
    table::top_level().collect()
}

fn token_rows() -> Vec<&'static Setting> {
    table::top_level()
        .filter(|s| s.token != Token::No)
        .collect()
}

impl ProxyArgs {
    pub(crate) fn given(&self) -> &Given {
        &self.0
    }
}

impl TokenArgs {
    pub(crate) fn given(&self) -> &Given {
        &self.0
    }
}

impl clap::Args for ProxyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Given::augment(
            cmd,
            &proxy_rows(),
            "TOML settings file (see config/iap-proxy.example.toml)",
            false,
        )
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ProxyArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ProxyArgs(Given::read(m, &proxy_rows())))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for TokenArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Given::augment(
            cmd,
            &token_rows(),
            "TOML settings file; only the keys of the token command are used",
            true,
        )
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TokenArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(TokenArgs(Given::read(m, &token_rows())))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
