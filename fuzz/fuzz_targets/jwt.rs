//! `jwt::Jwt::parse` + `verify::verify` against the fixture keys, with `now` from the input.
//!
//! Input: 4 bytes of signed offset from `NOW_SECS`, one mode byte, then either the raw token
//! (mode even) or `header JSON \n payload JSON \n signature bytes` (mode odd), which this
//! target base64url-encodes itself so that the claim checks see well-formed segments.
#![no_main]

use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::jwt::{looks_like_jwt, Jwt, MAX_TOKEN_BYTES};
use atlassian_rest_auth::verify::verify;
use atlassian_rest_auth_fuzz::{fields, jwt_config, keyset, now_from, trace, ISSUER};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let now = now_from(&data[..4]);
    let token = if data[4].is_multiple_of(2) {
        match std::str::from_utf8(&data[5..]) {
            Ok(token) => token.to_string(),
            Err(_) => return,
        }
    } else {
        let parts = fields(&data[5..], 3);
        parts
            .iter()
            .map(|p| URL_SAFE_NO_PAD.encode(p))
            .collect::<Vec<_>>()
            .join(".")
    };
    let jwt = match Jwt::parse(&token) {
        Ok(jwt) => jwt,
        Err(e) => {
            assert!(token.len() <= MAX_TOKEN_BYTES || e == AuthError::TokenTooLarge);
            return;
        }
    };
    assert!(token.len() <= MAX_TOKEN_BYTES);
    assert!(
        looks_like_jwt(&token),
        "parsed as a JWT but routed as opaque"
    );
    let provider = &jwt_config().providers[0];
    let verified = verify(&jwt, provider, keyset(), now);
    if trace() {
        eprintln!(
            "{} {:?} -> {:?}",
            jwt.alg,
            jwt.kid,
            verified.as_ref().map(|_| "verified")
        );
    }
    if let Ok(claims) = verified {
        // Nobody can forge a signature: whatever verifies is a seed token, and its claims held.
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(-1.0);
        assert!(
            exp >= 0.0 && now.as_secs() as f64 <= exp + provider.clock_skew_seconds as f64 + 1.0,
            "expired token verified"
        );
        assert!(jwt.alg != "none" && !jwt.alg.starts_with("HS") && !jwt.has_crit);
    }
});
