//! Each validation rule, the file, the token command and the example file.

use super::*;

#[test]
fn non_loopback_listen_needs_permission() {
    for listen in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:80"] {
        let errors = load_err(
            &["--upstream", UP, "--audience", AUD, "--listen", listen],
            &[],
        );
        assert_one_error(
            &errors,
            &[
                listen,
                "--listen",
                "acts as the service account",
                "--allow-non-loopback",
            ],
        );
        // Allowed beyond this machine, it still needs a client secret or a trusted network.
        let errors = load_err(
            &[
                "--upstream",
                UP,
                "--audience",
                AUD,
                "--listen",
                listen,
                "--allow-non-loopback",
            ],
            &[],
        );
        assert_one_error(
            &errors,
            &[
                listen,
                "without a client secret",
                "client_secret_file",
                "--trust-network",
            ],
        );
        let dir = TempDir::new();
        let secret = dir.file("secret", "0123456789abcdef0123\n");
        let s = load_ok(
            &[
                "--listen",
                listen,
                "--allow-non-loopback",
                "--client-secret-file",
                &secret,
            ],
            &[],
        );
        assert!(s.process.allow_non_loopback);
        let s = load_ok(
            &["--listen", listen, "--trust-network"],
            &[("IAP_PROXY_ALLOW_NON_LOOPBACK", "true")],
        );
        assert_eq!(s.routes[0].listen.to_string(), listen);
        assert!(s.process.trust_network);
    }
    for listen in [
        "127.0.0.1:1",
        "127.8.9.10:80",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert_eq!(
            load_ok(&["--listen", listen], &[]).routes[0]
                .listen
                .to_string(),
            listen
        );
    }
}

#[test]
fn upstream_rules() {
    for ok in [
        "https://app.example.com/prefix",
        "http://localhost:8000",
        "http://127.0.0.1",
        "http://[::1]:3000",
    ] {
        let s = load(&["--audience", AUD, "--upstream", ok], &[]).unwrap();
        assert_eq!(s.routes[0].upstream, Url::parse(ok).unwrap());
    }
    let cases = [
        ("app.example.com", "not an absolute URL"),
        ("/relative", "not an absolute URL"),
        ("http://app.example.com", "in clear"),
        ("http://10.0.0.1", "in clear"),
        ("ftp://app.example.com", "scheme must be https"),
        ("https://app.example.com/?a=1", "?query"),
        ("https://app.example.com/#x", "#fragment"),
        ("https://user:pw@app.example.com", "user:password@"),
    ];
    for (upstream, want) in cases {
        let errors = load_err(&["--audience", AUD, "--upstream", upstream], &[]);
        assert_one_error(&errors, &[want, "upstream", upstream, "--upstream"]);
    }
    let errors = load_err(&["--audience", AUD, "--upstream", "unix:/run/sock"], &[]);
    assert!(
        errors.iter().any(|e| e.contains("has no host")),
        "{errors:#?}"
    );
}

