//! Signature arithmetic for the hot algorithms, written for wasm32 in V8 (issue 7).
//!
//! jwt-simple `pure-rust` takes about 670 µs per RS256 verify in V8 (wasm32 has no 64×64→128
//! multiply) and 430–560 µs per ES256. So RS*/PS* use `rsa` (Montgomery with 26/28-bit limbs in
//! `u64`, public exponent 65537 only: about 90 µs in V8) and ES256 uses `p256` (a field of nine
//! 29-bit limbs of our own, with fixed-base tables per key: about 60 µs). This crate is built at
//! opt-level 3, the rest of the filter for size (issue 15). Both are checked against
//! Wycheproof's vectors (`tests/sig_rsa_vectors.rs`, `tests/sig_p256_vectors.rs`), RFC 7515's
//! examples and jwt-simple's own signatures. ES384 and EdDSA stay with jwt-simple.
//! In Envoy, PKCS#1 v1.5 (RS*) asks Envoy's BoringSSL first (`rsa::set_pkcs1v15_verifier`,
//! issue 15); natively nothing is set and every check is ours.

#![forbid(unsafe_code)]

pub mod p256;
pub mod rsa;

/// The hash of an RSA signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}
