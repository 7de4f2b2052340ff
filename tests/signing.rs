//! Requests signed for the product (`forward.atlassian_oauth1`) through their lifecycle in the
//! `Worker`: signed once allowed, and only then; a form body awaited whether it arrives before
//! or after the credential is checked; nothing signed that was refused, passed or dry-run.
//! The signature itself is checked by `src/oauth1.rs`' tests and by a third-party verifier
//! behind real Envoy (`e2e_oauth1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Verdict};
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::decision::Decision;
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth::worker::fake::FakeHost;
use atlassian_rest_auth::worker::{Admission, CallReply, Worker, FORM_BODY_WAIT_MS};
use serde_json::{json, Value};
use support::keys::{jwks_of, SigningKey};
use support::tokens::mint;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";
const KEY_VAR: &str = "ARA_TEST_CONSUMER_KEY";

fn consumer_key_pem() -> String {
    let path = support::repo_root().join("tests/fixtures/keys/rsa-2048-rotated.pem");
    std::fs::read_to_string(path).unwrap()
}

fn with_signing(mut config: Value) -> Value {
    config["forward"] = json!({"atlassian_oauth1": {
        "consumer_key": "envoy-gateway", "private_key": {"env": KEY_VAR},
        "base_url": "https://jira.example.com"
    }});
    config
}

fn jwt_config() -> Value {
    with_signing(json!({
        "realm": "jira", "default_auth": "optional",
        "providers": [{"name": "corp", "issuer": ISSUER, "audiences": ["jira"],
                       "jwks_uri": "http://127.0.0.1:9999/jwks", "username_claim": ["preferred_username"]}],
        "rules": [{"path_prefix": "/status", "auth": "none"}],
        "clusters": {"127.0.0.1:9999": "idp"}
    }))
}

fn userinfo_config() -> Value {
    with_signing(json!({
        "realm": "jira", "default_auth": "required",
        "providers": [{"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/userinfo", "username_claim": ["email"]}],
        "clusters": {"127.0.0.1:9999": "idp"}
    }))
}

fn worker(config: &Value) -> Worker {
    let pem = consumer_key_pem();
    let env = |name: &str| (name == KEY_VAR).then(|| pem.clone());
    let config = Config::parse(config.to_string().as_bytes(), &env).unwrap();
    Worker::new(Authenticator::new(config))
}

fn host() -> FakeHost {
    FakeHost::at(UnixTime::from_secs(NOW))
}

fn request(method: &str, path: &str, token: Option<&str>, form_body: bool) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        authorization: token.map(|t| format!("Bearer {t}")),
        cors_headers: false,
        form_body,
    }
}

fn ok(body: Value) -> CallReply {
    CallReply {
        status: 200,
        headers: [None, None],
        body: Some(body.to_string().into_bytes()),
    }
}

/// A worker with provider `corp`'s keys, and a token of it for `user`.
fn jwt_worker(h: &mut FakeHost, user: &str) -> (Worker, String) {
    let key = SigningKey::rs256();
    let mut w = worker(&jwt_config());
    w.on_tick(h);
    let id = *h.calls.keys().next_back().unwrap();
    h.take(id);
    w.on_call_reply(h, id, ok(jwks_of(&[&key])));
    let claims = json!({"iss": ISSUER, "aud": "jira", "preferred_username": user,
                        "iat": NOW, "nbf": NOW, "exp": NOW + 3600});
    (w, mint(&key, &claims))
}

/// The header `name` a decision sets.
fn set_header<'d>(decision: &'d Decision, name: &str) -> Option<&'d str> {
    match decision {
        Decision::Continue { set, .. } => {
            set.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
        Decision::Respond { .. } => None,
    }
}

fn removes(decision: &Decision, name: &str) -> bool {
    matches!(decision, Decision::Continue { remove, .. } if remove.iter().any(|h| h == name))
}

/// The decision is signed for `user`: the path names them, `Authorization` carries the signature.
fn assert_signed(verdict: &Verdict, user: &str) {
    let d = &verdict.decision;
    let path = set_header(d, ":path").expect("the path is rewritten");
    // RFC 3986 percent-encoding, as the product decodes it (`@` is reserved).
    let named = format!("xoauth_requestor_id={}", user.replace('@', "%40"));
    assert!(path.contains(&named), "{path}");
    let auth = set_header(d, "authorization").expect("Authorization is set");
    assert!(auth.starts_with("OAuth "), "{auth}");
    assert!(auth.contains("oauth_signature="), "{auth}");
    assert!(
        !removes(d, "authorization"),
        "the signature would be removed again"
    );
    assert_eq!(set_header(d, "x-forwarded-user"), Some(user));
}

/// Sends request `id`, a form POST with bearer `token`: it waits (for its body or its credential).
fn post_form(w: &mut Worker, h: &mut FakeHost, id: u32, token: &str) {
    let head = request("POST", "/rest/x", Some(token), true);
    assert_eq!(w.on_request(h, id, head), Admission::Paused);
}

fn decided(admission: Admission) -> Verdict {
    match admission {
        Admission::Decided(v) => v,
        Admission::Paused => panic!("paused"),
    }
}

#[test]
fn an_allowed_request_is_signed_for_its_user_and_the_bearer_token_goes() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    let v = decided(w.on_request(
        &mut h,
        1,
        request(
            "GET",
            "/rest/api/2/myself?expand=groups",
            Some(&token),
            false,
        ),
    ));
    assert_signed(&v, "alice");
    let path = set_header(&v.decision, ":path").unwrap();
    assert!(
        path.starts_with("/rest/api/2/myself?expand=groups&"),
        "{path}"
    );
}

