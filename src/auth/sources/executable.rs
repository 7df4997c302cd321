//! Google's executable-sourced credential response format (`{"version": 1, "success": …}`),
//! shared by the executable's stdout and its `output_file` cache.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::auth::token::Secret;
use crate::auth::token_http;

/// Google's executable-sourced credential response. `Ok(None)`: valid but expired.
/// From a cache file an `expiration_time` is required (else the entry cannot be trusted).
pub(crate) fn parse_executable_response(
    bytes: &[u8],
    cached: bool,
) -> Result<Option<Secret>, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| "its output is not JSON".to_owned())?;
    if v.get("version").and_then(Value::as_u64) != Some(1) {
        return Err("its output must have \"version\": 1".into());
    }
    match v.get("success").and_then(Value::as_bool) {
        Some(true) => {}
        Some(false) => {
            let text = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("(none)")
                    .to_owned()
            };
            return Err(format!(
                "it reported failure: code {}, message {}",
                token_http::scrub_text(&text("code")),
                token_http::scrub_text(&text("message"))
            ));
        }
        None => return Err("its output has no boolean `success`".into()),
    }
    let field = match v.get("token_type").and_then(Value::as_str) {
        Some(
            "urn:ietf:params:oauth:token-type:jwt" | "urn:ietf:params:oauth:token-type:id_token",
        ) => "id_token",
        Some("urn:ietf:params:oauth:token-type:saml2") => "saml_response",
        _ => return Err("its `token_type` must be a jwt, id_token or saml2 token type URN".into()),
    };
    let expiration = v.get("expiration_time").and_then(Value::as_u64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match expiration {
        Some(exp) if exp <= now => return Ok(None),
        None if cached => return Ok(None),
        _ => {}
    }
    let token = v
        .get(field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("its output has no `{field}`"))?;
    Ok(Some(Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_responses() {
        let ok = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:id_token","id_token":"abc","expiration_time":4000000000}"#;
        assert_eq!(
            parse_executable_response(ok, true)
                .unwrap()
                .unwrap()
                .expose(),
            "abc"
        );
        let expired = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"abc","expiration_time":5}"#;
        assert!(parse_executable_response(expired, false).unwrap().is_none());
        let no_exp = br#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:saml2","saml_response":"s"}"#;
        assert_eq!(
            parse_executable_response(no_exp, false)
                .unwrap()
                .unwrap()
                .expose(),
            "s"
        );
        assert!(parse_executable_response(no_exp, true).unwrap().is_none());
        let failed = br#"{"version":1,"success":false,"code":"401","message":"nope"}"#;
        let err = parse_executable_response(failed, false).unwrap_err();
        assert!(err.contains("401") && err.contains("nope"), "{err}");
        assert!(parse_executable_response(b"{\"version\":2}", false).is_err());
        assert!(parse_executable_response(b"x", false).is_err());
    }
}
