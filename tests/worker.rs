//! The request lifecycle (`Worker`) against a host that misbehaves on purpose (`FakeHost`):
//! two workers sharing data, clients that go away, calls cancelled, never answered or too
//! slow, a lease left by a worker that died, clock jumps. Each test asserts what users see:
//! the decision each request gets, and how many calls the provider receives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead};
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::decision::Decision;
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth::worker::fake::{FakeHost, OtherWorker};
use atlassian_rest_auth::worker::{
    Admission, CallId, CallReply, Worker, CALLS_IN_FLIGHT, CALL_MARGIN_MS,
};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use support::keys::{jwks_of, SigningKey};
use support::tokens::mint;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";
/// The provider's `timeout_ms` in these configurations.
const TIMEOUT_MS: u64 = 1000;
const TICK_MS: i64 = 25;

fn userinfo_config() -> Value {
    json!({
        "realm": "jira", "default_auth": "required",
        "providers": [{"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/userinfo", "username_claim": ["email"], "timeout_ms": TIMEOUT_MS}],
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}

fn jwt_config() -> Value {
    json!({
        "realm": "jira", "default_auth": "required",
        "providers": [{"name": "corp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
                       "username_claim": ["preferred_username"], "timeout_ms": TIMEOUT_MS}],
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}

fn worker(config: &Value) -> Worker {
    let config = Config::parse(config.to_string().as_bytes(), &|_| None).unwrap();
    Worker::new(Authenticator::new(config))
}

fn host() -> FakeHost {
    FakeHost::at(UnixTime::from_secs(NOW))
}

fn head(token: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/rest/api/2/myself".into(),
        authorization: Some(format!("Bearer {token}")),
        cors_headers: false,
        form_body: false,
    }
}

fn ok(body: Value) -> CallReply {
    CallReply {
        status: 200,
        headers: [None, None],
        body: Some(body.to_string().into_bytes()),
    }
}

fn no_answer() -> CallReply {
    CallReply {
        status: 0,
        headers: [None, None],
        body: Some(Vec::new()),
    }
}

/// The username a decision forwards, or its status when it is a refusal.
fn outcome(decision: Option<&Decision>) -> Result<String, u32> {
    match decision {
        Some(Decision::Continue { set, .. }) => Ok(set
            .iter()
            .find(|(n, _)| n == "x-forwarded-user")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()),
        Some(d) => Err(d.status()),
        None => Err(0),
    }
}

/// Ticks `host`'s worker for `ms`, one tick per `TICK_MS`.
fn tick_for(worker: &mut Worker, host: &mut FakeHost, ms: i64) {
    for _ in 0..(ms / TICK_MS) {
        host.advance(TICK_MS);
        worker.on_tick(host);
    }
}

/// Answers the latest pending call with `reply`; returns its id.
fn answer(worker: &mut Worker, host: &mut FakeHost, reply: CallReply) -> CallId {
    let id = *host.calls.keys().next_back().expect("a call was sent");
    host.take(id);
    worker.on_call_reply(host, id, reply);
    id
}

/// `worker` with keys for `key` fetched at start.
fn jwt_worker_with(host: &mut FakeHost, key: &SigningKey) -> Worker {
    let mut w = worker(&jwt_config());
    w.on_tick(host);
    answer(&mut w, host, ok(jwks_of(&[key])));
    w
}

fn claims(username: &str) -> Value {
    json!({"iss": ISSUER, "aud": "jira", "preferred_username": username, "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
}

#[test]
fn a_request_never_sends_a_call_itself_the_next_tick_does() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    assert_eq!(w.on_request(&mut h, 1, head("opaque-1")), Admission::Paused);
    assert!(h.sent.is_empty(), "sent from the request's callback");
    assert_eq!(w.calls_queued(), 1);
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 1);
    assert_eq!(w.calls_in_flight(), 1);
    assert_eq!(h.gauges.get(CALLS_IN_FLIGHT), Some(&1));
}

#[test]
fn a_wake_sends_the_calls_a_request_queued_and_nothing_else() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_wake(&mut h);
    assert!(h.sent.is_empty(), "nothing queued, nothing sent");
    assert_eq!(w.on_request(&mut h, 1, head("opaque-1")), Admission::Paused);
    w.on_wake(&mut h);
    assert_eq!(
        (h.sent.len(), w.calls_queued(), w.calls_in_flight()),
        (1, 0, 1)
    );
    // The next request is a request again: its call is queued, not sent.
    assert_eq!(w.on_request(&mut h, 2, head("opaque-2")), Admission::Paused);
    assert_eq!((h.sent.len(), w.calls_queued()), (1, 1));
}

#[test]
fn two_workers_share_one_lookup_and_the_second_adopts_the_answer() {
    let (mut a, mut b) = (worker(&userinfo_config()), worker(&userinfo_config()));
    let mut ha = host();
    let mut hb = ha.sharing();
    assert_eq!(
        a.on_request(&mut ha, 1, head("opaque-1")),
        Admission::Paused
    );
    a.on_tick(&mut ha);
    assert_eq!(
        b.on_request(&mut hb, 7, head("opaque-1")),
        Admission::Paused
    );
    tick_for(&mut b, &mut hb, 100);
    assert!(
        hb.sent.is_empty(),
        "the second worker waits for the first one's call"
    );
    answer(&mut a, &mut ha, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(ha.decision_for(1)), Ok("bob@example.com".into()));
    tick_for(&mut b, &mut hb, TICK_MS);
    assert_eq!(outcome(hb.decision_for(7)), Ok("bob@example.com".into()));
    assert_eq!(
        ha.sent.len() + hb.sent.len(),
        1,
        "one call for both workers"
    );
}

/// Two workers meet a token whose cache slot nobody ever used (a fresh Envoy), and the second
/// acts between the first one's read (nothing there) and its write: shared data cannot
/// compare-and-swap a missing key, so both used to claim the slot and both called the provider.
/// `creating` puts the second worker's whole claim before the first one's write that creates
/// the slot (which then overwrites it); otherwise before the first one's claim.
fn two_workers_race_for_a_new_slot(creating: bool) -> usize {
    let mut a = worker(&userinfo_config());
    let mut ha = host();
    let b = Rc::new(RefCell::new((worker(&userinfo_config()), ha.sharing())));
    let other = Rc::clone(&b);
    let hook: OtherWorker = Box::new(move |_key| {
        let (w, h) = &mut *other.borrow_mut();
        assert_eq!(w.on_request(h, 7, head("opaque-1")), Admission::Paused);
    });
    if creating {
        ha.before_create = Some(hook);
    } else {
        ha.before_write = Some(hook);
    }
    assert_eq!(
        a.on_request(&mut ha, 1, head("opaque-1")),
        Admission::Paused
    );
    assert!(
        ha.before_write.is_none() && ha.before_create.is_none(),
        "the other worker acted in between"
    );
    let (wb, hb) = &mut *b.borrow_mut();
    wb.on_wake(hb);
    a.on_wake(&mut ha);
    // Whichever worker sent the call gets the answer; both requests are decided by it.
    let reply = ok(json!({"email": "bob@example.com"}));
    if ha.calls.is_empty() {
        answer(wb, hb, reply);
    } else {
        answer(&mut a, &mut ha, reply);
    }
    tick_for(&mut a, &mut ha, TICK_MS);
    tick_for(wb, hb, TICK_MS);
    assert_eq!(outcome(ha.decision_for(1)), Ok("bob@example.com".into()));
    assert_eq!(outcome(hb.decision_for(7)), Ok("bob@example.com".into()));
    ha.sent.len() + hb.sent.len()
}

#[test]
fn two_workers_racing_for_a_slot_never_used_make_one_call() {
    assert_eq!(
        two_workers_race_for_a_new_slot(false),
        1,
        "the other claimed between this read and this claim"
    );
    assert_eq!(
        two_workers_race_for_a_new_slot(true),
        1,
        "the other claimed between this read and this creating the slot"
    );
}

#[test]
fn a_client_reset_mid_lookup_leaves_the_other_waiter_its_answer() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    w.on_request(&mut h, 2, head("opaque-1"));
    // Client 1 goes away.
    h.gone.insert(1);
    w.on_request_done(1);
    tick_for(&mut w, &mut h, 300);
    answer(&mut w, &mut h, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(h.decision_for(2)), Ok("bob@example.com".into()));
    assert_eq!(h.decision_for(1), None);
    assert_eq!(h.sent.len(), 1);
    assert_eq!((w.calls_in_flight(), w.paused()), (0, 0));
    assert_eq!(h.gauges.get(CALLS_IN_FLIGHT), Some(&0));
}

#[test]
fn a_call_never_answered_is_given_up_its_waiters_get_503_at_once_and_the_next_request_asks_again() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    let (lost, _) = h.next_call().unwrap();
    h.forget(lost); // The host dropped the call without a word.
    w.on_request(&mut h, 2, head("opaque-1"));
    tick_for(
        &mut w,
        &mut h,
        (TIMEOUT_MS + CALL_MARGIN_MS) as i64 - 2 * TICK_MS,
    );
    assert!(
        h.resumed.is_empty(),
        "answered before the call was given up"
    );
    tick_for(&mut w, &mut h, 2 * TICK_MS);
    assert_eq!(outcome(h.decision_for(1)), Err(503));
    assert_eq!(outcome(h.decision_for(2)), Err(503));
    assert_eq!(w.calls_in_flight(), 0);
    assert_eq!(h.counter("calls_expired.ui"), 1);
    assert_eq!(h.gauges.get(CALLS_IN_FLIGHT), Some(&0));
    // A late answer to the given-up call is not read.
    assert_eq!(w.reply_limit(lost), None);
    w.on_call_reply(&mut h, lost, ok(json!({"email": "mallory@example.com"})));
    // The next request makes a new call, and its answer counts.
    assert_eq!(w.on_request(&mut h, 3, head("opaque-1")), Admission::Paused);
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 2);
    answer(&mut w, &mut h, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(h.decision_for(3)), Ok("bob@example.com".into()));
}

