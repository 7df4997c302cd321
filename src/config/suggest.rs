//! Did-you-mean for names the settings do not know: TOML keys and `IAP_PROXY_*` variables.

/// How alike two names must be (Jaro-Winkler, 0..1) for one to pass as a typo of the other;
/// clap uses the same measure and bar for its own suggestions.
const ALIKE: f64 = 0.8;

/// What to tell someone who wrote `given` where one of `known` was expected: the key it
/// almost is (`-` written for `_` first), or else every known name.
pub(super) fn hint<'a>(given: &str, known: impl Iterator<Item = &'a str>) -> Hint<'a> {
    let known: Vec<&str> = known.collect();
    let normal = given.trim().to_ascii_lowercase().replace('-', "_");
    if let Some(exact) = known.iter().find(|k| k.eq_ignore_ascii_case(&normal)) {
        return Hint::Underscore(exact);
    }
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(&normal, &k.to_ascii_lowercase()), *k))
        .filter(|(score, _)| *score >= ALIKE)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => Hint::Closest(k),
        None => Hint::Known(known),
    }
}

/// The suggestion for one unknown name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hint<'a> {
    /// The name is this key, written with `-` (or in capitals).
    Underscore(&'a str),
    /// The name is probably a typo of this one.
    Closest(&'a str),
    /// Nothing close: the names that would be understood.
    Known(Vec<&'a str>),
}

impl Hint<'_> {
    /// The known name this hint points at, if any.
    pub(super) fn target(&self) -> Option<&str> {
        match self {
            Hint::Underscore(k) | Hint::Closest(k) => Some(k),
            Hint::Known(_) => None,
        }
    }

    /// The hint as the end of a message, with each known name written by `show`.
    pub(super) fn text(&self, show: impl Fn(&str) -> String) -> String {
        match self {
            Hint::Underscore(k) => format!(
                "keys are written with `_`, not `-` (flags use `-`): write {}",
                show(k)
            ),
            Hint::Closest(k) => format!("did you mean {}?", show(k)),
            Hint::Known(all) => {
                let all: Vec<String> = all.iter().map(|k| show(k)).collect();
                format!("known ones are {}", all.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 4] = ["upstream", "upstream_ca", "listen", "admin_listen"];

    #[test]
    fn typos_dashes_and_strangers() {
        assert_eq!(
            hint("upstrem", KNOWN.into_iter()),
            Hint::Closest("upstream")
        );
        assert_eq!(
            hint("upstream-ca", KNOWN.into_iter()),
            Hint::Underscore("upstream_ca")
        );
        assert_eq!(
            hint("UPSTREAM_CA", KNOWN.into_iter()),
            Hint::Underscore("upstream_ca")
        );
        assert_eq!(
            hint("admin_lisen", KNOWN.into_iter()),
            Hint::Closest("admin_listen")
        );
        assert_eq!(
            hint("colour", KNOWN.into_iter()),
            Hint::Known(KNOWN.to_vec())
        );
        let quoted = |k: &str| format!("`{k}`");
        assert_eq!(
            hint("upstrem", KNOWN.into_iter()).text(quoted),
            "did you mean `upstream`?"
        );
        assert!(
            hint("upstream-ca", KNOWN.into_iter())
                .text(quoted)
                .contains("write `upstream_ca`")
        );
        assert_eq!(
            hint("upstrem", KNOWN.into_iter()).target(),
            Some("upstream")
        );
    }
}
