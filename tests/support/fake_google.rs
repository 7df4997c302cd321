//! A fake of oauth2.googleapis.com/token and of the GCE metadata server, on one plain
//! HTTP/1.1 listener. It checks what Google checks and answers in Google's shapes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::keys::RsaKey;
use super::{now_millis, now_secs, spawn_accept_loop};

pub const GOOGLE_KID: &str = "fake-google-1";
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub const DEFAULT_EMAIL: &str = "default-sa@fake-project.iam.gserviceaccount.com";
pub const PROJECT_ID: &str = "fake-project";
pub const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
pub const META_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                           reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// Which endpoint issued a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPath {
    TokenEndpoint,
    Metadata,
}

#[derive(Clone, Debug)]
pub struct IssuedIdToken {
    pub token: String,
    pub audience: String,
    pub email: String,
    pub iat: u64,
    pub exp: u64,
    pub via: TokenPath,
}

struct Account {
    email: String,
    client_id: String,
    key: DecodingKey,
}

struct State {
    port: u16,
    google_key: RsaKey,
    /// Registered service-account public keys, by `private_key_id` (the JWT `kid`).
    accounts: Mutex<HashMap<String, Account>>,
    default_email: Mutex<String>,
    lifetime_ms: AtomicU64,
    failing: AtomicU16, // 0 = healthy
    delay_ms: AtomicU64,
    requests: AtomicUsize,
    issued: Mutex<Vec<IssuedIdToken>>,
    /// Access token -> email, so later fakes (e.g. generateIdToken) can check callers.
    access_tokens: Mutex<HashMap<String, String>>,
}

pub struct FakeGoogle {
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

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
            default_email: Mutex::new(DEFAULT_EMAIL.to_owned()),
            lifetime_ms: AtomicU64::new(3_600_000),
            failing: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            access_tokens: Mutex::new(HashMap::new()),
        });
        let st = state.clone();
        let task = spawn_accept_loop(listener, move |stream| {
            let st = st.clone();
            async move {
                let svc = service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        FakeGoogle { state, task }
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
    pub fn public_key_pem(&self) -> String {
        self.state.google_key.public_pem().to_owned()
    }
    pub fn decoding_key(&self) -> DecodingKey {
        self.state.google_key.decoding_key()
    }
    /// Google's signing key itself, so tests can forge tokens IAP would (not) accept.
    pub fn google_key(&self) -> &RsaKey {
        &self.state.google_key
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

    /// Email the metadata server reports for the "default" service account.
    pub fn set_default_email(&self, email: &str) {
        *self.state.default_email.lock().unwrap() = email.to_owned();
    }
    /// Lifetime of tokens issued from now on; `exp` = floor((now + lifetime) in seconds).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self.state.lifetime_ms.store(ms, Ordering::SeqCst);
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
    /// ID tokens issued, by either path.
    pub fn issued_count(&self) -> usize {
        self.state.issued.lock().unwrap().len()
    }
    pub fn issued_tokens(&self) -> Vec<IssuedIdToken> {
        self.state.issued.lock().unwrap().clone()
    }
    /// Token requests received (token endpoint and metadata token paths), failures included.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// Email an access token was issued to, if this fake issued it.
    pub fn access_token_email(&self, token: &str) -> Option<String> {
        self.state.access_tokens.lock().unwrap().get(token).cloned()
    }
}

impl State {
    fn token_uri(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn issue_id_token(
        &self,
        audience: &str,
        email: &str,
        sub: &str,
        full: bool,
        via: TokenPath,
    ) -> String {
        let now_ms = now_millis();
        let iat = (now_ms / 1000) as u64;
        let exp = ((now_ms + u128::from(self.lifetime_ms.load(Ordering::SeqCst))) / 1000) as u64;
        let mut claims = json!({
            "iss": GOOGLE_ISSUER, "aud": audience, "azp": email, "sub": sub, "iat": iat, "exp": exp,
        });
        // Like the metadata server: without format=full the token carries no email.
        if full {
            claims["email"] = json!(email);
            claims["email_verified"] = json!(true);
        }
        let token = self.google_key.sign(Some(GOOGLE_KID), &claims);
        self.issued.lock().unwrap().push(IssuedIdToken {
            token: token.clone(),
            audience: audience.to_owned(),
            email: email.to_owned(),
            iat,
            exp,
            via,
        });
        token
    }

    fn issue_access_token(&self, email: &str) -> Value {
        let token = format!("ya29.fake-{}", super::hex(&rand::random::<[u8; 24]>()));
        self.access_tokens
            .lock()
            .unwrap()
            .insert(token.clone(), email.to_owned());
        let expires_in = (self.lifetime_ms.load(Ordering::SeqCst) / 1000).max(1);
        json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})
    }

    /// Counts the request, applies the delay knob, then the failing knob.
    async fn begin_token_request(&self) -> Option<u16> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match self.failing.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Checks a jwt-bearer assertion the way Google does; Ok = (claims, account email, id).
    fn verify_assertion(&self, assertion: &str) -> Result<(Value, String, String), String> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| format!("Invalid JWT: cannot parse header ({e})"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!(
                "Invalid JWT: algorithm {:?} is not RS256",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("Invalid JWT: header has no kid")?;
        let (email, client_id, key) = {
            let accounts = self.accounts.lock().unwrap();
            let a = accounts
                .get(&kid)
                .ok_or_else(|| format!("Invalid JWT Signature: no key with id {kid}"))?;
            (a.email.clone(), a.client_id.clone(), a.key.clone())
        };
        let mut v = Validation::new(Algorithm::RS256);
        // Time and audience are checked below, with Google's own messages.
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "Invalid JWT Signature.".to_owned()
                }
                _ => format!("Invalid JWT: {e}"),
            })?
            .claims;
        let iss = claims["iss"].as_str().unwrap_or_default();
        if iss != email {
            return Err(format!(
                "Invalid JWT: iss {iss:?} does not own key {kid} (owner {email})"
            ));
        }
        let token_uri = self.token_uri();
        if claims["aud"].as_str() != Some(token_uri.as_str()) {
            return Err(format!(
                "Invalid JWT: Failed audience check. The right audience is {token_uri}"
            ));
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err(format!("{SHORT_LIVED} (iat and exp must be integers)"));
        };
        let now = now_secs();
        if exp <= now {
            return Err(format!("{SHORT_LIVED} (expired: exp {exp} <= now {now})"));
        }
        if exp < iat || exp - iat > 3600 {
            return Err(format!(
                "{SHORT_LIVED} (exp - iat = {} > 3600)",
                exp as i64 - iat as i64
            ));
        }
        if iat > now + 300 {
            return Err(format!(
                "{SHORT_LIVED} (iat {iat} is in the future, now {now})"
            ));
        }
        Ok((claims, email, client_id))
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::POST, "/token") => token_endpoint(&state, req).await,
        (&Method::GET, IDENTITY_PATH | META_TOKEN_PATH | "/") => metadata(&state, req).await,
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    };
    Ok(resp)
}

