//! Layering: defaults, the TOML file, `IAP_PROXY_*` variables and flags merged with the
//! `config` crate, each value remembering where it came from so errors can say so.

use std::fmt;
use std::path::{Path, PathBuf};

use ::config::{Config, ConfigError, Environment, File, FileFormat, Map, Source, Value, ValueKind};

use super::cli::{Flag, Given};
use super::env::Env;
use super::origin::Origin;
use super::suggest;
use super::table::{self, ENV_CONFIG, ENV_PREFIX};

// `Environment` labels every value it produces with this origin.
const ENV_ORIGIN: &str = "the environment";

/// Every problem found in the settings, so one run shows them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid settings:")?;
        for problem in &self.0 {
            // A long explanation's own lines stay under its bullet.
            write!(f, "\n  - {}", problem.replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which settings a command reads, and so which defaults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum For {
    Proxy,
    Token,
}

/// The merged layers, plus what is needed to say where each value came from.
pub(super) struct Layered {
    pub(super) values: Map<String, Value>,
    flags: Vec<&'static str>,
    pub(super) errors: Vec<String>,
    /// Put before every message: which `[[routes]]` table it is about.
    context: String,
    /// Keys that a reported typo probably meant, and whether the config file could not be
    /// read at all: either way a missing value is no news, so "X is required" is not said.
    pub(super) suggested: Vec<&'static str>,
    pub(super) file_unreadable: bool,
    /// The config file as the user named it (the `config` crate labels its values with a
    /// path relative to the working directory instead).
    file_path: Option<PathBuf>,
}

impl Layered {
    pub(super) fn new(given: &Given, env: &Env, command: For) -> Layered {
        let mut errors = Vec::new();
        let config = given
            .config
            .clone()
            .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
        let mut suggested = Vec::new();
        let mut file_unreadable = false;
        // Loaded on its own first so that a bad file is one reported problem, not the end of
        // validation. A file with unknown keys is reported and still used, so that its other
        // keys count and no "is required" follows for what it does give.
        let file = config.clone().and_then(|path| match load_file(&path) {
            Ok((file, unknown)) => {
                for key in unknown {
                    let keys = table::top_level().map(|s| s.key).chain(["routes"]);
                    let hint = suggest::hint(&key, keys);
                    suggested.extend(hint.target().and_then(|k| table::find(k)).map(|s| s.key));
                    errors.push(format!(
                        "config file {}: unknown key `{key}`: {}",
                        path.display(),
                        hint.text(|k| format!("`{k}`"))
                    ));
                }
                Some(file)
            }
            Err(e) => {
                errors.push(e);
                file_unreadable = true;
                None
            }
        });

        let mut env_source = Map::new();
        let mut unknown_env: Vec<&String> = Vec::new();
        for (name, value) in env.vars() {
            let Some(suffix) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if table::top_level().any(|s| s.key.eq_ignore_ascii_case(suffix)) {
                env_source.insert(name.clone(), value.clone());
            } else if !name.eq_ignore_ascii_case(ENV_CONFIG) {
                unknown_env.push(name);
            }
        }
        unknown_env.sort();
        for name in unknown_env {
            let suffix = name.get(ENV_PREFIX.len()..).unwrap_or_default();
            // IAP_PROXY_CONFIG names the file: not a setting, but a name one may mistype.
            let config_key = &ENV_CONFIG[ENV_PREFIX.len()..];
            let keys = table::top_level().map(|s| s.key).chain([config_key]);
            let hint = suggest::hint(suffix, keys);
            suggested.extend(hint.target().and_then(|k| table::find(k)).map(|s| s.key));
            errors.push(format!(
                "unknown environment variable {name}: {}",
                hint.text(table::env_name)
            ));
        }

        let defaults = table::top_level().filter_map(|s| {
            let default = match (command, s.token) {
                (For::Token, table::Token::No | table::Token::WithoutDefault) => None,
                _ => s.default,
            };
            default.map(|d| (s.key, d))
        });
        let flag_keys = given.flags.iter().map(|(k, _)| *k).collect();
        let values = match build(defaults, file, env_source, given) {
            Ok(values) => values,
            Err(e) => {
                errors.push(format!("cannot merge settings: {e}"));
                Map::new()
            }
        };
        Layered {
            values,
            flags: flag_keys,
            errors,
            context: String::new(),
            suggested,
            file_unreadable,
            file_path: config,
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.values
            .get(key)
            .is_some_and(|v| !matches!(v.kind, ValueKind::Nil))
    }

    /// The values one route sees: the top level's, overlaid with the route's table.
    pub(super) fn route(&self, context: String, table: Map<String, Value>) -> Layered {
        let mut values = self.values.clone();
        values.extend(table);
        Layered {
            values,
            flags: self.flags.clone(),
            errors: Vec::new(),
            context,
            suggested: self.suggested.clone(),
            file_unreadable: self.file_unreadable,
            file_path: self.file_path.clone(),
        }
    }

    pub(super) fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    /// Which layer gave `key` its value.
    pub(super) fn origin(&self, key: &str) -> Origin {
        let Some(key) = table::find(key).map(|s| s.key) else {
            return Origin::Default;
        };
        match self.values.get(key).and_then(Value::origin) {
            Some(ENV_ORIGIN) => Origin::Env(key),
            Some(file) => Origin::File(self.file_path.clone().unwrap_or_else(|| file.into())),
            None if self.flags.contains(&key) => Origin::Flag(key),
            None => Origin::Default,
        }
    }

    /// `key = "value" (from ORIGIN)`, the prefix of every message about a value.
    pub(super) fn describe(&self, key: &str) -> String {
        let value = match self.values.get(key).map(|v| &v.kind) {
            Some(ValueKind::String(s)) => format!("{s:?}"),
            Some(other) => other.to_string(),
            None => "(unset)".into(),
        };
        format!("{key} = {value} (from {})", self.origin(key))
    }

    pub(super) fn problem(&mut self, key: &str, what: &str) {
        let message = format!("{}{}: {what}", self.context, self.describe(key));
        self.errors.push(message);
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Reads the TOML file; returns it with the top-level keys we do not know (almost surely
/// typos, each reported).
fn load_file(path: &Path) -> Result<(Config, Vec<String>), String> {
    let file = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table = file
        .collect()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let mut unknown: Vec<String> = table
        .into_keys()
        .filter(|k| k.as_str() != "routes" && !table::top_level().any(|s| s.key == k.as_str()))
        .collect();
    unknown.sort();
    Ok((file, unknown))
}

fn build(
    defaults: impl Iterator<Item = (&'static str, &'static str)>,
    file: Option<Config>,
    env: Map<String, String>,
    given: &Given,
) -> Result<Map<String, Value>, ConfigError> {
    let mut builder = Config::builder();
    for (key, value) in defaults {
        builder = builder.set_default(key, value)?;
    }
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    // try_parsing stays off: it would turn an audience like "0123" into 123; values are typed by `Layered`.
    builder = builder.add_source(
        Environment::with_prefix("IAP_PROXY")
            .prefix_separator("_")
            .ignore_empty(true)
            .source(Some(env)),
    );
    for (key, flag) in &given.flags {
        let value: ValueKind = match flag {
            Flag::Value(text) => text.clone().into(),
            Flag::Switch => true.into(),
        };
        builder = builder.set_override(*key, value)?;
    }
    builder.build()?.collect()
}