#[test]
fn a_provider_slower_than_the_timeout_gets_its_waiters_503_when_the_host_times_the_call_out() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    w.on_request(&mut h, 2, head("opaque-1"));
    tick_for(&mut w, &mut h, TIMEOUT_MS as i64);
    // Envoy's timeout: a reply without a status.
    answer(&mut w, &mut h, no_answer());
    assert_eq!(outcome(h.decision_for(1)), Err(503));
    assert_eq!(outcome(h.decision_for(2)), Err(503));
    assert_eq!(w.paused(), 0, "nobody waits for a deadline");
}

#[test]
fn a_lease_left_by_a_worker_that_died_lets_the_waiter_ask_in_time() {
    let mut a = worker(&userinfo_config());
    let mut ha = host();
    let mut hb = ha.sharing();
    a.on_request(&mut ha, 1, head("opaque-1"));
    a.on_tick(&mut ha);
    drop(a); // Its VM is gone, with its call; the slot stays pending.
    let mut b = worker(&userinfo_config());
    let started = hb.now.unwrap();
    assert_eq!(
        b.on_request(&mut hb, 7, head("opaque-1")),
        Admission::Paused
    );
    while hb.sent.is_empty() && hb.now.unwrap().millis_since(started) < 3 * TIMEOUT_MS {
        tick_for(&mut b, &mut hb, TICK_MS);
    }
    assert_eq!(
        hb.sent.len(),
        1,
        "the waiter asks once the dead worker's lease ends"
    );
    let asked_after = hb.now.unwrap().millis_since(started);
    assert!(
        asked_after <= TIMEOUT_MS + CALL_MARGIN_MS + TICK_MS as u64,
        "asked after {asked_after} ms"
    );
    tick_for(&mut b, &mut hb, TIMEOUT_MS as i64 - 100);
    answer(&mut b, &mut hb, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(hb.decision_for(7)), Ok("bob@example.com".into()));
}

