//! An HTTPS server that checks requests like IAP, then hands them to a test app (`app.rs`).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, PROXY_AUTHORIZATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use super::app::{self, Body, full};
use super::fake_google::FakeGoogle;
use super::tls::TestCa;
use super::{AcceptLoop, now_millis, spawn_accept_loop};

pub use super::app::expected_sha256;

const IAP_HEADER: &str = "x-goog-iap-generated-response";

/// Which protocols the upstream offers by ALPN (and accepts at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    Both,
    Http1Only,
    Http2Only,
}

pub struct UpstreamOptions {
    /// Key that Google ID tokens must verify against (the FakeGoogle's).
    pub google_key: DecodingKey,
    /// The IAP OAuth client ID: the `aud` tokens must carry.
    pub audience: String,
    pub alpn: Alpn,
}

impl UpstreamOptions {
    pub fn new(fake: &FakeGoogle, audience: &str) -> Self {
        UpstreamOptions {
            google_key: fake.decoding_key(),
            audience: audience.to_owned(),
            alpn: Alpn::Both,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Authorized,
    /// No bearer token at all: answered with IAP's 302 to the Google sign-in page.
    NoToken,
    /// Answered 401 with this message.
    Rejected(String),
    /// A valid token whose principal lacks roles/iap.httpsResourceAccessor: IAP's 403.
    Denied(String),
}

/// One request as it reached the upstream (headers before Proxy-Authorization stripping).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub outcome: AuthOutcome,
    /// "x-serverless-authorization", "proxy-authorization" or "authorization": where the
    /// token was taken from.
    pub token_header: Option<&'static str>,
    pub token_exp: Option<u64>,
    pub email: Option<String>,
    pub received_at_ms: u128,
}

impl Recorded {
    pub fn authorized(&self) -> bool {
        self.outcome == AuthOutcome::Authorized
    }
}

pub(super) struct Shared {
    pub(super) port: u16,
    audience: String,
    google_key: DecodingKey,
    /// Every request, in arrival order; a watch so tests can wait for one to arrive.
    requests: watch::Sender<Vec<Recorded>>,
    pub(super) sse: watch::Sender<u64>,
    /// Upgraded WebSocket tasks outlive their connection task; aborted on drop.
    pub(super) ws_tasks: Mutex<Vec<AbortHandle>>,
    /// Cloud Run mode: `X-Serverless-Authorization` is read before the other two.
    serverless: AtomicBool,
    /// Off: requests are answered but not recorded (a soak's hundreds of thousands).
    recording: AtomicBool,
    /// Requests not let through, recorded or not.
    unauthorized: AtomicUsize,
    /// This many of the next requests with a valid token get IAP's 401 anyway, as when
    /// IAP no longer accepts a token the proxy still holds.
    reject_valid: AtomicUsize,
    /// Service accounts whose self-signed JWTs are accepted, by email.
    self_signed: Mutex<HashMap<String, DecodingKey>>,
    /// Principals (by email) without roles/iap.httpsResourceAccessor: valid tokens, 403.
    denied: Mutex<HashSet<String>>,
    /// Where IAP's sign-in redirect points (Google's page unless a test says otherwise).
    sign_in_origin: Mutex<String>,
}

pub struct Upstream {
    shared: Arc<Shared>,
    server: AcceptLoop,
    ca: TestCa,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.task.abort();
        for t in self.shared.ws_tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Upstream {
    pub async fn start(opts: UpstreamOptions) -> Self {
        Upstream::start_at(0, opts).await
    }

    /// [`Upstream::start`] on `port` (0: any), with a CA of its own: started on the port of
    /// a stopped one, it is the same upstream with a rotated certificate authority.
    pub async fn start_at(port: u16, opts: UpstreamOptions) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        Upstream::start_on(listener, opts)
    }

    /// [`Upstream::start`] on a port below Linux's ephemeral range (32768–60999), so that
    /// once it stops, [`Upstream::start_at`] can take the port again: no other test's
    /// port-0 listener or outgoing connection is given it meanwhile.
    pub async fn start_outside_ephemeral_range(opts: UpstreamOptions) -> Self {
        for _ in 0..200 {
            let port = 20_000 + rand::random::<u16>() % 12_000;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                return Upstream::start_on(listener, opts);
            }
        }
        panic!("no free port in 20000..32000 after 200 tries");
    }

