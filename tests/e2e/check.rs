//! `iap-proxy check` end to end: the library function against the fake Google and the
//! checking TLS upstream, and the real binary for its exit code and output.

use std::path::PathBuf;
use std::time::Duration;

use iap_proxy::check::{CheckReport, Diagnosis, Outcome, REQUEST, check};
use iap_proxy::config::{Env, Settings};

use crate::support::fake_google::FakeGoogle;
use crate::support::fixture::{
    AUDIENCE, FakeGcloud, SA_EMAIL, USER_CLIENT, USER_REFRESH_TOKEN, World,
};
use crate::support::proxy::Binary;
use crate::support::{closed_port, now_secs};

const OTHER_AUDIENCE: &str = "999999999-otherclient.apps.googleusercontent.com";

/// Runs the check and returns it with its printed form, after asserting that no token
/// the fake Google issued (ID or access) appears in it.
async fn run(w: &World, s: &Settings, env: &Env) -> (CheckReport, String) {
    let report = check(&s.routes[0], &s.process, env).await;
    let text = report.to_string();
    assert_no_tokens(w, &text);
    // Shown with --nocapture: what a person running `iap-proxy check` reads.
    eprintln!("{text}");
    (report, text)
}

fn assert_no_tokens(w: &World, text: &str) {
    for t in w.google.issued_tokens() {
        let signature = t.token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(&t.token) && !text.contains(signature),
            "an ID token leaked:\n{text}"
        );
    }
    for t in w.google.issued_access_tokens() {
        assert!(!text.contains(&t), "an access token leaked:\n{text}");
    }
}

fn contains_all(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from:\n{text}");
    }
}

fn gcloud_settings(w: &World) -> Settings {
    let mut s = w.settings();
    s.routes[0].credentials = Some(PathBuf::from("gcloud"));
    s
}

fn request_step(r: &CheckReport) -> &iap_proxy::check::Step {
    r.step(REQUEST).expect("a request step")
}

#[tokio::test]
async fn success_with_audience_auto_is_all_ticks() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].audience = "auto".into();
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(r.passed(), "{text}");
    assert_eq!(r.exit_code(), 0);
    let names: Vec<&str> = r.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["credentials", "upstream TLS", "IAP", "token", REQUEST],
        "{text}"
    );
    assert!(r.steps.iter().all(|s| s.outcome == Outcome::Ok), "{text}");
    contains_all(
        &text,
        &[
            "found via --credentials",
            SA_EMAIL,
            &format!("its OAuth client ID is {AUDIENCE}"),
            &format!("aud {AUDIENCE}, expires in "),
            "answered 200 OK (not IAP)",
        ],
    );
    assert_eq!(w.upstream.authorized_count(), 1);
}

#[tokio::test]
async fn no_credentials_lists_the_places_looked() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].credentials = None;
    // Nothing listens there: the probe asks again until --metadata-wait runs out.
    s.process.metadata_wait = std::time::Duration::from_secs(1);
    let metadata = format!("127.0.0.1:{}", closed_port());
    let env = Env::from_pairs([
        ("GCE_METADATA_HOST", metadata.as_str()),
        ("HOME", "/nonexistent-home"),
    ]);
    let (r, text) = run(&w, &s, &env).await;
    assert!(!r.passed());
    assert_eq!(r.diagnoses(), [Diagnosis::NoCredentials], "{text}");
    contains_all(
        &text,
        &[
            "✗ credentials: no Google credentials found",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent-home/.config/gcloud/application_default_credentials.json",
            &metadata,
            "fix: one of:",
            "gcloud auth application-default login",
        ],
    );
    // The upstream is still checked.
    assert!(text.contains("✓ IAP"), "{text}");
}

#[tokio::test]
async fn wrong_audience_shows_both_and_the_flag() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].audience = OTHER_AUDIENCE.into();
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(!r.passed());
    assert_eq!(r.step("token").unwrap().outcome, Outcome::Warn, "{text}");
    let req = request_step(&r);
    assert_eq!(req.diagnosis, Some(Diagnosis::WrongAudience), "{text}");
    assert!(req.detail.contains("IAP answered 401"), "{text}");
    contains_all(
        &text,
        &[
            &format!("the token's aud is {OTHER_AUDIENCE}, IAP expects {AUDIENCE}"),
            &format!("use --audience {AUDIENCE} (or leave it unset: auto)"),
        ],
    );
}

