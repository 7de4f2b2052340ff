//! A JWKS document turned into verification keys; symmetric and unknown keys never get in.

use crate::error::JwksError;
use crate::jwt::parse_json;
use crate::sig::p256::P256Key;
use crate::sig::rsa::RsaKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// JWKS bodies larger than this are refused (SPEC section 5).
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// JWKS with more keys than this are refused (SPEC section 5).
pub const MAX_KEYS: usize = 100;

/// A signature algorithm this filter can verify; HMAC and `none` are deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm: the default allow-list.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The algorithm named by a JOSE `alg` value, if supported.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

/// Public key material of one JWK, ready for the verifier.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An RSA key of 2048 to 4096 bits with e = 65537, its Montgomery constants computed.
    Rsa(RsaKey),
    /// A P-256 point on the curve (its table is built on first use, or by `KeySet::warm`).
    P256(P256Key),
    /// SEC1 uncompressed point of a P-384 key.
    P384(Vec<u8>),
    /// The 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    /// Whether this key type can verify `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (
                KeyMaterial::Rsa(_),
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (KeyMaterial::P256(_), ES256)
                | (KeyMaterial::P384(_), ES384)
                | (KeyMaterial::Ed25519(_), EdDSA)
        )
    }
}

/// One usable verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.material.supports(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The usable keys of a JWKS document, in document order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    /// Keys present in the document but skipped (symmetric, unknown type, malformed, weak).
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect();
        write!(
            f,
            "KeySet({} keys {:?}, {} skipped)",
            self.keys.len(),
            kids,
            self.skipped
        )
    }
}

impl KeySet {
    /// Parses a JWKS body; a document without a single usable signing key is refused.
    pub fn parse(body: &[u8]) -> Result<Self, JwksError> {
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(MAX_JWKS_BYTES));
        }
        let doc = parse_json(body).map_err(JwksError::Json)?;
        Self::from_value(&doc)
    }

    /// Builds the key set from an already parsed JWKS document (inline `jwks` configuration).
    pub fn from_value(doc: &Value) -> Result<Self, JwksError> {
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::Json("no \"keys\" array".into()));
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(MAX_KEYS));
        }
        let keys: Vec<Jwk> = entries.iter().filter_map(parse_jwk).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet {
            skipped: entries.len() - keys.len(),
            keys,
        })
    }

    /// Builds what the first signature check of each key would otherwise build (the P-256
    /// tables, a few milliseconds each in V8), so that no request waits for it.
    pub fn warm(&self) {
        for key in &self.keys {
            if let KeyMaterial::P256(p256) = &key.material {
                p256.precompute();
            }
        }
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn parse_jwk(entry: &Value) -> Option<Jwk> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    let bytes = |name: &str| text(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match text("alg") {
        None => None,
        // A key pinned to an algorithm we do not verify (HS256, RSA-OAEP, ...) is not for us.
        Some(name) => Some(Algorithm::parse(name)?),
    };
    let material = match (text("kty")?, text("crv")) {
        ("RSA", _) => {
            // The verifier takes e = 65537 and an odd modulus of 2048 to 4096 bits only: any other
            // key could never verify, so it is skipped (and counted) rather than trusted to
            // replace good keys.
            KeyMaterial::Rsa(RsaKey::new(&bytes("n")?, &bytes("e")?)?)
        }
        // A point off the curve is no key at all.
        ("EC", Some("P-256")) => KeyMaterial::P256(P256Key::from_sec1(&ec_point(
            bytes("x")?,
            bytes("y")?,
            32,
        )?)?),
        ("EC", Some("P-384")) => KeyMaterial::P384(ec_point(bytes("x")?, bytes("y")?, 48)?),
        ("OKP", Some("Ed25519")) => {
            let x = bytes("x")?;
            (x.len() == 32).then_some(KeyMaterial::Ed25519(x))?
        }
        _ => return None,
    };
    let jwk = Jwk {
        kid: text("kid").map(str::to_string),
        alg,
        material,
    };
    // A pinned algorithm that does not fit the key type makes the key unusable.
    jwk.alg
        .is_none_or(|a| jwk.material.supports(a))
        .then_some(jwk)
}

fn ec_point(x: Vec<u8>, y: Vec<u8>, size: usize) -> Option<Vec<u8>> {
    if x.len() != size || y.len() != size {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The P-256 base point (SEC 2), a valid public key.
    const P256_GX: &str = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
    const P256_GY: &str = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn p256_point_off_the_curve_is_skipped() {
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&hex(P256_GX)), "y": b64(&[2; 32])}]});
        assert_eq!(KeySet::from_value(&doc), Err(JwksError::NoUsableKey));
    }

    fn rsa_jwk(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": b64(&[0xc5; 256]), "e": "AQAB"})
    }

    #[test]
    fn rsa_ec_and_okp_keys_are_usable() {
        let doc = json!({"keys": [
            rsa_jwk("r1"),
            {"kty": "EC", "crv": "P-256", "kid": "e1", "x": b64(&hex(P256_GX)), "y": b64(&hex(P256_GY))},
            {"kty": "EC", "crv": "P-384", "kid": "e2", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "o1", "x": b64(&[3; 32])}
        ]});
        let set = KeySet::from_value(&doc).unwrap();
        assert_eq!(set.keys.len(), 4);
        assert!(set.keys[0].accepts(Algorithm::PS384));
        assert!(set.keys[1].accepts(Algorithm::ES256) && !set.keys[1].accepts(Algorithm::ES384));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            rsa_jwk("ok")
        ]});
        let set = KeySet::from_value(&doc).unwrap();
        assert_eq!((set.keys.len(), set.skipped), (1, 3));
        assert!(set.has_kid("ok") && !set.has_kid("h"));
    }

    #[test]
    fn rsa_key_the_verifier_cannot_use_is_skipped() {
        let odd = b64(&[0xc5; 256]);
        let even = b64(&[&[0xc5; 255][..], &[0xc4]].concat());
        for (n, e) in [
            (odd.clone(), "Aw"),
            (even, "AQAB"),
            (b64(&[0xc5; 1024]), "AQAB"),
        ] {
            let doc = json!({"keys": [{"kty": "RSA", "n": n, "e": e}]});
            assert_eq!(KeySet::from_value(&doc), Err(JwksError::NoUsableKey));
        }
    }

    #[test]
    fn weak_rsa_key_is_skipped() {
        let doc = json!({"keys": [{"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}]});
        assert_eq!(KeySet::from_value(&doc), Err(JwksError::NoUsableKey));
    }

    #[test]
    fn key_pinned_to_a_mismatched_algorithm_is_skipped() {
        let doc =
            json!({"keys": [{"kty": "RSA", "alg": "ES256", "n": b64(&[0xc5; 256]), "e": "AQAB"}]});
        assert_eq!(KeySet::from_value(&doc), Err(JwksError::NoUsableKey));
    }

    #[test]
    fn too_many_keys_are_refused() {
        let keys: Vec<Value> = (0..=MAX_KEYS).map(|i| rsa_jwk(&i.to_string())).collect();
        assert_eq!(
            KeySet::from_value(&json!({ "keys": keys })),
            Err(JwksError::TooManyKeys(MAX_KEYS))
        );
    }

    #[test]
    fn oversized_or_malformed_documents_are_refused() {
        assert_eq!(
            KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]),
            Err(JwksError::TooLarge(MAX_JWKS_BYTES))
        );
        assert!(matches!(KeySet::parse(b"<html>"), Err(JwksError::Json(_))));
        assert!(matches!(
            KeySet::parse(b"{\"keys\": 3}"),
            Err(JwksError::Json(_))
        ));
    }
}
