//! The fixtures check what they claim to check, with no iap-proxy code involved.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, StatusCode, Version};
use serde_json::{Value, json};

use crate::support::client::{self, Resp, get_bearer, get_request, send};
use crate::support::fake_google::{FakeGoogle, IDENTITY_PATH};
use crate::support::fixture::{sign_as_service_account, temp_dir};
use crate::support::keys::RsaKey;
use crate::support::upstream::{Alpn, Upstream, UpstreamOptions, expected_sha256};
use crate::support::{hex, now_secs, sha256};

const AUD: &str = "123-fake.apps.googleusercontent.com";

fn sa_assertion(key_file: &Value, claims_extra: Value, aud: &str) -> String {
    let now = now_secs();
    let mut claims = json!({
        "iss": key_file["client_email"], "aud": aud, "iat": now, "exp": now + 3600,
    });
    for (k, v) in claims_extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    sign_as_service_account(key_file, &claims)
}

async fn post_token(fake: &FakeGoogle, grant: &str, assertion: &str) -> Resp {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", grant)
        .append_pair("assertion", assertion)
        .finish();
    let req = Request::post(fake.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(client::full(form))
        .unwrap();
    send(&client::http1(), req).await
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[tokio::test]
async fn service_account_assertion_gets_verifiable_id_token() {
    let fake = FakeGoogle::start().await;
    let dir = temp_dir();
    let path = fake.service_account_key_file(dir.path(), "sa@fake-project.iam.gserviceaccount.com");
    let key_file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(key_file["token_uri"], fake.token_uri());
    assert!(
        key_file["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let assertion = sa_assertion(
        &key_file,
        json!({"target_audience": AUD}),
        &fake.token_uri(),
    );
    let resp = post_token(&fake, JWT_BEARER, &assertion).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let id_token = resp.json()["id_token"].as_str().unwrap().to_owned();
    let data = fake.verify_id_token(&id_token, AUD).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some("fake-google-1"));
    assert_eq!(
        data.claims["email"],
        "sa@fake-project.iam.gserviceaccount.com"
    );
    assert_eq!(data.claims["iss"], "https://accounts.google.com");
    assert_eq!(fake.issued_count(), 1);

    // Another fake's key must not verify this token.
    let other = FakeGoogle::start().await;
    assert!(other.verify_id_token(&id_token, AUD).is_err());

    let resp = post_token(
        &fake,
        JWT_BEARER,
        &sa_assertion(&key_file, json!({"scope": "openid"}), &fake.token_uri()),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    let at = resp.json()["access_token"].as_str().unwrap().to_owned();
    assert!(at.starts_with("ya29.fake-"));
    assert_eq!(
        fake.access_token_email(&at).as_deref(),
        Some("sa@fake-project.iam.gserviceaccount.com")
    );
}

#[tokio::test]
async fn token_endpoint_rejects_bad_assertions() {
    let fake = FakeGoogle::start().await;
    let key_file = fake.service_account_json("sa@fake-project.iam.gserviceaccount.com");
    let aud = json!({"target_audience": AUD});

    let mut forged = key_file.clone();
    forged["private_key"] = json!(RsaKey::generate().private_pem());
    let resp = post_token(
        &fake,
        JWT_BEARER,
        &sa_assertion(&forged, aud.clone(), &fake.token_uri()),
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json()["error"], "invalid_grant");

    let resp = post_token(
        &fake,
        JWT_BEARER,
        &sa_assertion(
            &key_file,
            aud.clone(),
            "https://oauth2.googleapis.com/token",
        ),
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(
        resp.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    let long = json!({"target_audience": AUD, "exp": now_secs() + 7200});
    let resp = post_token(
        &fake,
        JWT_BEARER,
        &sa_assertion(&key_file, long, &fake.token_uri()),
    )
    .await;
    assert_eq!(resp.json()["error"], "invalid_grant");

    let good = sa_assertion(&key_file, aud, &fake.token_uri());
    let resp = post_token(&fake, "client_credentials", &good).await;
    assert_eq!(resp.json()["error"], "unsupported_grant_type");

    fake.set_failing(Some(500));
    let resp = post_token(&fake, JWT_BEARER, &good).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp.json()["error"].is_string());
    assert_eq!(fake.issued_count(), 0);
    assert_eq!(fake.request_count(), 5);
}

const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

fn identity_url(fake: &FakeGoogle, query: &str) -> String {
    format!("{}{IDENTITY_PATH}?{query}", fake.base_url())
}

/// A valid ID token for AUD from `fake`, via the metadata path.
async fn id_token(fake: &FakeGoogle) -> String {
    let url = identity_url(fake, &format!("audience={AUD}&format=full"));
    send(&client::http1(), get_request(&url, &[FLAVOR]))
        .await
        .text()
}

#[tokio::test]
async fn metadata_server_requires_flavor_header() {
    let mut fake = FakeGoogle::start().await;
    let client = client::http1();
    let url = identity_url(&fake, &format!("audience={AUD}&format=full"));
    assert_eq!(
        send(&client, get_request(&url, &[])).await.status,
        StatusCode::FORBIDDEN
    );

    let token = id_token(&fake).await;
    let claims = fake.verify_id_token(&token, AUD).unwrap().claims;
    assert_eq!(
        claims["email"],
        "default-sa@fake-project.iam.gserviceaccount.com"
    );

    let no_aud = identity_url(&fake, "format=full");
    assert_eq!(
        send(&client, get_request(&no_aud, &[FLAVOR])).await.status,
        StatusCode::BAD_REQUEST
    );
    let root = format!("{}/", fake.base_url());
    assert_eq!(
        send(&client, get_request(&root, &[FLAVOR])).await.status,
        StatusCode::OK
    );

    fake.set_failing(Some(503));
    assert_eq!(
        send(&client, get_request(&url, &[FLAVOR])).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(fake.issued_count(), 1);
    // The 403 never counted as a token request; the 400 (no audience) did.
    assert_eq!(fake.request_count(), 3);

    // Dropping the fake must free its port: nothing keeps serving behind the test's back.
    let port = fake.port();
    let stopped = fake.on_stop();
    drop(fake);
    // The abort on drop is carried out by the runtime; wait for the server to be gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the fake's server stopped after the drop");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn upstream_checks_tokens_like_iap() {
    let fake = FakeGoogle::start().await;
    let up = Upstream::start(UpstreamOptions::new(&fake, AUD)).await;
    let client = client::https(up.client_config(), true, true);
    let echo = format!("{}/echo?a=1", up.url());

    let resp = send(&client, get_request(&echo, &[])).await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(resp.header("x-goog-iap-generated-response"), Some("true"));
    assert!(
        resp.header("location")
            .unwrap()
            .contains(&format!("client_id={AUD}"))
    );

    let token = id_token(&fake).await;
    let bearer = format!("Bearer {token}");
    let resp = send(
        &client,
        get_request(
            &echo,
            &[
                ("proxy-authorization", &bearer),
                ("authorization", "Basic app"),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-goog-iap-generated-response"), None);
    let body = resp.json();
    assert_eq!(body["query"], "a=1");
    assert!(body["headers"].get("proxy-authorization").is_none());
    assert_eq!(body["headers"]["authorization"][0], "Basic app");
    assert_eq!(
        body["headers"]["x-goog-authenticated-user-email"][0],
        "accounts.google.com:default-sa@fake-project.iam.gserviceaccount.com"
    );

    let expired = fake.sign_id_token(&FakeGoogle::id_token_claims(AUD, "a@b.c", now_secs() - 1));
    let resp = get_bearer(&client, &echo, &expired).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.text().contains("Expired"));

    let wrong_aud = fake.sign_id_token(&FakeGoogle::id_token_claims(
        "other",
        "a@b.c",
        now_secs() + 60,
    ));
    let resp = get_bearer(&client, &echo, &wrong_aud).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.text().contains(AUD));

    let other = FakeGoogle::start().await;
    let foreign = other.sign_id_token(&FakeGoogle::id_token_claims(AUD, "a@b.c", now_secs() + 60));
    let resp = get_bearer(&client, &echo, &foreign).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);

    let resp = get_bearer(&client, &echo, "ya29.not-a-jwt").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.text().contains("Unable to parse JWT"));

    assert_eq!(up.authorized_count(), 1);
    assert_eq!(up.rejected_count(), 5);
    assert_eq!(up.expired_accepted_count(), 0);
}

#[tokio::test]
async fn upstream_streams_and_negotiates() {
    let fake = FakeGoogle::start().await;
    let up = Upstream::start(UpstreamOptions::new(&fake, AUD)).await;
    let bearer = format!("Bearer {}", id_token(&fake).await);
    let auth = [("authorization", bearer.as_str())];

    let h2 = client::https(up.client_config(), true, true);
    let resp = send(
        &h2,
        get_request(&format!("{}/download?bytes=1000000", up.url()), &auth),
    )
    .await;
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.body.len(), 1_000_000);
    assert_eq!(hex(&sha256(&resp.body)), hex(&expected_sha256(1_000_000)));

    let data = vec![7u8; 300_000];
    let req = Request::post(format!("{}/upload", up.url()))
        .header("authorization", &bearer)
        .body(client::full(data.clone()))
        .unwrap();
    let resp = send(&h2, req).await;
    assert_eq!(resp.json()["bytes"], 300_000);
    assert_eq!(resp.json()["sha256"], hex(&sha256(&data)));

    let resp = send(&h2, get_request(&format!("{}/trailers", up.url()), &auth)).await;
    assert_eq!(resp.trailers.unwrap()["grpc-status"], "0");

    let h1 = client::https(up.client_config(), true, false);
    let resp = send(&h1, get_request(&format!("{}/echo", up.url()), &auth)).await;
    assert_eq!(resp.version, Version::HTTP_11);
    assert_eq!(resp.json()["version"], "HTTP/1.1");

    // SSE: the first event must arrive while the second is still held back.
    let resp = h1
        .request(get_request(&format!("{}/sse", up.url()), &auth))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), body.frame())
            .await
            .is_err()
    );
    up.release_sse();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
}

