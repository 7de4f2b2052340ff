//! Opaque tokens through the real Envoy and the real filter: userinfo and RFC 7662
//! introspection providers, the presets' quirks, the shared result cache and request coalescing
//! (SPEC.md sections 1 step 5, 2, 5 and 6).
//!
//! Each test starts its own echo upstream, simulated provider (`support::providers`) and Envoy
//! on free 127.0.0.1 ports, states the filter configuration it needs, and stops everything when
//! it ends. The `smoke_*` tests check the simulator alone, without Envoy or the filter. Needs
//! Envoy (`make envoy`) and the filter (`make build`); `make test` does both.
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::providers::{self, Answer, FakeProvider, Recorded};
use support::tokens::{self, bearer, now, valid_claims};
use support::*;

/// The header the filter sets to the caller's username in every test configuration.
const USERNAME_HEADER: &str = "x-forwarded-user";
/// Every request in these tests goes here; `/rest/` requires a credential.
const API_PATH: &str = "/rest/api/2/myself";
/// Userinfo and introspection endpoints of the simulated provider.
const USERINFO: &str = "/userinfo";
const INTROSPECT: &str = "/introspect";
/// The introspection client the filter authenticates as.
const CLIENT_ID: &str = "jira-filter";
const CLIENT_SECRET: &str = "s3cret-filter";

// ---------------------------------------------------------------------------------------------
// The stack.

/// A server the filter's `idp` cluster can point at.
trait Idp {
    fn port(&self) -> u16;
    fn authority(&self) -> String;
}

impl Idp for FakeProvider {
    fn port(&self) -> u16 {
        FakeProvider::port(self)
    }
    fn authority(&self) -> String {
        FakeProvider::authority(self)
    }
}

impl Idp for JwksServer {
    fn port(&self) -> u16 {
        JwksServer::port(self)
    }
    fn authority(&self) -> String {
        JwksServer::authority(self)
    }
}

/// Realm `jira`, `providers` as given, `/status` open, `/rest/` and everything else requiring a
/// credential, all provider calls to the `idp` cluster.
fn filter_config(idp: &impl Idp, providers: Value) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "required",
        "providers": providers,
        "rules": [
            { "path_prefix": "/status", "auth": "none" },
            { "path_prefix": "/rest/", "auth": "required" },
        ],
        "forward": { "username_header": USERNAME_HEADER },
        "clusters": { idp.authority(): IDP_CLUSTER },
    })
}

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack<P: Idp> {
    envoy: Envoy,
    idp: P,
    /// Never read: held so the upstream lives as long as the stack.
    _echo: EchoUpstream,
}

impl<P: Idp> Stack<P> {
    fn start(idp: P, providers: Value) -> Self {
        Self::start_adjusted(idp, providers, |_| {})
    }

    /// Like `start`, with `adjust` changing the whole filter configuration first.
    fn start_adjusted(idp: P, providers: Value, adjust: impl FnOnce(&mut Value)) -> Self {
        let echo = EchoUpstream::start();
        let mut config = filter_config(&idp, providers);
        adjust(&mut config);
        let envoy =
            Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config));
        Stack {
            envoy,
            idp,
            _echo: echo,
        }
    }

    /// `GET /rest/api/2/myself` with `Authorization: Bearer <token>`.
    fn get_with_token(&self, token: &str) -> Reply {
        send(
            "GET",
            &self.envoy.url(API_PATH),
            &[("authorization", &bearer(token))],
        )
    }
}

/// A `mode: userinfo` provider named `name` whose endpoint is `path` on `fake`.
fn userinfo_provider(name: &str, fake: &FakeProvider, path: &str) -> Value {
    json!({
        "name": name,
        "mode": "userinfo",
        "userinfo_uri": fake.url(path),
        "timeout_ms": 2000,
    })
}

/// A `mode: introspection` provider at `/introspect` on `fake`, with client credentials.
fn introspection_provider(fake: &FakeProvider) -> Value {
    json!({
        "name": "introspect",
        "mode": "introspection",
        "introspection_uri": fake.url(INTROSPECT),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "timeout_ms": 2000,
    })
}

/// An RFC 7662 answer for an active token of `username`, valid for an hour.
fn active(username: &str) -> Value {
    json!({
        "active": true,
        "username": username,
        "sub": format!("{username}-subject-id"),
        "client_id": CLIENT_ID,
        "scope": "read write",
        "exp": now() + 3600,
        "iat": now(),
    })
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

// ---------------------------------------------------------------------------------------------
// Assertions.

/// The RFC 6750 challenge of the reply: its `WWW-Authenticate` value for the Bearer scheme.
fn bearer_challenge(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.clone())
        .find(|value| value.starts_with("Bearer "))
        .unwrap_or_else(|| panic!("no Bearer challenge in {reply:?}"))
}

