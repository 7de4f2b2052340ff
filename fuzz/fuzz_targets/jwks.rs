//! `jwks::KeySet::parse` on any body, the key record folding it in (JWKS and discovery
//! replies), and every fixture token verified against whatever keys came out.
#![no_main]

use atlassian_rest_auth::jwks::{KeyMaterial, KeySet, MAX_JWKS_BYTES, MAX_KEYS};
use atlassian_rest_auth::jwt::Jwt;
use atlassian_rest_auth::keys::{FetchKind, KeyRecord};
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth::verify::verify;
use atlassian_rest_auth_fuzz::{jwt_config, NOW_SECS, TOKENS_WITHOUT_KID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = UnixTime::from_secs(NOW_SECS);
    let provider = &jwt_config().providers[0];
    let parsed = KeySet::parse(data);
    let stored = KeyRecord::default().after_reply(FetchKind::Jwks, provider, 200, data, now);
    assert_eq!(
        stored.summary.is_ok(),
        parsed.is_ok() && std::str::from_utf8(data).is_ok(),
        "record and parser disagree"
    );
    if stored.summary.is_err() {
        assert!(stored.record.jwks.is_none() && stored.record.failures == 1);
    }
    let _ = KeyRecord::default().after_reply(FetchKind::Discovery, provider, 200, data, now);
    let Ok(set) = parsed else { return };
    assert!(data.len() <= MAX_JWKS_BYTES);
    assert!(
        !set.keys.is_empty()
            && set.keys.len() <= MAX_KEYS
            && set.keys.len() + set.skipped <= MAX_KEYS
    );
    for key in &set.keys {
        match &key.material {
            // Their constructors refuse what the verifier cannot use (unit-tested in crates/sig).
            KeyMaterial::Rsa(_) | KeyMaterial::P256(_) => {}
            KeyMaterial::P384(point) => assert!(point.len() == 97 && point[0] == 4),
            KeyMaterial::Ed25519(x) => assert_eq!(x.len(), 32),
        }
        assert!(key.alg.is_none_or(|alg| key.material.supports(alg)));
    }
    // Fuzzed key material must never crash the verifier that loads it. One fixture token per
    // input (chosen by its length): a signature check per key is the slow part of this target.
    let tokens: Vec<&str> = TOKENS_WITHOUT_KID
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(jwt) = tokens
        .get(data.len() % tokens.len().max(1))
        .and_then(|t| Jwt::parse(t).ok())
    {
        let _ = verify(&jwt, provider, &set, now);
    }
});
