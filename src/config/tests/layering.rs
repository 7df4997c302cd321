//! Flags, precedence and typed values.

use super::*;

#[test]
fn cli_is_consistent_and_documents_precedence() {
    Cli::command().debug_assert();
    let help = Cli::command().render_long_help().to_string();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("defaults < --config FILE (TOML) < environment IAP_PROXY_<KEY> < flags"),
        "{help}"
    );
    assert!(help.contains("RUST_LOG"), "{help}");
    assert!(help.contains("default info"), "{help}");
}

#[test]
fn cli_parses_values_and_rejects_misuse() {
    let args = proxy_args(&[
        "--header",
        "Proxy-Authorization",
        "--log-format",
        "json",
        "--allow-non-loopback",
    ]);
    let given = args.given();
    assert_eq!(given.value("header"), Some("Proxy-Authorization"));
    assert_eq!(given.value("log_format"), Some("json"));
    assert!(given.switch("allow_non_loopback") && !given.switch("no_rewrite_redirects"));
    assert_eq!(given.value("listen"), None);
    // Bad values pass clap and are reported by validation, together with the rest.
    for bad in [
        &["--header", "x-auth"][..],
        &["--token-wait", "1.5"],
        &["--max-header-bytes", "lots"],
    ] {
        let mut argv = vec!["--upstream", UP, "--audience", AUD];
        argv.extend_from_slice(bad);
        let args = proxy_args(&argv);
        let errs = Settings::load(&args, &Env::default()).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{bad:?}: {errs}");
    }
    for bad in [
        &["--shutdown-grace", "-1"][..],
        &["--listen", "127.0.0.1:1", "token"],
    ] {
        assert!(
            Cli::try_parse_from(std::iter::once("iap-proxy").chain(bad.iter().copied())).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        token_args(&["--audience", "a"]).given().value("audience"),
        Some("a")
    );
    // The token command has no proxy-only flags.
    assert!(Cli::try_parse_from(["iap-proxy", "token", "--listen", "127.0.0.1:1"]).is_err());
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = load_ok(&[], &[]);
    let p = &s.process;
    assert_eq!(p.upstream_ca, None);
    assert!(!p.allow_non_loopback && !p.access_log);
    assert_eq!(p.log_format, LogFormat::Text);
    assert_eq!(p.shutdown_grace, Duration::from_secs(30));
    assert_eq!(p.header_read_timeout, Duration::from_secs(30));
    assert_eq!(
        (p.max_header_bytes, p.max_concurrent_requests),
        (65536, 4096)
    );
    assert_eq!(
        (p.admin_listen, p.max_sigterm_delay),
        (None, Duration::ZERO)
    );
    assert_eq!(p.max_connections, 1024);
    let r = &s.routes[0];
    assert_eq!(r.name, DEFAULT_ROUTE);
    assert_eq!(r.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        (r.credentials.as_ref(), r.header),
        (None, AuthHeader::Authorization)
    );
    assert!(r.impersonate_service_account.is_empty());
    assert_eq!(
        r.iam_endpoint.as_str(),
        "https://iamcredentials.googleapis.com/"
    );
    assert_eq!(r.token_kind, TokenKind::IdToken);
    assert_eq!(r.client_secret_file, None);
    assert!(r.rewrite_redirects);
    assert_eq!(r.upstream_timeout, Duration::from_secs(60));
    assert_eq!(r.token_wait, Duration::from_secs(10));
    let auto = load(&["--upstream", UP], &[]).unwrap();
    assert_eq!(auto.routes[0].audience, AUDIENCE_AUTO);
}

#[test]
fn precedence_default_file_env_flag() {
    let dir = TempDir::new();
    let file = dir.file(
        "p.toml",
        "listen = \"127.0.0.2:1000\"\nshutdown_grace = 1\n",
    );
    // (file?, env?, flag?) → expected listen port and shutdown_grace
    let cases = [
        (false, false, false, 8080, 30),
        (true, false, false, 1000, 1),
        (true, true, false, 2000, 2),
        (false, true, false, 2000, 2),
        (true, true, true, 3000, 3),
        (false, true, true, 3000, 3),
        (true, false, true, 3000, 3),
    ];
    for (use_file, use_env, use_flag, port, grace) in cases {
        let mut flags = vec![];
        if use_file {
            flags.extend(["--config", file.as_str()]);
        }
        if use_flag {
            flags.extend(["--listen", "127.0.0.4:3000", "--shutdown-grace", "3"]);
        }
        let env: &[(&str, &str)] = if use_env {
            &[
                ("IAP_PROXY_LISTEN", "127.0.0.3:2000"),
                ("IAP_PROXY_SHUTDOWN_GRACE", "2"),
            ]
        } else {
            &[]
        };
        let s = load_ok(&flags, env);
        assert_eq!(
            (
                s.routes[0].listen.port().unwrap(),
                s.process.shutdown_grace.as_secs()
            ),
            (port, grace),
            "{flags:?} {env:?}"
        );
    }
}

#[test]
fn env_values_are_typed_and_flags_win() {
    let env = [
        ("IAP_PROXY_UPSTREAM", "http://localhost:9000/base"),
        ("IAP_PROXY_AUDIENCE", "0123"),
        ("IAP_PROXY_HEADER", "PROXY-AUTHORIZATION"),
        ("IAP_PROXY_LOG_FORMAT", "json"),
        ("IAP_PROXY_NO_REWRITE_REDIRECTS", "true"),
        ("IAP_PROXY_MAX_HEADER_BYTES", "8192"),
        ("IAP_PROXY_TOKEN_WAIT", "5"),
        ("IAP_PROXY_LISTEN", ""),
    ];
    let s = load(&[], &env).unwrap();
    assert_eq!(s.routes[0].upstream.as_str(), "http://localhost:9000/base");
    assert_eq!(s.routes[0].audience, "0123");
    assert_eq!(s.routes[0].header, AuthHeader::ProxyAuthorization);
    assert_eq!(s.process.log_format, LogFormat::Json);
    assert!(!s.routes[0].rewrite_redirects);
    assert_eq!(
        (s.process.max_header_bytes, s.routes[0].token_wait),
        (8192, Duration::from_secs(5))
    );
    assert_eq!(s.routes[0].listen.to_string(), "127.0.0.1:8080");
    let s = load(
        &[
            "--audience",
            "flag",
            "--header",
            "authorization",
            "--token-wait",
            "7",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        (s.routes[0].audience.as_str(), s.routes[0].header),
        ("flag", AuthHeader::Authorization)
    );
    assert_eq!(s.routes[0].token_wait, Duration::from_secs(7));
}
