//! The committed test keys (`tests/fixtures/keys/`) and the public JWKs derived from them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

/// Every asymmetric JWS algorithm the filter supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
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

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name, as in a token header's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The fixture that signs this algorithm by default.
    fn fixture(self) -> &'static str {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                "rsa-2048-signing.pem"
            }
            Alg::ES256 => "ec-p256-signing.pem",
            Alg::ES384 => "ec-p384-signing.pem",
            Alg::EdDSA => "ed25519-signing.pem",
        }
    }
}

/// A private test key used with one algorithm under one `kid`.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub alg: Alg,
    pub kid: String,
    pem: String,
}

impl SigningKey {
    /// The default fixture for `alg`, with kid = the algorithm name lowercased (`rs256`).
    pub fn for_alg(alg: Alg) -> Self {
        Self::load(alg, alg.fixture(), &alg.name().to_ascii_lowercase())
    }

    /// RS256 with kid `rs256`: the provider's key before a rotation.
    pub fn rs256() -> Self {
        Self::for_alg(Alg::RS256)
    }

    /// RS256 with a second RSA key and kid `rs256-rotated`: the key the provider rotates to.
    pub fn rs256_rotated() -> Self {
        Self::load(Alg::RS256, "rsa-2048-rotated.pem", "rs256-rotated")
    }

    /// Any fixture file under `tests/fixtures/keys/`, used with `alg` under `kid`.
    pub fn load(alg: Alg, file: &str, kid: &str) -> Self {
        let path = super::repo_root().join("tests/fixtures/keys").join(file);
        let pem = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let key = SigningKey {
            alg,
            kid: kid.to_string(),
            pem,
        };
        // Fail here, naming the file, rather than at the first signature.
        key.public_jwk();
        key
    }

    /// The public key as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match self.alg {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                let rsa = self.rsa_public();
                json!({ "kty": "RSA", "n": b64(&rsa.n), "e": b64(&rsa.e) })
            }
            Alg::ES256 => {
                let pair = ES256KeyPair::from_pem(&self.pem).unwrap_or_else(|e| self.bad(e));
                let point = pair.public_key().public_key().to_bytes_uncompressed();
                ec_jwk("P-256", &point, 32)
            }
            Alg::ES384 => {
                let pair = ES384KeyPair::from_pem(&self.pem).unwrap_or_else(|e| self.bad(e));
                let point = pair.public_key().public_key().to_bytes_uncompressed();
                ec_jwk("P-384", &point, 48)
            }
            Alg::EdDSA => {
                let pair = Ed25519KeyPair::from_pem(&self.pem).unwrap_or_else(|e| self.bad(e));
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&pair.public_key().to_bytes()) })
            }
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg.name());
        jwk["use"] = json!("sig");
        jwk
    }

    /// The RSA public key as PEM (SubjectPublicKeyInfo), as a provider might publish it.
    pub fn rsa_public_pem(&self) -> String {
        let pair = RS256KeyPair::from_pem(&self.pem).unwrap_or_else(|e| self.bad(e));
        pair.public_key()
            .to_pem()
            .unwrap_or_else(|e| panic!("RSA public key to PEM: {e}"))
    }

    fn rsa_public(&self) -> RSAPublicKeyComponents {
        RS256KeyPair::from_pem(&self.pem)
            .unwrap_or_else(|e| self.bad(e))
            .public_key()
            .to_components()
    }

    /// The private key PEM, for `tokens.rs` to sign with.
    pub(super) fn pem(&self) -> &str {
        &self.pem
    }

    fn bad<T>(&self, e: jwt_simple::Error) -> T {
        panic!("test key {} ({}): {e}", self.kid, self.alg.name())
    }
}

/// An EC JWK from an uncompressed SEC1 point (0x04 || x || y).
fn ec_jwk(crv: &str, point: &[u8], coordinate_len: usize) -> Value {
    assert_eq!(
        point.len(),
        1 + 2 * coordinate_len,
        "uncompressed {crv} point"
    );
    let (x, y) = point[1..].split_at(coordinate_len);
    json!({
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    })
}

/// A JWKS document (`{"keys": [..]}`) holding the public keys of `keys`.
pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}
