//! Every credential kind, end to end: in-process proxy → checking TLS upstream, with
//! tokens from the fake Google (refresh grant, generateIdToken, STS) or signed locally.

use std::path::{Path, PathBuf};

use http::StatusCode;
use iap_proxy::config::{Env, Settings, TokenKind};
use serde_json::{Value, json};

use crate::support::client::{self, get, get_bearer};
use crate::support::fake_google::{DEFAULT_EMAIL, FakeGoogle, TokenPath};
use crate::support::fake_iam::{Pool, SUBJECT_HEADER};
use crate::support::fixture::{
    AUDIENCE, FakeGcloud, SA_EMAIL, USER_CLIENT, USER_EMAIL, USER_REFRESH_TOKEN, World,
    home_with_adc, sign_as_service_account, write_script,
};
use crate::support::now_secs;
use crate::support::proxy::InProcess;

const POOL: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/gh";
const PRINCIPAL: &str = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/subject/repo:me/app";
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.subject-token-from-the-ci.sig";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

fn settings_with(w: &World, file: &Path) -> Settings {
    let mut s = w.settings();
    s.routes[0].credentials = Some(file.to_path_buf());
    s.routes[0].iam_endpoint = w.google.base_url().parse().unwrap();
    s
}

/// One request through the proxy; returns (status, body).
async fn through(s: Settings, env: Env) -> (StatusCode, String) {
    let proxy = InProcess::start(s, env).await;
    let r = get(&client::http1(), &proxy.url("/echo")).await;
    proxy.stop().await;
    (r.status, r.text())
}

fn last_email(w: &World) -> Option<String> {
    w.upstream.requests().last().and_then(|r| r.email.clone())
}

async fn start_error(s: Settings, env: Env) -> String {
    InProcess::start_error(s, env).await.to_string()
}

#[tokio::test]
async fn authorized_user_with_the_allowlisted_audience() {
    // The IAP programmatic-access case: the audience is the user's own OAuth client.
    let w = World::new().await;
    let file = w.authorized_user_file(AUDIENCE);
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(USER_EMAIL));
}

#[tokio::test]
async fn authorized_user_with_a_foreign_audience_explains_both_fixes() {
    let w = World::new().await;
    let file = w.authorized_user_file(USER_CLIENT);
    let err = start_error(settings_with(&w, &file), w.env()).await;
    for needle in [
        "adc.json",
        USER_CLIENT,
        AUDIENCE,
        "--impersonate-service-account",
        "roles/iam.serviceAccountTokenCreator",
        "gcloud iap settings set",
        "programmaticClients",
    ] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    assert!(!err.contains(USER_REFRESH_TOKEN), "{err}");
}

#[tokio::test]
async fn authorized_user_impersonating_a_service_account() {
    let w = World::new().await;
    let file = w.authorized_user_file(USER_CLIENT);
    w.google.grant_token_creator(USER_EMAIL, SA_EMAIL);
    let mut s = settings_with(&w, &file);
    s.routes[0].impersonate_service_account = vec![SA_EMAIL.into()];
    let proxy = InProcess::start(s, w.env()).await;
    let http = client::http1();
    for _ in 0..3 {
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    // One generateIdToken call served all three requests, as the user, for the IAP
    // audience, asking for the email claim IAP needs.
    let calls = w.google.generate_id_token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].caller.as_deref(), Some(USER_EMAIL));
    assert_eq!(calls[0].target.as_deref(), Some(SA_EMAIL));
    assert_eq!(calls[0].audience.as_deref(), Some(AUDIENCE));
    assert_eq!(calls[0].include_email, Some(true));
    assert!(calls[0].delegates.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn impersonated_service_account_file_with_a_delegate() {
    let w = World::new().await;
    let source = "source@fake-project.iam.gserviceaccount.com";
    let delegate = "delegate@fake-project.iam.gserviceaccount.com";
    let file = w.write_json(
        "impersonated.json",
        &json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": w.google.impersonation_url(SA_EMAIL),
            "delegates": [delegate],
            "source_credentials": w.google.service_account_json(source),
        }),
    );
    w.google.grant_token_creator(source, delegate);
    w.google.grant_token_creator(delegate, SA_EMAIL);
    let mut s = settings_with(&w, &file);
    // The file's host wins over --iam-endpoint.
    s.routes[0].iam_endpoint = "https://iamcredentials.invalid".parse().unwrap();
    let (status, body) = through(s, w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    // The source account called through its delegate, named the way the API wants it.
    let calls = w.google.generate_id_token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].caller.as_deref(), Some(source));
    assert_eq!(
        calls[0].delegates,
        [format!("projects/-/serviceAccounts/{delegate}")]
    );
}