/// 401 for a token that was sent: challenge and JSON body both say `invalid_token`, and
/// `error_description` is `why` when given.
fn assert_invalid_token(reply: &Reply, why: Option<&str>) {
    assert_eq!(
        reply.status, 401,
        "expected 401 invalid_token, got {reply:?}"
    );
    let challenge = bearer_challenge(reply);
    assert!(
        challenge.starts_with(r#"Bearer realm="jira""#),
        "challenge names the realm: {challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge says invalid_token: {challenge}"
    );
    assert!(
        challenge.contains("error_description=\""),
        "challenge says why: {challenge}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "401 body is JSON: {reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token", "body: {}", reply.body);
    assert!(
        body["error_description"].is_string(),
        "body: {}",
        reply.body
    );
    if let Some(why) = why {
        assert!(
            challenge.contains(&format!(r#"error_description="{why}""#)),
            "challenge says {why:?}: {challenge}"
        );
        assert_eq!(body["error_description"], why, "body: {}", reply.body);
    }
}

/// 503 with `Retry-After`: the provider could not decide, and the filter failed closed.
fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "expected 503, got {reply:?}");
    assert!(
        reply.header("retry-after").is_some(),
        "503 says when to retry: {reply:?}"
    );
}

/// The request reached the upstream as `username`, without the token.
fn assert_forwarded_as(reply: &Reply, username: &str) {
    let seen = reply.upstream_headers();
    assert_eq!(
        seen.get(USERNAME_HEADER).map(String::as_str),
        Some(username),
        "upstream headers: {seen:?}"
    );
    assert!(
        !seen.contains_key("authorization"),
        "authorization removed by default: {seen:?}"
    );
}

/// Checks `done` every 100 ms until it holds (true) or `limit` has passed (false).
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `count` requests with `token` at once (released together by a barrier, each on its
/// own connection) and returns how many got each status; a transport failure counts as status 0
/// and is printed.
fn burst(stack: &Stack<FakeProvider>, token: &str, count: usize) -> BTreeMap<u16, usize> {
    let url = stack.envoy.url(API_PATH);
    let authorization = bearer(token);
    let start = Barrier::new(count);
    let outcomes: Vec<Result<u16, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    support::try_send("GET", &url, &[("authorization", &authorization)])
                        .map(|reply| reply.status)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    let mut counts = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in outcomes {
        let status = outcome.unwrap_or_else(|e| {
            *failures.entry(e).or_insert(0) += 1;
            0
        });
        *counts.entry(status).or_insert(0) += 1;
    }
    for (failure, times) in failures {
        println!("burst: {times} transport failure(s): {failure}");
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// The simulator itself: these pass without Envoy and without the filter.

#[test]
fn smoke_fake_provider_answers_a_fixed_route_and_records_the_request() {
    let fake = FakeProvider::start();
    fake.reply("POST", "/introspect", Answer::ok(json!({ "active": true })));

    let reply = support::client::try_send_body(
        "POST",
        &fake.url("/introspect?x=1"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &basic("id", "secret")),
            ("X-Extra", "A"),
        ],
        Some(b"token=abc%7Cdef&token_type_hint=access_token"),
    )
    .unwrap();

    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["active"], true);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    let seen = fake.only_request_to("/introspect");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/introspect?x=1");
    assert_eq!(seen.query_param("x").as_deref(), Some("1"));
    assert_eq!(seen.header("x-extra"), Some("A"), "names lowercased");
    assert_eq!(
        seen.basic_credentials(),
        Some(("id".to_string(), "secret".to_string()))
    );
    assert_eq!(seen.form_field("token").as_deref(), Some("abc|def"));
    assert_eq!(
        seen.form_field("token_type_hint").as_deref(),
        Some("access_token")
    );
    assert_eq!(fake.calls("/introspect"), 1);
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn smoke_fake_provider_answers_by_bearer_token_and_by_form_token() {
    let fake = FakeProvider::start();
    fake.reply_by_bearer(
        "GET",
        USERINFO,
        [
            ("tok-alice", Answer::ok(json!({ "sub": "alice" }))),
            ("tok-gone", Answer::status(401)),
        ],
        Answer::status(403),
    );
    fake.reply_by_form_token(
        "POST",
        INTROSPECT,
        [("tok-alice", Answer::ok(active("alice")))],
        Answer::ok(json!({ "active": false })),
    );
    let get = |auth: &str| send("GET", &fake.url(USERINFO), &[("authorization", auth)]);
    let post = |body: &[u8]| {
        support::client::try_send_body("POST", &fake.url(INTROSPECT), &[], Some(body)).unwrap()
    };

    assert_eq!(get("Bearer tok-alice").json()["sub"], "alice");
    assert_eq!(get("bearer tok-alice").status, 200, "scheme in any case");
    assert_eq!(get("Bearer tok-gone").status, 401);
    assert_eq!(get("Bearer someone-else").status, 403);
    assert_eq!(get("Basic dTpw").status, 403, "no bearer token: otherwise");
    assert_eq!(post(b"token=tok-alice").json()["username"], "alice");
    assert_eq!(post(b"token=tok-other").json()["active"], false);
    assert_eq!(fake.calls(USERINFO), 5);
    assert_eq!(fake.calls(INTROSPECT), 2);
}

#[test]
fn smoke_fake_provider_routes_by_a_responder_and_404s_unknown_paths() {
    let fake = FakeProvider::start();
    fake.route("GET", "/echo", |r: &Recorded| {
        Answer::ok(json!({ "method": r.method, "path": r.path, "q": r.query_param("q") }))
    });
    fake.reply("GET", "/text", Answer::text(200, "<html>not json</html>"));

    let echoed = send("GET", &fake.url("/echo?q=a%20b"), &[]).json();
    let text = send("GET", &fake.url("/text"), &[]);
    let missing = send("GET", &fake.url("/nowhere"), &[]);
    let wrong_method = send("DELETE", &fake.url("/echo"), &[]);

    assert_eq!(echoed["path"], "/echo?q=a%20b");
    assert_eq!(echoed["q"], "a b");
    assert_eq!(text.body, "<html>not json</html>");
    assert_eq!(text.header("content-type"), Some("text/plain"));
    assert_eq!(missing.status, 404);
    assert_eq!(wrong_method.status, 404, "routes are per method");
    assert_eq!(
        fake.calls("/nowhere"),
        1,
        "unrouted requests are recorded too"
    );
    assert_eq!(fake.calls("/echo"), 2);
}

#[test]
fn smoke_fake_provider_route_can_be_replaced_while_running() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::status(503));
    assert_eq!(send("GET", &fake.url(USERINFO), &[]).status, 503);

    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "x" })));

    assert_eq!(send("GET", &fake.url(USERINFO), &[]).status, 200);
}

#[test]
fn smoke_fake_provider_slow_route_does_not_hold_up_other_requests() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/slow",
        Answer::ok(json!({})).after(Duration::from_secs(2)),
    );
    fake.reply("GET", "/fast", Answer::ok(json!({})));
    let started = Instant::now();

    std::thread::scope(|scope| {
        let slow = scope.spawn(|| send("GET", &fake.url("/slow"), &[]));
        assert!(
            wait_until(Duration::from_secs(2), || fake.calls("/slow") == 1),
            "slow request arrived"
        );
        let fast = send("GET", &fake.url("/fast"), &[]);
        assert_eq!(fast.status, 200);
        assert!(
            !slow.is_finished(),
            "fast answered while slow still waits ({:?})",
            started.elapsed()
        );
        assert_eq!(slow.join().unwrap().status, 200);
    });
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "slow answer is delayed"
    );
}

#[test]
fn smoke_fake_provider_records_concurrent_requests_exactly() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "x" })).after(Duration::from_millis(300)),
    );
    let url = fake.url(USERINFO);
    let started = Instant::now();

    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..40)
            .map(|n| {
                let url = &url;
                scope.spawn(move || {
                    send("GET", url, &[("authorization", &bearer(&format!("t{n}")))]).status
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(fake.calls(USERINFO), 40);
    let mut tokens: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.bearer_token().map(str::to_string))
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 40, "every request recorded once");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in parallel: {:?}",
        started.elapsed()
    );
}

#[test]
fn smoke_fake_provider_stops_on_drop_even_while_an_answer_is_delayed() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/slow",
        Answer::ok(json!({})).after(Duration::from_secs(20)),
    );
    let url = fake.url("/slow");
    let waiting = std::thread::spawn({
        let url = url.clone();
        move || try_send("GET", &url, &[])
    });
    assert!(wait_until(Duration::from_secs(2), || fake.calls("/slow") == 1));
    let started = Instant::now();

    drop(fake);

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop does not wait out the delay: {:?}",
        started.elapsed()
    );
    let _ = waiting.join();
    assert!(
        try_send("GET", &url, &[]).is_err(),
        "nothing listens after drop"
    );
}

#[test]
fn smoke_fake_provider_serves_a_jwks_that_verifies_its_tokens() {
    use jwt_simple::prelude::*;
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    let token = tokens::mint(&key, &valid_claims(&fake.issuer(), "alice"));

    let jwks = send("GET", &fake.jwks_uri(), &[]).json();

    let jwk = jwks["keys"][0].to_string();
    let claims = RS256PublicKey::from_jwk(&jwk)
        .and_then(|k| k.verify_token::<serde_json::Map<String, Value>>(&token, None))
        .unwrap();
    assert_eq!(claims.issuer, Some(fake.issuer()));
    assert_eq!(claims.custom["preferred_username"], "alice");
}

