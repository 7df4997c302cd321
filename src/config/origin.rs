//! Where a setting's value came from. The settings layer knows it for every value; it is
//! carried into the settings where a later stage must name it (the credentials path, whose
//! file is only read when the credential is built).

use std::fmt;
use std::path::PathBuf;

use super::table;

/// The layer that gave a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line: `--KEY` (the setting's key).
    Flag(&'static str),
    /// The environment: `IAP_PROXY_KEY` (the setting's key).
    Env(&'static str),
    /// The TOML file given by `--config` or `IAP_PROXY_CONFIG`.
    File(PathBuf),
    /// Nobody set it.
    Default,
}

impl Origin {
    /// How to give the setting another value in the same layer, e.g. "pass another value
    /// to --credentials": the second half of a message's fix.
    pub fn how_to_change(&self) -> String {
        match self {
            Origin::Flag(key) => format!("pass another value to {}", table::flag_name(key)),
            Origin::Env(key) => format!("set {} to another value", table::env_name(key)),
            Origin::File(path) => format!("change it in config file {}", path.display()),
            Origin::Default => "set it with a flag, a variable or the config file".into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(key) => f.write_str(&table::flag_name(key)),
            Origin::Env(key) => f.write_str(&table::env_name(key)),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_names_its_layer() {
        let cases = [
            (
                Origin::Flag("credentials"),
                "--credentials",
                "--credentials",
            ),
            (
                Origin::Env("credentials"),
                "IAP_PROXY_CREDENTIALS",
                "set IAP_PROXY_CREDENTIALS",
            ),
            (
                Origin::File(PathBuf::from("/etc/iap.toml")),
                "config file /etc/iap.toml",
                "config file /etc/iap.toml",
            ),
            (Origin::Default, "default", "flag"),
        ];
        for (origin, shown, change) in cases {
            assert_eq!(origin.to_string(), shown);
            assert!(origin.how_to_change().contains(change), "{origin:?}");
        }
    }
}
