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
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
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
    jwt_header(token).is_some()
}

/// The decoded header of a JWT-shaped token, and its three segments.
fn jwt_header(token: &str) -> Option<(Map<String, Value>, [&str; 3])> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => decode_object(header)
            .ok()
            .filter(|h| h.contains_key("alg"))
            .map(|h| (h, [header, payload, signature])),
        _ => None,
    }
}

impl<'t> Jwt<'t> {
    /// Splits and decodes `token`; nothing here is trusted until `verify` checks the signature.
    pub fn parse(token: &'t str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        Self::parse_if_jwt(token).ok_or(AuthError::MalformedToken)?
    }

    /// `None` when `token` is not JWT-shaped (an opaque token), else the parse: one decoding of
    /// the header serves both questions.
    pub fn parse_if_jwt(token: &'t str) -> Option<Result<Self, AuthError>> {
        if token.len() > MAX_TOKEN_BYTES {
            return looks_like_jwt(token).then_some(Err(AuthError::TokenTooLarge));
        }
        let (header, [_, payload, signature]) = jwt_header(token)?;
        Some(Self::from_parts(token, header, payload, signature))
    }

    fn from_parts(
        token: &'t str,
        header: Map<String, Value>,
        payload: &'t str,
        signature: &'t str,
    ) -> Result<Self, AuthError> {
        if signature.is_empty() {
            return Err(AuthError::MalformedToken);
        }
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
        let signing_input = token
            .get(..token.len() - signature.len() - 1)
            .ok_or(AuthError::MalformedToken)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::MalformedToken)?;
        Ok(Jwt {
            signing_input,
            signature,
            alg,
            kid,
            has_crit,
            has_header_nonce,
            claims,
        })
    }

    /// The `exp` claim in whole seconds, if it is a number.
    pub fn expires_at(&self) -> Option<u64> {
        self.claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|t| t.max(0.0) as u64)
    }

    /// The `iss` claim, used only to choose the provider before verification.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Decodes one base64url segment holding a JSON object (strict: no padding, canonical bits).
fn decode_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::MalformedToken)?;
    match parse_json(&bytes).map_err(|_| AuthError::MalformedToken)? {
        Value::Object(map) => Ok(map),
        _ => Err(AuthError::MalformedToken),
    }
}

/// Parses JSON from an untrusted source: nesting deeper than `MAX_JSON_DEPTH` and duplicate
/// member names are refused (RFC 7515 section 5.2: a JOSE parser either rejects duplicates or
/// takes the last; two parsers taking different ones would disagree about the identity).
pub fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    // serde_json stops at depth 128 by itself, so the walk below is bounded.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde::Deserialize::deserialize(&mut de)
        .map(|StrictValue(v)| v)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    if depth(&value) > MAX_JSON_DEPTH {
        return Err(format!("nested deeper than {MAX_JSON_DEPTH}"));
    }
    Ok(value)
}

/// A `serde_json::Value` whose objects may not repeat a member name.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate member {key:?}"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
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
        let t = token(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"iss":"https://idp","sub":"a"}"#,
        );
        let jwt = Jwt::parse(&t).unwrap();
        assert_eq!(
            (jwt.alg.as_str(), jwt.kid.as_deref(), jwt.issuer()),
            ("RS256", Some("k1"), Some("https://idp"))
        );
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
    fn duplicate_members_are_refused_at_any_depth() {
        assert!(parse_json(br#"{"sub":"alice","sub":"admin"}"#).is_err());
        assert!(parse_json(br#"{"a":{"x":1,"x":2}}"#).is_err());
        assert!(parse_json(br#"[{"x":1},{"x":2}]"#).is_ok());
        let t = token(r#"{"alg":"RS256","alg":"none"}"#, "{}");
        assert_eq!(Jwt::parse(&t).unwrap_err(), AuthError::MalformedToken);
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_json(br#"{"a":1} x"#).is_err());
        assert!(parse_json(b" {\"a\":1} ").is_ok());
    }

    #[test]
    fn empty_signature_is_malformed() {
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(Jwt::parse(&t).unwrap_err(), AuthError::MalformedToken);
    }
}
