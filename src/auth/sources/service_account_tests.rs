//! The key file's loading (every field named, no value quoted) and its token exchange.
use super::*;
use crate::auth::error::{JsonKind, Malformed};
use crate::auth::jwt;
use crate::auth::test_server;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};

fn key_file(key: &rcgen::KeyPair, token_uri: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "kid-123",
        "private_key": key.serialize_pem(),
        "client_email": "sa@proj.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": token_uri,
    })
}

/// A key file's bytes through the same path `from_file` takes.
fn from_json(
    path: &Path,
    bytes: &[u8],
    audience: &str,
    http: TokenHttp,
) -> Result<ServiceAccount, CredentialError> {
    ServiceAccount::from_cred_file(
        &CredFile::parse(path, crate::auth::error::FoundBy::flag(), bytes)?,
        audience,
        http,
    )
}

fn load(file: &Value) -> Result<ServiceAccount, CredentialError> {
    let bytes = serde_json::to_vec(file).unwrap();
    from_json(
        Path::new("/keys/sa.json"),
        &bytes,
        "aud-1",
        test_server::client(),
    )
}

fn rsa() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
}

#[test]
fn names_each_missing_or_empty_field() {
    let key = rsa();
    for field in [
        "type",
        "client_email",
        "private_key",
        "private_key_id",
        "token_uri",
    ] {
        for value in [None, Some(json!("")), Some(json!(7))] {
            let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
            match &value {
                None => drop(file.as_object_mut().unwrap().remove(field)),
                Some(v) => file[field] = v.clone(),
            }
            match load(&file).unwrap_err() {
                CredentialError::Field {
                    field: named, file, ..
                } => {
                    assert_eq!(
                        (named.as_str(), file.path.as_path()),
                        (field, Path::new("/keys/sa.json"))
                    );
                }
                other => panic!("{field} {value:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn malformed_json_names_the_file_not_the_content() {
    let tests = from_json(
        Path::new("/k.json"),
        b"{\"secret\": oops",
        "a",
        test_server::client(),
    );
    let err = tests.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            CredentialError::Malformed {
                problem: Malformed::NotJson { line: 1, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("/k.json") && text.contains("line 1") && !text.contains("oops"),
        "{text}"
    );
    let err = CredFile::read(
        Path::new("/nonexistent/sa.json"),
        crate::auth::error::FoundBy::flag(),
    )
    .err();
    assert!(matches!(err, Some(CredentialError::ReadFile { .. })));
}

#[test]
fn wrong_type_and_bad_key_and_endpoints() {
    let key = rsa();
    let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
    file["type"] = json!("authorized_user");
    let err = load(&file).unwrap_err();
    assert!(
        matches!(&err, CredentialError::UnsupportedType { kind, .. } if kind == "authorized_user")
    );

    let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
    file["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    let err = load(&file).unwrap_err();
    assert!(
        matches!(
            &err,
            CredentialError::Field {
                field,
                problem: FieldProblem::NotAnRsaKey,
                ..
            } if field == "private_key"
        ),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("bm90") && err.to_string().contains("RSA"),
        "{err}"
    );

    // A bad token_uri is a problem of the field, whatever is wrong with it.
    let err = load(&key_file(&key, "http://oauth2.googleapis.com/token")).unwrap_err();
    assert!(
        matches!(&err, CredentialError::Field { field, problem: FieldProblem::NotHttps, .. } if field == "token_uri"),
        "{err:?}"
    );
    let err = load(&key_file(&key, "::nope")).unwrap_err();
    assert!(
        matches!(&err, CredentialError::Field { field, problem: FieldProblem::BadUrl(_), .. } if field == "token_uri"),
        "{err:?}"
    );
    let sa = load(&key_file(&key, "http://127.0.0.1:9/token")).unwrap();
    assert_eq!(
        sa.describe(),
        "service account key file /keys/sa.json (sa@proj.iam.gserviceaccount.com)"
    );
    let debug = format!("{sa:?}");
    assert!(
        !debug.contains("PRIVATE KEY") && debug.contains("kid-123"),
        "{debug}"
    );
}

#[tokio::test]
async fn fetch_trades_a_signed_assertion_for_an_id_token() {
    let key = rsa();
    let public = DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap();
    let issuer = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap();
    let addr = test_server::serve(move |req| {
        let form: Map<String, Value> = url::form_urlencoded::parse(req.body())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        assert_eq!(form["grant_type"], GRANT_TYPE);
        let assertion = form["assertion"].as_str().unwrap();
        let header = jsonwebtoken::decode_header(assertion).unwrap();
        assert_eq!(header.kid.as_deref(), Some("kid-123"));
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[format!(
            "http://{}/token",
            req.headers()["host"].to_str().unwrap()
        )]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &public, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["iss"], "sa@proj.iam.gserviceaccount.com");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        let aud = claims["target_audience"].as_str().unwrap();
        if aud == "deny" {
            let body = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
            return http::Response::builder()
                .status(400)
                .body(body.to_owned())
                .unwrap();
        }
        let id =
            json!({"aud": if aud == "mismatch" { "other" } else { aud }, "exp": 4_000_000_000u64});
        let id_token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &id, &issuer).unwrap();
        http::Response::new(json!({ "id_token": id_token }).to_string())
    })
    .await;
    let file = key_file(&key, &format!("http://{addr}/token"));
    let source = |audience: &str| {
        let bytes = serde_json::to_vec(&file).unwrap();
        from_json(
            Path::new("/k.json"),
            &bytes,
            audience,
            test_server::client(),
        )
        .unwrap()
    };
    let token = source("aud-1").fetch().await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some("aud-1"));
    assert_eq!(
        jwt::unverified_claims(token.expose()).unwrap(),
        *token.claims()
    );

    let err = source("deny").fetch().await.unwrap_err();
    assert!(
        matches!(err, FetchError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("invalid_grant: Invalid JWT Signature."),
        "{err}"
    );
    let err = source("mismatch").fetch().await.unwrap_err();
    assert!(
        matches!(err, FetchError::BadToken(BadToken::WrongAudience { .. }))
            && err.to_string().contains("`other`"),
        "{err}"
    );
}

#[test]
fn a_wrong_typed_field_never_shows_its_value() {
    let key = rsa();
    let secret = "ya29.a0AfH6SMB-secret-looking-value";
    for (field, value, found) in [
        ("client_email", json!([secret]), JsonKind::List),
        ("private_key_id", json!({"k": secret}), JsonKind::Object),
        ("token_uri", json!(12345), JsonKind::Number),
    ] {
        let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
        file[field] = value;
        let err = load(&file).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("ya29") && !text.contains("12345"), "{text}");
        assert!(
            text.contains("/keys/sa.json") && text.contains(field),
            "{text}"
        );
        assert!(
            matches!(&err, CredentialError::Field { problem: FieldProblem::WrongType { found: f }, .. } if *f == found),
            "{err:?}"
        );
    }
    let mut file = key_file(&key, "https://oauth2.googleapis.com/token");
    file["private_key"] = json!(format!(
        "-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"
    ));
    let text = load(&file).unwrap_err().to_string();
    assert!(!text.contains("ya29") && !text.contains("BEGIN"), "{text}");
}
