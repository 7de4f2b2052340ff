//! Callers with large claims (many groups) keep passing `require_claims` (issue 11 item 14).
//! The shared cache keeps only the claims the configuration reads, up to 8 KiB of them; an
//! answer larger than that is never stored without its claims: a JWT is then verified again on
//! each request, an opaque token's answer is stored for a second (for the requests waiting for
//! it) and asked again later. Through the real Envoy (two workers), on fresh connections so
//! that the cache shared by the workers and each worker's memo both answer. Needs Envoy
//! (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};

use support::attacks::{assert_envoy_unharmed, raw_request};
use support::envoy::IDP_CLUSTER;
use support::providers::{Answer, FakeProvider};
use support::tokens::{self, bearer, valid_claims};
use support::*;

const ADMIN_PATH: &str = "/rest/api/2/user?username=bob";
const USERINFO: &str = "/userinfo";

/// `count` group names of about 40 bytes, the one `require_claims` wants last.
fn groups(count: usize) -> Vec<String> {
    let mut groups: Vec<String> = (0..count)
        .map(|i| format!("confluence-space-{i:05}-contributors-group"))
        .collect();
    groups.push("jira-administrators".into());
    groups
}

/// Envoy whose `/rest/api/2/user` needs `jira-administrators` in `groups` (other claims of
/// the answer, e.g. `bulk`, are read by nothing and not kept).
fn envoy(provider: Value, idp: &FakeProvider, echo: &EchoUpstream) -> Envoy {
    let config = json!({
        "realm": "jira",
        "default_auth": "required",
        "providers": [provider],
        "rules": [{"path_prefix": "/rest/api/2/user", "auth": "required", "require_claims": {"groups": "jira-administrators"}}],
        "forward": {"username_header": "x-forwarded-user"},
        "clusters": {idp.authority(): IDP_CLUSTER},
    });
    Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config))
}

/// The statuses of `count` requests with `token`, each on a fresh connection.
fn statuses(envoy: &Envoy, token: &str, count: usize) -> Vec<u16> {
    (0..count)
        .map(|_| {
            raw_request(
                envoy.port(),
                "GET",
                ADMIN_PATH,
                &[("authorization", &bearer(token))],
            )
            .status
        })
        .collect()
}

#[test]
fn a_jwt_with_many_groups_meets_require_claims_on_every_request() {
    let idp = FakeProvider::start();
    let key = SigningKey::rs256();
    idp.serve_jwks(jwks_of(&[&key]));
    let echo = EchoUpstream::start();
    let provider = json!({
        "name": "idp", "issuer": idp.issuer(), "audiences": [tokens::AUDIENCE], "jwks_uri": idp.jwks_uri(),
        "username_claim": ["preferred_username"], "timeout_ms": 2000,
    });
    let mut envoy = envoy(provider, &idp, &echo);

    // About 4 KiB of groups (stored with the entry) and about 9 KiB (too large to store).
    let mut sent = Vec::new();
    for count in [100, 210] {
        let mut claims = valid_claims(&idp.issuer(), &format!("admin{count}"));
        claims["groups"] = json!(groups(count));
        claims["bulk"] = json!("x".repeat(500));
        let token = tokens::mint(&key, &claims);
        assert!(
            token.len() < 16 * 1024,
            "a token the filter reads: {} bytes",
            token.len()
        );
        assert_eq!(
            statuses(&envoy, &token, 6),
            vec![200; 6],
            "{count} groups: the repeats are decided from the cache"
        );
        sent.push(token);
    }
    let secrets: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert_envoy_unharmed(&mut envoy, &secrets);
}

#[test]
fn an_opaque_token_whose_answer_has_many_groups_meets_require_claims() {
    let idp = FakeProvider::start();
    let echo = EchoUpstream::start();
    let answer = |count: usize| json!({"email": format!("admin{count}@example.com"), "groups": groups(count), "bulk": "x".repeat(1000)});
    // The provider takes a moment, so the requests sent together wait for one answer.
    let slow = |count: usize| Answer::ok(answer(count)).after(Duration::from_millis(300));
    idp.reply_by_bearer(
        "GET",
        USERINFO,
        [("tok-4k", slow(100)), ("tok-10k", slow(250))],
        Answer::status(401),
    );
    let provider = json!({"name": "ui", "mode": "userinfo", "userinfo_uri": idp.url(USERINFO), "username_claim": ["email"], "timeout_ms": 2000});
    let mut envoy = envoy(provider, &idp, &echo);

    for token in ["tok-4k", "tok-10k"] {
        let port = envoy.port();
        let together: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    raw_request(
                        port,
                        "GET",
                        ADMIN_PATH,
                        &[("authorization", &bearer(token))],
                    )
                    .status
                })
            })
            .collect();
        let statuses_together: Vec<u16> = together.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            statuses_together,
            vec![200; 4],
            "{token}: the requests that waited for the answer"
        );
        assert_eq!(
            idp.calls(USERINFO),
            if token == "tok-4k" { 1 } else { 2 },
            "{token}: one call answered the requests sent together"
        );
    }
    // Repeats: the 4 KiB answer is cached; the 10 KiB one, once its second has passed, is asked again.
    assert_eq!(statuses(&envoy, "tok-4k", 4), vec![200; 4]);
    assert_eq!(
        idp.calls(USERINFO),
        2,
        "the 4 KiB answer is served from the cache"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(statuses(&envoy, "tok-10k", 2), vec![200; 2]);
    assert!(
        idp.calls(USERINFO) >= 3,
        "the 10 KiB answer is not kept beyond its second"
    );
    assert_envoy_unharmed(&mut envoy, &[]);
}
