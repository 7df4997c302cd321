//! Reading the claims of a JWT we were handed, and signing the RS256 assertions we send.
//!
//! Claims are read without verifying the signature: the token came straight from Google
//! over TLS (or from the link-local metadata server), and we only need its expiry to know
//! when to refresh. IAP does the real verification.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use super::error::BadToken;

/// Some issuers pad their segments although RFC 7515 says not to; accept both.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims of an ID token that the proxy cares about. None of them is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) exp: u64,
    /// A string `aud`, or the first element of an array `aud`.
    pub(crate) aud: Option<String>,
    pub(crate) iss: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) iat: Option<u64>,
}

/// Decodes the payload of `jwt` without checking its signature.
///
/// Error reasons describe the shape problem only: they never quote the token or its payload.
pub(crate) fn unverified_claims(jwt: &str) -> Result<Claims, BadToken> {
    let segments: Vec<&str> = jwt.trim().split('.').collect();
    if segments.len() != 3 {
        return Err(BadToken::NotAJwt {
            segments: segments.len(),
        });
    }
    let payload = URL_SAFE_LENIENT
        .decode(segments[1])
        .map_err(|_| BadToken::PayloadNotBase64)?;
    let payload: Value = serde_json::from_slice(&payload).map_err(|_| BadToken::PayloadNotJson)?;
    let Value::Object(map) = payload else {
        return Err(BadToken::PayloadNotAnObject);
    };
    let exp = match map.get("exp") {
        None => return Err(BadToken::NoExp),
        Some(v) => match seconds(v) {
            None => return Err(BadToken::BadExp),
            Some(exp) if exp > MAX_SECONDS => {
                let shown = v.to_string().chars().take(40).collect();
                return Err(BadToken::ExpOutOfRange { exp: shown });
            }
            Some(exp) => exp,
        },
    };
    let aud = match map.get("aud") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(items)) => items.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok(Claims {
        exp,
        aud,
        iss: text("iss"),
        email: text("email"),
        // Optional: one out of range is as good as none.
        iat: map
            .get("iat")
            .and_then(seconds)
            .filter(|iat| *iat <= MAX_SECONDS),
    })
}

/// 9999-12-31T23:59:59Z. Claims are bounded by it when read, so every later computation with
/// them (`UNIX_EPOCH + exp`, deadlines on the monotonic clock) stays far from overflowing.
pub(crate) const MAX_SECONDS: u64 = 253_402_300_799;

