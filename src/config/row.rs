//! The shape of one row of the settings table (`table.rs`): who a setting belongs to, how
//! its flag takes a value, whether the token command takes it.

/// Who a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One value for the whole process; refused inside a `[[routes]]` table.
    Process,
    /// Each route's own; a `[[routes]]` table may set it, else it inherits the top level.
    Route,
    /// Only inside a `[[routes]]` table (no flag, no variable).
    RouteTable,
}

/// How the flag takes its value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// `--key VALUE`, shown as `VALUE` in the help.
    Value(&'static str),
    /// `--key NAME`, NAME one of a value enum's: listed by `--help` and offered by shell
    /// completions. `choices::<T>` gives them, so the enum is their one declaration.
    Choice(fn() -> Vec<clap::builder::PossibleValue>),
    /// `--key` alone means true.
    Switch,
}

/// The names (and help) of a value enum's variants, for [`Arg::Choice`].
pub(crate) fn choices<T: clap::ValueEnum>() -> Vec<clap::builder::PossibleValue> {
    T::value_variants()
        .iter()
        .filter_map(clap::ValueEnum::to_possible_value)
        .collect()
}

/// Whether `iap-proxy token` takes the setting too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    No,
    Yes,
    /// Taken, but without the proxy's default (the token command cannot discover one).
    WithoutDefault,
}

#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) key: &'static str,
    pub(crate) scope: Scope,
    pub(crate) arg: Arg,
    pub(crate) default: Option<&'static str>,
    pub(crate) token: Token,
    pub(crate) help: &'static str,
}

pub(super) const fn row(
    key: &'static str,
    scope: Scope,
    arg: Arg,
    default: Option<&'static str>,
    token: Token,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        scope,
        arg,
        default,
        token,
        help,
    }
}
