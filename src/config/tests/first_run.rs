//! What a first run trips over: where each value came from, `localhost:PORT`, listeners
//! that clash, did-you-mean, the self-signed token without --audience, the help's
//! variables and the choices completions offer.

use super::*;

#[test]
fn the_credentials_origin_is_carried_into_the_settings() {
    let dir = TempDir::new();
    let key = dir.file("key.json", "{}");
    let s = load_ok(&["--credentials", &key], &[]);
    assert_eq!(s.routes[0].credentials_from, Origin::Flag("credentials"));
    let s = load_ok(&[], &[("IAP_PROXY_CREDENTIALS", key.as_str())]);
    assert_eq!(s.routes[0].credentials_from, Origin::Env("credentials"));
    let file = dir.file("c.toml", &format!("credentials = \"{key}\"\n"));
    let s = load_ok(&["--config", &file], &[]);
    assert_eq!(
        s.routes[0].credentials_from,
        Origin::File(PathBuf::from(&file))
    );
    assert_eq!(
        load_ok(&[], &[]).routes[0].credentials_from,
        Origin::Default
    );
    assert_eq!(
        load_ok(&[], &[]).process.metadata_wait,
        Duration::from_secs(10)
    );
}

#[test]
fn localhost_port_listens_on_the_loopback_address() {
    for (given, want) in [
        ("localhost:8080", "127.0.0.1:8080"),
        ("LOCALHOST.:9000", "127.0.0.1:9000"),
    ] {
        let s = load_ok(
            &["--listen", given, "--admin-listen", "localhost:9091"],
            &[],
        );
        assert_eq!(s.routes[0].listen.to_string(), want);
        assert_eq!(
            s.process.admin_listen,
            Some("127.0.0.1:9091".parse().unwrap())
        );
    }
    for bad in ["localhost", "localhost:http", "localhost.example:80"] {
        assert_one_error(
            &load_err(&["--upstream", UP, "--audience", AUD, "--listen", bad], &[]),
            &["listen", "IP:port"],
        );
    }
}

#[test]
fn listeners_that_clash_are_refused_before_binding() {
    let errors = load_err(
        &[
            "--upstream",
            UP,
            "--audience",
            AUD,
            "--admin-listen",
            "127.0.0.1:8080",
        ],
        &[],
    );
    assert_one_error(
        &errors,
        &[
            "admin_listen = \"127.0.0.1:8080\" (from --admin-listen)",
            "route `default` listens on 127.0.0.1:8080",
            "port of their own",
        ],
    );
    // Any free port (0) clashes with nothing.
    load_ok(
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    let dir = TempDir::new();
    let file = dir.file(
        "r.toml",
        &format!(
            "audience = \"{AUD}\"\nallow_non_loopback = true\ntrust_network = true\n\
             [[routes]]\nlisten = \"0.0.0.0:9001\"\nupstream = \"https://a.example.com\"\n\
             [[routes]]\nlisten = \"127.0.0.1:9001\"\nupstream = \"https://b.example.com\"\n"
        ),
    );
    assert_one_error(
        &load_err(&["--config", &file], &[]),
        &["routes `route-1` and `route-2` both listen on 127.0.0.1:9001"],
    );
}

#[test]
fn self_signed_token_needs_the_upstream_not_the_audience() {
    let env = Env::default();
    let args = token_args(&["--token-kind", "self-signed-jwt", "--upstream", UP]);
    let s = TokenSettings::load(&args, &env).unwrap();
    assert_eq!(s.audience, None);
    assert_eq!(s.upstream.unwrap().as_str(), "https://app.example.com/");
    let args = token_args(&["--token-kind", "self-signed-jwt"]);
    let errors = TokenSettings::load(&args, &env).unwrap_err().0;
    assert_one_error(&errors, &["upstream is required"]);
}

#[test]
fn help_names_each_variable_and_offers_the_choices() {
    let mut cmd = Cli::command();
    let help = cmd.render_help().to_string();
    for s in table::top_level() {
        let env = table::env_name(s.key);
        assert!(help.contains(&env), "{env} missing from --help:\n{help}");
    }
    assert!(help.contains("[env: IAP_PROXY_ACCESS_LOG=true]"), "{help}");
    let header = cmd
        .get_arguments()
        .find(|a| a.get_id() == "header")
        .unwrap();
    let names: Vec<String> = header
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "authorization",
            "proxy-authorization",
            "x-serverless-authorization"
        ]
    );
    // Offered, not enforced by clap: a bad value is reported with the other problems.
    let args = proxy_args(&["--log-format", "xml", "--token-kind", "nope"]);
    let errors = Settings::load(&args, &Env::default()).unwrap_err().0;
    assert!(
        errors.iter().any(|e| e.contains("log_format")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("token_kind")),
        "{errors:#?}"
    );
}

#[test]
fn a_typo_in_the_file_is_the_only_news() {
    let dir = TempDir::new();
    let typo = dir.file(
        "typo.toml",
        "upstrem = \"https://x\"\n[proxy]\nlisten = \"x\"\n",
    );
    // Without --upstream the typo is still the only news: no "upstream is required".
    let errors = load_err(&["--audience", AUD, "--config", &typo], &[]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let dashed = dir.file("dashed.toml", "upstream-ca = \"ca.pem\"\n");
    assert_one_error(
        &load_err(
            &["--upstream", UP, "--audience", AUD, "--config", &dashed],
            &[],
        ),
        &["`upstream-ca`", "written with `_`", "write `upstream_ca`"],
    );
}

#[test]
fn long_problems_stay_under_their_bullet() {
    let text = ConfigErrors(vec!["first line\nsecond line".into()]).to_string();
    assert_eq!(text, "invalid settings:\n  - first line\n    second line");
}