/// NumericDate may legally be fractional; whole seconds are plenty for refresh decisions.
/// A number too large for a u64 saturates (`as` does), for the caller's range check.
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Fails unless the token's `aud` (when it has one) is `expected`: a token minted for the
/// wrong audience would only earn a 401 from IAP later, with a less helpful message.
pub(crate) fn check_audience(claims: &Claims, expected: &str) -> Result<(), BadToken> {
    match &claims.aud {
        Some(got) if got != expected => Err(BadToken::WrongAudience {
            got: got.clone(),
            expected: expected.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// An RS256 signer for service-account assertions. Holds the private key, so its `Debug`
/// shows only the key id.
#[derive(Clone)]
pub(crate) struct RsaSigner {
    key: EncodingKey,
    kid: String,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigner")
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a private key was refused. Deliberately carries no detail: parser messages could
/// echo fragments of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidKey;

impl RsaSigner {
    /// Parses a PEM RSA private key (PKCS#8 or PKCS#1) and proves it can sign, so a broken
    /// key is reported at start-up rather than on the first request.
    pub(crate) fn from_pem(pem: &str, kid: impl Into<String>) -> Result<Self, InvalidKey> {
        use_aws_lc();
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| InvalidKey)?;
        let signer = RsaSigner {
            key,
            kid: kid.into(),
        };
        signer
            .sign(&serde_json::json!({}))
            .map_err(|_| InvalidKey)?;
        Ok(signer)
    }

    /// Signs `claims` with header `{"alg":"RS256","typ":"JWT","kid":…}`.
    pub(crate) fn sign<T: Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// jsonwebtoken picks aws-lc-rs from its features today; installing it explicitly keeps
/// one crypto stack (the one rustls uses) even if another dependency later enables
/// jsonwebtoken's RustCrypto backend. A second install fails harmlessly.
fn use_aws_lc() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt_with(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_claims() {
        let jwt = jwt_with(
            r#"{"exp":1700003600,"iat":1700000000,"aud":"abc.apps","iss":"https://accounts.google.com","email":"sa@p.iam"}"#,
        );
        let c = unverified_claims(&jwt).unwrap();
        assert_eq!(c.exp, 1_700_003_600);
        assert_eq!(c.iat, Some(1_700_000_000));
        assert_eq!(c.aud.as_deref(), Some("abc.apps"));
        assert_eq!(c.iss.as_deref(), Some("https://accounts.google.com"));
        assert_eq!(c.email.as_deref(), Some("sa@p.iam"));
    }

    #[test]
    fn array_audience_and_fractional_exp() {
        let c = unverified_claims(&jwt_with(r#"{"exp":12.7,"aud":["one","two"]}"#)).unwrap();
        assert_eq!((c.exp, c.aud.as_deref(), c.iat), (12, Some("one"), None));
    }

    #[test]
    fn the_largest_exp_is_the_end_of_9999_and_an_absurd_iat_is_ignored() {
        let c = unverified_claims(&jwt_with(r#"{"exp":253402300799,"iat":1e300}"#)).unwrap();
        assert_eq!((c.exp, c.iat), (MAX_SECONDS, None));
    }

    #[test]
    fn padded_payload_is_accepted() {
        let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":12}"#);
        assert!(padded.ends_with('='));
        assert_eq!(
            unverified_claims(&format!("e30.{padded}.sig")).unwrap().exp,
            12
        );
    }

    #[test]
    fn rejects_bad_shapes_without_quoting_the_token() {
        let secretish = "eyJzZWNyZXQiOiJzaGgifQ";
        let cases = [
            (format!("{secretish}.{secretish}"), "3 dot-separated"),
            (format!("a.{secretish}!.c"), "base64url"),
            (
                format!("a.{}.c", URL_SAFE_NO_PAD.encode("not json")),
                "not JSON",
            ),
            (jwt_with("[1]"), "not a JSON object"),
            (jwt_with(r#"{"aud":"x"}"#), "no `exp`"),
            (jwt_with(r#"{"exp":"soon"}"#), "not a non-negative number"),
            (jwt_with(r#"{"exp":-5}"#), "not a non-negative number"),
            (
                jwt_with(r#"{"exp":9223372036854775807}"#),
                "beyond the year 9999",
            ),
            (
                jwt_with(r#"{"exp":18446744073709551615}"#),
                "beyond the year 9999",
            ),
            (jwt_with(r#"{"exp":1e300}"#), "beyond the year 9999"),
            (jwt_with(r#"{"exp":253402300800}"#), "beyond the year 9999"),
        ];
        for (jwt, expected) in cases {
            let r = unverified_claims(&jwt).unwrap_err().to_string();
            assert!(r.contains(expected), "{r}");
            assert!(!r.contains(secretish), "{r}");
        }
    }

    #[test]
    fn audience_check() {
        let claims = |aud: Option<&str>| Claims {
            exp: 1,
            aud: aud.map(str::to_owned),
            iss: None,
            email: None,
            iat: None,
        };
        assert!(check_audience(&claims(Some("a")), "a").is_ok());
        assert!(check_audience(&claims(None), "a").is_ok());
        let err = check_audience(&claims(Some("b")), "a").unwrap_err();
        assert!(
            matches!(&err, BadToken::WrongAudience { got, expected } if got == "b" && expected == "a")
        );
        let r = err.to_string();
        assert!(r.contains("`b`") && r.contains("`a`"), "{r}");
    }

    #[test]
    fn signs_rs256_with_kid() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let signer = RsaSigner::from_pem(&key.serialize_pem(), "kid-1").unwrap();
        assert!(!format!("{signer:?}").contains("PRIVATE"));
        let jwt = signer
            .sign(&serde_json::json!({"exp": 42, "aud": "x"}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let public = jsonwebtoken::DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes());
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_audience(&["x"]);
        let data = jsonwebtoken::decode::<Value>(&jwt, &public.unwrap(), &validation).unwrap();
        assert_eq!(data.claims["exp"], 42);
    }

    #[test]
    fn refuses_non_rsa_keys() {
        assert_eq!(RsaSigner::from_pem("hello", "k").unwrap_err(), InvalidKey);
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(RsaSigner::from_pem(&ec.serialize_pem(), "k").is_err());
    }
}
