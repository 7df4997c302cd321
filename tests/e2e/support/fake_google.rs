//! A fake of oauth2.googleapis.com/token and of the GCE metadata server, on one plain
//! HTTP/1.1 listener. It checks what Google checks and answers in Google's shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::fake_iam::{Iam, IdTokenCall, Pool, User};
use super::google_http;
use super::keys::RsaKey;
use super::{AcceptLoop, now_secs, spawn_accept_loop};

pub const GOOGLE_KID: &str = "fake-google-1";
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub const DEFAULT_EMAIL: &str = "default-sa@fake-project.iam.gserviceaccount.com";
pub const PROJECT_ID: &str = "fake-project";
pub const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
pub const META_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// Which endpoint issued a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPath {
    TokenEndpoint,
    Metadata,
    /// IAM Credentials generateIdToken (impersonation).
    Iam,
}

/// One POST to the token endpoint, as the fake saw it and answered it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub grant_type: String,
    /// The jwt-bearer assertion's header and claims, decoded without any check (so a test
    /// can see what a rejected one held).
    pub assertion_header: Option<jsonwebtoken::Header>,
    pub assertion_claims: Option<Value>,
    pub status: u16,
    /// Google's `error_description` when the fake refused the request.
    pub refusal: Option<String>,
}

#[derive(Clone, Debug)]
pub struct IssuedIdToken {
    pub token: String,
    pub audience: String,
    pub email: String,
    pub iat: u64,
    pub exp: u64,
    pub via: TokenPath,
    /// When the fake issued it, by the test machine's clock (`iat` is whole seconds, and
    /// may be shifted by `set_clock_offset`).
    pub issued_at_ms: u128,
}

pub(super) struct Account {
    pub(super) email: String,
    pub(super) client_id: String,
    pub(super) key: DecodingKey,
}

pub(super) struct State {
    pub(super) port: u16,
    pub(super) google_key: RsaKey,
    /// Registered service-account public keys, by `private_key_id` (the JWT `kid`).
    pub(super) accounts: Mutex<HashMap<String, Account>>,
    pub(super) lifetime_ms: AtomicU64,
    /// Seconds added to the fake's clock for `iat` and `exp` (negative: it runs behind).
    pub(super) clock_offset: AtomicI64,
    /// When set (non-zero), every ID token's `exp` is exactly this.
    pub(super) fixed_exp: AtomicU64,
    pub(super) failing: AtomicU16, // 0 = healthy
    pub(super) delay_ms: AtomicU64,
    pub(super) requests: AtomicUsize,
    /// A watch so tests can wait for an issuance instead of polling for its effects.
    pub(super) issued: watch::Sender<Vec<IssuedIdToken>>,
    /// Every assertion received, so tests can check none leaks into logs.
    pub(super) assertions: Mutex<Vec<String>>,
    pub(super) token_requests: Mutex<Vec<TokenRequest>>,
    /// Access token -> email, so later fakes (e.g. generateIdToken) can check callers.
    pub(super) access_tokens: Mutex<HashMap<String, String>>,
    /// Users, impersonation grants, workload identity pools: see fake_iam.rs.
    pub(super) iam: Mutex<Iam>,
    /// The metadata server answers nothing before this instant (a GKE metadata server
    /// that starts after the pod): requests arriving earlier are held until then.
    pub(super) metadata_ready_at: Mutex<Option<tokio::time::Instant>>,
    /// When each metadata probe (`GET /`) arrived.
    pub(super) metadata_probes: Mutex<Vec<tokio::time::Instant>>,
}

pub struct FakeGoogle {
    state: Arc<State>,
    server: AcceptLoop,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.task.abort();
    }
}