#[test]
fn a_clock_that_jumps_back_neither_keeps_a_lost_call_forever_nor_a_waiter() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    let (lost, _) = h.next_call().unwrap();
    h.forget(lost);
    h.advance(-3_600_000);
    tick_for(
        &mut w,
        &mut h,
        (TIMEOUT_MS + CALL_MARGIN_MS) as i64 + 2 * TICK_MS,
    );
    assert_eq!(
        outcome(h.decision_for(1)),
        Err(503),
        "the lost call was given up counted from the jump"
    );
    assert_eq!(w.calls_in_flight(), 0);
}

#[test]
fn a_clock_that_jumps_forward_answers_waiters_at_once_and_the_next_request_asks_again() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    h.advance(3_600_000);
    w.on_tick(&mut h);
    assert_eq!(outcome(h.decision_for(1)), Err(503));
    assert_eq!(w.calls_in_flight(), 0);
    w.on_request(&mut h, 2, head("opaque-1"));
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 2);
    answer(&mut w, &mut h, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(h.decision_for(2)), Ok("bob@example.com".into()));
}

#[test]
fn a_kid_refresh_whose_requester_resets_still_serves_the_next_request() {
    let old = SigningKey::rs256();
    let new = SigningKey::rs256_rotated();
    let mut h = host();
    let mut w = jwt_worker_with(&mut h, &old);
    let token = mint(&new, &claims("carol"));
    assert_eq!(w.on_request(&mut h, 1, head(&token)), Admission::Paused);
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 2, "the unknown kid asks for the JWKS again");
    h.gone.insert(1);
    w.on_request_done(1);
    assert_eq!(w.on_request(&mut h, 2, head(&token)), Admission::Paused);
    tick_for(&mut w, &mut h, 300);
    answer(&mut w, &mut h, ok(jwks_of(&[&old, &new])));
    assert_eq!(outcome(h.decision_for(2)), Ok("carol".into()));
    assert_eq!(h.sent.len(), 2, "one refresh for both requests");
}