#[test]
fn smoke_header_field_is_added_to_a_token_without_touching_payload_or_signature() {
    let key = SigningKey::rs256();
    let token = tokens::mint(&key, &valid_claims("https://issuer.test", "alice"));

    let graph = providers::with_header_field(&token, "nonce", "n0nce-value");

    let header = providers::jws_header(&graph);
    assert_eq!(header["nonce"], "n0nce-value");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key.kid);
    let tail = |t: &str| t.split_once('.').unwrap().1.to_string();
    assert_eq!(
        tail(&graph),
        tail(&token),
        "payload and signature unchanged"
    );
    assert_ne!(graph, token);
}

// ---------------------------------------------------------------------------------------------
// Userinfo providers (SPEC sections 1, 5).

#[test]
fn opaque_token_accepted_by_userinfo_forwards_the_username() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "s-1", "preferred_username": "alice" })),
    );
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-alice");

    assert_forwarded_as(&reply, "alice");
    assert_eq!(stack.idp.calls(USERINFO), 1);
}

#[test]
fn userinfo_call_carries_the_token_json_accept_and_the_filter_user_agent() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-alice");

    assert_eq!(reply.status, 200, "{reply:?}");
    let call = stack.idp.only_request_to(USERINFO);
    assert_eq!(call.method, "GET");
    assert_eq!(call.path, USERINFO);
    assert_eq!(
        call.header("authorization"),
        Some("Bearer opaque-token-alice")
    );
    assert_eq!(call.header("accept"), Some("application/json"));
    assert_eq!(
        call.header("user-agent"),
        Some(format!("atlassian-rest-auth/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
}

#[test]
fn username_claim_reaches_into_userinfo_json_by_dotted_path() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "s-1", "profile": { "accounts": ["", "jdoe"] } })),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["username_claim"] = json!(["profile.login", "profile.accounts.1", "sub"]);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-jdoe");

    assert_forwarded_as(&reply, "jdoe");
}

#[test]
fn userinfo_without_any_username_claim_is_refused() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "name": "No Username" })),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["username_claim"] = json!(["preferred_username", "sub"]);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-nobody");

    assert_invalid_token(&reply, None);
}

#[test]
fn provider_refusing_the_token_with_401_or_403_gives_invalid_token() {
    let fake = FakeProvider::start();
    fake.reply_by_bearer(
        "GET",
        USERINFO,
        [
            ("refused-401", Answer::status(401)),
            ("refused-403", Answer::status(403)),
        ],
        Answer::ok(json!({ "sub": "unexpected" })),
    );
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    for token in ["refused-401", "refused-403"] {
        let reply = stack.get_with_token(token);

        assert_invalid_token(&reply, None);
    }
    assert_eq!(stack.idp.calls(USERINFO), 2);
}

#[test]
fn provider_answering_5xx_gives_503_with_retry_after() {
    let fake = FakeProvider::start();
    fake.reply_by_bearer(
        "GET",
        USERINFO,
        [
            ("broken-500", Answer::status(500)),
            ("broken-502", Answer::status(502)),
            ("broken-503", Answer::status(503)),
        ],
        Answer::ok(json!({ "sub": "unexpected" })),
    );
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    for token in ["broken-500", "broken-502", "broken-503"] {
        let reply = stack.get_with_token(token);

        assert_unavailable(&reply);
    }
}

#[test]
fn provider_slower_than_timeout_gives_503_within_the_timeout() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "too-late" })).after(Duration::from_secs(5)),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["timeout_ms"] = json!(1000);
    let stack = Stack::start(fake, json!([provider]));
    let started = Instant::now();

    let reply = stack.get_with_token("opaque-token-slow");

    assert_unavailable(&reply);
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "answered after {:?}, not bounded by timeout_ms",
        started.elapsed()
    );
}

#[test]
fn unparsable_userinfo_body_gives_503() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::text(200, "<html>maintenance</html>"),
    );
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-html");

    assert_unavailable(&reply);
}

// ---------------------------------------------------------------------------------------------
// Which provider an opaque token goes to (SPEC section 1 step 5).

#[test]
fn opaque_token_goes_only_to_the_first_provider_whose_prefix_matches() {
    let fake = FakeProvider::start();
    for (path, user) in [
        ("/a/userinfo", "from-a"),
        ("/b/userinfo", "from-b"),
        ("/c/userinfo", "from-c"),
    ] {
        fake.reply("GET", path, Answer::ok(json!({ "sub": user })));
    }
    let mut a = userinfo_provider("a", &fake, "/a/userinfo");
    a["token_prefixes"] = json!(["aaa_"]);
    let mut b = userinfo_provider("b", &fake, "/b/userinfo");
    b["token_prefixes"] = json!(["zzz_", "bbb_"]);
    let c = userinfo_provider("c", &fake, "/c/userinfo");
    let stack = Stack::start(fake, json!([a, b, c]));

    let reply = stack.get_with_token("bbb_opaque123");

    assert_forwarded_as(&reply, "from-b");
    let calls = ["/a/userinfo", "/b/userinfo", "/c/userinfo"].map(|p| stack.idp.calls(p));
    assert_eq!(calls, [0, 1, 0], "calls to a, b, c");
}

#[test]
fn opaque_token_refused_by_its_provider_is_never_tried_at_another() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/a/userinfo", Answer::status(401));
    fake.reply("GET", "/b/userinfo", Answer::ok(json!({ "sub": "from-b" })));
    let a = userinfo_provider("a", &fake, "/a/userinfo");
    let b = userinfo_provider("b", &fake, "/b/userinfo");
    let stack = Stack::start(fake, json!([a, b]));

    let reply = stack.get_with_token("opaque-for-anyone");

    assert_invalid_token(&reply, None);
    assert_eq!(stack.idp.calls("/a/userinfo"), 1);
    assert_eq!(
        stack.idp.calls("/b/userinfo"),
        0,
        "never sent to a second provider"
    );
}

#[test]
fn opaque_token_matching_no_prefix_is_refused_without_calling_any_provider() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "unexpected" })));
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["token_prefixes"] = json!(["aaa_"]);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("zzz_opaque123");

    assert_invalid_token(&reply, Some("no provider accepts this token"));
    assert!(
        stack.idp.requests().is_empty(),
        "no provider call: {:#?}",
        stack.idp.requests()
    );
}

#[test]
fn basic_password_a_bearer_token_cannot_hold_is_malformed_without_a_provider_call() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "unexpected" })));
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["token_prefixes"] = json!(["glpat-"]);
    let stack = Stack::start_adjusted(fake, json!([provider]), |c| {
        c["basic"] = json!("api_tokens")
    });

    for password in [
        "glpat-with space",
        "glpat-quote\"d",
        "glpat-ctl\u{1}x",
        "glpat-nl\nx",
        "glpat-é",
    ] {
        let authorization = basic("alice", password);
        let reply = send(
            "GET",
            &stack.envoy.url(API_PATH),
            &[("authorization", &authorization)],
        );

        assert_invalid_token(&reply, Some("malformed token"));
    }
    assert!(
        stack.idp.requests().is_empty(),
        "no provider call: {:#?}",
        stack.idp.requests()
    );
}

#[test]
fn only_one_space_may_separate_the_scheme_from_the_credentials() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));
    let port = stack.envoy.port();

    for authorization in [
        "Bearer\topaque-token-1",
        "Bearer  opaque-token-1",
        "Bearer \topaque-token-1",
    ] {
        let reply = support::attacks::raw_request(
            port,
            "GET",
            API_PATH,
            &[("authorization", authorization)],
        );

        assert_invalid_token(&reply, Some("malformed authorization header"));
    }
    assert!(
        stack.idp.requests().is_empty(),
        "no provider call: {:#?}",
        stack.idp.requests()
    );
    assert_forwarded_as(&stack.get_with_token("opaque-token-1"), "alice");
}

