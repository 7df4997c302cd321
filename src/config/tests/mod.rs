use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use url::Url;

use super::*;

const UP: &str = "https://app.example.com";
const AUD: &str = "123-abc.apps.googleusercontent.com";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> TempDir {
        TempDir(tempfile::tempdir().unwrap())
    }
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
    fn missing(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }
}

fn proxy_args(flags: &[&str]) -> ProxyArgs {
    let cli = Cli::try_parse_from(std::iter::once("iap-proxy").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    assert!(cli.command.is_none());
    cli.proxy
}

fn token_args(flags: &[&str]) -> TokenArgs {
    let cli = Cli::try_parse_from(
        ["iap-proxy", "token"]
            .into_iter()
            .chain(flags.iter().copied()),
    )
    .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    match cli.command {
        Some(Command::Token(args)) => args,
        other => panic!("not the token command: {other:?}"),
    }
}

fn load(flags: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
    Settings::load(&proxy_args(flags), &Env::from_pairs(env.iter().copied()))
}

/// `load` with the two required settings supplied by flags.
fn load_ok(flags: &[&str], env: &[(&str, &str)]) -> Settings {
    let all: Vec<&str> = ["--upstream", UP, "--audience", AUD]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    load(&all, env).unwrap_or_else(|e| panic!("{flags:?} {env:?}: {e}"))
}

fn load_err(flags: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    match load(flags, env) {
        Ok(s) => panic!("{flags:?} {env:?} accepted: {s:?}"),
        Err(e) => e.0,
    }
}

fn assert_one_error(errors: &[String], want: &[&str]) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    for w in want {
        assert!(errors[0].contains(w), "{:?} lacks {w:?}", errors[0]);
    }
}

mod credentials;
mod first_run;
mod layering;
mod props;
mod routes;
mod validation;
