//! Tokens for the end-to-end tests: well-formed ones and the attacks a filter must refuse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use super::keys::{Alg, SigningKey};

/// The audience the tests' filter configurations accept.
pub const AUDIENCE: &str = "jira";

/// Seconds since the Unix epoch, from the system clock (Envoy reads the same clock).
pub fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit i64")
}

/// Claims a correctly configured filter accepts: `iss`, `aud: jira`, `sub`,
/// `preferred_username`, issued now and valid for an hour. Change fields to build negatives.
pub fn valid_claims(issuer: &str, username: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": format!("{username}-subject-id"),
        "preferred_username": username,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    })
}

/// `claims` signed by `key`, with `kid` = the key's kid in the header.
pub fn mint(key: &SigningKey, claims: &Value) -> String {
    sign(key, Some(&key.kid), claims)
}

/// `claims` signed by `key` but announcing `kid` in the header, e.g. a kid the JWKS lacks.
pub fn mint_with_kid(key: &SigningKey, kid: &str, claims: &Value) -> String {
    sign(key, Some(kid), claims)
}

/// `claims` signed exactly as given (no claim added), header `alg`, `typ` and `kid` if any.
pub fn sign(key: &SigningKey, kid: Option<&str>, claims: &Value) -> String {
    macro_rules! sign_with {
        ($pair:ty) => {{
            let mut pair = <$pair>::from_pem(key.pem())
                .unwrap_or_else(|e| panic!("test key {}: {e}", key.kid));
            if let Some(kid) = kid {
                pair = pair.with_key_id(kid);
            }
            pair.sign(verbatim(claims))
        }};
    }
    let token = match key.alg {
        Alg::RS256 => sign_with!(RS256KeyPair),
        Alg::RS384 => sign_with!(RS384KeyPair),
        Alg::RS512 => sign_with!(RS512KeyPair),
        Alg::PS256 => sign_with!(PS256KeyPair),
        Alg::PS384 => sign_with!(PS384KeyPair),
        Alg::PS512 => sign_with!(PS512KeyPair),
        Alg::ES256 => sign_with!(ES256KeyPair),
        Alg::ES384 => sign_with!(ES384KeyPair),
        Alg::EdDSA => sign_with!(Ed25519KeyPair),
    };
    token.unwrap_or_else(|e| panic!("sign {} token: {e}", key.alg.name()))
}

/// An unsigned token: header `{"alg":"none"}` (with `kid`), empty signature.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": "none", "typ": "JWT", "kid": kid });
    format!("{}.{}.", segment(&header), segment(claims))
}

/// The RS/HS confusion attack: HS256 with the provider's RSA public key PEM as the HMAC
/// secret, and the RSA key's kid, hoping the verifier feeds its "key" to HMAC.
pub fn hs256_with_rsa_public_key(rsa: &SigningKey, claims: &Value) -> String {
    let secret = rsa.rsa_public_pem();
    HS256Key::from_bytes(secret.as_bytes())
        .with_key_id(&rsa.kid)
        .authenticate(verbatim(claims))
        .unwrap_or_else(|e| panic!("HS256 token: {e}"))
}

/// `token` with its payload swapped for `claims`, keeping the original header and signature:
/// a valid signature over a different payload.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("not a compact JWS: {token}");
    };
    format!("{header}.{}.{signature}", segment(claims))
}

/// `Bearer <token>`, the value of an `Authorization` header.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// jwt-simple claims whose payload is `claims` verbatim: every standard field left empty, all
/// of `claims` in the flattened custom part.
fn verbatim(claims: &Value) -> JWTClaims<Map<String, Value>> {
    let custom = claims
        .as_object()
        .unwrap_or_else(|| panic!("claims must be a JSON object: {claims}"))
        .clone();
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    }
}

fn segment(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// A GitHub token of kind `prefix` (`gho_`, `ghp_`, ...) as GitHub mints them: `random`
/// (base62) then six base62 characters of its CRC-32, zero-padded. Made up here, valid nowhere.
pub fn github_token(prefix: &str, random: &str) -> String {
    let mut crc = !0u32;
    for &byte in random.as_bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let (mut n, mut checksum) = (!crc, [b'0'; 6]);
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for digit in checksum.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    format!("{prefix}{random}{}", String::from_utf8_lossy(&checksum))
}