    fn start_on(listener: TcpListener, opts: UpstreamOptions) -> Self {
        let port = listener.local_addr().expect("local addr").port();
        let ca = TestCa::new();
        let dir = super::fixture::temp_dir();
        let ca_path = ca.write_ca(dir.path());
        let alpn: &[&[u8]] = match opts.alpn {
            Alpn::Both => &[b"h2", b"http/1.1"],
            Alpn::Http1Only => &[b"http/1.1"],
            Alpn::Http2Only => &[b"h2"],
        };
        let acceptor = TlsAcceptor::from(ca.server_config(alpn));
        let shared = Arc::new(Shared {
            port,
            audience: opts.audience,
            google_key: opts.google_key,
            requests: watch::channel(Vec::new()).0,
            sse: watch::channel(0).0,
            ws_tasks: Mutex::new(Vec::new()),
            serverless: AtomicBool::new(false),
            recording: AtomicBool::new(true),
            unauthorized: AtomicUsize::new(0),
            reject_valid: AtomicUsize::new(0),
            self_signed: Mutex::new(HashMap::new()),
            denied: Mutex::new(HashSet::new()),
            sign_in_origin: Mutex::new("https://accounts.google.com".to_owned()),
        });
        let (sh, mode) = (shared.clone(), opts.alpn);
        let server = spawn_accept_loop(listener, move |tcp| {
            let (sh, acceptor) = (sh.clone(), acceptor.clone());
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| handle(sh.clone(), req));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder = match mode {
                    Alpn::Both => builder,
                    Alpn::Http1Only => builder.http1_only(),
                    Alpn::Http2Only => builder.http2_only(),
                };
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            }
        });
        Upstream {
            shared,
            server,
            ca,
            ca_path,
            _dir: dir,
        }
    }

    /// "https://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.shared.port)
    }
    pub fn port(&self) -> u16 {
        self.shared.port
    }
    /// PEM file of the CA that signed the upstream's certificate.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config()
    }
    /// Accept JWTs signed by `email`'s own key, as IAP does for service accounts.
    pub fn trust_service_account(&self, email: &str, key: DecodingKey) {
        self.shared
            .self_signed
            .lock()
            .unwrap()
            .insert(email.to_owned(), key);
    }
    /// Answer IAP's 403 to valid tokens of `email`, as for a principal without
    /// roles/iap.httpsResourceAccessor on the resource.
    pub fn deny_email(&self, email: &str) {
        self.shared.denied.lock().unwrap().insert(email.to_owned());
    }
    /// Makes the unauthenticated answer redirect to `origin` instead of Google's sign-in
    /// page (everything else about it stays IAP's), as a look-alike of IAP would.
    pub fn set_sign_in_origin(&self, origin: &str) {
        *self.shared.sign_in_origin.lock().unwrap() = origin.to_owned();
    }
    /// Lets every `/sse` response that is waiting send its second event.
    pub fn release_sse(&self) {
        self.shared.sse.send_modify(|g| *g += 1);
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.borrow().clone()
    }
    /// Waits (bounded) until a request for `path` has reached the upstream, and returns
    /// it. Recorded on arrival, before the app answers, so a `/slow` request is in flight
    /// once this returns.
    pub async fn wait_for_request(&self, path: &str, within: Duration) -> Recorded {
        let mut rx = self.shared.requests.subscribe();
        let found =
            tokio::time::timeout(within, rx.wait_for(|rs| rs.iter().any(|r| r.path == path))).await;
        match found {
            Ok(Ok(requests)) => requests.iter().find(|r| r.path == path).cloned().unwrap(),
            _ => {
                let paths: Vec<String> = self.requests().into_iter().map(|r| r.path).collect();
                panic!(
                    "no request for {path} reached the upstream within {within:?}; it saw {paths:?}"
                )
            }
        }
    }
    /// Waits (bounded) until `n` requests for `path` have reached the upstream.
    pub async fn wait_for_count(&self, path: &str, n: usize, within: Duration) {
        let mut rx = self.shared.requests.subscribe();
        let counted = |rs: &Vec<Recorded>| rs.iter().filter(|r| r.path == path).count() >= n;
        let found = tokio::time::timeout(within, rx.wait_for(counted)).await;
        assert!(
            matches!(found, Ok(Ok(_))),
            "fewer than {n} requests for {path} within {within:?}"
        );
    }
    /// Waits (bounded) for a request matching `pred` to reach the upstream; returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Recorded {
        let mut rx = self.shared.requests.subscribe();
        let found = tokio::time::timeout(within, rx.wait_for(|rs| rs.iter().any(&pred))).await;
        match found {
            Ok(Ok(requests)) => requests.iter().find(|r| pred(r)).cloned().unwrap(),
            _ => panic!(
                "no request {what} reached the upstream within {within:?}; it saw {} requests",
                self.requests().len()
            ),
        }
    }
    /// Resolves once the upstream's server (listener and connections) is gone after a drop.
    pub fn on_stop(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        self.server.stopped.take().expect("on_stop called once")
    }
    /// Behave like Cloud Run: take the token from `X-Serverless-Authorization` first.
    pub fn set_serverless(&self, on: bool) {
        self.shared.serverless.store(on, Ordering::SeqCst);
    }
    /// Stops recording requests (a soak sends too many to keep); they are still answered,
    /// and those not let through still counted (`unauthorized_total`).
    pub fn stop_recording(&self) {
        self.shared.recording.store(false, Ordering::SeqCst);
    }
    /// Requests not let through (no, a refused or an expired token), recorded or not.
    pub fn unauthorized_total(&self) -> usize {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }
    /// Answer IAP's 401 to the next `n` requests whose token is otherwise valid.
    pub fn reject_next_valid_tokens(&self, n: usize) {
        self.shared.reject_valid.store(n, Ordering::SeqCst);
    }
    pub fn authorized_count(&self) -> usize {
        self.requests().iter().filter(|r| r.authorized()).count()
    }
    /// Requests that arrived without a valid token (302 or 401 answers).
    pub fn rejected_count(&self) -> usize {
        self.requests().iter().filter(|r| !r.authorized()).count()
    }
    /// Accepted requests whose token had expired on arrival. Always 0 unless the check
    /// in `authenticate` is broken; kept so tests can assert the invariant directly.
    pub fn expired_accepted_count(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.authorized()
                    && r.token_exp
                        .is_some_and(|e| u128::from(e) * 1000 <= r.received_at_ms)
            })
            .count()
    }
}

