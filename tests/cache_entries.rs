//! What the shared cache stores about a caller, natively through the core (issue 11 item 14):
//! only the claims the configuration reads, never an entry stripped of them; claims too large to
//! store keep a provider's answer one second, and keep a verified JWT out of the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step};
use atlassian_rest_auth::cache::{EntryState, NoCache, MAX_CLAIMS_BYTES, OVERSIZED_TTL_MS};
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::keys::{FetchKind, ProviderKeys};
use atlassian_rest_auth::time::UnixTime;
use serde_json::{json, Value};
use support::keys::{jwks_of, SigningKey};
use support::tokens::mint;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";

fn auth() -> Authenticator {
    let config = json!({
        "realm": "jira",
        "providers": [{"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
                       "username_claim": ["preferred_username"], "cache_seconds": 300}],
        "rules": [{"path_prefix": "/rest/", "auth": "required", "require_claims": {"groups": "jira-administrators"}}],
        "clusters": {"127.0.0.1:9999": "idp"}
    });
    Authenticator::new(Config::parse(config.to_string().as_bytes(), &|_| None).unwrap())
}

/// `count` groups of 40 bytes, `jira-administrators` last.
fn groups(count: usize) -> Value {
    let mut groups: Vec<String> = (0..count)
        .map(|i| format!("group-{i:05}-{}", "x".repeat(28)))
        .collect();
    groups.push("jira-administrators".into());
    json!(groups)
}

fn valid(claims: Value) -> EntryState {
    EntryState::Valid {
        username: "alice".into(),
        provider: "idp".into(),
        claims,
    }
}

#[test]
fn an_entry_keeps_the_claims_rules_read_and_nothing_else() {
    let auth = auth();
    let entry = auth.cache_entry(
        auth.config.provider_named("idp").unwrap(),
        TokenDigest::of(b"t"),
        valid(json!({"groups": groups(3), "bulk": "x".repeat(10_000)})),
        UnixTime::from_secs(NOW),
        None,
    );
    assert_eq!(entry.state, valid(json!({"groups": groups(3)})));
    assert_eq!(entry.until_ms, (NOW + 300) * 1000);
}

#[test]
fn claims_over_the_old_2_kib_bound_are_stored_whole() {
    let claims = json!({"groups": groups(150)});
    assert!(claims.to_string().len() > 2048 && claims.to_string().len() < MAX_CLAIMS_BYTES);
    let auth = auth();
    let entry = auth.cache_entry(
        auth.config.provider_named("idp").unwrap(),
        TokenDigest::of(b"t"),
        valid(claims.clone()),
        UnixTime::from_secs(NOW),
        None,
    );
    assert_eq!(entry.state, valid(claims));
    assert_eq!(entry.until_ms, (NOW + 300) * 1000);
}

#[test]
fn claims_too_large_to_store_keep_the_answer_one_second_with_its_claims() {
    let claims = json!({"groups": groups(250)});
    assert!(claims.to_string().len() > MAX_CLAIMS_BYTES);
    let auth = auth();
    let entry = auth.cache_entry(
        auth.config.provider_named("idp").unwrap(),
        TokenDigest::of(b"t"),
        valid(claims.clone()),
        UnixTime::from_secs(NOW),
        None,
    );
    assert_eq!(
        entry.state,
        valid(claims),
        "never an entry without the claims"
    );
    assert_eq!(entry.until_ms, NOW * 1000 + OVERSIZED_TTL_MS);
}

#[test]
fn a_jwt_with_claims_too_large_to_store_is_allowed_and_not_remembered() {
    let auth = auth();
    let key = SigningKey::rs256();
    let mut keys: Vec<ProviderKeys> = auth
        .config
        .providers
        .iter()
        .map(ProviderKeys::new)
        .collect();
    let provider = &auth.config.providers[0];
    let fetched = keys[0].record.after_reply(
        FetchKind::Jwks,
        provider,
        200,
        jwks_of(&[&key]).to_string().as_bytes(),
        UnixTime::from_secs(NOW),
    );
    keys[0].adopt(fetched.record);
    let decide = |count: usize| {
        let claims = json!({"iss": ISSUER, "aud": "jira", "preferred_username": format!("admin{count}"), "iat": NOW, "exp": NOW + 3600, "groups": groups(count)});
        let head = RequestHead {
            method: "GET".into(),
            path: "/rest/api/2/myself".into(),
            authorization: Some(format!("Bearer {}", mint(&key, &claims))),
            cors_headers: false,
            form_body: false,
        };
        match auth.start(&head, &keys, &NoCache, UnixTime::from_secs(NOW), true) {
            Step::Decide(verdict) => verdict,
            other => panic!("undecided: {other:?}"),
        }
    };
    let stored = decide(150);
    assert_eq!(stored.denied().cloned(), None);
    assert!(
        matches!(&stored.remember, Some(e) if matches!(&e.state, EntryState::Valid { claims, .. } if claims["groups"] == groups(150)))
    );
    let too_large = decide(250);
    assert_eq!(
        too_large.denied().cloned(),
        None,
        "decided from the full claims"
    );
    assert_eq!(
        too_large.remember, None,
        "not cached: verified again next time"
    );
}