#[test]
fn rule_providers_choose_which_provider_receives_an_opaque_token() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/a/userinfo", Answer::ok(json!({ "sub": "from-a" })));
    fake.reply("GET", "/b/userinfo", Answer::ok(json!({ "sub": "from-b" })));
    let a = userinfo_provider("a", &fake, "/a/userinfo");
    let b = userinfo_provider("b", &fake, "/b/userinfo");
    let stack = Stack::start_adjusted(fake, json!([a, b]), |c| {
        c["rules"][1]["providers"] = json!(["b"]);
    });

    let reply = stack.get_with_token("opaque-for-anyone");

    assert_forwarded_as(&reply, "from-b");
    assert_eq!(
        stack.idp.calls("/a/userinfo"),
        0,
        "a is not allowed on /rest/"
    );
}

#[test]
fn jwt_only_provider_is_passed_over_for_opaque_tokens() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "from-userinfo" })),
    );
    let jwt_only = json!({ "name": "jwt", "issuer": fake.issuer(), "audiences": ["jira"], "jwks_uri": fake.jwks_uri() });
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([jwt_only, provider]));

    let reply = stack.get_with_token("opaque-token-1");

    assert_forwarded_as(&reply, "from-userinfo");
}

#[test]
fn jwt_provider_with_a_userinfo_uri_also_takes_opaque_tokens() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "s", "preferred_username": "erin" })),
    );
    let provider = json!({
        "name": "kc",
        "issuer": fake.issuer(),
        "audiences": ["jira"],
        "jwks_uri": fake.jwks_uri(),
        "userinfo_uri": fake.url(USERINFO),
        "timeout_ms": 2000,
    });
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-erin");

    assert_forwarded_as(&reply, "erin");
    assert_eq!(stack.idp.calls(USERINFO), 1);
}

#[test]
fn jwt_from_the_issuer_of_a_userinfo_provider_goes_to_its_userinfo_endpoint() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "s", "preferred_username": "dana" })),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["issuer"] = json!(fake.issuer());
    let mut claims = valid_claims(&fake.issuer(), "token-says-someone-else");
    claims.as_object_mut().unwrap().remove("sub");
    let token = tokens::mint(&key, &claims);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "dana");
    let call = stack.idp.only_request_to(USERINFO);
    assert_eq!(call.bearer_token(), Some(token.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Introspection providers (RFC 7662).

#[test]
fn introspection_call_is_a_form_post_with_the_client_credentials() {
    let fake = FakeProvider::start();
    fake.reply("POST", INTROSPECT, Answer::ok(active("alice")));
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-alice");

    assert_eq!(reply.status, 200, "{reply:?}");
    let call = stack.idp.only_request_to(INTROSPECT);
    assert_eq!(call.method, "POST");
    assert!(
        call.header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")),
        "{call:?}"
    );
    let form: BTreeMap<String, String> = call.form_pairs().into_iter().collect();
    let expected: BTreeMap<String, String> = [
        ("token", "opaque-token-alice"),
        ("token_type_hint", "access_token"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into_iter()
    .collect();
    assert_eq!(form, expected, "body: {}", call.body_text());
    assert_eq!(
        call.header("authorization"),
        Some(basic(CLIENT_ID, CLIENT_SECRET).as_str())
    );
}

#[test]
fn active_introspected_token_forwards_the_username() {
    let fake = FakeProvider::start();
    fake.reply("POST", INTROSPECT, Answer::ok(active("alice")));
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-alice");

    assert_forwarded_as(&reply, "alice");
}

#[test]
fn introspection_username_defaults_to_username_preferred_username_email_then_sub() {
    let exp = now() + 3600;
    let fake = FakeProvider::start();
    fake.reply_by_form_token(
        "POST",
        INTROSPECT,
        [
            (
                "t-username",
                Answer::ok(json!({ "active": true, "exp": exp,
                "username": "u1", "preferred_username": "p1", "email": "e1@x.test", "sub": "s1" })),
            ),
            (
                "t-preferred",
                Answer::ok(json!({ "active": true, "exp": exp,
                "preferred_username": "p2", "email": "e2@x.test", "sub": "s2" })),
            ),
            (
                "t-email",
                Answer::ok(json!({ "active": true, "exp": exp,
                "email": "e3@x.test", "sub": "s3" })),
            ),
            (
                "t-sub",
                Answer::ok(json!({ "active": true, "exp": exp, "sub": "s4" })),
            ),
        ],
        Answer::ok(json!({ "active": false })),
    );
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    for (token, username) in [
        ("t-username", "u1"),
        ("t-preferred", "p2"),
        ("t-email", "e3@x.test"),
        ("t-sub", "s4"),
    ] {
        let reply = stack.get_with_token(token);

        assert_forwarded_as(&reply, username);
    }
}

#[test]
fn inactive_introspected_token_is_refused() {
    let fake = FakeProvider::start();
    fake.reply("POST", INTROSPECT, Answer::ok(json!({ "active": false })));
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-revoked");

    assert_invalid_token(&reply, None);
}

#[test]
fn introspected_token_with_exp_in_the_past_is_refused() {
    let fake = FakeProvider::start();
    let mut answer = active("alice");
    answer["exp"] = json!(now() - 600);
    fake.reply("POST", INTROSPECT, Answer::ok(answer));
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-expired");

    assert_invalid_token(&reply, None);
}

#[test]
fn introspection_audience_matches_aud_string_aud_array_or_client_id() {
    let fake = FakeProvider::start();
    let with = |user: &str, fields: Value| {
        let mut answer = active(user);
        answer["client_id"] = json!("some-other-client");
        for (k, v) in fields.as_object().unwrap() {
            answer[k] = v.clone();
        }
        Answer::ok(answer)
    };
    fake.reply_by_form_token(
        "POST",
        INTROSPECT,
        [
            ("t-aud-string", with("u-string", json!({ "aud": "jira" }))),
            (
                "t-aud-array",
                with("u-array", json!({ "aud": ["confluence", "jira"] })),
            ),
            (
                "t-client-id",
                with("u-client", json!({ "client_id": "jira" })),
            ),
        ],
        Answer::ok(json!({ "active": false })),
    );
    let mut provider = introspection_provider(&fake);
    provider["audiences"] = json!(["jira"]);
    let stack = Stack::start(fake, json!([provider]));

    for (token, username) in [
        ("t-aud-string", "u-string"),
        ("t-aud-array", "u-array"),
        ("t-client-id", "u-client"),
    ] {
        let reply = stack.get_with_token(token);

        assert_forwarded_as(&reply, username);
    }
}

#[test]
fn introspected_token_for_another_audience_is_refused() {
    let fake = FakeProvider::start();
    let mut answer = active("alice");
    answer["aud"] = json!(["confluence", "bitbucket"]);
    answer["client_id"] = json!("some-other-client");
    fake.reply("POST", INTROSPECT, Answer::ok(answer));
    let mut provider = introspection_provider(&fake);
    provider["audiences"] = json!(["jira"]);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-elsewhere");

    assert_invalid_token(&reply, None);
}

#[test]
fn introspected_aud_must_match_even_when_client_id_is_an_audience() {
    let fake = FakeProvider::start();
    let mut answer = active("mallory");
    // Issued with the filter's audience as client, for another resource: the `aud` decides.
    answer["aud"] = json!("confluence");
    answer["client_id"] = json!("jira");
    fake.reply("POST", INTROSPECT, Answer::ok(answer));
    let mut provider = introspection_provider(&fake);
    provider["audiences"] = json!(["jira"]);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-token-for-confluence");

    assert_invalid_token(&reply, Some("audience not allowed"));
}

#[test]
fn introspected_token_type_other_than_an_access_token_is_refused() {
    let fake = FakeProvider::start();
    let typed = |user: &str, token_type: &str| {
        let mut answer = active(user);
        answer["token_type"] = json!(token_type);
        Answer::ok(answer)
    };
    fake.reply_by_form_token(
        "POST",
        INTROSPECT,
        [
            ("t-refresh", typed("u-refresh", "refresh_token")),
            ("t-id", typed("u-id", "id_token")),
            ("t-bearer", typed("u-bearer", "Bearer")),
            ("t-access", typed("u-access", "access_token")),
        ],
        Answer::ok(json!({ "active": false })),
    );
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    for token in ["t-refresh", "t-id"] {
        assert_invalid_token(&stack.get_with_token(token), Some("wrong token use"));
    }
    assert_forwarded_as(&stack.get_with_token("t-bearer"), "u-bearer");
    assert_forwarded_as(&stack.get_with_token("t-access"), "u-access");
}

#[test]
fn introspection_refusing_the_filter_credentials_is_503_and_not_cached() {
    let fake = FakeProvider::start();
    fake.reply(
        "POST",
        INTROSPECT,
        Answer::json(401, json!({ "error": "invalid_client" })),
    );
    let provider = introspection_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let first = stack.get_with_token("opaque-good-token");
    let second = stack.get_with_token("opaque-good-token");
    stack.idp.reply(
        "POST",
        INTROSPECT,
        Answer::json(403, json!({ "error": "forbidden" })),
    );
    let third = stack.get_with_token("opaque-good-token");
    stack
        .idp
        .reply("POST", INTROSPECT, Answer::ok(active("alice")));
    let recovered = stack.get_with_token("opaque-good-token");

    assert_unavailable(&first);
    assert_unavailable(&second);
    assert_unavailable(&third);
    assert_forwarded_as(&recovered, "alice");
    assert_eq!(
        stack.idp.calls(INTROSPECT),
        4,
        "every request asked: no refusal was cached"
    );
}

#[test]
fn rate_limited_provider_is_unavailable_not_a_refusal() {
    let fake = FakeProvider::start();
    let limited = Answer::json(403, json!({ "message": "API rate limit exceeded" }))
        .with_header("x-ratelimit-remaining", "0");
    fake.reply_by_bearer(
        "GET",
        USERINFO,
        [
            ("limited-403", limited),
            (
                "limited-429",
                Answer::status(429).with_header("retry-after", "30"),
            ),
            (
                "secondary-403",
                Answer::status(403).with_header("retry-after", "60"),
            ),
        ],
        Answer::ok(json!({ "sub": "unexpected" })),
    );
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    for token in ["limited-403", "limited-429", "secondary-403"] {
        assert_unavailable(&stack.get_with_token(token));
    }
    stack
        .idp
        .reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));

    // Not cached as a refusal: once the limit lifts, the same token passes.
    assert_forwarded_as(&stack.get_with_token("limited-403"), "alice");
    assert_eq!(stack.idp.calls(USERINFO), 4);
}

#[test]
fn github_rate_limit_is_unavailable_not_a_refusal() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/user",
        Answer::json(
            403,
            json!({ "message": "API rate limit exceeded for user ID 1." }),
        )
        .with_header("x-ratelimit-remaining", "0")
        .with_header("x-ratelimit-reset", "1900000000"),
    );
    let provider = github_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));
    let token = tokens::github_token("gho_", "16C7e42F292c6912E7710c838347Ae");

    assert_unavailable(&stack.get_with_token(&token));
    stack.idp.reply(
        "GET",
        "/user",
        Answer::ok(json!({ "login": "octocat", "id": 1 })),
    );

    assert_forwarded_as(&stack.get_with_token(&token), "octocat");
    assert_eq!(
        stack.idp.calls("/user"),
        2,
        "the rate limit was not cached as a refusal"
    );
}

