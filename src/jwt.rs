//! A JWS compact token split and decoded, not yet trusted: enough to choose a provider and a key.

use crate::error::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Tokens longer than this are refused before any decoding (SPEC section 5).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// JSON nested deeper than this is refused (SPEC section 5).
pub const MAX_JSON_DEPTH: usize = 32;

/// A decoded, unverified JWT: header fields, claims, and the parts the signature covers.
#[derive(Debug, Clone)]
pub struct Jwt<'t> {
    /// The whole token, as jwt-simple verifies it.
    pub raw: &'t str,
    pub alg: String,
    pub kid: Option<String>,
    /// The `crit` header: any entry makes the token unacceptable (we support no extension).
    pub has_crit: bool,
    /// A `nonce` in the header: Azure AD Graph tokens, whose signature covers a hashed nonce.
    pub has_header_nonce: bool,
    pub claims: Value,
}

/// Whether `token` looks like a JWT: three base64url segments whose header is JSON with `alg`.
///
/// Anything else is an opaque token (SPEC section 1 step 3).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(_), Some(_), None) => decode_object(header).is_ok_and(|h| h.contains_key("alg")),
        _ => false,
    }
}

impl<'t> Jwt<'t> {
    /// Splits and decodes `token`; nothing here is trusted until `verify` checks the signature.
    pub fn parse(token: &'t str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::MalformedToken);
        };
        if signature.is_empty() {
            return Err(AuthError::MalformedToken);
        }
        let header = decode_object(header)?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(AuthError::MalformedToken),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthError::MalformedToken),
        };
        let has_crit = header.contains_key("crit");
        let has_header_nonce = header.contains_key("nonce");
        let claims = Value::Object(decode_object(payload)?);
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(AuthError::MalformedToken);
        }
        Ok(Jwt { raw: token, alg, kid, has_crit, has_header_nonce, claims })
    }

    /// The `exp` claim in whole seconds, if it is a number.
    pub fn expires_at(&self) -> Option<u64> {
        self.claims.get("exp").and_then(Value::as_f64).map(|t| t.max(0.0) as u64)
    }

    /// The `iss` claim, used only to choose the provider before verification.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Decodes one base64url segment holding a JSON object (strict: no padding, canonical bits).
fn decode_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| AuthError::MalformedToken)?;
    match parse_json(&bytes).map_err(|_| AuthError::MalformedToken)? {
        Value::Object(map) => Ok(map),
        _ => Err(AuthError::MalformedToken),
    }
}

/// Parses JSON from an untrusted source and refuses nesting deeper than `MAX_JSON_DEPTH`.
pub fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    // serde_json stops at depth 128 by itself, so the walk below is bounded.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if depth(&value) > MAX_JSON_DEPTH {
        return Err(format!("nested deeper than {MAX_JSON_DEPTH}"));
    }
    Ok(value)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    #[test]
    fn jwt_is_split_and_decoded() {
        let t = token(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"iss":"https://idp","sub":"a"}"#);
        let jwt = Jwt::parse(&t).unwrap();
        assert_eq!((jwt.alg.as_str(), jwt.kid.as_deref(), jwt.issuer()), ("RS256", Some("k1"), Some("https://idp")));
    }

    #[test]
    fn opaque_tokens_are_not_jwts() {
        assert!(!looks_like_jwt("gho_16C7e42F292c6912E7710c838347Ae178B4a"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt(&token(r#"{"typ":"JWT"}"#, "{}")));
        assert!(looks_like_jwt(&token(r#"{"alg":"none"}"#, "{}")));
    }

    #[test]
    fn padded_or_non_canonical_base64_is_malformed() {
        let good = token(r#"{"alg":"RS256"}"#, r#"{"a":1}"#);
        let (h, rest) = good.split_once('.').unwrap();
        assert!(Jwt::parse(&format!("{h}=.{rest}")).is_err());
        assert!(Jwt::parse(&format!("{h}.e30=.c2ln")).is_err());
    }

    #[test]
    fn oversized_token_is_refused_before_decoding() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(Jwt::parse(&big).unwrap_err(), AuthError::TokenTooLarge);
    }

    #[test]
    fn deeply_nested_claims_are_refused() {
        let nested = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let t = token(r#"{"alg":"RS256"}"#, &format!(r#"{{"a":{nested}}}"#));
        assert_eq!(Jwt::parse(&t).unwrap_err(), AuthError::MalformedToken);
    }

    #[test]
    fn empty_signature_is_malformed() {
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(Jwt::parse(&t).unwrap_err(), AuthError::MalformedToken);
    }
}