async fn token_endpoint(state: &State, req: Request<Incoming>) -> Resp {
    let failing = state.begin_token_request().await;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return google_error(400, "invalid_request", "unreadable body"),
    };
    if let Some(status) = failing {
        let code = match status {
            429 => "rate_limit_exceeded",
            500..=599 => "internal_failure",
            _ => "invalid_request",
        };
        return google_error(status, code, "failure injected by FakeGoogle::set_failing");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant = form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if grant != JWT_BEARER {
        return google_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant}"),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return google_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let (claims, email, client_id) = match state.verify_assertion(assertion) {
        Ok(v) => v,
        Err(reason) => return google_error(400, "invalid_grant", &reason),
    };
    if let Some(aud) = claims["target_audience"].as_str().filter(|a| !a.is_empty()) {
        let token = state.issue_id_token(aud, &email, &client_id, true, TokenPath::TokenEndpoint);
        json_resp(200, &json!({ "id_token": token }))
    } else if claims["scope"].as_str().is_some_and(|s| !s.is_empty()) {
        json_resp(200, &state.issue_access_token(&email))
    } else {
        google_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )
    }
}

async fn metadata(state: &State, req: Request<Incoming>) -> Resp {
    let headers = req.headers();
    let flavor_ok = headers
        .get("metadata-flavor")
        .is_some_and(|v| v == "Google");
    // The real server refuses anything that looks proxied, as an SSRF guard.
    if !flavor_ok || headers.contains_key("x-forwarded-for") {
        let path = req.uri().path();
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "Your client does not have permission to get URL {path} from this server. \
                 Missing Metadata-Flavor:Google header."
            ),
        );
    }
    if req.uri().path() == "/" {
        return text(StatusCode::OK, "computeMetadata/\n");
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let is_identity = req.uri().path() == IDENTITY_PATH;
    if let Some(status) = state.begin_token_request().await {
        return text(
            StatusCode::from_u16(status).unwrap(),
            "Metadata server failure (injected)\n",
        );
    }
    let email = state.default_email.lock().unwrap().clone();
    if !is_identity {
        return json_resp(200, &state.issue_access_token(&email));
    }
    let Some(audience) = query.get("audience").filter(|a| !a.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "non-empty audience parameter required\n",
        );
    };
    let full = query.get("format").is_some_and(|f| f == "full");
    let sub = format!("1{:020}", email.len());
    let token = state.issue_id_token(audience, &email, &sub, full, TokenPath::Metadata);
    text(StatusCode::OK, &token)
}

fn google_error(status: u16, error: &str, description: &str) -> Resp {
    json_resp(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn json_resp(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn text(status: StatusCode, body: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        // Every metadata-server answer carries this, and some clients check for it.
        .header("metadata-flavor", "Google")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}
