//! Property tests: reading a credentials file never panics, whatever it holds. Arbitrary
//! bytes, arbitrary JSON, and JSON shaped like each credential type (known keys and
//! values, nested where the real files nest) go through the same loaders a start-up or a
//! reload uses, under every token kind; each must end in a source or a typed error.
//! So must the other texts read from outside: a JWT's claims and an executable's answer.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value};
use url::Url;

use super::build::{SourceOptions, source_from_bytes};
use super::error::{CredentialError, FoundBy};
use super::jwt::{MAX_SECONDS, unverified_claims};
use super::sources::executable::parse_executable_response;
use super::test_server;
use crate::config::{Env, Origin, TokenKind};

const KEYS: &[&str] = &[
    "type",
    "project_id",
    "private_key_id",
    "private_key",
    "client_email",
    "client_id",
    "client_secret",
    "refresh_token",
    "token_uri",
    "quota_project_id",
    "universe_domain",
    "service_account_impersonation_url",
    "delegates",
    "source_credentials",
    "audience",
    "subject_token_type",
    "token_url",
    "credential_source",
    "environment_id",
    "file",
    "url",
    "headers",
    "format",
    "subject_token_field_name",
    "executable",
    "command",
    "timeout_millis",
    "output_file",
    "exp",
    "iat",
];

const TYPES: &[&str] = &[
    "service_account",
    "authorized_user",
    "impersonated_service_account",
    "external_account",
    "gcloud",
    "",
];

/// One real RSA key, made once: a parsable key takes the loaders furthest.
fn pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .unwrap()
            .serialize_pem()
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(TYPES).prop_map(str::to_owned),
        3 => prop::sample::select(vec![
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:1/token",
            "http://10.0.0.1/token",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "https://sts.googleapis.com/v1/token",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
            "urn:ietf:params:oauth:token-type:jwt",
            "sa@p.iam.gserviceaccount.com",
            "json",
            "text",
            "aws1",
            "/bin/true --flag",
            "/nonexistent/subject-token",
            "not a url",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ])
        .prop_map(str::to_owned),
        1 => Just(pem().to_owned()),
        3 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON, its objects keyed mostly by the credential files' own keys.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..10)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object of a known `type` with a few of the known fields, and the nested objects
/// (`source_credentials`, `credential_source`, `format`, `executable`) where they belong.
fn credential() -> impl Strategy<Value = Value> {
    let fields = || prop::collection::vec((key(), json()), 0..12);
    (prop::sample::select(TYPES), fields(), fields(), fields()).prop_map(
        |(kind, top, nested, deeper)| {
            let mut object: Map<String, Value> = top.into_iter().collect();
            object.insert("type".into(), kind.into());
            let mut inner: Map<String, Value> = nested.into_iter().collect();
            let deeper: Map<String, Value> = deeper.into_iter().collect();
            inner.insert("format".into(), Value::Object(deeper.clone()));
            inner.insert("executable".into(), Value::Object(deeper));
            object.insert("credential_source".into(), Value::Object(inner.clone()));
            object.insert("source_credentials".into(), Value::Object(inner));
            Value::Object(object)
        },
    )
}

#[test]
fn the_templates_load() {
    for file in templates() {
        let built = load_every_way(&serde_json::to_vec(&file).unwrap());
        assert!(built > 0, "{}", file["type"]);
    }
}

/// Valid files of every type, each loadable as it is.
fn templates() -> Vec<Value> {
    let user = serde_json::json!({
        "type": "authorized_user", "client_id": "c.apps.googleusercontent.com",
        "client_secret": "s", "refresh_token": "1//r", "token_uri": "http://127.0.0.1:1/token",
    });
    vec![
        serde_json::json!({
            "type": "service_account", "private_key_id": "k", "private_key": pem(),
            "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": "http://127.0.0.1:1/token",
        }),
        user.clone(),
        serde_json::json!({
            "type": "impersonated_service_account", "delegates": ["d@p.iam.gserviceaccount.com"],
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "source_credentials": user,
        }),
        serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": {
                "file": "/nonexistent/token", "url": "https://example.com/t",
                "headers": {"a": "b"}, "format": {"type": "json", "subject_token_field_name": "t"},
                "executable": {"command": "/bin/true", "timeout_millis": 5000, "output_file": "/tmp/x"},
            },
        }),
    ]
}

/// A valid file with some fields replaced by arbitrary JSON or removed, at the top or in
/// its nested objects: the loaders' every later check gets reached.
fn mutated() -> impl Strategy<Value = Value> {
    let change = (0..3usize, key(), prop::option::of(json()));
    (
        prop::sample::select(templates()),
        prop::collection::vec(change, 1..5),
    )
        .prop_map(|(mut file, changes)| {
            for (depth, key, value) in changes {
                let target = match depth {
                    0 => Some(&mut file),
                    1 => file.get_mut("source_credentials"),
                    _ => file.get_mut("credential_source"),
                };
                if let Some(Value::Object(object)) = target {
                    match value {
                        Some(value) => object.insert(key, value),
                        None => object.remove(&key),
                    };
                }
            }
            file
        })
}

/// Every way the settings can ask for a source: both token kinds, with and without
/// impersonation, with executables allowed or not.
fn load_every_way(bytes: &[u8]) -> usize {
    let mut built_any = 0;
    let path = Path::new("/prop/credentials.json");
    let iam = Url::parse("https://iamcredentials.googleapis.com").unwrap();
    let upstream = Url::parse("https://app.example.com").unwrap();
    let impersonate = ["sa@p.iam.gserviceaccount.com".to_owned()];
    let envs = [
        Env::default(),
        Env::from_pairs([("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")]),
    ];
    for token_kind in [TokenKind::IdToken, TokenKind::SelfSignedJwt] {
        for impersonate in [&impersonate[..], &[]] {
            for env in &envs {
                let opts = SourceOptions {
                    credentials: Some(path),
                    credentials_from: &Origin::Flag("credentials"),
                    metadata_wait: std::time::Duration::ZERO,
                    audience: "123-abc.apps.googleusercontent.com",
                    impersonate,
                    iam_endpoint: &iam,
                    token_kind,
                    upstream: Some(&upstream),
                };
                let found_by = FoundBy::Setting(Origin::Flag("credentials"));
                match source_from_bytes(path, found_by, bytes, &opts, env, test_server::client()) {
                    Ok(_) => built_any += 1,
                    // The message names the file, whatever went wrong.
                    Err(err) => assert_names_the_file(&err),
                }
            }
        }
    }
    built_any
}

fn assert_names_the_file(err: &CredentialError) {
    let text = err.to_string();
    let exempt = matches!(
        err,
        CredentialError::Conflict(_) | CredentialError::Endpoint(_)
    );
    assert!(exempt || text.contains("/prop/credentials.json"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_every_way(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json()) {
        load_every_way(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn credential_shaped_json_never_panics(value in credential()) {
        load_every_way(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn mutated_valid_files_never_panic(value in mutated()) {
        load_every_way(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn claims_of_any_payload_never_panic_and_stay_in_range(value in json()) {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap());
        if let Ok(claims) = unverified_claims(&format!("e30.{payload}.sig")) {
            prop_assert!(claims.exp <= MAX_SECONDS);
            prop_assert!(claims.iat.is_none_or(|iat| iat <= MAX_SECONDS));
        }
    }

    #[test]
    fn executable_answers_never_panic(value in json(), cached in any::<bool>()) {
        let _ = parse_executable_response(&serde_json::to_vec(&value).unwrap(), cached);
    }
}
