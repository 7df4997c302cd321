//! Keeping credentials out of logs and messages, in one place: a string that never shows
//! itself, URLs shown without the parts that could carry a credential, and texts from
//! elsewhere (Google's refusals, a helper program's stderr) blanked where they look like a
//! token or a key.

use std::fmt;

use serde::{Deserialize, Deserializer};
use url::Url;

/// How much of a text from elsewhere a message quotes.
pub(crate) const DETAIL_CHARS: usize = 200;

/// A secret string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Tokens in Google's answers go straight into a `Secret`.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The URL as shown in messages: without user-info or query, which are the only places
/// a URL could smuggle a credential.
pub(crate) fn endpoint_name(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// [`scrub`] for longer texts (e.g. a helper program's stderr), capped in length.
pub(crate) fn scrub_text(text: &str) -> String {
    scrub(text).chars().take(4 * DETAIL_CHARS).collect()
}

/// Blanks out what could be a credential: JWTs (`eyJ…`), OAuth access (`ya29.`) and refresh
/// (`1//`) tokens, and long dot-free base64 runs such as key material. Client IDs and
/// emails contain dots or `@` and survive, because they make errors actionable.
pub(crate) fn scrub(text: &str) -> String {
    if text.contains("PRIVATE KEY") {
        return "(answer withheld: it contains key material)".to_owned();
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-_.+/=~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c: char| !is_token_char(c)).unwrap_or(run.len());
        let word = &run[..end];
        let secret_prefix = ["eyJ", "ya29.", "1//"].iter().any(|p| word.starts_with(p));
        let long_opaque = word.len() >= 40 && !word.contains('.');
        if (secret_prefix && word.len() >= 16) || long_opaque {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_blanks_tokens_and_keys_but_keeps_ids() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJlc2lnbmF0dXJl";
        let text = format!("bad assertion {jwt}, ya29.a0AfH6SMBxyz123 and 1//0gLongRefresh");
        let shown = scrub(&text);
        for leaked in ["eyJ", "ya29", "1//"] {
            assert!(!shown.contains(leaked), "{shown}");
        }
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
        assert!(!scrub(key).contains("MIIE"));
        let kept = "audience 123-abc.apps.googleusercontent.com for sa@p.iam.gserviceaccount.com";
        assert_eq!(scrub(kept), kept);
        assert_eq!(scrub_text(&"ab ".repeat(1000)).len(), 4 * DETAIL_CHARS);
    }

    #[test]
    fn secrets_and_endpoints_never_show_credentials() {
        let s: Secret = serde_json::from_str(r#""ya29.hush""#).unwrap();
        assert_eq!(s.expose(), "ya29.hush");
        assert!(!format!("{s:?}").contains("hush"));
        let url = Url::parse("https://user:pw@example.com/t?key=k#f").unwrap();
        assert_eq!(endpoint_name(&url), "https://example.com/t");
    }
}