#[test]
fn a_call_that_cannot_be_sent_is_answered_503_on_the_same_tick() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    h.refuse_dispatch = true;
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    assert_eq!(outcome(h.decision_for(1)), Err(503));
    assert_eq!(w.calls_in_flight(), 0);
}

#[test]
fn compare_and_swap_mismatches_only_delay_the_claim() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    h.cas_mismatches = 3;
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 1);
    answer(&mut w, &mut h, ok(json!({"email": "bob@example.com"})));
    assert_eq!(outcome(h.decision_for(1)), Ok("bob@example.com".into()));
}

#[test]
fn a_host_without_a_clock_gets_a_decision_not_a_wait() {
    let mut w = worker(&userinfo_config());
    let mut h = FakeHost::default();
    assert!(
        matches!(w.on_request(&mut h, 1, head("opaque-1")), Admission::Decided(v) if v.decision.status() == 503)
    );
    assert!(!w.on_tick(&mut h));
}

// Moved from tests/flow.rs, where they re-implemented the worker's lease and adopt protocol.

#[test]
fn unknown_kid_waits_for_one_refresh_then_is_refused() {
    let key = SigningKey::rs256();
    let mut h = host();
    let mut w = jwt_worker_with(&mut h, &key);
    let token = mint(&SigningKey::rs256_rotated(), &claims("a"));
    assert_eq!(w.on_request(&mut h, 1, head(&token)), Admission::Paused);
    w.on_tick(&mut h);
    // The refresh happened and the provider still lacks the kid.
    answer(&mut w, &mut h, ok(jwks_of(&[&key])));
    assert_eq!(
        h.verdict_for(1).and_then(|v| v.denied().cloned()),
        Some(AuthError::UnknownKeyId)
    );
    assert_eq!(h.sent.len(), 2, "one refresh");
    // The rate limit holds: the next unknown kid is refused without a call.
    assert!(
        matches!(w.on_request(&mut h, 2, head(&token)), Admission::Decided(v) if v.denied().cloned() == Some(AuthError::UnknownKeyId))
    );
    w.on_tick(&mut h);
    assert_eq!(h.sent.len(), 2);
}