struct Verified {
    exp: u64,
    email: String,
}

/// IAP's token choice: a Bearer Proxy-Authorization wins (and is consumed), else Authorization.
/// Cloud Run (`serverless`) looks at X-Serverless-Authorization before either.
fn take_token(headers: &mut HeaderMap, serverless: bool) -> Option<(&'static str, String)> {
    fn bearer(v: &HeaderValue) -> Option<String> {
        let s = v.to_str().ok()?;
        let (scheme, token) = s.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    }
    if serverless {
        if let Some(t) = headers.get("x-serverless-authorization").and_then(bearer) {
            return Some(("x-serverless-authorization", t));
        }
    }
    if let Some(t) = headers.get(PROXY_AUTHORIZATION).and_then(bearer) {
        headers.remove(PROXY_AUTHORIZATION);
        return Some(("proxy-authorization", t));
    }
    headers
        .get(AUTHORIZATION)
        .and_then(bearer)
        .map(|t| ("authorization", t))
}

fn verify(shared: &Shared, token: &str, now_ms: u128) -> Result<Verified, String> {
    const PARSE: &str = "Invalid IAP credentials: Unable to parse JWT";
    jsonwebtoken::decode_header(token).map_err(|_| PARSE.to_owned())?;
    let mut v = Validation::new(Algorithm::RS256);
    // Audience and expiry are checked below: strictly, and with IAP's messages.
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &shared.google_key, &v)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "Invalid IAP credentials: JWT signature is invalid".to_owned()
            }
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                "Invalid IAP credentials: JWT algorithm is not RS256".to_owned()
            }
            _ => PARSE.to_owned(),
        })?
        .claims;
    let iss = claims["iss"].as_str().unwrap_or_default();
    if iss != "https://accounts.google.com" && iss != "accounts.google.com" {
        return Err(format!(
            "Invalid IAP credentials: JWT issuer {iss:?} is invalid"
        ));
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud != shared.audience {
        return Err(format!(
            "Invalid IAP credentials: JWT audience doesn't match this application \
             ('aud' claim ({aud}) doesn't match expected value ({}))",
            shared.audience
        ));
    }
    let exp = claims["exp"]
        .as_u64()
        .ok_or("Invalid IAP credentials: JWT has no exp")?;
    // Zero leeway: a token is dead at the second named by exp.
    if u128::from(exp) * 1000 <= now_ms {
        return Err("Invalid IAP credentials: Expired JWT".to_owned());
    }
    let email = claims["email"]
        .as_str()
        .ok_or("Invalid IAP credentials: JWT has no email claim")?
        .to_owned();
    Ok(Verified { exp, email })
}