#[tokio::test]
async fn iap_403_names_the_role_and_the_grant() {
    let w = World::new().await;
    w.upstream.deny_email(SA_EMAIL);
    let (r, text) = run(&w, &w.settings(), &w.env()).await;
    assert!(!r.passed());
    assert_eq!(r.diagnoses(), [Diagnosis::MissingAccessorRole], "{text}");
    contains_all(
        &text,
        &[
            "IAP answered 403",
            &format!("{SA_EMAIL} lacks roles/iap.httpsResourceAccessor"),
            &format!(
                "gcloud iap web add-iam-policy-binding --member=serviceAccount:{SA_EMAIL} --role=roles/iap.httpsResourceAccessor"
            ),
        ],
    );
}

#[tokio::test]
async fn impersonation_denied_names_the_token_creator_role() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].credentials = Some(w.authorized_user_file(USER_CLIENT));
    s.routes[0].iam_endpoint = w.google.base_url().parse().unwrap();
    s.routes[0].impersonate_service_account = vec![SA_EMAIL.into()];
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(!r.passed());
    assert_eq!(r.diagnoses(), [Diagnosis::ImpersonationDenied], "{text}");
    contains_all(
        &text,
        &[
            "✓ credentials: authorized_user file",
            "impersonation denied",
            &format!(
                "gcloud iam service-accounts add-iam-policy-binding {SA_EMAIL} --member=MEMBER --role=roles/iam.serviceAccountOpenIdTokenCreator"
            ),
        ],
    );
    assert!(!text.contains(USER_REFRESH_TOKEN), "{text}");
    assert_eq!(
        w.upstream.requests().len(),
        1,
        "only the unauthenticated probe"
    );
}

#[tokio::test]
async fn user_login_with_a_foreign_client() {
    let w = World::new().await;
    // With the IAP audience, the source itself refuses at start-up.
    let mut s = w.settings();
    s.routes[0].credentials = Some(w.authorized_user_file(USER_CLIENT));
    s.routes[0].audience = "auto".into();
    let (r, text) = run(&w, &s, &w.env()).await;
    assert_eq!(
        r.diagnoses(),
        [Diagnosis::UserClientNotAllowlisted],
        "{text}"
    );
    contains_all(
        &text,
        &[
            "✗ credentials",
            USER_CLIENT,
            AUDIENCE,
            "--impersonate-service-account",
            "programmaticClients",
        ],
    );

    // With its own client as audience it gets a token, and IAP's 401 says why.
    s.routes[0].audience = USER_CLIENT.into();
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(!r.passed());
    assert_eq!(
        request_step(&r).diagnosis,
        Some(Diagnosis::UserClientNotAllowlisted),
        "{text}"
    );
    contains_all(
        &text,
        &[
            &format!(
                "for OAuth client {USER_CLIENT}, which is not on the IAP application's allowlist"
            ),
            &format!("programmaticClients: [{USER_CLIENT}]"),
        ],
    );
    assert!(!text.contains(USER_REFRESH_TOKEN), "{text}");
}

#[tokio::test]
async fn an_expired_token_says_by_how_much() {
    let w = World::new().await;
    let claims = FakeGoogle::id_token_claims(AUDIENCE, SA_EMAIL, now_secs() - 600);
    let token = w.google.sign_id_token(&claims);
    let gcloud = FakeGcloud::printing(&token);
    let (r, text) = run(&w, &gcloud_settings(&w), &gcloud.env()).await;
    assert!(!r.passed());
    assert!(!text.contains(&token), "{text}");
    let step = r.step("token").unwrap();
    assert_eq!(step.diagnosis, Some(Diagnosis::ExpiredToken), "{text}");
    contains_all(
        &text,
        &["already expired when received: exp was 10m", "date -u"],
    );
    // IAP agrees.
    assert_eq!(request_step(&r).diagnosis, Some(Diagnosis::ExpiredToken));
}

