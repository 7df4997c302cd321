//! FakeGoogle's endpoints: the jwt-bearer token exchange and the metadata server paths.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Value, json};

use super::fake_google::{
    DEFAULT_EMAIL, GOOGLE_ISSUER, GOOGLE_KID, IDENTITY_PATH, IssuedIdToken, META_TOKEN_PATH, State,
    TokenPath, TokenRequest,
};
use super::fake_iam::{Answer, json_answer, json_resp, oauth_error};
use super::{now_millis, now_secs};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                           reasonable timeframe. Check your iat and exp values in the JWT claim.";

type Resp = Response<Full<Bytes>>;

impl State {
    pub(super) fn token_uri(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub(super) fn issue_id_token(
        &self,
        audience: &str,
        email: &str,
        sub: &str,
        full: bool,
        via: TokenPath,
    ) -> String {
        let issued_at_ms = now_millis();
        let offset_ms = i128::from(self.clock_offset.load(Ordering::SeqCst)) * 1000;
        let now_ms = (issued_at_ms as i128 + offset_ms).max(0) as u128;
        let iat = (now_ms / 1000) as u64;
        let exp = match self.fixed_exp.load(Ordering::SeqCst) {
            0 => ((now_ms + u128::from(self.lifetime_ms.load(Ordering::SeqCst))) / 1000) as u64,
            fixed => fixed,
        };
        let mut claims = json!({
            "iss": GOOGLE_ISSUER, "aud": audience, "azp": email, "sub": sub, "iat": iat, "exp": exp,
        });
        // Like the metadata server: without format=full the token carries no email.
        if full {
            claims["email"] = json!(email);
            claims["email_verified"] = json!(true);
        }
        let token = self.google_key.sign(Some(GOOGLE_KID), &claims);
        self.issued.send_modify(|issued| {
            issued.push(IssuedIdToken {
                token: token.clone(),
                audience: audience.to_owned(),
                email: email.to_owned(),
                iat,
                exp,
                via,
                issued_at_ms,
            })
        });
        token
    }

    pub(super) fn issue_access_token(&self, email: &str) -> Value {
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

pub(super) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::POST, "/token") => token_endpoint(&state, req).await,
        (&Method::POST, "/v1/token") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            state.sts(&form).into_response()
        }
        (&Method::POST, path) if path.ends_with(":generateIdToken") => {
            let path = path.to_owned();
            let bearer = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            state
                .generate_id_token(&path, bearer.as_deref(), &body)
                .into_response()
        }
        (&Method::GET, "/subject-token") => {
            let key = req
                .headers()
                .get(super::fake_iam::SUBJECT_HEADER)
                .and_then(|v| v.to_str().ok());
            state.subject_token_route(key)
        }
        (&Method::GET, IDENTITY_PATH | META_TOKEN_PATH | "/") => metadata(&state, req).await,
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    };
    Ok(resp)
}

async fn token_endpoint(state: &State, req: Request<Incoming>) -> Resp {
    let failing = state.begin_token_request().await;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return oauth_error(400, "invalid_request", "unreadable body").into_response(),
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let answer = token_answer(state, failing, &form);
    state
        .token_requests
        .lock()
        .unwrap()
        .push(record(&form, &answer));
    answer.into_response()
}

/// What a token-endpoint request held and got, for `FakeGoogle::token_requests`.
fn record(form: &HashMap<String, String>, answer: &Answer) -> TokenRequest {
    let assertion = form.get("assertion");
    let claims = assertion.and_then(|a| {
        use base64::Engine;
        let payload = a.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    });
    TokenRequest {
        grant_type: form.get("grant_type").cloned().unwrap_or_default(),
        assertion_header: assertion.and_then(|a| jsonwebtoken::decode_header(a).ok()),
        assertion_claims: claims,
        status: answer.status,
        refusal: answer.refusal(),
    }
}

fn token_answer(state: &State, failing: Option<u16>, form: &HashMap<String, String>) -> Answer {
    if let Some(status) = failing {
        let code = match status {
            429 => "rate_limit_exceeded",
            500..=599 => "internal_failure",
            _ => "invalid_request",
        };
        return oauth_error(status, code, "failure injected by FakeGoogle::set_failing");
    }
    let grant = form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if grant == "refresh_token" {
        return state.refresh_grant(form);
    }
    if grant != JWT_BEARER {
        return oauth_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant}"),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    state.assertions.lock().unwrap().push(assertion.clone());
    let (claims, email, client_id) = match state.verify_assertion(assertion) {
        Ok(v) => v,
        Err(reason) => return oauth_error(400, "invalid_grant", &reason),
    };
    if let Some(aud) = claims["target_audience"].as_str().filter(|a| !a.is_empty()) {
        let token = state.issue_id_token(aud, &email, &client_id, true, TokenPath::TokenEndpoint);
        json_answer(200, &json!({ "id_token": token }))
    } else if claims["scope"].as_str().is_some_and(|s| !s.is_empty()) {
        json_answer(200, &state.issue_access_token(&email))
    } else {
        oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )
    }
}

async fn metadata(state: &State, req: Request<Incoming>) -> Resp {
    if req.uri().path() == "/" {
        let now = tokio::time::Instant::now();
        state.metadata_probes.lock().unwrap().push(now);
    }
    let ready_at = *state.metadata_ready_at.lock().unwrap();
    if let Some(at) = ready_at {
        tokio::time::sleep_until(at).await;
    }
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
    let email = DEFAULT_EMAIL.to_owned();
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

fn text(status: StatusCode, body: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        // Every metadata-server answer carries this, and some clients check for it.
        .header("metadata-flavor", "Google")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}
