//! Token + provider + keys + now → verified claims, or the precise reason for refusal.

use crate::config::Provider;
use crate::error::AuthError;
use crate::jwks::{Algorithm, Jwk, KeyMaterial, KeySet};
use crate::jwt::{Jwt, MAX_TOKEN_BYTES};
use crate::preset::Preset;
use crate::sig::Hash;
use crate::time::UnixTime;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::Value;

/// Tokens without `kid` are tried against at most this many keys: each try is a signature check.
const MAX_KEYS_TRIED: usize = 4;

/// Checks `jwt` against `provider`'s rules and `keys`; returns the verified claims.
///
/// Claims are checked before the signature (cheap refusals first); nothing is trusted until both pass.
pub fn verify(jwt: &Jwt<'_>, provider: &Provider, keys: &KeySet, now: UnixTime) -> Result<Value, AuthError> {
    let alg = Algorithm::parse(&jwt.alg)
        .filter(|alg| provider.algorithms.contains(alg))
        .ok_or(AuthError::AlgorithmNotAllowed)?;
    if jwt.has_crit {
        return Err(AuthError::UnsupportedCritical);
    }
    check_claims(&jwt.claims, provider, now)?;
    let candidates: Vec<&Jwk> = match &jwt.kid {
        Some(kid) => {
            let same_kid: Vec<&Jwk> = keys.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if same_kid.is_empty() {
                return Err(AuthError::UnknownKeyId);
            }
            same_kid.into_iter().filter(|k| k.accepts(alg)).collect()
        }
        None => keys.keys.iter().filter(|k| k.accepts(alg)).take(MAX_KEYS_TRIED).collect(),
    };
    if candidates.is_empty() {
        // The token's alg must never pick the key type: a kid naming a key of another type fails.
        return Err(if jwt.kid.is_some() { AuthError::BadSignature } else { AuthError::UnknownKeyId });
    }
    let options = VerificationOptions {
        artificial_time: Some(Duration::from_secs(now.as_secs())),
        time_tolerance: Some(Duration::from_secs(provider.clock_skew_seconds)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..VerificationOptions::default()
    };
    let mut last = AuthError::BadSignature;
    for key in candidates {
        match check_signature(jwt, alg, &key.material, options.clone()) {
            Ok(()) => return Ok(jwt.claims.clone()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `exp`, `nbf`, `iat` (with skew), `iss` and `aud`, on the decoded claims.
fn check_claims(claims: &Value, provider: &Provider, now: UnixTime) -> Result<(), AuthError> {
    let now = now.as_secs();
    let skew = provider.clock_skew_seconds;
    let time = |name: &str| -> Result<Option<u64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            // RFC 7519 NumericDate: seconds, possibly fractional; we compare whole seconds.
            Some(v) => v.as_f64().filter(|t| t.is_finite() && *t >= 0.0).map(|t| Some(t as u64)).ok_or(AuthError::MalformedToken),
        }
    };
    match time("exp")? {
        Some(exp) if now > exp.saturating_add(skew) => return Err(AuthError::Expired),
        None if provider.require_expiration => return Err(AuthError::MissingExpiration),
        _ => {}
    }
    if time("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(AuthError::NotYetValid);
    }
    if time("iat")?.is_some_and(|iat| iat > now.saturating_add(skew)) {
        return Err(AuthError::IssuedInFuture);
    }
    if claims.get("iss").and_then(Value::as_str) != provider.issuer.as_deref() {
        return Err(AuthError::UnknownIssuer);
    }
    if !provider.audiences.is_empty() {
        let matches = |aud: &Value| aud.as_str().is_some_and(|a| provider.audiences.iter().any(|want| want == a));
        let ok = match claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(matches),
            Some(aud) => matches(aud),
            // Cognito access tokens carry no aud: the app client is in client_id.
            None => provider.preset == Preset::Cognito && claims.get("client_id").is_some_and(matches),
        };
        if !ok {
            return Err(AuthError::AudienceMismatch);
        }
    }
    if let Some(wanted) = &provider.token_use {
        if claims.get("token_use").and_then(Value::as_str) != Some(wanted.as_str()) {
            return Err(AuthError::WrongTokenUse);
        }
    }
    Ok(())
}

/// The signature check proper: RS*, PS* and ES256 by `sig` (built for wasm, issue 7), ES384
/// and EdDSA by jwt-simple, whose own claim checks then repeat ours as a second line.
fn check_signature(jwt: &Jwt<'_>, alg: Algorithm, key: &KeyMaterial, options: VerificationOptions) -> Result<(), AuthError> {
    let (input, signature) = (jwt.signing_input.as_bytes(), jwt.signature.as_slice());
    let opts = Some(options);
    let valid = match (alg, key) {
        (Algorithm::RS256, KeyMaterial::Rsa(k)) => k.verify_pkcs1v15(Hash::Sha256, input, signature),
        (Algorithm::RS384, KeyMaterial::Rsa(k)) => k.verify_pkcs1v15(Hash::Sha384, input, signature),
        (Algorithm::RS512, KeyMaterial::Rsa(k)) => k.verify_pkcs1v15(Hash::Sha512, input, signature),
        (Algorithm::PS256, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha256, input, signature),
        (Algorithm::PS384, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha384, input, signature),
        (Algorithm::PS512, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha512, input, signature),
        (Algorithm::ES256, KeyMaterial::P256(k)) => k.verify(input, signature),
        (Algorithm::ES384, KeyMaterial::P384(point)) => {
            return load_key(ES384PublicKey::from_bytes(point))?.verify_token::<NoCustomClaims>(jwt.raw, opts).map(drop).map_err(|e| map_jwt_error(&e))
        }
        (Algorithm::EdDSA, KeyMaterial::Ed25519(raw)) => {
            return load_key(Ed25519PublicKey::from_bytes(raw))?.verify_token::<NoCustomClaims>(jwt.raw, opts).map(drop).map_err(|e| map_jwt_error(&e))
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// A key that fails to load is unusable for this token: reported as a bad signature.
fn load_key<K>(key: Result<K, jwt_simple::Error>) -> Result<K, AuthError> {
    key.map_err(|_| AuthError::BadSignature)
}

fn map_jwt_error(e: &jwt_simple::Error) -> AuthError {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => AuthError::Expired,
        Some(JWTError::TokenNotValidYet) => AuthError::NotYetValid,
        Some(JWTError::ClockDrift) => AuthError::IssuedInFuture,
        Some(JWTError::AlgorithmMismatch) => AuthError::AlgorithmNotAllowed,
        Some(JWTError::UnknownCriticalExtension) => AuthError::UnsupportedCritical,
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => AuthError::BadSignature,
        Some(JWTError::TokenTooLong | JWTError::HeaderTooLarge) => AuthError::TokenTooLarge,
        _ => AuthError::MalformedToken,
    }
}