#[tokio::test]
async fn upstream_websocket_echo() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let fake = FakeGoogle::start().await;
    let up = Upstream::start(UpstreamOptions::new(&fake, AUD)).await;
    let mut tls = (*up.client_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", up.port()))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://127.0.0.1:{}/ws", up.port())
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {}", id_token(&fake).await);
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    assert_eq!(up.authorized_count(), 1);
}

#[tokio::test]
async fn upstream_http2_only_and_http1_only() {
    let fake = FakeGoogle::start().await;
    let mut opts = UpstreamOptions::new(&fake, AUD);
    opts.alpn = Alpn::Http1Only;
    let up = Upstream::start(opts).await;
    let bearer = format!("Bearer {}", id_token(&fake).await);
    let client = client::https(up.client_config(), true, true);
    let resp = send(
        &client,
        get_request(&format!("{}/hop", up.url()), &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(resp.version, Version::HTTP_11);
    assert_eq!(resp.header("x-custom-hop"), Some("1"));

    let mut opts = UpstreamOptions::new(&fake, AUD);
    opts.alpn = Alpn::Http2Only;
    let up = Upstream::start(opts).await;
    let client = client::https(up.client_config(), false, true);
    let resp = send(
        &client,
        get_request(
            &format!("{}/redirect", up.url()),
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(
        resp.header("location"),
        Some(format!("{}/landed?x=1", up.url()).as_str())
    );
}
