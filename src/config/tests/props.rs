//! Settings parsing never panics, whatever the flags or the TOML file hold: every input is
//! either settings or a list of problems (exit 64).

use proptest::prelude::*;

use super::super::table::{Arg, SETTINGS};
use super::*;

/// Values a setting might be given: numbers at and past every bound, words, junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "4294967296",
            "1e9",
            "0x10",
            "",
            " ",
            "true",
            "auto",
            "unix:",
            "[::1]:0",
            "127.0.0.1:0",
            "https://app.example.com",
            "http://10.0.0.1",
            "0777",
            "9999999999999999999999",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,30}",
    ]
}

fn flags() -> impl Strategy<Value = Vec<String>> {
    let keyed = SETTINGS
        .iter()
        .filter(|s| s.key != "name")
        .collect::<Vec<_>>();
    prop::collection::vec((prop::sample::select(keyed), value()), 0..6).prop_map(|pairs| {
        let mut args = Vec::new();
        for (setting, v) in pairs {
            let flag = super::super::table::flag_name(setting.key);
            match setting.arg {
                Arg::Switch => args.push(flag),
                Arg::Value(_) | Arg::Choice(_) => args.push(format!("{flag}={v}")),
            }
        }
        args
    })
}

/// TOML text: `key = value` lines for the table's keys (quoted or bare), `[[routes]]`
/// tables, and arbitrary printable lines.
fn toml_text() -> impl Strategy<Value = String> {
    let keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    let line = prop_oneof![
        (prop::sample::select(keys.clone()), value())
            .prop_map(|(k, v)| format!("{k} = \"{}\"", v.replace(['"', '\\'], ""))),
        (prop::sample::select(keys), any::<i64>()).prop_map(|(k, n)| format!("{k} = {n}")),
        Just("[[routes]]".to_owned()),
        Just("[other]".to_owned()),
        "[ -~]{0,40}",
    ];
    prop::collection::vec(line, 0..10).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn flags_never_panic(extra in flags()) {
        let mut args = vec!["--upstream".to_owned(), UP.to_owned(), "--audience".to_owned(), AUD.to_owned()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = Settings::from_args(&args, &Env::default());
    }

    #[test]
    fn toml_files_never_panic(text in toml_text()) {
        let dir = TempDir::new();
        let path = dir.file("config.toml", &text);
        let _ = Settings::from_args(&["--config", &path], &Env::default());
        let _ = Settings::from_args(&["--config", &path, "--upstream", UP], &Env::default());
    }
}