#[test]
fn unknown_kid_is_unavailable_while_the_jwks_fetch_fails() {
    let key = SigningKey::rs256();
    let mut h = host();
    let mut w = jwt_worker_with(&mut h, &key);
    let token = mint(&SigningKey::rs256_rotated(), &claims("a"));
    w.on_request(&mut h, 1, head(&token));
    w.on_tick(&mut h);
    // The refresh the kid asked for failed: the filter cannot tell a rotated key from a bad one.
    answer(&mut w, &mut h, no_answer());
    assert_eq!(
        h.verdict_for(1).and_then(|v| v.denied().cloned()),
        Some(AuthError::KeysUnavailable)
    );
    assert_eq!(outcome(h.decision_for(1)), Err(503));
    // The stale keys still decide the tokens whose kid they hold.
    assert!(
        matches!(w.on_request(&mut h, 2, head(&mint(&key, &claims("b")))), Admission::Decided(v) if v.denied().is_none())
    );
}

#[test]
fn unknown_kid_is_unavailable_when_the_wait_ends_before_the_refresh() {
    let key = SigningKey::rs256();
    let mut h = host();
    let mut w = jwt_worker_with(&mut h, &key);
    w.on_request(
        &mut h,
        1,
        head(&mint(&SigningKey::rs256_rotated(), &claims("a"))),
    );
    w.on_tick(&mut h);
    tick_for(&mut w, &mut h, TIMEOUT_MS as i64);
    assert_eq!(
        h.verdict_for(1).and_then(|v| v.denied().cloned()),
        Some(AuthError::KeysUnavailable)
    );
}

#[test]
fn a_basic_password_lookup_sends_the_token_in_its_second_step_too() {
    let config = json!({
        "realm": "jira", "default_auth": "required", "basic": "api_tokens",
        "providers": [{"name": "fb", "preset": "facebook", "client_id": "app-1", "client_secret": "app-s3cret", "timeout_ms": TIMEOUT_MS}]
    });
    let mut w = worker(&config);
    let mut h = host();
    let token = "EAAsecondstep123";
    let basic = format!("Basic {}", base64_encode(&format!("alice:{token}")));
    let request = RequestHead {
        method: "GET".into(),
        path: "/rest/api/2/myself".into(),
        authorization: Some(basic),
        cors_headers: false,
        form_body: false,
    };
    assert_eq!(w.on_request(&mut h, 1, request), Admission::Paused);
    w.on_tick(&mut h);
    answer(
        &mut w,
        &mut h,
        ok(json!({"data": {"is_valid": true, "app_id": "app-1"}})),
    );
    let second = h.sent.last().unwrap();
    let authorization = second
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        authorization,
        Some(format!("Bearer {token}").as_str()),
        "the second step asks about the same token"
    );
    answer(
        &mut w,
        &mut h,
        ok(json!({"id": "1", "email": "alice@example.com"})),
    );
    assert_eq!(outcome(h.decision_for(1)), Ok("alice@example.com".into()));
}