#[test]
fn lookups_past_max_concurrent_calls_get_503_without_a_call() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "alice" })).after(Duration::from_millis(1500)),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["max_concurrent_calls"] = json!(1);
    provider["timeout_ms"] = json!(5000);
    let stack = Stack::start(fake, json!([provider]));
    let url = stack.envoy.url(API_PATH);
    let count = 6;
    let start = Barrier::new(count);

    // Six new tokens at once: each is a new lookup, at most one per Envoy worker (2) in flight.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..count)
            .map(|i| {
                let (url, start) = (&url, &start);
                scope.spawn(move || {
                    start.wait();
                    send(
                        "GET",
                        url,
                        &[("authorization", &bearer(&format!("opaque-capped-{i}")))],
                    )
                    .status
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });

    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let unavailable = statuses.iter().filter(|&&s| s == 503).count();
    println!("max_concurrent_calls 1: statuses {statuses:?}");
    assert_eq!(ok + unavailable, count, "only 200 or 503: {statuses:?}");
    assert!(
        (1..=2).contains(&ok),
        "one call per worker at most: {statuses:?}"
    );
    assert_eq!(
        stack.idp.calls(USERINFO),
        ok,
        "a refused lookup made no call"
    );
    // Stats are flushed to the admin endpoint periodically.
    assert!(
        wait_until(Duration::from_secs(10), || {
            stack
                .envoy
                .counter("wasmcustom.atlassian_rest_auth.calls_capped.ui")
                == unavailable as u64
        }),
        "every refused lookup is counted"
    );
}

// ---------------------------------------------------------------------------------------------
// Preset github.

fn github_provider(fake: &FakeProvider) -> Value {
    json!({ "name": "github", "preset": "github", "userinfo_uri": fake.url("/user"), "timeout_ms": 2000 })
}

#[test]
fn github_token_is_checked_at_the_user_endpoint_and_login_becomes_the_username() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/user",
        Answer::ok(
            json!({ "login": "octocat", "id": 583231, "email": null, "name": "The Octocat" }),
        ),
    );
    let provider = github_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let token = tokens::github_token("gho_", "aW5ZtaBn9DwXkp0L3tGqRu7NcVe1Yf");
    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "octocat");
    let call = stack.idp.only_request_to("/user");
    assert_eq!(call.method, "GET");
    assert_eq!(call.bearer_token(), Some(token.as_str()));
    assert_eq!(call.header("accept"), Some("application/vnd.github+json"));
    assert!(
        call.header("user-agent")
            .is_some_and(|ua| !ua.trim().is_empty()),
        "GitHub refuses requests without a User-Agent: {call:?}"
    );
}

