//! Access tokens: the input of impersonation. A source of them is any credential that can
//! call Google APIs as itself (key file, metadata server, refresh token, STS).

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use super::answer::TokenAnswer;
use super::error::{BadToken, FetchError};
use super::redact::Secret;

/// The scope every access token here is asked for: generateIdToken needs no narrower one.
pub(crate) const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Treat an access token as spent this long before Google says it expires.
const EARLY: Duration = Duration::from_secs(60);
/// The longest `expires_in` believed, in seconds.
const MAX_EXPIRES_IN: u64 = 24 * 3600;

/// An OAuth access token and when it stops working.
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) token: Secret,
    pub(crate) expires_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    /// The access token of `endpoint`'s answer, which must carry one.
    pub(crate) fn from_answer(
        answer: TokenAnswer,
        endpoint: &str,
    ) -> Result<AccessToken, FetchError> {
        let token = answer
            .access_token
            .filter(|t| !t.expose().is_empty())
            .ok_or_else(|| BadToken::NoAccessToken {
                endpoint: endpoint.to_owned(),
            })?;
        // Without expires_in assume the usual hour; Google always sends it. A day bounds it:
        // Google's access tokens live at most 12 hours, and a huge value must not overflow.
        let expires_in = answer.expires_in.unwrap_or(3600).min(MAX_EXPIRES_IN);
        let now = SystemTime::now();
        Ok(AccessToken {
            token,
            expires_at: now
                .checked_add(Duration::from_secs(expires_in))
                .unwrap_or(now),
        })
    }

    fn fresh(&self) -> bool {
        SystemTime::now() + EARLY < self.expires_at
    }
}

/// Anything that can produce a cloud-platform access token for its own principal.
pub(crate) trait AccessTokenSource: Send + Sync + 'static {
    /// What this source is, for logs: never a secret.
    fn describe(&self) -> String;
    fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>>;
}

/// Keeps the last access token until shortly before it expires, so one ID-token refresh
/// costs one round trip, not two.
pub(crate) struct CachedAccess {
    inner: Box<dyn AccessTokenSource>,
    last: Mutex<Option<AccessToken>>,
}

impl CachedAccess {
    pub(crate) fn new(inner: Box<dyn AccessTokenSource>) -> CachedAccess {
        CachedAccess {
            inner,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn describe(&self) -> String {
        self.inner.describe()
    }

    pub(crate) async fn get(&self) -> Result<AccessToken, FetchError> {
        let mut last = self.last.lock().await;
        if let Some(t) = last.as_ref().filter(|t| t.fresh()) {
            return Ok(t.clone());
        }
        let fresh = self.inner.access_token().await?;
        *last = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets the cached token, e.g. after the IAM API refused it as invalid.
    pub(crate) async fn forget(&self) {
        *self.last.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(v: serde_json::Value) -> TokenAnswer {
        serde_json::from_value(v).unwrap()
    }

    struct Counting(Arc<AtomicUsize>, u64);
    impl AccessTokenSource for Counting {
        fn describe(&self) -> String {
            "counting".into()
        }
        fn access_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                AccessToken::from_answer(
                    answer(json!({"access_token": format!("t{n}"), "expires_in": self.1})),
                    "test",
                )
            })
        }
    }

    #[tokio::test]
    async fn caches_until_shortly_before_expiry() {
        let n = Arc::new(AtomicUsize::new(0));
        let long = CachedAccess::new(Box::new(Counting(n.clone(), 3600)));
        assert_eq!(long.get().await.unwrap().token.expose(), "t0");
        assert_eq!(long.get().await.unwrap().token.expose(), "t0");
        long.forget().await;
        assert_eq!(long.get().await.unwrap().token.expose(), "t1");
        // A token that is already inside the early margin is fetched anew each time.
        let short = CachedAccess::new(Box::new(Counting(n.clone(), 30)));
        short.get().await.unwrap();
        short.get().await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4);
        for missing in [json!({"id_token": "x"}), json!({"access_token": ""})] {
            let err = AccessToken::from_answer(answer(missing), "E").unwrap_err();
            assert!(
                matches!(&err, FetchError::BadToken(BadToken::NoAccessToken { endpoint }) if endpoint == "E"),
                "{err:?}"
            );
            assert!(err.to_string().contains("E answered without"), "{err}");
        }
        assert!(!format!("{:?}", long.get().await.unwrap()).contains("t1"));
    }

    #[test]
    fn an_absurd_expires_in_is_bounded_not_a_panic() {
        let a = answer(json!({"access_token": "t", "expires_in": u64::MAX}));
        let token = AccessToken::from_answer(a, "E").unwrap();
        let left = token.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(MAX_EXPIRES_IN), "{left:?}");
        assert!(token.fresh());
    }
}