#[tokio::test]
async fn an_access_token_instead_of_an_id_token() {
    let w = World::new().await;
    let access = "ya29.a0AfH6SMBx-not-an-id-token-0123456789";
    let gcloud = FakeGcloud::printing(access);
    let (r, text) = run(&w, &gcloud_settings(&w), &gcloud.env()).await;
    assert!(!r.passed());
    assert_eq!(r.diagnoses(), [Diagnosis::AccessToken], "{text}");
    contains_all(
        &text,
        &["not an ID token", "access token", "--credentials KEY.json"],
    );
    assert!(!text.contains(access) && !text.contains("a0AfH6"), "{text}");

    // A JWT-shaped string IAP cannot parse: IAP's own 401 says so.
    let garbled = "bm90LWEtaGVhZGVy.eyJleHAiOjQxMDI0NDQ4MDAsImF1ZCI6IjEyMzQ1Njc4OS1mYWtlaWFwY2xpZW50LmFwcHMuZ29vZ2xldXNlcmNvbnRlbnQuY29tIn0.c2ln";
    let gcloud = FakeGcloud::printing(garbled);
    let (r, text) = run(&w, &gcloud_settings(&w), &gcloud.env()).await;
    assert_eq!(
        request_step(&r).diagnosis,
        Some(Diagnosis::AccessToken),
        "{text}"
    );
    contains_all(&text, &["Unable to parse JWT", "not an OAuth access token"]);
    assert!(!text.contains(garbled), "{text}");
}

#[tokio::test]
async fn untrusted_upstream_certificate_suggests_upstream_ca() {
    let w = World::new().await;
    let mut s = w.settings();
    s.process.upstream_ca = None;
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(!r.passed());
    assert!(
        r.diagnoses().contains(&Diagnosis::UpstreamTlsUntrusted),
        "{text}"
    );
    let host = format!("127.0.0.1:{}", w.upstream.port());
    contains_all(
        &text,
        &[
            &format!("✗ upstream TLS: the certificate of {host} is not trusted here"),
            "--upstream-ca CA.pem",
        ],
    );
    assert!(r.step(REQUEST).is_none());
    assert_eq!(w.upstream.requests().len(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_said_plainly() {
    let w = World::new().await;
    let mut s = w.settings();
    s.routes[0].upstream = format!("https://127.0.0.1:{}/", closed_port())
        .parse()
        .unwrap();
    s.routes[0].upstream_timeout = Duration::from_secs(5);
    let (r, text) = run(&w, &s, &w.env()).await;
    assert!(!r.passed());
    assert_eq!(r.diagnoses(), [Diagnosis::UpstreamUnreachable], "{text}");
    assert!(
        text.contains("✗ upstream: cannot reach 127.0.0.1:"),
        "{text}"
    );
    // The credentials are still checked with the explicit audience.
    assert!(text.contains("✓ token"), "{text}");
}

#[tokio::test]
async fn the_binary_exits_0_on_success_and_1_on_a_403() {
    let w = World::new().await;
    let upstream = w.upstream.url();
    let key = w.key_file.to_str().unwrap().to_owned();
    let ca = w.upstream.ca_path().to_str().unwrap().to_owned();
    let args = [
        "check",
        "--upstream",
        upstream.as_str(),
        "--credentials",
        key.as_str(),
        "--upstream-ca",
        ca.as_str(),
    ];
    let mut ok = Binary::spawn(&args, &[]);
    assert_eq!(
        ok.wait_exit(Duration::from_secs(30)).await,
        Some(0),
        "{}",
        ok.stderr()
    );
    let out = ok.stdout();
    assert_no_tokens(&w, &out);
    assert_no_tokens(&w, &ok.stderr());
    assert!(
        out.starts_with("route default → https://127.0.0.1:"),
        "{out}"
    );
    assert_eq!(out.matches('✓').count(), 5, "{out}");
    assert!(!out.contains('✗'), "{out}");

    w.upstream.deny_email(SA_EMAIL);
    let mut denied = Binary::spawn(&args, &[]);
    assert_eq!(denied.wait_exit(Duration::from_secs(30)).await, Some(1));
    let out = denied.stdout();
    assert_no_tokens(&w, &out);
    assert_no_tokens(&w, &denied.stderr());
    contains_all(
        &out,
        &[
            "✗ request: IAP answered 403",
            "roles/iap.httpsResourceAccessor",
            "FAILED",
        ],
    );
}