#[test]
fn every_github_token_prefix_is_routed_to_github() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/user", Answer::ok(json!({ "login": "octocat" })));
    let provider = github_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let random = "aW5ZtaBn9DwXkp0L3tGqRu7NcVe1Yf";
    let checksummed = ["gho_", "ghu_", "ghp_"].map(|prefix| tokens::github_token(prefix, random));
    for token in checksummed
        .iter()
        .map(String::as_str)
        .chain(["github_pat_11ABC_def"])
    {
        let reply = stack.get_with_token(token);

        assert_forwarded_as(&reply, "octocat");
    }
    assert_eq!(stack.idp.calls("/user"), 4);
}

#[test]
fn token_without_a_github_prefix_is_never_sent_to_github() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/user", Answer::ok(json!({ "login": "octocat" })));
    let provider = github_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("ya29.not-a-github-token");

    assert_invalid_token(&reply, Some("no provider accepts this token"));
    assert!(
        stack.idp.requests().is_empty(),
        "{:#?}",
        stack.idp.requests()
    );
}

#[test]
fn github_app_check_proves_the_token_was_issued_to_this_app() {
    let fake = FakeProvider::start();
    fake.reply(
        "POST",
        "/applications/Iv1.8a61f9b3a7aba766/token",
        Answer::ok(json!({
            "id": 1, "app": { "client_id": "Iv1.8a61f9b3a7aba766" },
            "user": { "login": "octocat", "id": 1 }, "scopes": ["repo"],
        })),
    );
    fake.reply(
        "GET",
        "/user",
        Answer::ok(json!({ "login": "not-from-user-endpoint" })),
    );
    let mut provider = github_provider(&fake);
    provider["client_id"] = json!("Iv1.8a61f9b3a7aba766");
    provider["client_secret"] = json!("app-secret-1");
    let stack = Stack::start(fake, json!([provider]));

    let token = tokens::github_token("gho_", "aW5ZtaBn9DwXkp0L3tGqRu7NcVe1Yf");
    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "octocat");
    let call = stack
        .idp
        .only_request_to("/applications/Iv1.8a61f9b3a7aba766/token");
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.header("authorization"),
        Some(basic("Iv1.8a61f9b3a7aba766", "app-secret-1").as_str())
    );
    assert_eq!(
        call.body_json(),
        json!({ "access_token": token }),
        "{call:?}"
    );
    assert_eq!(stack.idp.calls("/user"), 0, "the app check replaces /user");
}

#[test]
fn github_app_check_answering_404_or_422_refuses_the_token() {
    let fake = FakeProvider::start();
    let other_app = tokens::github_token("gho_", "0therApp0f5WkX2yB7cD4fG6hJ9kA1");
    let unprocessable = tokens::github_token("gho_", "Unpr0cessab1e7cD4fG6hJ9kA1xyzQ");
    let other = other_app.clone();
    fake.route(
        "POST",
        "/applications/Iv1.app/token",
        move |r: &Recorded| match r.body_json()["access_token"].as_str() {
            Some(token) if token == other => Answer::status(404),
            _ => Answer::status(422),
        },
    );
    let mut provider = github_provider(&fake);
    provider["client_id"] = json!("Iv1.app");
    provider["client_secret"] = json!("app-secret-1");
    let stack = Stack::start(fake, json!([provider]));

    for token in [&other_app, &unprocessable] {
        let reply = stack.get_with_token(token);

        assert_invalid_token(&reply, None);
    }
    assert_eq!(stack.idp.calls("/applications/Iv1.app/token"), 2);
}

// ---------------------------------------------------------------------------------------------
// Preset slack.

fn slack_provider(fake: &FakeProvider) -> Value {
    json!({
        "name": "slack",
        "preset": "slack",
        "userinfo_uri": fake.url("/api/openid.connect.userInfo"),
        "timeout_ms": 2000,
    })
}

#[test]
fn slack_ok_true_answer_gives_the_email_as_username() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/api/openid.connect.userInfo",
        Answer::ok(json!({ "ok": true, "sub": "U0R7JM", "email": "a@b.c", "name": "A B" })),
    );
    let provider = slack_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("xoxp-1234-5678-abcdef");

    assert_forwarded_as(&reply, "a@b.c");
}

#[test]
fn slack_ok_false_with_http_200_is_refused() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/api/openid.connect.userInfo",
        Answer::ok(json!({ "ok": false, "error": "invalid_auth" })),
    );
    let provider = slack_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("xoxb-1234-5678-abcdef");

    assert_invalid_token(&reply, None);
    assert_eq!(stack.idp.calls("/api/openid.connect.userInfo"), 1);
}

// ---------------------------------------------------------------------------------------------
// Preset facebook.

const FB_APP_ID: &str = "4242424242";
const FB_APP_SECRET: &str = "fb-app-secret";

fn facebook_provider(fake: &FakeProvider) -> Value {
    json!({
        "name": "facebook",
        "preset": "facebook",
        "userinfo_uri": fake.url("/me?fields=id,name,email"),
        "timeout_ms": 2000,
    })
}

fn facebook_app_provider(fake: &FakeProvider) -> Value {
    let mut provider = facebook_provider(fake);
    provider["client_id"] = json!(FB_APP_ID);
    provider["client_secret"] = json!(FB_APP_SECRET);
    provider
}

#[test]
fn facebook_me_is_asked_for_id_name_email_and_email_becomes_the_username() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/me",
        Answer::ok(json!({ "id": "1017", "name": "Ann Lee", "email": "ann@example.com" })),
    );
    let provider = facebook_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("EAAGm0PX4ZCpsBAtoken");

    assert_forwarded_as(&reply, "ann@example.com");
    let call = stack.idp.only_request_to("/me");
    assert_eq!(
        call.query_param("fields").as_deref(),
        Some("id,name,email"),
        "{call:?}"
    );
    assert_eq!(call.bearer_token(), Some("EAAGm0PX4ZCpsBAtoken"));
    assert_eq!(
        stack.idp.calls("/debug_token"),
        0,
        "no app check without app credentials"
    );
}

#[test]
fn facebook_user_without_email_is_known_by_id() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/me",
        Answer::ok(json!({ "id": "1017", "name": "Ann Lee" })),
    );
    let provider = facebook_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("EAAGm0PX4ZCpsBAtoken");

    assert_forwarded_as(&reply, "1017");
}

#[test]
fn facebook_debug_token_proves_the_app_before_me_is_asked() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/debug_token",
        Answer::ok(json!({ "data": {
            "is_valid": true, "app_id": FB_APP_ID, "user_id": "1017", "type": "USER",
            "expires_at": now() + 3600, "scopes": ["email"],
        } })),
    );
    fake.reply(
        "GET",
        "/me",
        Answer::ok(json!({ "id": "1017", "email": "ann@example.com" })),
    );
    let provider = facebook_app_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("EAAGm0PX4ZCpsBAtoken");

    assert_forwarded_as(&reply, "ann@example.com");
    let check = stack.idp.only_request_to("/debug_token");
    assert_eq!(check.method, "GET");
    assert_eq!(
        check.query_param("input_token").as_deref(),
        Some("EAAGm0PX4ZCpsBAtoken")
    );
    assert_eq!(
        check.query_param("access_token"),
        Some(format!("{FB_APP_ID}|{FB_APP_SECRET}")),
        "{check:?}"
    );
    assert!(
        !check.query().unwrap_or_default().contains('|'),
        "the app token is URL-encoded: {}",
        check.path
    );
    let order: Vec<String> = stack
        .idp
        .requests()
        .iter()
        .map(|r| r.route_path().to_string())
        .collect();
    assert_eq!(order, ["/debug_token", "/me"], "debug_token first");
}

