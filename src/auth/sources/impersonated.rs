//! Impersonation: any credential's access token buys an ID token for a service account
//! from the IAM Credentials API (`generateIdToken`), optionally through delegates.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::auth::access_token::{AccessTokenSource, CachedAccess};
use crate::auth::answer::GeneratedIdToken;
use crate::auth::error::{BadToken, CredentialError, EndpointError, FetchError, FieldProblem};
use crate::auth::file::CredFile;
use crate::auth::token::{IdToken, TokenSource};
use crate::auth::token_http::{self, TokenHttp};

/// The service account to become, and the chain of accounts to go through on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) target: String,
    /// In order: the caller needs TokenCreator on the first, each on the next, the last on
    /// the target.
    pub(crate) delegates: Vec<String>,
}

impl Chain {
    /// `EMAIL[,DELEGATE…]`, as `--impersonate-service-account` takes it.
    pub(crate) fn parse(list: &[String]) -> Option<Chain> {
        let (target, delegates) = list.split_first()?;
        Some(Chain {
            target: target.clone(),
            delegates: delegates.to_vec(),
        })
    }

    /// Impersonating `outer` on top of this chain: this target becomes a delegate.
    pub(crate) fn then(self, outer: Chain) -> Chain {
        let mut delegates = self.delegates;
        delegates.push(self.target);
        delegates.extend(outer.delegates);
        Chain {
            target: outer.target,
            delegates,
        }
    }
}