fn base64_encode(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn a_worker_shutting_down_takes_its_calls_off_the_gauge() {
    let mut w = worker(&userinfo_config());
    let mut h = host();
    w.on_request(&mut h, 1, head("opaque-1"));
    w.on_request(&mut h, 2, head("opaque-2"));
    w.on_tick(&mut h);
    assert_eq!(h.gauges.get(CALLS_IN_FLIGHT), Some(&2));
    w.on_shutdown(&mut h);
    assert_eq!(h.gauges.get(CALLS_IN_FLIGHT), Some(&0));
}

#[test]
fn each_request_publishes_its_decision_once_and_a_resumed_one_only_after_resume() {
    let key = SigningKey::rs256();
    let mut w = worker(&jwt_config());
    let mut h = host();
    let token = mint(&key, &claims("alice"));
    // Waits for the keys: nothing published yet.
    assert_eq!(w.on_request(&mut h, 1, head(&token)), Admission::Paused);
    w.on_request(&mut h, 2, head(&token));
    h.gone.insert(2); // Its client goes away: resumed never, published never.
    assert!(h.published.is_empty());
    w.on_tick(&mut h);
    answer(&mut w, &mut h, ok(jwks_of(&[&key])));
    assert_eq!(outcome(h.decision_for(1)), Ok("alice".into()));
    let audit = h.published_for(1).expect("request 1 published").to_string();
    assert!(
        audit.starts_with("outcome=allow user=alice provider=corp token="),
        "{audit}"
    );
    assert_eq!(h.published_for(2), None);
    // Decided at once: published at once, with the same fingerprint.
    assert!(matches!(
        w.on_request(&mut h, 3, head(&token)),
        Admission::Decided(_)
    ));
    assert_eq!(h.published_for(3), Some(audit.as_str()));
    assert!(matches!(
        w.on_request(&mut h, 4, head("not-a-token")),
        Admission::Decided(_)
    ));
    let refused = h.published_for(4).unwrap();
    assert!(
        refused.starts_with("outcome=deny status=401 reason="),
        "{refused}"
    );
    assert_eq!(h.published.len(), 3, "{:?}", h.published);
    assert!(h.published.iter().all(|(_, a)| !a.contains(&token)));
}

/// A request whose rule is `auth: none` (or that a CORS preflight or a refused path decides)
/// is decided from its method and path: the worker neither asks the host for its credential
/// nor reads the clock, and the identity headers are still stripped.
#[test]
fn a_request_its_path_decides_reads_no_credential_and_no_clock() {
    let mut config = jwt_config();
    config["rules"] = json!([{"path_prefix": "/status", "auth": "none"}]);
    config["forward"] = json!({"provider_header": "x-forwarded-auth-provider"});
    let mut w = worker(&config);
    let mut h = host();
    h.authorization = Some("Bearer not-read".into());
    let passes = |w: &mut Worker, h: &mut FakeHost, method: &str, path: &str| {
        let request = RequestHead {
            method: method.into(),
            path: path.into(),
            authorization: None,
            cors_headers: method == "OPTIONS",
            form_body: false,
        };
        let Admission::Decided(v) = w.on_request(h, 1, request) else {
            panic!("decided at once");
        };
        v
    };
    let clock_reads = h.clock_reads.get();
    let v = passes(&mut w, &mut h, "GET", "/status/ok");
    assert_eq!(v.passed(), Some("auth_none"));
    let Decision::Continue { remove, set } = &v.decision else {
        panic!("passes");
    };
    assert!(set.is_empty());
    for name in ["x-forwarded-user", "x-forwarded-auth-provider"] {
        assert!(remove.iter().any(|r| r == name), "{name} is stripped");
    }
    assert_eq!(
        passes(&mut w, &mut h, "OPTIONS", "/rest/x").passed(),
        Some("cors_preflight")
    );
    assert_eq!(
        passes(&mut w, &mut h, "GET", "/rest/a%2fb")
            .decision
            .status(),
        400
    );
    assert_eq!(h.authorization_reads, 0);
    assert_eq!(h.clock_reads.get(), clock_reads);
    // A rule that needs a credential reads it from the host, once.
    let v = passes(&mut w, &mut h, "GET", "/rest/x");
    assert!(v.denied().is_some());
    assert_eq!(h.authorization_reads, 1);
    assert!(h.clock_reads.get() > clock_reads);
}

/// The credential the host gives decides the request as one the head carried would.
#[test]
fn a_credential_read_from_the_host_decides_as_one_in_the_head() {
    let key = SigningKey::rs256();
    let token = mint(&key, &claims("alice"));
    let mut h = host();
    let mut w = jwt_worker_with(&mut h, &key);
    h.authorization = Some(format!("Bearer {token}"));
    let mut request = head("unused");
    request.authorization = None;
    let Admission::Decided(v) = w.on_request(&mut h, 1, request) else {
        panic!("decided at once");
    };
    assert_eq!(outcome(Some(&v.decision)), Ok("alice".into()));
    assert_eq!(h.authorization_reads, 1);
    // A head that carries its credential is not read again.
    let Admission::Decided(v) = w.on_request(&mut h, 2, head(&token)) else {
        panic!("decided at once");
    };
    assert_eq!(outcome(Some(&v.decision)), Ok("alice".into()));
    assert_eq!(h.authorization_reads, 1);
}