#[test]
fn facebook_token_invalid_or_of_another_app_is_refused_without_asking_me() {
    let fake = FakeProvider::start();
    fake.route("GET", "/debug_token", |r: &Recorded| {
        let data = match r.query_param("input_token").as_deref() {
            Some("EAAinvalid") => {
                json!({ "is_valid": false, "app_id": FB_APP_ID, "error": { "code": 190 } })
            }
            _ => json!({ "is_valid": true, "app_id": "9999999999", "user_id": "1017" }),
        };
        Answer::ok(json!({ "data": data }))
    });
    fake.reply(
        "GET",
        "/me",
        Answer::ok(json!({ "id": "1017", "email": "ann@example.com" })),
    );
    let provider = facebook_app_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    for token in ["EAAinvalid", "EAAotherapp"] {
        let reply = stack.get_with_token(token);

        assert_invalid_token(&reply, None);
    }
    assert_eq!(stack.idp.calls("/debug_token"), 2);
    assert_eq!(
        stack.idp.calls("/me"),
        0,
        "/me is not asked for a refused token"
    );
}

// ---------------------------------------------------------------------------------------------
// Presets azure_b2c and azure_ad.

#[test]
fn azure_b2c_username_is_the_first_of_emails() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(
            json!({ "emails": ["bob@contoso.com", "bob@other.test"], "name": "Bob", "sub": "x" }),
        ),
    );
    let provider = json!({
        "name": "b2c",
        "preset": "azure_b2c",
        "mode": "userinfo",
        "discovery": false,
        "userinfo_uri": fake.url(USERINFO),
        "timeout_ms": 2000,
    });
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("opaque-b2c-token");

    assert_forwarded_as(&reply, "bob@contoso.com");
}

/// An azure_ad provider served entirely by `fake`: issuer, keys and userinfo.
fn azure_ad_provider(fake: &FakeProvider) -> Value {
    json!({
        "name": "entra",
        "preset": "azure_ad",
        "issuer": fake.issuer(),
        "audiences": ["jira"],
        "jwks_uri": fake.jwks_uri(),
        "userinfo_uri": fake.url("/oidc/userinfo"),
        "timeout_ms": 2000,
    })
}

#[test]
fn azure_ad_graph_token_with_header_nonce_goes_to_userinfo() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/oidc/userinfo",
        Answer::ok(
            json!({ "sub": "OLu859SGc2Sr9ZsqbkG-QbeLgJlb41KcdiPoLYNpSFA",
            "name": "Alice", "email": "alice@contoso.com" }),
        ),
    );
    let mut claims = valid_claims(&fake.issuer(), "ignored");
    let object = claims.as_object_mut().unwrap();
    object.remove("preferred_username");
    object.insert("aud".into(), json!("00000003-0000-0000-c000-000000000000"));
    object.insert("oid".into(), json!("8c2b6f3e-0000-0000-0000-000000000000"));
    let graph = providers::with_header_field(
        &tokens::mint(&key, &claims),
        "nonce",
        "AQABAAAA-graph-nonce",
    );
    let mut provider = azure_ad_provider(&fake);
    // Graph's answer names the user only by `email`, which the preset does not trust by default.
    provider["username_claim"] = json!(["preferred_username", "upn", "email"]);
    provider["accept_graph_tokens"] = json!(true);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token(&graph);

    assert_forwarded_as(&reply, "alice@contoso.com");
    let call = stack.idp.only_request_to("/oidc/userinfo");
    assert_eq!(call.bearer_token(), Some(graph.as_str()));
}

#[test]
fn azure_ad_preset_never_takes_the_username_from_email() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/oidc/userinfo",
        Answer::ok(json!({ "sub": "pairwise-sub", "name": "Admin", "email": "admin@contoso.com" })),
    );
    // A guest whose home tenant set an unverified `email`; no `preferred_username` or `upn`.
    let mut claims = valid_claims(&fake.issuer(), "ignored");
    claims.as_object_mut().unwrap().remove("preferred_username");
    claims["email"] = json!("admin@contoso.com");
    let token = tokens::mint(&key, &claims);
    let provider = azure_ad_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token(&token);

    assert_invalid_token(&reply, Some("no username in token"));
    assert_eq!(stack.idp.calls("/oidc/userinfo"), 1);
}

#[test]
fn azure_ad_token_without_nonce_is_verified_locally_without_userinfo() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/oidc/userinfo",
        Answer::ok(json!({ "email": "unexpected@contoso.com" })),
    );
    let token = tokens::mint(&key, &valid_claims(&fake.issuer(), "alice@contoso.com"));
    let provider = azure_ad_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "alice@contoso.com");
    assert_eq!(stack.idp.calls("/oidc/userinfo"), 0);
}

// ---------------------------------------------------------------------------------------------
// Preset cognito: access tokens carry `client_id` and `token_use`, no `aud`.

const COGNITO_CLIENT: &str = "5r8n1kfc4uhd1vq0gq2sb8u9nb";

fn cognito_stack(key: &SigningKey, adjust: impl FnOnce(&mut Value)) -> Stack<JwksServer> {
    let idp = JwksServer::start(jwks_of(&[key]));
    let mut provider = json!({
        "name": "cognito",
        "preset": "cognito",
        "issuer": idp.issuer(),
        "jwks_uri": idp.jwks_uri(),
        "audiences": [COGNITO_CLIENT],
        "timeout_ms": 2000,
    });
    adjust(&mut provider);
    Stack::start(idp, json!([provider]))
}

/// A Cognito access token's claims: no `aud`; `client_id`, `token_use`, `username`.
fn cognito_access_claims(issuer: &str, username: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": format!("{username}-sub"),
        "client_id": COGNITO_CLIENT,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "username": username,
        "iat": now(),
        "auth_time": now(),
        "exp": now() + 3600,
    })
}

#[test]
fn cognito_access_token_for_the_app_client_is_accepted() {
    let key = SigningKey::rs256();
    let stack = cognito_stack(&key, |_| {});
    let token = tokens::mint(&key, &cognito_access_claims(&stack.idp.issuer(), "carol"));

    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "carol");
}

