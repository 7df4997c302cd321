//! Validation of the credential keys: impersonate_service_account, iam_endpoint and
//! token_kind (kept apart from layers.rs so the two grow independently).

use url::Url;

use super::layers::Layered;
use super::values::{TokenKind, is_loopback_host};

impl Layered {
    pub(super) fn impersonate(&mut self) -> Vec<String> {
        let Some(text) = self.string("impersonate_service_account") else {
            return Vec::new();
        };
        let list: Vec<String> = text.split(',').map(|e| e.trim().to_owned()).collect();
        if list
            .iter()
            .any(|e| !e.contains('@') || e.contains(char::is_whitespace))
        {
            self.problem(
                "impersonate_service_account",
                "must be EMAIL[,DELEGATE...], service account emails separated by commas, e.g. iap-client@PROJECT.iam.gserviceaccount.com",
            );
            return Vec::new();
        }
        list
    }

    pub(super) fn iam_endpoint(&mut self) -> Option<Url> {
        let text = self.string("iam_endpoint")?;
        let url = match Url::parse(text.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.problem(
                    "iam_endpoint",
                    &format!(
                        "not an absolute URL ({e}); use e.g. https://iamcredentials.googleapis.com"
                    ),
                );
                return None;
            }
        };
        let loopback = url.host().is_some_and(is_loopback_host);
        let ok = match url.scheme() {
            "https" => url.has_host(),
            "http" => loopback,
            _ => false,
        };
        if !ok || url.query().is_some() || !url.username().is_empty() {
            self.problem(
                "iam_endpoint",
                "must be an https URL without ?query or user@ (http only on loopback), e.g. https://iamcredentials.googleapis.com",
            );
            return None;
        }
        Some(url)
    }

    /// The three keys that say which token to get and how: impersonation, the IAM
    /// endpoint and the token kind, checked together (a self-signed JWT is signed by the
    /// key file's own account: nothing to impersonate). `None` comes with a reported problem.
    pub(super) fn token_keys(&mut self) -> Option<(Vec<String>, Url, TokenKind)> {
        let impersonate = self.impersonate();
        let iam_endpoint = self.iam_endpoint();
        let kind = self.choice::<TokenKind>("token_kind");
        if let Some(kind) = kind {
            self.token_kind_fits(kind, &impersonate);
        }
        Some((impersonate, iam_endpoint?, kind?))
    }

    fn token_kind_fits(&mut self, kind: TokenKind, impersonate: &[String]) {
        if kind == TokenKind::SelfSignedJwt && !impersonate.is_empty() {
            self.problem(
                "token_kind",
                "self-signed-jwt cannot be combined with impersonate_service_account (the key signs as its own service account)",
            );
        }
        if kind == TokenKind::SelfSignedJwt
            && self.string("credentials").is_some_and(|c| c == "gcloud")
        {
            self.problem(
                "token_kind",
                "self-signed-jwt needs a service account key file, not --credentials gcloud",
            );
        }
    }
}
