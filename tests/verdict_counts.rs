//! What the worker counts for each decision (the Envoy stats operators graph and alert on):
//! a refusal by reason and by the provider that refused, an authentication by provider, a
//! pass by why, and dry-run decisions apart from enforced ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use atlassian_rest_auth::api_token;
use atlassian_rest_auth::authenticator::{Authenticator, RequestHead};
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth::worker::fake::FakeHost;
use atlassian_rest_auth::worker::{Admission, CallReply, Worker};
use serde_json::{json, Value};
use support::keys::{jwks_of, SigningKey};
use support::tokens::mint;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";

/// Provider `corp` verifies JWTs of `ISSUER`, provider `ui` asks userinfo about opaque tokens.
fn config() -> Value {
    json!({
        "realm": "jira", "default_auth": "required",
        "providers": [
            {"name": "corp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
             "username_claim": ["preferred_username"]},
            {"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/userinfo", "username_claim": ["email"]}
        ],
        "api_tokens": [{"user": "ci-bot", "sha256": "0".repeat(64)}],
        "rules": [{"path_prefix": "/status", "auth": "none"}],
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}

fn worker(config: &Value) -> Worker {
    let config = Config::parse(config.to_string().as_bytes(), &|_| None).unwrap();
    Worker::new(Authenticator::new(config))
}

fn request(path: &str, authorization: Option<String>) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        authorization,
        cors_headers: false,
        form_body: false,
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn reply(status: u32, body: Value) -> CallReply {
    CallReply {
        status,
        headers: [None, None],
        body: Some(body.to_string().into_bytes()),
    }
}

/// Answers the latest call sent with `reply`.
fn answer(w: &mut Worker, h: &mut FakeHost, reply: CallReply) {
    let id = *h.calls.keys().next_back().expect("a call was sent");
    h.take(id);
    w.on_call_reply(h, id, reply);
}

/// A worker of `config` and its host, with `key` as `corp`'s signing key, fetched at start.
fn started(config: &Value, key: &SigningKey) -> (Worker, FakeHost) {
    let mut w = worker(config);
    let mut h = FakeHost::at(UnixTime::from_secs(NOW));
    w.on_tick(&mut h);
    answer(&mut w, &mut h, reply(200, jwks_of(&[key])));
    (w, h)
}

fn claims(username: &str) -> Value {
    json!({"iss": ISSUER, "aud": "jira", "preferred_username": username, "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
}

/// Every counter the host holds that starts with `group.`, as `name=value` (zeroes left out).
fn counted(h: &FakeHost, group: &str) -> Vec<String> {
    let mut names: Vec<String> = h
        .counters
        .iter()
        .filter(|(n, v)| n.starts_with(&format!("{group}.")) && **v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_refusal_counts_its_reason_and_the_provider_that_refused() {
    let key = SigningKey::rs256();
    let (mut w, mut h) = started(&config(), &key);
    let mut expired = claims("alice");
    expired["exp"] = json!(NOW - 3600);
    let mut stranger = claims("alice");
    stranger["iss"] = json!("https://elsewhere.test");
    let api = api_token::mint(&[7; 32]);
    for (id, auth) in [
        (1, None),
        (2, bearer(&mint(&key, &expired))),
        (3, bearer(&mint(&key, &stranger))),
        (4, bearer(&api)),
        (5, Some("Negotiate abc".to_string())),
    ] {
        assert!(matches!(
            w.on_request(&mut h, id, request("/rest/x", auth)),
            Admission::Decided(_)
        ));
    }
    // The userinfo provider refuses an opaque token.
    assert_eq!(
        w.on_request(&mut h, 6, request("/rest/x", bearer("opaque-1"))),
        Admission::Paused
    );
    w.on_tick(&mut h);
    answer(
        &mut w,
        &mut h,
        reply(401, json!({"error": "invalid_token"})),
    );
    assert_eq!(h.decision_for(6).map(|d| d.status()), Some(401));
    assert_eq!(
        counted(&h, "denied"),
        [
            "denied.no_credentials.none=1",
            "denied.token_expired.corp=1",
            "denied.token_rejected_by_provider.ui=1",
            "denied.unknown_api_token.api_tokens=1",
            "denied.unknown_issuer.none=1",
            "denied.unsupported_authorization_scheme.none=1",
        ]
    );
}

#[test]
fn every_request_waiting_for_a_failed_lookup_counts_the_provider_that_failed() {
    let (mut w, mut h) = started(&config(), &SigningKey::rs256());
    w.on_request(&mut h, 1, request("/rest/x", bearer("opaque-1")));
    w.on_tick(&mut h);
    w.on_request(&mut h, 2, request("/rest/x", bearer("opaque-1")));
    answer(&mut w, &mut h, reply(502, json!({})));
    assert_eq!(h.decision_for(1).map(|d| d.status()), Some(503));
    assert_eq!(h.decision_for(2).map(|d| d.status()), Some(503));
    assert_eq!(
        counted(&h, "denied"),
        ["denied.identity_provider_unavailable.ui=2"]
    );
}

#[test]
fn allowed_and_passed_requests_count_their_provider_and_why() {
    let key = SigningKey::rs256();
    let (mut w, mut h) = started(&config(), &key);
    w.on_request(
        &mut h,
        1,
        request("/rest/x", bearer(&mint(&key, &claims("alice")))),
    );
    w.on_request(&mut h, 2, request("/status", None));
    w.on_request(&mut h, 3, request("/rest/x", bearer("opaque-1")));
    w.on_tick(&mut h);
    answer(
        &mut w,
        &mut h,
        reply(200, json!({"email": "bob@example.com"})),
    );
    assert_eq!(counted(&h, "allowed"), ["allowed.corp=1", "allowed.ui=1"]);
    assert_eq!(counted(&h, "passed"), ["passed.auth_none=1"]);
    assert!(counted(&h, "dry_run").is_empty());
}

#[test]
fn dry_run_decisions_are_counted_apart_from_enforced_ones() {
    let key = SigningKey::rs256();
    let mut config = config();
    config["dry_run"] = json!(true);
    let (mut w, mut h) = started(&config, &key);
    let mut expired = claims("alice");
    expired["exp"] = json!(NOW - 3600);
    w.on_request(&mut h, 1, request("/rest/x", None));
    w.on_request(&mut h, 2, request("/rest/x", bearer(&mint(&key, &expired))));
    w.on_request(
        &mut h,
        3,
        request("/rest/x", bearer(&mint(&key, &claims("alice")))),
    );
    w.on_request(&mut h, 4, request("/status", None));
    assert_eq!(
        counted(&h, "dry_run"),
        [
            "dry_run.allowed.corp=1",
            "dry_run.denied.no_credentials.none=1",
            "dry_run.denied.token_expired.corp=1",
        ]
    );
    // Nothing was refused or forwarded: the enforced counters stay at zero.
    assert!(counted(&h, "denied").is_empty());
    assert!(counted(&h, "allowed").is_empty());
    assert_eq!(counted(&h, "passed"), ["passed.auth_none=1"]);
}
