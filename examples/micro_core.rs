//! Micro-benchmark of the request path's core, natively or in V8 (README, "Performance"): the
//! cost of a verified-result cache hit, piece by piece, without Envoy's host calls.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step};
use atlassian_rest_auth::cache::{CacheEntry, ResultCache};
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::keys::ProviderKeys;
use atlassian_rest_auth::time::UnixTime;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

const PEM: &str = include_str!("../tests/fixtures/keys/rsa-2048-signing.pem");
const ISSUER: &str = "https://issuer.bench.invalid/";
const NOW_SECS: u64 = 1_800_000_000;

/// Stored bytes, parsed on every read, as shared data is.
#[derive(Default)]
struct Bytes(RefCell<HashMap<TokenDigest, Vec<u8>>>);

impl ResultCache for Bytes {
    fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
        self.0
            .borrow()
            .get(digest)
            .and_then(|b| CacheEntry::parse(b))
    }
}

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    println!("{name:<44} {per:>9.2} µs");
}

fn main() {
    let key = RS256KeyPair::from_pem(PEM).unwrap();
    let components = key.public_key().to_components();
    let (n, e) = (components.n, components.e);
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e)}]});
    let config = json!({
        "realm": "bench",
        "providers": [{"name": "bench", "issuer": ISSUER, "audiences": ["jira"], "jwks": jwks, "cache_seconds": 300}],
        "rules": [{"path_prefix": "/open", "auth": "none"}, {"path_prefix": "/", "auth": "required"}],
    });
    let config_json = config.clone();
    let config = Config::parse(config.to_string().as_bytes(), &|_| None).unwrap();
    let keys: Vec<ProviderKeys> = config.providers.iter().map(ProviderKeys::new).collect();
    let auth = Authenticator::new(config);
    let claims = claims_json(1);
    let token = sign(&key, &claims);
    println!("token: {} bytes", token.len());
    let now = UnixTime::from_secs(NOW_SECS);
    let head = RequestHead {
        method: "GET".into(),
        path: "/rest/api/2/myself".into(),
        authorization: Some(format!("Bearer {token}")),
        cors_headers: false,
        form_body: false,
    };
    let open = RequestHead {
        path: "/open/x".into(),
        ..head.clone()
    };
    let cache = Bytes::default();
    match auth.start(&head, &keys, &cache, now, true) {
        Step::Decide(v) => {
            println!("first: {v}");
            let entry = v.remember.expect("a verified result to remember");
            println!("entry: {} bytes", entry.to_bytes().len());
            cache
                .0
                .borrow_mut()
                .insert(entry.digest_bytes().unwrap(), entry.to_bytes());
        }
        other => panic!("{other:?}"),
    }
    let stored = cache.0.borrow().values().next().unwrap().clone();
    if std::env::args().any(|a| a == "profile-hit") {
        // For a profiler: the cache hit only.
        time("cache hit, whole start()", 1_000_000, || {
            drop(black_box(auth.start(&head, &keys, &cache, now, true)))
        });
        return;
    }
    // Cold: every request a token never seen (no memo, no cache entry): a signature check each.
    let cold: Vec<RequestHead> = (0..300)
        .map(|i| {
            let mut c = claims_json(i);
            c["iss"] = json!(ISSUER);
            RequestHead {
                authorization: Some(format!("Bearer {}", sign(&key, &c))),
                ..head.clone()
            }
        })
        .collect();
    let empty = Bytes::default();
    let fresh =
        Authenticator::new(Config::parse(config_json.to_string().as_bytes(), &|_| None).unwrap());
    if std::env::args().any(|a| a == "profile-cold") {
        for _ in 0..150 {
            let fresh = Authenticator::new(
                Config::parse(config_json.to_string().as_bytes(), &|_| None).unwrap(),
            );
            for head in cold.iter() {
                black_box(fresh.start(head, &keys, &empty, now, true));
            }
        }
        return;
    }
    let start = Instant::now();
    for head in cold.iter() {
        black_box(fresh.start(head, &keys, &empty, now, true));
    }
    println!(
        "{:<44} {:>9.2} µs",
        "cold RS256, whole start()",
        start.elapsed().as_secs_f64() * 1e6 / cold.len() as f64
    );
    time("auth none (the no-op floor of the core)", 20_000, || {
        drop(black_box(auth.start(&open, &keys, &cache, now, true)))
    });
    time("SHA-256 of the token", 20_000, || {
        black_box(TokenDigest::of(token.as_bytes()));
    });
    time("CacheEntry::parse", 20_000, || {
        drop(black_box(CacheEntry::parse(&stored)))
    });
    let hasher = std::collections::hash_map::RandomState::new();
    time("SipHash-1-3 of the token", 20_000, || {
        black_box(std::hash::BuildHasher::hash_one(&hasher, token.as_str()));
    });
    time("cache hit, whole start()", 20_000, || {
        drop(black_box(auth.start(&head, &keys, &cache, now, true)))
    });
}

/// A JWS over exactly `claims` (no claim added by jwt-simple).
fn sign(key: &RS256KeyPair, claims: &serde_json::Value) -> String {
    let custom = claims.as_object().unwrap().clone();
    let claims = JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    };
    key.clone().with_key_id("k1").sign(claims).unwrap()
}

/// What a directory-backed provider puts in an access token (as `make bench` mints).
fn claims_json(i: usize) -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": "jira", "sub": format!("bench-subject-{i:08}"), "preferred_username": format!("bench.user{i}"),
        "email": format!("bench.user{i}@example.com"), "name": format!("Bench User {i}"),
        "groups": ["jira-software-users", "confluence-users", "bitbucket-users"], "scope": "openid profile email",
        "iat": NOW_SECS - 10, "nbf": NOW_SECS - 10, "exp": NOW_SECS + 86_400,
    })
}
