//! The credential keys: impersonate_service_account, iam_endpoint, token_kind, and
//! `credentials = "gcloud"`.

use super::*;

#[test]
fn credential_keys_parse_and_layer() {
    let s = load_ok(
        &[
            "--impersonate-service-account",
            "a@p.iam.gserviceaccount.com, d@p.iam.gserviceaccount.com",
            "--iam-endpoint",
            "http://127.0.0.1:9",
            "--credentials",
            "gcloud",
        ],
        &[("IAP_PROXY_TOKEN_KIND", "id-token")],
    );
    assert_eq!(
        s.routes[0].impersonate_service_account,
        ["a@p.iam.gserviceaccount.com", "d@p.iam.gserviceaccount.com"]
    );
    assert_eq!(s.routes[0].iam_endpoint.as_str(), "http://127.0.0.1:9/");
    assert_eq!(s.routes[0].credentials, Some(PathBuf::from("gcloud")));
    let s = load_ok(&[], &[("IAP_PROXY_TOKEN_KIND", "self-signed-jwt")]);
    assert_eq!(s.routes[0].token_kind, TokenKind::SelfSignedJwt);
    let dir = TempDir::new();
    let file = dir.file(
        "c.toml",
        "impersonate_service_account = \"x@p.iam.gserviceaccount.com\"\n",
    );
    let s = load_ok(&["--config", &file], &[]);
    assert_eq!(
        s.routes[0].impersonate_service_account,
        ["x@p.iam.gserviceaccount.com"]
    );
}

#[test]
fn credential_keys_each_have_a_message() {
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--impersonate-service-account", "not-an-email"],
            vec![
                "impersonate_service_account",
                "EMAIL[,DELEGATE...]",
                "--impersonate-service-account",
            ],
        ),
        (
            vec!["--iam-endpoint", "http://iam.example.com"],
            vec!["iam_endpoint", "https"],
        ),
        (
            vec!["--iam-endpoint", "::"],
            vec!["iam_endpoint", "absolute URL"],
        ),
        (
            vec!["--token-kind", "access-token"],
            vec!["token_kind", "expected id-token or self-signed-jwt"],
        ),
        (
            vec![
                "--token-kind",
                "self-signed-jwt",
                "--impersonate-service-account",
                "a@p",
            ],
            vec!["token_kind", "impersonate_service_account"],
        ),
        (
            vec!["--token-kind", "self-signed-jwt", "--credentials", "gcloud"],
            vec!["token_kind", "gcloud"],
        ),
    ];
    for (flags, want) in cases {
        let all: Vec<&str> = ["--upstream", UP, "--audience", AUD]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        assert_one_error(&load_err(&all, &[]), &want);
    }
}

#[test]
fn token_command_credential_keys() {
    let env = Env::default();
    let args = token_args(&[
        "--audience",
        AUD,
        "--impersonate-service-account",
        "a@p.iam.gserviceaccount.com",
        "--iam-endpoint",
        "https://iam.example.com",
    ]);
    let s = TokenSettings::load(&args, &env).unwrap();
    assert_eq!(
        s.impersonate_service_account,
        ["a@p.iam.gserviceaccount.com"]
    );
    assert_eq!(s.iam_endpoint.as_str(), "https://iam.example.com/");
    assert_eq!(s.upstream, None);
    // A self-signed JWT's audience is the upstream, so the token command needs it.
    let args = token_args(&["--audience", AUD, "--token-kind", "self-signed-jwt"]);
    let errors = TokenSettings::load(&args, &env).unwrap_err().0;
    assert_one_error(&errors, &["upstream is required"]);
    let args = token_args(&[
        "--audience",
        AUD,
        "--token-kind",
        "self-signed-jwt",
        "--upstream",
        UP,
    ]);
    let s = TokenSettings::load(&args, &env).unwrap();
    assert_eq!(s.upstream.unwrap().as_str(), "https://app.example.com/");
}