/// Where the file-named impersonation happens: `…/serviceAccounts/EMAIL:generateAccessToken`
/// gives the email, and the same URL ending `:generateIdToken` is the call to make.
pub(crate) fn from_access_token_url(raw: &str) -> Option<(String, Url)> {
    let mut url = token_http::check_endpoint(raw).ok()?;
    let path = url.path().to_owned();
    let head = path.strip_suffix(":generateAccessToken")?;
    let (_, email) = head.rsplit_once("/serviceAccounts/")?;
    let email = percent_decode(email);
    if email.is_empty() || email.contains('/') {
        return None;
    }
    url.set_path(&format!("{head}:generateIdToken"));
    Some((email, url))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The fields of an `impersonated_service_account` file that the proxy uses, beside its
/// `source_credentials` (a whole `authorized_user` or `service_account` object).
#[derive(Deserialize)]
struct ImpersonatedFile {
    service_account_impersonation_url: Option<String>,
    delegates: Option<Vec<String>>,
}

/// An `impersonated_service_account` file's chain (its `delegates`, then the account its URL
/// names), and the host that URL names for `generateIdToken` (a regional or private one).
pub(crate) fn chain_of_file(file: &CredFile) -> Result<(Chain, Url), CredentialError> {
    let f: ImpersonatedFile = file.fields()?;
    let field = "service_account_impersonation_url";
    let raw = file.required(field, f.service_account_impersonation_url)?;
    let (target, mut iam) = from_access_token_url(&raw)
        .ok_or_else(|| file.problem(field, FieldProblem::NotAnImpersonationUrl))?;
    iam.set_path("/");
    let delegates = file
        .strings("delegates", f.delegates)?
        .into_iter()
        .map(|d| {
            d.trim_start_matches("projects/-/serviceAccounts/")
                .to_owned()
        })
        .collect();
    Ok((Chain { target, delegates }, iam))
}

/// `{iam}/v1/projects/-/serviceAccounts/EMAIL:generateIdToken`
pub(crate) fn generate_id_token_url(iam_endpoint: &Url, email: &str) -> Result<Url, EndpointError> {
    let base = iam_endpoint.as_str().trim_end_matches('/');
    let raw = format!("{base}/v1/projects/-/serviceAccounts/{email}:generateIdToken");
    token_http::check_endpoint(&raw)
}

/// ID tokens for `chain.target`, paid for with `base`'s access tokens.
pub(crate) struct Impersonated {
    base: CachedAccess,
    chain: Chain,
    audience: String,
    url: Url,
    http: TokenHttp,
}

impl Impersonated {
    pub(crate) fn new(
        base: Box<dyn AccessTokenSource>,
        chain: Chain,
        audience: &str,
        url: Url,
        http: TokenHttp,
    ) -> Impersonated {
        Impersonated {
            base: CachedAccess::new(base),
            chain,
            audience: audience.to_owned(),
            url,
            http,
        }
    }

    async fn fetch_token(&self) -> Result<IdToken, FetchError> {
        let access = self.base.get().await?;
        let delegates: Vec<String> = self
            .chain
            .delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect();
        let body = json!({
            "audience": self.audience,
            "includeEmail": true,
            "delegates": delegates,
        });
        let response = self
            .http
            .post_json_bearer(&self.url, access.token.expose(), &body)
            .await?;
        match response.status.as_u16() {
            401 => {
                // The access token may have been revoked early: fetch a new one next time.
                self.base.forget().await;
            }
            403 => {
                return Err(FetchError::ImpersonationDenied {
                    caller: self.base.describe(),
                    target: self.chain.target.clone(),
                    delegates: self.chain.delegates.clone(),
                    detail: token_http::detail(&response.body),
                });
            }
            _ => {}
        }
        let answer: GeneratedIdToken = response.json(&self.url)?;
        let raw = answer.token.ok_or(BadToken::NoGeneratedToken)?;
        IdToken::issued_for(raw.expose(), &self.audience)
    }
}

impl TokenSource for Impersonated {
    fn describe(&self) -> String {
        let via = if self.chain.delegates.is_empty() {
            String::new()
        } else {
            format!(" via {}", self.chain.delegates.join(" -> "))
        };
        format!(
            "{} impersonating {}{via}",
            self.base.describe(),
            self.chain.target
        )
    }
    fn fetch(&self) -> BoxFuture<'_, Result<IdToken, FetchError>> {
        Box::pin(self.fetch_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access_token::AccessToken;
    use crate::auth::test_server;
    use base64::Engine;
    use serde_json::Value;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Arc<AtomicUsize>);
    impl AccessTokenSource for Counting {
        fn describe(&self) -> String {
            "user file u.json".into()
        }
        fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                let answer = json!({"access_token": format!("at-{n}")});
                AccessToken::from_answer(serde_json::from_value(answer).unwrap(), "t")
            })
        }
    }

    #[tokio::test]
    async fn bearer_body_and_error_mapping() {
        let addr = test_server::serve(|req| {
            let bearer = req.headers()["authorization"].to_str().unwrap().to_owned();
            let body: Value = serde_json::from_slice(req.body()).unwrap();
            assert_eq!(body["includeEmail"], true);
            assert_eq!(body["delegates"], json!(["projects/-/serviceAccounts/d@p"]));
            let reply = |status: u16, v: Value| {
                http::Response::builder().status(status).body(v.to_string()).unwrap()
            };
            match (bearer.as_str(), body["audience"].as_str().unwrap()) {
                ("Bearer at-0", _) => reply(401, json!({"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}})),
                (_, "deny") => reply(403, json!({"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getOpenIdToken' denied", "status": "PERMISSION_DENIED"}})),
                (_, aud) => {
                    let claims = json!({"aud": aud, "exp": 4_000_000_000u64});
                    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
                    reply(200, json!({"token": format!("e30.{payload}.c2ln")}))
                }
            }
        })
        .await;
        let fetches = Arc::new(AtomicUsize::new(0));
        let chain = Chain {
            target: "t@p".into(),
            delegates: vec!["d@p".into()],
        };
        let base = Url::parse(&format!("http://{addr}")).unwrap();
        let source = |aud: &str| {
            Impersonated::new(
                Box::new(Counting(fetches.clone())),
                chain.clone(),
                aud,
                generate_id_token_url(&base, "t@p").unwrap(),
                test_server::client(),
            )
        };
        let s = source("aud-1");
        // The first access token is refused: it is forgotten, and the next fetch works.
        let err = s.fetch().await.unwrap_err();
        assert!(
            matches!(err, FetchError::Rejected { status: 401, .. }),
            "{err:?}"
        );
        s.fetch().await.unwrap();
        s.fetch().await.unwrap();
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "the access token is cached"
        );
        assert_eq!(s.describe(), "user file u.json impersonating t@p via d@p");

        let err = source("deny").fetch().await.unwrap_err();
        assert!(
            matches!(&err, FetchError::ImpersonationDenied { delegates, .. } if delegates == &["d@p"]),
            "{err:?}"
        );
        let err = err.to_string();
        for needle in [
            "user file u.json",
            "t@p",
            "d@p",
            "getOpenIdToken",
            "roles/iam.serviceAccountOpenIdTokenCreator",
            "add-iam-policy-binding t@p",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn urls_and_chains() {
        let (email, url) = from_access_token_url(
            "https://iamcredentials.example.com/v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(email, "a@p.iam.gserviceaccount.com");
        assert!(url.as_str().ends_with(":generateIdToken"), "{url}");
        assert_eq!(url.host_str(), Some("iamcredentials.example.com"));
        assert!(
            from_access_token_url("https://x/v1/projects/-/serviceAccounts/a:signJwt").is_none()
        );
        assert!(
            from_access_token_url(
                "http://evil.example/v1/projects/-/serviceAccounts/a:generateAccessToken"
            )
            .is_none()
        );
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            generate_id_token_url(&base, "t@p").unwrap().as_str(),
            "http://127.0.0.1:9/v1/projects/-/serviceAccounts/t@p:generateIdToken"
        );
        let inner = Chain::parse(&["a".into(), "d1".into()]).unwrap();
        let outer = Chain::parse(&["b".into(), "d2".into()]).unwrap();
        let chain = inner.then(outer);
        assert_eq!(chain.target, "b");
        assert_eq!(chain.delegates, ["d1", "a", "d2"]);
        assert!(Chain::parse(&[]).is_none());
    }
}