#[test]
fn each_rule_has_its_own_message() {
    let dir = TempDir::new();
    let not_pem = dir.file("not.pem", "hello");
    let missing = dir.missing("nope.json");
    let base = ["--upstream", UP, "--audience", AUD];
    // (extra flags, env, substrings of the one expected error)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["--listen", "app.example.com:80"],
            vec![],
            vec!["listen", "IP:port", "localhost:8080"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_LISTEN", "127.0.0.1")],
            vec!["IAP_PROXY_LISTEN", "IP:port"],
        ),
        (
            vec!["--upstream-ca", &not_pem],
            vec![],
            vec!["upstream_ca", "no PEM certificate"],
        ),
        (
            vec!["--upstream-ca", &missing],
            vec![],
            vec!["upstream_ca", "cannot be read", "nope.json"],
        ),
        (
            vec!["--credentials", &missing],
            vec![],
            vec!["credentials", "cannot be used", "nope.json"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_HEADER", "x-auth")],
            vec!["header", "proxy-authorization"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_LOG_FORMAT", "xml")],
            vec!["log_format", "text or json"],
        ),
        (
            vec!["--upstream-timeout", "0"],
            vec![],
            vec!["upstream_timeout", "at least 1"],
        ),
        (
            vec!["--token-wait", "0"],
            vec![],
            vec!["token_wait", "at least 1"],
        ),
        (
            vec!["--header-read-timeout", "0"],
            vec![],
            vec!["header_read_timeout", "at least 1"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_SHUTDOWN_GRACE", "soon")],
            vec!["IAP_PROXY_SHUTDOWN_GRACE", "whole number"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_SHUTDOWN_GRACE", "-1")],
            vec!["shutdown_grace", "whole number"],
        ),
        (
            vec!["--max-header-bytes", "100"],
            vec![],
            vec!["max_header_bytes", "at least 8192"],
        ),
        (
            vec!["--max-concurrent-requests", "0"],
            vec![],
            vec!["max_concurrent_requests", "at least 1"],
        ),
        (
            vec![],
            vec![("IAP_PROXY_ALLOW_NON_LOOPBACK", "maybe")],
            vec!["allow_non_loopback", "true or false"],
        ),
    ];
    for (flags, env, want) in cases {
        let all: Vec<&str> = base.iter().copied().chain(flags.iter().copied()).collect();
        assert_one_error(&load_err(&all, &env), &want);
    }
    assert_eq!(
        load_ok(&["--shutdown-grace", "0"], &[])
            .process
            .shutdown_grace,
        Duration::ZERO
    );
    let pem = dir.file("ca.pem", PEM);
    let creds = dir.file("sa.json", "{}");
    let s = load_ok(&["--upstream-ca", &pem, "--credentials", &creds], &[]);
    assert_eq!(s.process.upstream_ca, Some(PathBuf::from(&pem)));
    assert_eq!(s.routes[0].credentials, Some(PathBuf::from(&creds)));
}

#[test]
fn required_settings() {
    let errors = load_err(&[], &[]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("upstream is required") && errors[0].contains("IAP_PROXY_UPSTREAM")
    );
    // No audience means `auto`: discovered from the upstream at start-up.
    let s = load_ok_without_audience(&["--upstream", UP]);
    assert_eq!(
        (
            s.routes[0].audience.as_str(),
            s.routes[0].explicit_audience()
        ),
        ("auto", None)
    );
    let s = load_ok_without_audience(&["--upstream", UP, "--audience", "AUTO"]);
    assert_eq!(s.routes[0].explicit_audience(), None);
    let s = load_ok_without_audience(&["--upstream", UP, "--audience", AUD]);
    assert_eq!(s.routes[0].explicit_audience(), Some(AUD));
    assert_one_error(
        &load_err(&["--upstream", UP, "--audience", " "], &[]),
        &["audience", "must not be empty"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let env = [("IAP_PROXY_LOG_FORMAT", "xml"), ("IAP_PROXY_UPSTREM", UP)];
    let errors = load_err(
        &[
            "--listen",
            "0.0.0.0:80",
            "--token-wait",
            "0",
            "--max-header-bytes",
            "1",
        ],
        &env,
    );
    // The variable's typo is named once, with its fix: no "upstream is required" besides.
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let text = ConfigErrors(errors).to_string();
    assert!(text.starts_with("invalid settings:\n  - "), "{text}");
    assert!(!text.contains("upstream is required"), "{text}");
    for want in [
        "IAP_PROXY_UPSTREM: did you mean IAP_PROXY_UPSTREAM?",
        "listen",
        "log_format",
        "token_wait",
    ] {
        assert!(text.contains(want), "{text} lacks {want}");
    }
}

#[test]
fn toml_file_types_and_typos() {
    let dir = TempDir::new();
    let typo = dir.file(
        "typo.toml",
        "upstrem = \"https://x\"\n[proxy]\nlisten = \"x\"\n",
    );
    let errors = load_err(
        &["--upstream", UP, "--audience", AUD, "--config", &typo],
        &[],
    );
    // One message per unknown key (see first_run.rs for what each says).
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let text = errors.join("\n");
    for want in [
        "typo.toml",
        "`upstrem`: did you mean `upstream`?",
        "`proxy`: known",
    ] {
        assert!(text.contains(want), "{text}");
    }

    let typed = dir.file(
        "typed.toml",
        "listen = 8080\nshutdown_grace = 1.5\nmax_concurrent_requests = -3\n",
    );
    let errors = load_err(
        &["--upstream", UP, "--audience", AUD, "--config", &typed],
        &[],
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e.contains("typed.toml")),
        "{errors:#?}"
    );

    let broken = dir.file("broken.toml", "listen = \n");
    assert_one_error(
        &load_err(
            &["--upstream", UP, "--audience", AUD, "--config", &broken],
            &[],
        ),
        &["broken.toml"],
    );

    let missing = dir.missing("absent.toml");
    let errors = load_err(
        &["--upstream", UP, "--audience", AUD, "--config", &missing],
        &[],
    );
    assert_one_error(&errors, &["absent.toml"]);
}

#[test]
fn config_file_from_env_and_unknown_env_vars() {
    let dir = TempDir::new();
    let a = dir.file("a.toml", "shutdown_grace = 5\n");
    let b = dir.file("b.toml", "shutdown_grace = 6\n");
    let s = load_ok(&[], &[("IAP_PROXY_CONFIG", &a)]);
    assert_eq!(s.process.shutdown_grace.as_secs(), 5);
    let s = load_ok(&["--config", &b], &[("IAP_PROXY_CONFIG", &a)]);
    assert_eq!(s.process.shutdown_grace.as_secs(), 6);
    let errors = load_err(
        &["--upstream", UP, "--audience", AUD],
        &[("IAP_PROXY_UPSTREM", UP), ("OTHER", "x")],
    );
    assert_one_error(
        &errors,
        &[
            "unknown environment variable IAP_PROXY_UPSTREM",
            "IAP_PROXY_UPSTREAM",
        ],
    );
}

#[test]
fn token_settings() {
    let env = Env::default();
    let errors = TokenSettings::load(&token_args(&[]), &env).unwrap_err().0;
    assert_one_error(&errors, &["audience is required"]);
    let errors = TokenSettings::load(&token_args(&["--audience", "auto"]), &env)
        .unwrap_err()
        .0;
    assert_one_error(&errors, &["audience", "needs an upstream"]);
    let dir = TempDir::new();
    let file = dir.file(
        "shared.toml",
        &format!("audience = \"{AUD}\"\nlisten = \"0.0.0.0:1\"\n"),
    );
    let s = TokenSettings::load(&token_args(&["--config", &file]), &env).unwrap();
    assert_eq!(
        s,
        TokenSettings {
            audience: Some(AUD.into()),
            credentials: None,
            credentials_from: Origin::Default,
            upstream_ca: None,
            impersonate_service_account: Vec::new(),
            iam_endpoint: Url::parse("https://iamcredentials.googleapis.com").unwrap(),
            token_kind: crate::config::TokenKind::IdToken,
            upstream: None,
            metadata_wait: Duration::from_secs(10),
        }
    );
    let env = Env::from_pairs([("IAP_PROXY_AUDIENCE", "from-env")]);
    assert_eq!(
        TokenSettings::load(&token_args(&[]), &env)
            .unwrap()
            .audience
            .as_deref(),
        Some("from-env")
    );
    let missing = dir.missing("ca.pem");
    let errors = TokenSettings::load(&token_args(&["--upstream-ca", &missing]), &env)
        .unwrap_err()
        .0;
    assert_one_error(&errors, &["upstream_ca", "ca.pem"]);
}

#[test]
fn example_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/iap-proxy.example.toml");
    let s = load(&["--config", example], &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (s.routes[0].upstream.as_str(), s.routes[0].audience.as_str()),
        ("https://app.example.com/", AUD)
    );
    assert_eq!(s, load_ok(&[], &[]), "the example should show the defaults");
}

fn load_ok_without_audience(argv: &[&str]) -> Settings {
    load(argv, &[]).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}