#[test]
fn cognito_id_token_is_refused_where_access_tokens_are_configured() {
    let key = SigningKey::rs256();
    let stack = cognito_stack(&key, |_| {});
    let mut claims = cognito_access_claims(&stack.idp.issuer(), "carol");
    claims["token_use"] = json!("id");

    let reply = stack.get_with_token(&tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn cognito_access_token_of_another_app_client_is_refused() {
    let key = SigningKey::rs256();
    let stack = cognito_stack(&key, |_| {});
    let mut claims = cognito_access_claims(&stack.idp.issuer(), "carol");
    claims["client_id"] = json!("another-app-client");

    let reply = stack.get_with_token(&tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn cognito_configured_for_id_tokens_accepts_an_id_token_and_refuses_an_access_token() {
    let key = SigningKey::rs256();
    let stack = cognito_stack(&key, |p| p["token_use"] = json!("id"));
    let issuer = stack.idp.issuer();
    let mut id_claims = cognito_access_claims(&issuer, "carol");
    let object = id_claims.as_object_mut().unwrap();
    object.remove("client_id");
    object.remove("scope");
    object.insert("aud".into(), json!(COGNITO_CLIENT));
    object.insert("token_use".into(), json!("id"));
    object.insert("cognito:username".into(), json!("carol"));
    object.insert("email".into(), json!("carol@example.com"));

    let id_reply = stack.get_with_token(&tokens::mint(&key, &id_claims));
    let access_reply = stack.get_with_token(&tokens::mint(
        &key,
        &cognito_access_claims(&issuer, "carol"),
    ));

    assert_eq!(id_reply.status, 200, "id token accepted: {id_reply:?}");
    assert_invalid_token(&access_reply, None);
}

// ---------------------------------------------------------------------------------------------
// Preset google: ID tokens by JWKS, opaque access tokens by userinfo.

fn google_provider(fake: &FakeProvider) -> Value {
    json!({
        "name": "google",
        "preset": "google",
        "issuer": fake.issuer(),
        "jwks_uri": fake.jwks_uri(),
        "userinfo_uri": fake.url("/v1/userinfo"),
        "audiences": ["1234-app.apps.googleusercontent.com"],
        "timeout_ms": 2000,
    })
}

#[test]
fn google_id_token_is_verified_by_jwks_without_calling_userinfo() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/v1/userinfo",
        Answer::ok(json!({ "email": "unexpected@gmail.com" })),
    );
    let mut claims = valid_claims(&fake.issuer(), "ignored");
    claims["aud"] = json!("1234-app.apps.googleusercontent.com");
    claims["email"] = json!("gus@gmail.com");
    claims["email_verified"] = json!(true);
    let token = tokens::mint(&key, &claims);
    let provider = google_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "gus@gmail.com");
    assert_eq!(stack.idp.calls("/v1/userinfo"), 0);
    assert!(stack.idp.calls("/jwks") >= 1, "keys came from the JWKS");
}

#[test]
fn google_opaque_access_token_goes_to_userinfo_and_email_becomes_the_username() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/v1/userinfo",
        Answer::ok(json!({ "sub": "1100", "email": "gus@gmail.com", "email_verified": true })),
    );
    let provider = google_provider(&fake);
    let stack = Stack::start(fake, json!([provider]));

    let reply = stack.get_with_token("ya29.xyz");

    assert_forwarded_as(&reply, "gus@gmail.com");
    assert_eq!(
        stack.idp.only_request_to("/v1/userinfo").bearer_token(),
        Some("ya29.xyz")
    );
}

// ---------------------------------------------------------------------------------------------
// The result cache (SPEC section 6).

#[test]
fn second_request_with_the_same_token_within_cache_seconds_makes_no_provider_call() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["cache_seconds"] = json!(30);
    let stack = Stack::start(fake, json!([provider]));

    let first = stack.get_with_token("opaque-cached");
    let second = stack.get_with_token("opaque-cached");

    assert_forwarded_as(&first, "alice");
    assert_forwarded_as(&second, "alice");
    assert_eq!(
        stack.idp.calls(USERINFO),
        1,
        "the second answer came from the cache"
    );
}

#[test]
fn cached_result_expires_after_cache_seconds() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["cache_seconds"] = json!(1);
    let stack = Stack::start(fake, json!([provider]));
    let first = stack.get_with_token("opaque-short-lived-cache");
    assert_forwarded_as(&first, "alice");

    std::thread::sleep(Duration::from_millis(2500));
    let later = stack.get_with_token("opaque-short-lived-cache");

    assert_forwarded_as(&later, "alice");
    assert_eq!(
        stack.idp.calls(USERINFO),
        2,
        "asked again once the entry expired"
    );
}

#[test]
fn cached_result_expires_at_the_token_exp_before_cache_seconds() {
    let fake = FakeProvider::start();
    let mut provider = introspection_provider(&fake);
    provider["cache_seconds"] = json!(60);
    provider["clock_skew_seconds"] = json!(0);
    let stack = Stack::start(fake, json!([provider]));
    // Set once Envoy is up, so that starting it does not eat into the token's lifetime.
    let exp = now() + 3;
    let mut answer = active("alice");
    answer["exp"] = json!(exp);
    stack.idp.reply("POST", INTROSPECT, Answer::ok(answer));
    let first = stack.get_with_token("opaque-expiring");
    assert_forwarded_as(&first, "alice");

    assert!(wait_until(Duration::from_secs(6), || now() > exp + 1));
    let later = stack.get_with_token("opaque-expiring");

    assert_invalid_token(&later, None);
    assert_eq!(
        stack.idp.calls(INTROSPECT),
        2,
        "the cached result ended at exp, long before cache_seconds"
    );
}

#[test]
fn refused_token_is_cached_briefly() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::status(401));
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));
    let started = Instant::now();

    let first = stack.get_with_token("opaque-refused");
    let second = stack.get_with_token("opaque-refused");

    println!("two refused requests took {:?}", started.elapsed());
    assert_invalid_token(&first, None);
    assert_invalid_token(&second, None);
    assert_eq!(stack.idp.calls(USERINFO), 1, "the refusal was cached");
}

#[test]
fn provider_failure_is_not_cached() {
    let fake = FakeProvider::start();
    fake.reply("GET", USERINFO, Answer::status(503));
    let provider = userinfo_provider("ui", &fake, USERINFO);
    let stack = Stack::start(fake, json!([provider]));

    let first = stack.get_with_token("opaque-during-outage");
    let second = stack.get_with_token("opaque-during-outage");
    stack
        .idp
        .reply("GET", USERINFO, Answer::ok(json!({ "sub": "alice" })));
    let recovered = stack.get_with_token("opaque-during-outage");

    assert_unavailable(&first);
    assert_unavailable(&second);
    assert_forwarded_as(&recovered, "alice");
    assert_eq!(
        stack.idp.calls(USERINFO),
        3,
        "every request during the outage asked"
    );
}

#[test]
fn fifty_concurrent_requests_with_a_new_token_make_one_userinfo_call() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "alice" })).after(Duration::from_millis(300)),
    );
    let mut provider = userinfo_provider("ui", &fake, USERINFO);
    provider["cache_seconds"] = json!(60);
    provider["timeout_ms"] = json!(5000);
    let stack = Stack::start(fake, json!([provider]));

    let before = stack.envoy.connections_per_worker();
    let first_round = burst(&stack, "opaque-stampede", 50);
    let calls_after_first = stack.idp.calls(USERINFO);
    let during = stack.envoy.connections_per_worker();
    let second_round = burst(&stack, "opaque-stampede", 50);
    let calls_after_second = stack.idp.calls(USERINFO);

    let per_worker = [0, 1].map(|w| during[w] - before[w]);
    println!(
        "coalescing: round 1: statuses {first_round:?}, connections per worker {per_worker:?}, \
         userinfo calls {calls_after_first}; round 2: statuses {second_round:?}, userinfo calls \
         in total {calls_after_second}"
    );
    assert_eq!(first_round, BTreeMap::from([(200, 50)]), "all 50 accepted");
    assert_eq!(calls_after_first, 1, "one call for 50 concurrent requests");
    assert_eq!(
        second_round,
        BTreeMap::from([(200, 50)]),
        "all 50 accepted again"
    );
    assert_eq!(
        calls_after_second, 1,
        "the second round came from the cache"
    );
}