impl FakeGoogle {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake google");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State {
            port,
            google_key: RsaKey::generate(),
            accounts: Mutex::new(HashMap::new()),
            lifetime_ms: AtomicU64::new(3_600_000),
            clock_offset: AtomicI64::new(0),
            fixed_exp: AtomicU64::new(0),
            failing: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            issued: watch::channel(Vec::new()).0,
            assertions: Mutex::new(Vec::new()),
            token_requests: Mutex::new(Vec::new()),
            access_tokens: Mutex::new(HashMap::new()),
            iam: Mutex::new(Iam::default()),
            metadata_ready_at: Mutex::new(None),
            metadata_probes: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let server = spawn_accept_loop(listener, move |stream| {
            let st = st.clone();
            async move {
                let svc = service_fn(move |req| google_http::handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        FakeGoogle { state, server }
    }

    pub fn port(&self) -> u16 {
        self.state.port
    }
    /// "http://127.0.0.1:PORT"
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.state.port)
    }
    /// What `GCE_METADATA_HOST` would hold: "127.0.0.1:PORT".
    pub fn metadata_host(&self) -> String {
        format!("127.0.0.1:{}", self.state.port)
    }
    pub fn token_uri(&self) -> String {
        self.state.token_uri()
    }
    pub fn decoding_key(&self) -> DecodingKey {
        self.state.google_key.decoding_key()
    }

    /// Checks `token` the way a relying party would: RS256 under this fake's key, `aud` =
    /// `audience`, not expired. Another fake's tokens fail here.
    pub fn verify_id_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<jsonwebtoken::TokenData<Value>, jsonwebtoken::errors::Error> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[audience]);
        jsonwebtoken::decode::<Value>(token, &self.state.google_key.decoding_key(), &v)
    }

    /// Signs arbitrary claims with Google's key (header kid = GOOGLE_KID), e.g. to make an
    /// expired or wrong-audience ID token without waiting.
    pub fn sign_id_token(&self, claims: &Value) -> String {
        self.state.google_key.sign(Some(GOOGLE_KID), claims)
    }

    /// Claims of a well-formed ID token for `audience` / `email` expiring at `exp`.
    pub fn id_token_claims(audience: &str, email: &str, exp: u64) -> Value {
        json!({
            "iss": GOOGLE_ISSUER, "aud": audience, "azp": email, "sub": "100000000000000000001",
            "email": email, "email_verified": true, "iat": now_secs().min(exp), "exp": exp,
        })
    }

    /// Registers a fresh service account key for `email` and returns Google's key-file JSON.
    pub fn service_account_json(&self, email: &str) -> Value {
        let key = RsaKey::generate();
        let key_id = super::hex(&rand::random::<[u8; 20]>());
        let client_id = format!("1{:020}", rand::random::<u64>() % 10u64.pow(19));
        self.state.accounts.lock().unwrap().insert(
            key_id.clone(),
            Account {
                email: email.to_owned(),
                client_id: client_id.clone(),
                key: key.decoding_key(),
            },
        );
        let cert_email = email.replace('@', "%40");
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": key_id,
            "private_key": key.private_pem(),
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{cert_email}"),
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes a registered key file for `email` into `dir`; returns its path.
    pub fn service_account_key_file(&self, dir: &Path, email: &str) -> PathBuf {
        let json = self.service_account_json(email);
        let name = format!("{}.json", email.split('@').next().unwrap_or("sa"));
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).expect("write key file");
        path
    }

    /// Lifetime of tokens issued from now on; `exp` = floor((now + lifetime) in seconds).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self.state.lifetime_ms.store(ms, Ordering::SeqCst);
    }
    /// Shifts the clock the fake stamps ID tokens with (`iat`, `exp`) by `secs`: a fake
    /// running two hours behind the test machine issues tokens that are dead on arrival.
    pub fn set_clock_offset(&self, secs: i64) {
        self.state.clock_offset.store(secs, Ordering::SeqCst);
    }
    /// `Some(exp)`: every ID token issued from now on carries exactly this `exp`.
    pub fn set_fixed_exp(&self, exp: Option<u64>) {
        self.state
            .fixed_exp
            .store(exp.unwrap_or(0), Ordering::SeqCst);
    }
    /// `Some(status)`: every token request (both paths) fails with that status.
    pub fn set_failing(&self, status: Option<u16>) {
        self.state
            .failing
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }
    /// Sleep before answering each token request, so concurrent cold starts pile up.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }
    /// The metadata server holds every request until `after` from now, then answers: a
    /// metadata server still starting.
    pub fn answer_metadata_after(&self, after: Duration) {
        *self.state.metadata_ready_at.lock().unwrap() = Some(tokio::time::Instant::now() + after);
    }
    /// When each metadata probe (`GET /` with any headers) arrived, in order.
    pub fn metadata_probes(&self) -> Vec<tokio::time::Instant> {
        self.state.metadata_probes.lock().unwrap().clone()
    }
    /// ID tokens issued, by either path.
    pub fn issued_count(&self) -> usize {
        self.state.issued.borrow().len()
    }
    pub fn issued_tokens(&self) -> Vec<IssuedIdToken> {
        self.state.issued.borrow().clone()
    }
    /// Waits (bounded) until `n` ID tokens have been issued in all; returns them.
    pub async fn wait_for_issued(&self, n: usize, within: Duration) -> Vec<IssuedIdToken> {
        let mut rx = self.state.issued.subscribe();
        match tokio::time::timeout(within, rx.wait_for(|issued| issued.len() >= n)).await {
            Ok(Ok(issued)) => issued.clone(),
            _ => panic!(
                "{} ID token(s) issued within {within:?}, expected {n}; {} token request(s): {:?}",
                self.issued_count(),
                self.request_count(),
                self.token_requests()
            ),
        }
    }
    pub fn received_assertions(&self) -> Vec<String> {
        self.state.assertions.lock().unwrap().clone()
    }
    /// Every POST to the token endpoint, with what the fake answered.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.token_requests.lock().unwrap().clone()
    }
    /// Resolves once the fake's server (listener and connections) is gone after a drop.
    pub fn on_stop(&mut self) -> oneshot::Receiver<()> {
        self.server.stopped.take().expect("on_stop called once")
    }
    /// Token requests received (token endpoint and metadata token paths), failures included.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// Email an access token was issued to, if this fake issued it.
    pub fn access_token_email(&self, token: &str) -> Option<String> {
        self.state.access_tokens.lock().unwrap().get(token).cloned()
    }

    /// Registers a user whose refresh token the /token endpoint accepts.
    pub fn register_user(&self, user: User) {
        self.state.iam.lock().unwrap().users.push(user);
    }
    /// `caller` (an email or principal) may mint tokens as `target`.
    pub fn grant_token_creator(&self, caller: &str, target: &str) {
        let pair = (caller.to_owned(), target.to_owned());
        self.state.iam.lock().unwrap().grants.insert(pair);
    }
    pub fn add_pool(&self, pool: Pool) {
        self.state.iam.lock().unwrap().pools.push(pool);
    }
    /// GET /subject-token answers `body` when header `x-subject-token-key: key` is sent.
    pub fn serve_subject_token(&self, key: &str, body: &str) {
        self.state.iam.lock().unwrap().subject_route = Some((key.to_owned(), body.to_owned()));
    }
    /// Every generateIdToken call, with what the fake answered.
    pub fn generate_id_token_calls(&self) -> Vec<IdTokenCall> {
        self.state.iam.lock().unwrap().id_token_calls.clone()
    }
    /// `{base}/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`, as files name it.
    pub fn impersonation_url(&self, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.base_url()
        )
    }
    pub fn sts_url(&self) -> String {
        format!("{}/v1/token", self.base_url())
    }
    /// The public key registered for `email`'s key file (the most recent one).
    pub fn service_account_key(&self, email: &str) -> Option<DecodingKey> {
        let accounts = self.state.accounts.lock().unwrap();
        accounts
            .values()
            .find(|a| a.email == email)
            .map(|a| a.key.clone())
    }
    /// Every access token this fake has issued.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state
            .access_tokens
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}