/// IAP's rules for a JWT a service account signed itself: `iss` = `sub` = its email, `aud`
/// = the exact URL or a prefix ending `/*`, at most an hour long, not expired. `None`: the
/// token's issuer is not a trusted service account, so it is checked as a Google ID token.
fn verify_self_signed(
    shared: &Shared,
    token: &str,
    now_ms: u128,
    path: &str,
) -> Option<Result<Verified, String>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let iss = serde_json::from_slice::<Value>(&payload).ok()?["iss"]
        .as_str()?
        .to_owned();
    let key = shared.self_signed.lock().unwrap().get(&iss).cloned()?;
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Value>(token, &key, &v) {
        Ok(d) => d.claims,
        Err(_) => {
            return Some(Err(
                "Invalid IAP credentials: JWT signature is invalid".to_owned()
            ));
        }
    };
    let check = || {
        if claims["sub"].as_str() != Some(iss.as_str()) {
            return Err("Invalid IAP credentials: self-signed JWT needs sub = iss".to_owned());
        }
        let url = format!("https://127.0.0.1:{}{path}", shared.port);
        let aud = claims["aud"].as_str().unwrap_or_default();
        let matches = aud == url
            || aud
                .strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('/') && url.starts_with(prefix));
        if !matches {
            return Err(format!(
                "Invalid IAP credentials: JWT audience doesn't match this application ('aud' claim ({aud}) doesn't match {url})"
            ));
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err("Invalid IAP credentials: JWT needs iat and exp".to_owned());
        };
        if exp < iat || exp - iat > 3600 {
            return Err("Invalid IAP credentials: JWT lifetime over 3600 s".to_owned());
        }
        if u128::from(exp) * 1000 <= now_ms {
            return Err("Invalid IAP credentials: Expired JWT".to_owned());
        }
        Ok(Verified {
            exp,
            email: iss.clone(),
        })
    };
    Some(check())
}

async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let now_ms = now_millis();
    let received_headers = req.headers().clone();
    let token = take_token(req.headers_mut(), shared.serverless.load(Ordering::SeqCst));
    let (outcome, verified) = match &token {
        None => (AuthOutcome::NoToken, None),
        Some((_, t)) => match verify_self_signed(&shared, t, now_ms, req.uri().path())
            .unwrap_or_else(|| verify(&shared, t, now_ms))
        {
            Ok(_)
                if shared
                    .reject_valid
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok() =>
            {
                let msg = "Invalid IAP credentials: the token is no longer accepted";
                (AuthOutcome::Rejected(msg.to_owned()), None)
            }
            Ok(v) if shared.denied.lock().unwrap().contains(&v.email) => {
                (AuthOutcome::Denied(v.email.clone()), None)
            }
            Ok(v) => (AuthOutcome::Authorized, Some(v)),
            Err(msg) => (AuthOutcome::Rejected(msg), None),
        },
    };
    let recording = shared.recording.load(Ordering::SeqCst);
    shared.requests.send_if_modified(|rs| {
        if !recording {
            return false;
        }
        rs.push(Recorded {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: received_headers,
            outcome: outcome.clone(),
            token_header: token.as_ref().map(|(h, _)| *h),
            token_exp: verified.as_ref().map(|v| v.exp),
            email: verified.as_ref().map(|v| v.email.clone()),
            received_at_ms: now_ms,
        });
        true
    });
    if outcome != AuthOutcome::Authorized {
        shared.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    let resp = match (outcome, verified) {
        (AuthOutcome::Authorized, Some(v)) => {
            let email = format!("accounts.google.com:{}", v.email);
            req.headers_mut().insert(
                "x-goog-authenticated-user-email",
                HeaderValue::from_str(&email).expect("email header"),
            );
            app::route(&shared, req).await
        }
        (AuthOutcome::Rejected(msg), _) => iap_answer(StatusCode::UNAUTHORIZED, None, msg),
        // Real IAP serves an HTML page that does not name the missing role.
        (AuthOutcome::Denied(_), _) => iap_answer(
            StatusCode::FORBIDDEN,
            None,
            "<html><body>You don't have access. Request access or switch accounts.</body></html>"
                .to_owned(),
        ),
        _ => {
            let origin = shared.sign_in_origin.lock().unwrap().clone();
            let location = sign_in_url(&origin, &shared.audience);
            iap_answer(StatusCode::FOUND, Some(location), String::new())
        }
    };
    Ok(resp)
}

fn sign_in_url(origin: &str, client_id: &str) -> String {
    let redirect =
        format!("https://iap.googleapis.com/v1/oauth/clientIds/{client_id}:handleRedirect");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email")
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", "fake-iap-state")
        .finish();
    format!("{origin}/o/oauth2/v2/auth?{query}")
}

fn iap_answer(status: StatusCode, location: Option<String>, body: String) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header(IAP_HEADER, "true")
        .header("content-type", "text/html; charset=utf-8");
    if let Some(l) = location {
        b = b.header("location", l);
    }
    b.body(full(body)).unwrap()
}
