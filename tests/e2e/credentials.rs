//! Every credential kind, end to end: in-process proxy → checking TLS upstream, with
//! tokens from the fake Google (refresh grant, generateIdToken, STS) or signed locally.

use std::path::{Path, PathBuf};

use crate::support::fake_iam::{Pool, SUBJECT_HEADER, User};
use crate::support::fixture::{AUDIENCE, SA_EMAIL, World};
use crate::support::now_secs;
use crate::support::proxy::InProcess;
use crate::support::proxy_client::{self as client, get};
use http::StatusCode;
use iap_proxy::config::{Env, Settings, TokenKind};
use serde_json::{Value, json};

const USER_EMAIL: &str = "dev@example.com";
const USER_CLIENT: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
const POOL: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/gh";
const PRINCIPAL: &str = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/subject/repo:me/app";
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.subject-token-from-the-ci.sig";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path
}

fn user(w: &World, client_id: &str) -> Value {
    w.google.register_user(User {
        client_id: client_id.into(),
        client_secret: "d-FL95Q19q7MQmFpd7hHD0Ty".into(),
        refresh_token: "1//0refresh-token-of-dev".into(),
        email: USER_EMAIL.into(),
    });
    json!({
        "type": "authorized_user",
        "client_id": client_id,
        "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
        "refresh_token": "1//0refresh-token-of-dev",
        "token_uri": w.google.token_uri(),
        "quota_project_id": "fake-project",
    })
}

fn settings_with(w: &World, file: &Path) -> Settings {
    let mut s = w.settings();
    s.credentials = Some(file.to_path_buf());
    s.iam_endpoint = w.google.base_url().parse().unwrap();
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
    let file = write_json(w.dir.path(), "adc.json", &user(&w, AUDIENCE));
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(USER_EMAIL));
}

#[tokio::test]
async fn authorized_user_with_a_foreign_audience_explains_both_fixes() {
    let w = World::new().await;
    let file = write_json(w.dir.path(), "adc.json", &user(&w, USER_CLIENT));
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
    assert!(!err.contains("1//0refresh"), "{err}");
}