#[tokio::test]
async fn impersonation_denied_is_a_503_naming_the_role() {
    let w = World::new().await;
    let file = w.authorized_user_file(USER_CLIENT);
    let mut s = settings_with(&w, &file);
    s.routes[0].impersonate_service_account = vec![SA_EMAIL.into()];
    let (status, body) = through(s, w.env()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    for needle in [
        "roles/iam.serviceAccountOpenIdTokenCreator",
        "gcloud iam service-accounts add-iam-policy-binding",
        SA_EMAIL,
        "getOpenIdToken",
    ] {
        assert!(body.contains(needle), "{needle} missing: {body}");
    }
    assert_eq!(w.upstream.requests().len(), 0);
    // It was IAM's 403 to the user that the 503 reports.
    let calls = w.google.generate_id_token_calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(
            (c.caller.as_deref(), c.target.as_deref(), c.status),
            (Some(USER_EMAIL), Some(SA_EMAIL), 403),
            "{calls:?}"
        );
    }
}

#[tokio::test]
async fn metadata_server_impersonating() {
    let w = World::new().await;
    w.google.grant_token_creator(DEFAULT_EMAIL, SA_EMAIL);
    let mut s = w.settings();
    s.routes[0].credentials = None;
    s.routes[0].iam_endpoint = w.google.base_url().parse().unwrap();
    s.routes[0].impersonate_service_account = vec![SA_EMAIL.into()];
    let env = Env::from_pairs([("GCE_METADATA_HOST", w.google.metadata_host())]);
    let (status, body) = through(s, env).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    // The metadata server's access token, not an ID token, paid for the impersonation.
    let issued = w.google.issued_tokens();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0].via, TokenPath::Iam);
    let calls = w.google.generate_id_token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].caller.as_deref(), Some(DEFAULT_EMAIL));
}

#[tokio::test]
async fn adc_file_found_under_home() {
    let w = World::new().await;
    let home = home_with_adc(w.dir.path(), &w.key_json());
    let mut s = w.settings();
    s.routes[0].credentials = None;
    let (status, body) = through(s, Env::from_pairs([("HOME", home.to_str().unwrap())])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
}

fn external(w: &World, source: Value) -> Value {
    w.google.add_pool(Pool {
        audience: POOL.into(),
        subject_token: SUBJECT.into(),
        subject_token_type: JWT_TYPE.into(),
        principal: PRINCIPAL.into(),
    });
    w.google.grant_token_creator(PRINCIPAL, SA_EMAIL);
    json!({
        "type": "external_account",
        "audience": POOL,
        "subject_token_type": JWT_TYPE,
        "token_url": w.google.sts_url(),
        "service_account_impersonation_url": w.google.impersonation_url(SA_EMAIL),
        "credential_source": source,
    })
}

#[tokio::test]
async fn external_account_file_source() {
    let w = World::new().await;
    let token_file = w.write("oidc-token", format!("{SUBJECT}\n"));
    let file = w.write_json(
        "wif.json",
        &external(&w, json!({"file": token_file, "format": {"type": "text"}})),
    );
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));

    // A wrong subject token is STS's invalid_grant, reported in the 503.
    std::fs::write(&token_file, "not-the-token").unwrap();
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("invalid_grant"), "{body}");
}

#[tokio::test]
async fn external_account_url_source_with_json_format() {
    let w = World::new().await;
    w.google
        .serve_subject_token("k-123", &json!({"value": SUBJECT}).to_string());
    let source = json!({
        "url": format!("{}/subject-token", w.google.base_url()),
        "headers": {SUBJECT_HEADER: "k-123"},
        "format": {"type": "json", "subject_token_field_name": "value"},
    });
    let file = w.write_json("wif.json", &external(&w, source));
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
}

fn exec_response(exp: u64) -> String {
    json!({
        "version": 1, "success": true, "token_type": JWT_TYPE,
        "id_token": SUBJECT, "expiration_time": exp,
    })
    .to_string()
}

#[tokio::test]
async fn external_account_executable_source_and_its_cache() {
    let w = World::new().await;
    // The helper records each run (the audience it was given and its arguments) and
    // answers; the test asserts on the record.
    let ran = w.path("ran");
    let exe = write_script(
        w.dir.path(),
        "token-helper",
        &format!(
            "printf '%s|%s\\n' \"$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE\" \"$*\" >> '{}'\n\
             echo '{}'\n",
            ran.display(),
            exec_response(now_secs() + 3600)
        ),
    );
    let runs = || -> Vec<String> {
        let text = std::fs::read_to_string(&ran).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    };
    let one_run = format!("{POOL}|--flag");
    let output_file = w.path("cache.json");
    let source = json!({"executable": {
        "command": format!("{} --flag", exe.display()),
        "timeout_millis": 5000,
        "output_file": output_file,
    }});
    let file = w.write_json("wif.json", &external(&w, source));
    let env = Env::from_pairs([("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")]);
    let (status, body) = through(settings_with(&w, &file), env.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        runs(),
        std::slice::from_ref(&one_run),
        "run once, with the pool and its arguments"
    );

    // An unexpired cached response is used without running the executable.
    std::fs::write(&output_file, exec_response(now_secs() + 600)).unwrap();
    let (status, body) = through(settings_with(&w, &file), env.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(runs().len(), 1, "the cached response was used");
    // An expired one is not.
    std::fs::write(&output_file, exec_response(now_secs() - 1)).unwrap();
    let (status, _) = through(settings_with(&w, &file), env).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs(), [one_run.clone(), one_run]);

    // Without the opt-in the file is refused at start-up.
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1") && err.contains("wif.json"),
        "{err}"
    );
}

