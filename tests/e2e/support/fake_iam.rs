//! FakeGoogle's endpoints beyond the jwt-bearer grant: the refresh-token grant, IAM
//! Credentials `generateIdToken`, STS token exchange, and a subject-token URL for
//! workload identity federation. Each checks what Google checks and answers in its shape.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};

use super::fake_google::{State, TokenPath};

type Resp = Response<Full<Bytes>>;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const SUBJECT_HEADER: &str = "x-subject-token-key";

/// A registered `gcloud auth application-default login` user.
#[derive(Clone, Debug)]
pub struct User {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub email: String,
}

/// A workload identity pool provider as STS knows it.
#[derive(Clone, Debug)]
pub struct Pool {
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`
    pub audience: String,
    pub subject_token: String,
    pub subject_token_type: String,
    /// The federated principal access tokens are issued to, e.g. `principal://…/subject/S`.
    pub principal: String,
}

/// One generateIdToken call, as the fake saw it and answered it.
#[derive(Clone, Debug)]
pub struct IdTokenCall {
    /// The service account named in the URL.
    pub target: Option<String>,
    /// Whom the caller's access token was issued to, if this fake issued it.
    pub caller: Option<String>,
    pub audience: Option<String>,
    /// The `delegates` as sent (`projects/-/serviceAccounts/EMAIL`).
    pub delegates: Vec<String>,
    pub include_email: Option<bool>,
    pub status: u16,
}

#[derive(Default)]
pub(super) struct Iam {
    pub(super) users: Vec<User>,
    /// (caller, target): caller holds TokenCreator on target.
    pub(super) grants: HashSet<(String, String)>,
    pub(super) pools: Vec<Pool>,
    /// Served at GET /subject-token when the SUBJECT_HEADER matches: (header value, body).
    pub(super) subject_route: Option<(String, String)>,
    pub(super) id_token_calls: Vec<IdTokenCall>,
}

/// A JSON answer before it becomes a response, so the fake can record what it said.
pub(super) struct Answer {
    pub(super) status: u16,
    body: Value,
}

impl Answer {
    /// The human-readable reason of an error answer, in either of Google's error shapes.
    pub(super) fn refusal(&self) -> Option<String> {
        let b = &self.body;
        b["error_description"]
            .as_str()
            .or(b["error"]["message"].as_str())
            .map(str::to_owned)
    }
    pub(super) fn into_response(self) -> Resp {
        json_resp(self.status, &self.body)
    }
}

/// Google APIs' error shape (`{"error": {"code", "message", "status"}}`).
pub(super) fn api_error(status: u16, message: &str) -> Answer {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        _ => "INTERNAL",
    };
    json_answer(
        status,
        &json!({"error": {"code": status, "message": message, "status": name}}),
    )
}

/// Google's OAuth error shape, shared by every fake token endpoint.
pub(super) fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
    json_answer(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

pub(super) fn json_answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        body: body.clone(),
    }
}

pub(super) fn json_resp(status: u16, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// EMAIL in `/v1/projects/-/serviceAccounts/EMAIL:generateIdToken`.
fn target_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|p| p.strip_suffix(":generateIdToken"))
}

impl State {
    /// `grant_type=refresh_token`: checks client and refresh token like Google does.
    pub(super) fn refresh_grant(&self, form: &HashMap<String, String>) -> Answer {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let user = {
            let iam = self.iam.lock().unwrap();
            let client = iam.users.iter().find(|u| u.client_id == get("client_id"));
            match client {
                None => {
                    return oauth_error(401, "invalid_client", "The OAuth client was not found.");
                }
                Some(u) if u.client_secret != get("client_secret") => {
                    return oauth_error(401, "invalid_client", "Unauthorized");
                }
                Some(u) if u.refresh_token != get("refresh_token") => {
                    return oauth_error(400, "invalid_grant", "Bad Request");
                }
                Some(u) => u.clone(),
            }
        };
        let mut answer = self.issue_access_token(&user.email);
        let sub = format!("1{:020}", user.email.len());
        answer["id_token"] = json!(self.issue_id_token(
            &user.client_id,
            &user.email,
            &sub,
            true,
            TokenPath::TokenEndpoint
        ));
        answer["scope"] = json!("openid https://www.googleapis.com/auth/cloud-platform");
        json_answer(200, &answer)
    }

