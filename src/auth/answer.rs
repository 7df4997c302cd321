//! Google's answers as typed structs, read as Google's own libraries read them: fields not
//! listed are ignored, and a field of an unexpected type counts as absent, so the caller's
//! "has no `id_token`" names the real problem rather than a parse error.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::redact::Secret;

/// An OAuth token answer: the token endpoint's (jwt-bearer and refresh-token grants), STS's
/// and the metadata server's `token`.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) access_token: Option<Secret>,
    /// Seconds; Google sends a number, some emulators a numeric string.
    #[serde(default, deserialize_with = "seconds")]
    pub(crate) expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) id_token: Option<Secret>,
}

/// The IAM Credentials API's `generateIdToken` answer.
#[derive(Deserialize)]
pub(crate) struct GeneratedIdToken {
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) token: Option<Secret>,
}

/// A field read as `T`, or `None` when it is absent, null or of another type.
pub(crate) fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Option::<Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value.and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_fields_count_as_absent() {
        let a: TokenAnswer = serde_json::from_value(json!({
            "access_token": 7, "expires_in": "120", "id_token": "x", "scope": "s"
        }))
        .unwrap();
        assert!(a.access_token.is_none());
        assert_eq!(a.expires_in, Some(120));
        assert_eq!(a.id_token.unwrap().expose(), "x");
        let a: TokenAnswer = serde_json::from_value(json!({"expires_in": [1]})).unwrap();
        assert!(a.expires_in.is_none() && a.id_token.is_none());
        let g: GeneratedIdToken = serde_json::from_value(json!({"token": null})).unwrap();
        assert!(g.token.is_none());
        assert!(serde_json::from_value::<GeneratedIdToken>(json!("t")).is_err());
    }
}
