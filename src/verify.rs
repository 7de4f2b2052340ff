//! Token + provider + keys + now → verified claims, or the precise reason for refusal.

use crate::config::Provider;
use crate::error::AuthError;
use crate::jwks::{Algorithm, Jwk, KeyMaterial, KeySet};
use crate::jwt::Jwt;
use crate::preset::Preset;
use crate::sig::Hash;
use crate::time::UnixTime;
use serde_json::Value;

/// Tokens without `kid` are tried against at most this many keys: each try is a signature check.
const MAX_KEYS_TRIED: usize = 4;

/// Checks `jwt` against `provider`'s rules and `keys`; returns the verified claims.
///
/// Claims are checked before the signature (cheap refusals first); nothing is trusted until both pass.
pub fn verify(
    jwt: &Jwt<'_>,
    provider: &Provider,
    keys: &KeySet,
    now: UnixTime,
) -> Result<Value, AuthError> {
    let alg = Algorithm::parse(&jwt.alg)
        .filter(|alg| provider.algorithms.contains(alg))
        .ok_or(AuthError::AlgorithmNotAllowed)?;
    if jwt.has_crit {
        return Err(AuthError::UnsupportedCritical);
    }
    check_claims(&jwt.claims, provider, now)?;
    let candidates: Vec<&Jwk> = match &jwt.kid {
        Some(kid) => {
            let same_kid: Vec<&Jwk> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if same_kid.is_empty() {
                return Err(AuthError::UnknownKeyId);
            }
            same_kid.into_iter().filter(|k| k.accepts(alg)).collect()
        }
        None => keys
            .keys
            .iter()
            .filter(|k| k.accepts(alg))
            .take(MAX_KEYS_TRIED)
            .collect(),
    };
    if candidates.is_empty() {
        // The token's alg must never pick the key type: a kid naming a key of another type fails.
        return Err(if jwt.kid.is_some() {
            AuthError::BadSignature
        } else {
            AuthError::UnknownKeyId
        });
    }
    let mut last = AuthError::BadSignature;
    for key in candidates {
        match check_signature(jwt, alg, &key.material) {
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
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or(AuthError::MalformedToken),
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
        let matches = |aud: &Value| {
            aud.as_str()
                .is_some_and(|a| provider.audiences.iter().any(|want| want == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(matches),
            Some(aud) => matches(aud),
            // Cognito access tokens carry no aud: the app client is in client_id.
            None => {
                provider.preset == Preset::Cognito && claims.get("client_id").is_some_and(matches)
            }
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

/// The signature check proper: RS*, PS* and ES256 by `sig` (built for wasm, issue 7), ES384 by
/// `p384` and EdDSA by `ed25519-compact` (the backends jwt-simple uses for them).
fn check_signature(jwt: &Jwt<'_>, alg: Algorithm, key: &KeyMaterial) -> Result<(), AuthError> {
    let (input, signature) = (jwt.signing_input.as_bytes(), jwt.signature.as_slice());
    let valid = match (alg, key) {
        (Algorithm::RS256, KeyMaterial::Rsa(k)) => {
            k.verify_pkcs1v15(Hash::Sha256, input, signature)
        }
        (Algorithm::RS384, KeyMaterial::Rsa(k)) => {
            k.verify_pkcs1v15(Hash::Sha384, input, signature)
        }
        (Algorithm::RS512, KeyMaterial::Rsa(k)) => {
            k.verify_pkcs1v15(Hash::Sha512, input, signature)
        }
        (Algorithm::PS256, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha256, input, signature),
        (Algorithm::PS384, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha384, input, signature),
        (Algorithm::PS512, KeyMaterial::Rsa(k)) => k.verify_pss(Hash::Sha512, input, signature),
        (Algorithm::ES256, KeyMaterial::P256(k)) => k.verify(input, signature),
        (Algorithm::ES384, KeyMaterial::P384(point)) => verify_es384(point, input, signature),
        (Algorithm::EdDSA, KeyMaterial::Ed25519(raw)) => verify_eddsa(raw, input, signature),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// ECDSA P-384 with SHA-384; the JOSE signature is `r || s`, 96 bytes (RFC 7518 section 3.4).
fn verify_es384(point: &[u8], input: &[u8], signature: &[u8]) -> bool {
    use p384::ecdsa::signature::Verifier;
    let (Ok(key), Ok(signature)) = (
        p384::ecdsa::VerifyingKey::from_sec1_bytes(point),
        p384::ecdsa::Signature::from_slice(signature),
    ) else {
        return false;
    };
    key.verify(input, &signature).is_ok()
}

/// Ed25519 (RFC 8037); ed25519-compact also refuses small-order keys and non-canonical points.
fn verify_eddsa(raw: &[u8], input: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(signature)) = (
        ed25519_compact::PublicKey::from_slice(raw),
        ed25519_compact::Signature::from_slice(signature),
    ) else {
        return false;
    };
    key.verify(input, &signature).is_ok()
}