    /// POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken, recorded with its answer.
    pub(super) fn generate_id_token(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let answer = self.generate_id_token_answer(path, bearer, body);
        let req = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let call = IdTokenCall {
            target: target_of(path).map(str::to_owned),
            caller: bearer.and_then(|t| self.access_tokens.lock().unwrap().get(t).cloned()),
            audience: req["audience"].as_str().map(str::to_owned),
            delegates: req["delegates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            include_email: req["includeEmail"].as_bool(),
            status: answer.status,
        };
        self.iam.lock().unwrap().id_token_calls.push(call);
        answer
    }

    fn generate_id_token_answer(&self, path: &str, bearer: Option<&str>, body: &[u8]) -> Answer {
        let Some(target) = target_of(path) else {
            return api_error(404, "Not Found");
        };
        let caller = bearer.and_then(|t| self.access_tokens.lock().unwrap().get(t).cloned());
        let Some(caller) = caller else {
            return api_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
            );
        };
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return api_error(400, "Invalid JSON payload received.");
        };
        let Some(audience) = req["audience"].as_str().filter(|a| !a.is_empty()) else {
            return api_error(400, "Audience is required");
        };
        let mut chain = vec![caller];
        for d in req["delegates"].as_array().into_iter().flatten() {
            let Some(email) = d
                .as_str()
                .and_then(|d| d.strip_prefix("projects/-/serviceAccounts/"))
            else {
                return api_error(
                    400,
                    "Invalid form of delegates, expected projects/-/serviceAccounts/{ACCOUNT}",
                );
            };
            chain.push(email.to_owned());
        }
        chain.push(target.to_owned());
        {
            let iam = self.iam.lock().unwrap();
            for pair in chain.windows(2) {
                if !iam.grants.contains(&(pair[0].clone(), pair[1].clone())) {
                    return api_error(
                        403,
                        &format!(
                            "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist). ({} -> {})",
                            pair[0], pair[1]
                        ),
                    );
                }
            }
        }
        let full = req["includeEmail"].as_bool().unwrap_or(false);
        let sub = format!("1{:020}", target.len());
        let token = self.issue_id_token(audience, target, &sub, full, TokenPath::Iam);
        json_answer(200, &json!({ "token": token }))
    }

    /// POST /v1/token: the STS token exchange.
    pub(super) fn sts(&self, form: &HashMap<String, String>) -> Answer {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if get("grant_type") != TOKEN_EXCHANGE {
            return oauth_error(400, "invalid_request", "Invalid value for \"grant_type\".");
        }
        if get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
            return oauth_error(
                400,
                "invalid_request",
                "Invalid value for \"requested_token_type\".",
            );
        }
        if get("scope") != "https://www.googleapis.com/auth/cloud-platform" {
            return oauth_error(400, "invalid_scope", "Invalid scope.");
        }
        let pool = {
            let iam = self.iam.lock().unwrap();
            iam.pools
                .iter()
                .find(|p| p.audience == get("audience"))
                .cloned()
        };
        let Some(pool) = pool else {
            return oauth_error(
                400,
                "invalid_target",
                "The target service indicated by the \"audience\" parameters is invalid.",
            );
        };
        if get("subject_token_type") != pool.subject_token_type {
            return oauth_error(
                400,
                "invalid_request",
                "Invalid value for \"subject_token_type\".",
            );
        }
        if get("subject_token") != pool.subject_token {
            return oauth_error(
                400,
                "invalid_grant",
                "The incoming token could not be validated.",
            );
        }
        let mut answer = self.issue_access_token(&pool.principal);
        answer["issued_token_type"] = json!("urn:ietf:params:oauth:token-type:access_token");
        json_answer(200, &answer)
    }

    /// GET /subject-token: a stand-in for a cloud's token URL (checks its header).
    pub(super) fn subject_token_route(&self, header: Option<&str>) -> Resp {
        let iam = self.iam.lock().unwrap();
        match &iam.subject_route {
            Some((key, body)) if Some(key.as_str()) == header => {
                Response::new(Full::new(Bytes::from(body.clone())))
            }
            _ => api_error(401, "missing or wrong subject-token header").into_response(),
        }
    }
}