#[test]
fn two_requests_get_different_signatures() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    let a = decided(w.on_request(&mut h, 1, request("GET", "/rest/x", Some(&token), false)));
    let b = decided(w.on_request(&mut h, 2, request("GET", "/rest/x", Some(&token), false)));
    assert_ne!(
        set_header(&a.decision, "authorization"),
        set_header(&b.decision, "authorization"),
        "same nonce twice"
    );
}

#[test]
fn passed_refused_and_dry_run_requests_are_not_signed() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    let anonymous = decided(w.on_request(&mut h, 1, request("GET", "/rest/x", None, false)));
    assert!(anonymous.passed().is_some());
    assert_eq!(set_header(&anonymous.decision, "authorization"), None);
    assert_eq!(set_header(&anonymous.decision, ":path"), None);

    let refused = decided(w.on_request(&mut h, 2, request("POST", "/rest/x", Some("a.b.c"), true)));
    assert_eq!(
        refused.decision.status(),
        401,
        "a refusal does not wait for the body"
    );

    let mut config = jwt_config();
    config["dry_run"] = json!(true);
    let mut dry = worker(&config);
    let mut h2 = host();
    dry.on_tick(&mut h2);
    let id = *h2.calls.keys().next_back().unwrap();
    h2.take(id);
    dry.on_call_reply(&mut h2, id, ok(jwks_of(&[&SigningKey::rs256()])));
    let v = decided(dry.on_request(&mut h2, 1, request("POST", "/rest/x", Some(&token), true)));
    assert!(v.dry_run);
    assert_eq!(set_header(&v.decision, "authorization"), None);
    assert!(!dry.awaits_body(1), "a dry run waits for nothing");
}

#[test]
fn an_allowed_form_post_waits_for_its_body_and_is_signed_over_it() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    post_form(&mut w, &mut h, 1, &token);
    assert!(w.awaits_body(1) && w.is_paused(1));
    assert!(
        !h.counters.contains_key("allowed.corp"),
        "counted before it leaves"
    );
    let v = w
        .on_request_body(&mut h, 1, b"summary=a+b&x=1")
        .expect("decided once the body is whole");
    assert_signed(&v, "alice");
    assert!(!w.awaits_body(1));
    assert_eq!(h.counters.get("allowed.corp"), Some(&1));
    assert!(
        h.resumed.is_empty(),
        "applied by the body's callback, not resumed"
    );
}

#[test]
fn a_body_that_arrives_before_the_lookup_answers_is_signed_when_it_does() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    post_form(&mut w, &mut h, 7, "opaque-1");
    assert_eq!(
        w.on_request_body(&mut h, 7, b"a=1"),
        None,
        "the credential is not checked yet"
    );
    w.on_tick(&mut h);
    let id = *h.calls.keys().next_back().unwrap();
    h.take(id);
    w.on_call_reply(&mut h, id, ok(json!({"email": "bob@example.com"})));
    let (resumed, v) = h.resumed.last().expect("resumed once the answer came");
    assert_eq!(*resumed, 7);
    assert_signed(v, "bob@example.com");
}

#[test]
fn a_lookup_that_answers_before_the_body_holds_the_request_until_the_body_is_whole() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    post_form(&mut w, &mut h, 7, "opaque-1");
    w.on_tick(&mut h);
    let id = *h.calls.keys().next_back().unwrap();
    h.take(id);
    w.on_call_reply(&mut h, id, ok(json!({"email": "bob@example.com"})));
    assert!(h.resumed.is_empty(), "resumed before its body arrived");
    assert!(w.awaits_body(7));
    let v = w.on_request_body(&mut h, 7, b"a=1").expect("signed now");
    assert_signed(&v, "bob@example.com");
}

#[test]
fn a_form_body_carrying_the_impersonation_parameter_is_refused() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    post_form(&mut w, &mut h, 1, &token);
    let v = w
        .on_request_body(&mut h, 1, b"a=1&xoauth_requestor_id=admin")
        .unwrap();
    assert_eq!(v.decision.status(), 400);
    assert_eq!(set_header(&v.decision, "authorization"), None);
}

#[test]
fn without_secure_randomness_nothing_is_signed() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    h.no_randomness = true;
    let v = decided(w.on_request(&mut h, 1, request("GET", "/rest/x", Some(&token), false)));
    assert_eq!(v.decision.status(), 500);
}

#[test]
fn a_client_that_leaves_while_its_body_is_awaited_leaves_nothing_behind() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    post_form(&mut w, &mut h, 1, &token);
    w.on_request_done(1);
    assert!(!w.awaits_body(1) && !w.is_paused(1));
    assert_eq!(w.on_request_body(&mut h, 1, b"a=1"), None);
}

#[test]
fn a_form_body_that_never_comes_gets_a_500_after_the_wait_not_a_hang() {
    let mut h = host();
    let (mut w, token) = jwt_worker(&mut h, "alice");
    post_form(&mut w, &mut h, 1, &token);
    assert!(w.busy(h.now.unwrap()), "the wait must be ticked");
    h.advance(FORM_BODY_WAIT_MS as i64 - 100);
    w.on_tick(&mut h);
    assert!(h.resumed.is_empty(), "given up early");
    h.advance(200);
    w.on_tick(&mut h);
    let (id, v) = h.resumed.last().expect("answered once the wait is over");
    assert_eq!((*id, v.decision.status()), (1, 500));
    assert!(!w.awaits_body(1));
    assert_eq!(w.on_request_body(&mut h, 1, b"a=1"), None, "too late");
}