#[tokio::test]
async fn external_account_refusals_aws_and_no_service_account() {
    let w = World::new().await;
    let aws = json!({
        "environment_id": "aws1",
        "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    });
    let file = w.write_json("aws.json", &external(&w, aws));
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("aws.json") && err.contains("not supported"),
        "{err}"
    );

    let token_file = w.write("oidc-token", SUBJECT);
    let mut v = external(&w, json!({"file": token_file}));
    v.as_object_mut()
        .unwrap()
        .remove("service_account_impersonation_url");
    let file = w.write_json("no-sa.json", &v);
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("service_account_impersonation_url")
            && err.contains("--impersonate-service-account"),
        "{err}"
    );
    // …unless the service account is named on the command line.
    let mut s = settings_with(&w, &file);
    s.routes[0].impersonate_service_account = vec![SA_EMAIL.into()];
    let (status, body) = through(s, w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut v = external(&w, json!({"file": token_file}));
    v.as_object_mut().unwrap().remove("audience");
    let file = w.write_json("no-aud.json", &v);
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("no-aud.json") && err.contains("`audience`"),
        "{err}"
    );

    let file = w.write_json("odd.json", &json!({"type": "gdch_service_account"}));
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(err.contains("odd.json") && err.contains("`type`"), "{err}");
}

#[tokio::test]
async fn gcloud_cli_source() {
    let w = World::new().await;
    let claims = FakeGoogle::id_token_claims(AUDIENCE, SA_EMAIL, now_secs() + 3600);
    let gcloud = FakeGcloud::identity_token(AUDIENCE, &w.google.sign_id_token(&claims));
    let mut s = w.settings();
    s.routes[0].credentials = Some(PathBuf::from("gcloud"));
    let (status, body) = through(s.clone(), gcloud.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.google.request_count(),
        0,
        "gcloud, not iap-proxy, talks to Google"
    );
    assert_eq!(
        gcloud.calls(),
        [format!("auth print-identity-token --audiences={AUDIENCE}")]
    );

    // gcloud's failure reaches the 503 with its stderr and the explanation.
    let other = "other@fake-project.iam.gserviceaccount.com";
    s.routes[0].impersonate_service_account = vec![other.into()];
    let (status, body) = through(s.clone(), gcloud.env()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("Invalid account type") && body.contains("service account"),
        "{body}"
    );
    // Impersonated ID tokens carry no email unless asked, and IAP needs it. (The proxy
    // retries a failed fetch on its own, so there may be more than one call by now.)
    let expected = format!(
        "auth print-identity-token --audiences={AUDIENCE} \
         --impersonate-service-account={other} --include-email"
    );
    let calls = gcloud.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    assert!(calls[1..].iter().all(|c| *c == expected), "{calls:?}");

    let err = start_error(
        s,
        Env::from_pairs([("PATH", w.dir.path().to_str().unwrap())]),
    )
    .await;
    assert!(err.contains("gcloud is not on PATH"), "{err}");
}

#[tokio::test]
async fn self_signed_jwt_is_accepted_without_asking_google() {
    let w = World::new().await;
    let key = w.google.service_account_key(SA_EMAIL).unwrap();
    w.upstream.trust_service_account(SA_EMAIL, key);
    let mut s = w.settings();
    s.routes[0].token_kind = TokenKind::SelfSignedJwt;
    let (status, body) = through(s.clone(), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    assert_eq!(w.google.request_count(), 0);

    // Only a key file can sign.
    s.routes[0].credentials = Some(w.authorized_user_file(AUDIENCE));
    let err = start_error(s, w.env()).await;
    assert!(
        err.contains("self-signed-jwt") && err.contains("authorized_user"),
        "{err}"
    );
}

#[tokio::test]
async fn a_self_signed_jwt_for_another_origin_is_refused_by_the_upstream() {
    // Keeps the upstream's check honest: the audience must match its URL.
    let w = World::new().await;
    let key = w.google.service_account_key(SA_EMAIL).unwrap();
    w.upstream.trust_service_account(SA_EMAIL, key);
    let key_file = w.key_json();
    let now = now_secs();
    let sign = |aud: &str, life: u64| {
        let claims =
            json!({"iss": SA_EMAIL, "sub": SA_EMAIL, "aud": aud, "iat": now, "exp": now + life});
        sign_as_service_account(&key_file, &claims)
    };
    let http = client::https(w.upstream.client_config(), true, false);
    let url = format!("{}/echo", w.upstream.url());
    let prefix = format!("{}/*", w.upstream.url());
    let ok = get_bearer(&http, &url, &sign(&prefix, 3600)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let exact = get_bearer(&http, &url, &sign(&url, 600)).await;
    assert_eq!(exact.status, StatusCode::OK, "{}", exact.text());
    let other = get_bearer(&http, &url, &sign("https://elsewhere.example/*", 600)).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let long = get_bearer(&http, &url, &sign(&prefix, 7200)).await;
    assert_eq!(long.status, StatusCode::UNAUTHORIZED);
}