#[tokio::test]
async fn authorized_user_impersonating_a_service_account() {
    let w = World::new().await;
    let file = write_json(w.dir.path(), "adc.json", &user(&w, USER_CLIENT));
    w.google.grant_token_creator(USER_EMAIL, SA_EMAIL);
    let mut s = settings_with(&w, &file);
    s.impersonate_service_account = vec![SA_EMAIL.into()];
    let proxy = InProcess::start(s, w.env()).await;
    let http = client::http1();
    for _ in 0..3 {
        let r = get(&http, &proxy.url("/echo")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    assert_eq!(w.google.generate_id_token_calls(), 1);
}

#[tokio::test]
async fn impersonated_service_account_file_with_a_delegate() {
    let w = World::new().await;
    let source = "source@fake-project.iam.gserviceaccount.com";
    let delegate = "delegate@fake-project.iam.gserviceaccount.com";
    let file = write_json(
        w.dir.path(),
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
    s.iam_endpoint = "https://iamcredentials.invalid".parse().unwrap();
    let (status, body) = through(s, w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
}

#[tokio::test]
async fn impersonation_denied_is_a_503_naming_the_role() {
    let w = World::new().await;
    let file = write_json(w.dir.path(), "adc.json", &user(&w, USER_CLIENT));
    let mut s = settings_with(&w, &file);
    s.impersonate_service_account = vec![SA_EMAIL.into()];
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
}

#[tokio::test]
async fn metadata_server_impersonating() {
    let w = World::new().await;
    w.google
        .grant_token_creator(crate::support::fake_google::DEFAULT_EMAIL, SA_EMAIL);
    let mut s = w.settings();
    s.credentials = None;
    s.iam_endpoint = w.google.base_url().parse().unwrap();
    s.impersonate_service_account = vec![SA_EMAIL.into()];
    let env = Env::from_pairs([("GCE_METADATA_HOST", w.google.metadata_host())]);
    let (status, body) = through(s, env).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
}

#[tokio::test]
async fn adc_file_found_under_home() {
    let w = World::new().await;
    let gcloud_dir = w.dir.path().join("home/.config/gcloud");
    std::fs::create_dir_all(&gcloud_dir).unwrap();
    std::fs::copy(
        &w.key_file,
        gcloud_dir.join("application_default_credentials.json"),
    )
    .unwrap();
    let mut s = w.settings();
    s.credentials = None;
    let home = w.dir.path().join("home");
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
    let token_file = w.dir.write("oidc-token", format!("{SUBJECT}\n"));
    let file = write_json(
        w.dir.path(),
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
    let file = write_json(w.dir.path(), "wif.json", &external(&w, source));
    let (status, body) = through(settings_with(&w, &file), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
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
    let ran = w.dir.join("ran");
    let exe = script(
        w.dir.path(),
        "token-helper",
        &format!(
            "[ \"$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE\" = '{POOL}' ] || {{ echo bad audience >&2; exit 3; }}\n\
             [ \"$1\" = --flag ] || exit 4\n\
             echo run >> '{}'\n\
             echo '{}'\n",
            ran.display(),
            exec_response(now_secs() + 3600)
        ),
    );
    let output_file = w.dir.join("cache.json");
    let source = json!({"executable": {
        "command": format!("{} --flag", exe.display()),
        "timeout_millis": 5000,
        "output_file": output_file,
    }});
    let file = write_json(w.dir.path(), "wif.json", &external(&w, source));
    let env = Env::from_pairs([("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")]);
    let (status, body) = through(settings_with(&w, &file), env.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\n");

    // An unexpired cached response is used without running the executable.
    std::fs::write(&output_file, exec_response(now_secs() + 600)).unwrap();
    let (status, body) = through(settings_with(&w, &file), env.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\n");
    // An expired one is not.
    std::fs::write(&output_file, exec_response(now_secs() - 1)).unwrap();
    let (status, _) = through(settings_with(&w, &file), env).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "run\nrun\n");

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
    let file = write_json(w.dir.path(), "aws.json", &external(&w, aws));
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("aws.json") && err.contains("not supported"),
        "{err}"
    );

    let token_file = w.dir.write("oidc-token", SUBJECT);
    let mut v = external(&w, json!({"file": token_file}));
    v.as_object_mut()
        .unwrap()
        .remove("service_account_impersonation_url");
    let file = write_json(w.dir.path(), "no-sa.json", &v);
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("service_account_impersonation_url")
            && err.contains("--impersonate-service-account"),
        "{err}"
    );
    // …unless the service account is named on the command line.
    let mut s = settings_with(&w, &file);
    s.impersonate_service_account = vec![SA_EMAIL.into()];
    let (status, body) = through(s, w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut v = external(&w, json!({"file": token_file}));
    v.as_object_mut().unwrap().remove("audience");
    let file = write_json(w.dir.path(), "no-aud.json", &v);
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(
        err.contains("no-aud.json") && err.contains("`audience`"),
        "{err}"
    );

    let file = write_json(
        w.dir.path(),
        "odd.json",
        &json!({"type": "gdch_service_account"}),
    );
    let err = start_error(settings_with(&w, &file), w.env()).await;
    assert!(err.contains("odd.json") && err.contains("`type`"), "{err}");
}

fn fake_gcloud(w: &World, bin: &Path) {
    let token = w
        .google
        .sign_id_token(&crate::support::FakeGoogle::id_token_claims(
            AUDIENCE,
            SA_EMAIL,
            now_secs() + 3600,
        ));
    std::fs::create_dir_all(bin).unwrap();
    script(
        bin,
        "gcloud",
        &format!(
            "if [ \"$1 $2 $3\" = 'auth print-identity-token --audiences={AUDIENCE}' ] && [ $# -eq 3 ]; then\n\
               echo '{token}'\n\
             else\n\
               echo \"ERROR: (gcloud.auth.print-identity-token) Invalid account type for --audiences. Requires valid service account.\" >&2\n\
               exit 1\n\
             fi\n"
        ),
    );
}

#[tokio::test]
async fn gcloud_cli_source() {
    let w = World::new().await;
    let bin = w.dir.join("bin");
    fake_gcloud(&w, &bin);
    let mut s = w.settings();
    s.credentials = Some(PathBuf::from("gcloud"));
    let env = Env::from_pairs([("PATH", bin.to_str().unwrap())]);
    let (status, body) = through(s.clone(), env.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        w.google.request_count(),
        0,
        "gcloud, not iap-proxy, talks to Google"
    );

    // gcloud's failure reaches the 503 with its stderr and the explanation.
    s.impersonate_service_account = vec!["other@fake-project.iam.gserviceaccount.com".into()];
    let (status, body) = through(s.clone(), env).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("Invalid account type") && body.contains("service account"),
        "{body}"
    );

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
    s.token_kind = TokenKind::SelfSignedJwt;
    let (status, body) = through(s.clone(), w.env()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_email(&w).as_deref(), Some(SA_EMAIL));
    assert_eq!(w.google.request_count(), 0);

    // Only a key file can sign.
    let file = write_json(w.dir.path(), "adc.json", &user(&w, AUDIENCE));
    s.credentials = Some(file);
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
    let json: Value = serde_json::from_slice(&std::fs::read(&w.key_file).unwrap()).unwrap();
    let signer =
        jsonwebtoken::EncodingKey::from_rsa_pem(json["private_key"].as_str().unwrap().as_bytes())
            .unwrap();
    let now = now_secs();
    let sign = |aud: &str, life: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &json!({"iss": SA_EMAIL, "sub": SA_EMAIL, "aud": aud, "iat": now, "exp": now + life}),
            &signer,
        )
        .unwrap()
    };
    let http = crate::support::https_client(w.upstream.client_config(), true, false);
    let url = format!("{}/echo", w.upstream.url());
    let ok =
        crate::support::get_bearer(&http, &url, &sign(&format!("{}/*", w.upstream.url()), 3600))
            .await;
    assert_eq!(ok.status, StatusCode::OK);
    let exact = crate::support::get_bearer(&http, &url, &sign(&url, 600)).await;
    assert_eq!(exact.status, StatusCode::OK);
    let other =
        crate::support::get_bearer(&http, &url, &sign("https://elsewhere.example/*", 600)).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let long =
        crate::support::get_bearer(&http, &url, &sign(&format!("{}/*", w.upstream.url()), 7200))
            .await;
    assert_eq!(long.status, StatusCode::UNAUTHORIZED);
}
