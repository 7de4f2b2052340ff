//! Calls that outlive the request that started them (issue 12), through the real Envoy and the
//! real filter: a client that gives up while the filter waits on an identity provider cancels
//! nothing, so the next client with the same token (or a token needing the same keys) gets its
//! answer when the provider answers, and the answer lands in the shared cache.
//!
//! Each test starts its own echo upstream, simulated provider and Envoy (two workers) on free
//! 127.0.0.1 ports. Client A sends a request and closes its connection after 300 ms without
//! reading; client B sends 100 ms after A; the provider answers A's call after 2 s. Needs Envoy
//! (`make envoy`) and the filter (`make build`); `make test` does both.
// clippy.toml exempts `#[test]` functions only; the helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::attacks::assert_invalid_token;
use support::client::try_send_within;
use support::envoy::IDP_CLUSTER;
use support::providers::{Answer, FakeProvider};
use support::tokens::{self, bearer, valid_claims, AUDIENCE};
use support::*;

/// The header the filter sets to the caller's username.
const USERNAME_HEADER: &str = "x-forwarded-user";
/// Every request goes here; it requires a credential.
const API_PATH: &str = "/rest/api/2/myself";
const USERINFO: &str = "/userinfo";
const JWKS: &str = "/jwks";
/// How long the provider takes over the call under test.
const PROVIDER_DELAY: Duration = Duration::from_secs(2);
/// When client A closes its connection, counted from its request.
const RESET_AFTER: Duration = Duration::from_millis(300);
/// When client B sends, counted from A's request.
const B_AFTER: Duration = Duration::from_millis(100);
/// B's answer comes within the provider's delay plus a margin for ticks and a loaded machine.
const ANSWERED_WITHIN: Duration = Duration::from_millis(3500);
/// Longer than any wait the filter imposes (2 × `timeout_ms` + 1 s = 11 s for a lookup), so a
/// request that times out here measures the filter, not the client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// The provider's `timeout_ms`: the default, which makes a lookup's deadline 11 s.
const TIMEOUT_MS: u64 = 5000;
/// The filter's gauge of outgoing calls not yet answered (per provider when suffixed).
const IN_FLIGHT: &str = "wasmcustom.atlassian_rest_auth.calls_in_flight";
/// Envoy's count of connections the client closed while a request was still active.
const CLIENT_RESETS: &str = "http.ingress.downstream_cx_destroy_remote_active_rq";

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    idp: FakeProvider,
    /// Never read: held so the upstream lives as long as the stack.
    _echo: EchoUpstream,
}

impl Stack {
    /// Envoy with the filter: realm `jira`, `provider` its only provider, on cluster `idp`.
    fn start(idp: FakeProvider, provider: Value) -> Self {
        let echo = EchoUpstream::start();
        let config = json!({
            "realm": "jira",
            "default_auth": "required",
            "providers": [provider],
            "rules": [{ "path_prefix": "/rest/", "auth": "required" }],
            "forward": { "username_header": USERNAME_HEADER },
            "clusters": { idp.authority(): IDP_CLUSTER },
        });
        let envoy =
            Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config));
        Stack {
            envoy,
            idp,
            _echo: echo,
        }
    }

    /// `GET /rest/api/2/myself` with `token`, on a fresh connection; the reply and how long it took.
    fn get(&self, token: &str) -> (Reply, Duration) {
        let started = Instant::now();
        let authorization = bearer(token);
        let reply = try_send_within(
            "GET",
            &self.envoy.url(API_PATH),
            &[("authorization", &authorization)],
            None,
            CLIENT_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "no reply within {CLIENT_TIMEOUT:?} ({:?} elapsed): {e}",
                started.elapsed()
            )
        });
        (reply, started.elapsed())
    }

    /// Sends the same request as `get`, then closes the connection after `after` without
    /// reading anything: a client that gave up.
    fn abandon(&self, token: &str, after: Duration) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.envoy.port()))
            .unwrap_or_else(|e| panic!("connect to Envoy: {e}"));
        let request = format!(
            "GET {API_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {}\r\n\r\n",
            bearer(token)
        );
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        std::thread::sleep(after);
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// The filter's calls in flight, summed over every stat Envoy shows under the gauge's name;
    /// `None` when Envoy shows no such stat.
    fn in_flight(&self) -> Option<u64> {
        let stats = self.envoy.stats_under(IN_FLIGHT);
        (!stats.is_empty()).then(|| stats.iter().map(|(_, value)| value).sum())
    }

    /// Waits (at most `limit`) for the calls in flight to be 0; what was read last.
    fn in_flight_settles(&self, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.in_flight();
            if now == Some(0) || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What client B saw while client A gave up, and the most calls in flight seen meanwhile.
struct Race {
    reply: Reply,
    waited: Duration,
    in_flight_peak: Option<u64>,
}

/// Client A sends `abandoned` and closes after `RESET_AFTER`; client B sends `waiting`
/// `B_AFTER` after A and waits for its reply. The calls in flight are sampled until the
/// provider is about to answer.
fn abandoned_while_another_waits(stack: &Stack, abandoned: &str, waiting: &str) -> Race {
    std::thread::scope(|scope| {
        let started = Instant::now();
        let a = scope.spawn(|| stack.abandon(abandoned, RESET_AFTER));
        std::thread::sleep(B_AFTER);
        let b = scope.spawn(|| stack.get(waiting));
        let mut in_flight_peak = None;
        while started.elapsed() + Duration::from_millis(300) < PROVIDER_DELAY && !b.is_finished() {
            in_flight_peak = in_flight_peak.max(stack.in_flight());
            std::thread::sleep(Duration::from_millis(100));
        }
        a.join().expect("client A");
        let (reply, waited) = b.join().expect("client B");
        Race {
            reply,
            waited,
            in_flight_peak,
        }
    })
}

/// B got 200 within `ANSWERED_WITHIN` and the upstream saw `username`.
fn assert_answered_in_time_as(race: &Race, username: &str) {
    assert_eq!(
        race.reply.status, 200,
        "B's reply after {:?}: {:?}",
        race.waited, race.reply
    );
    assert!(
        race.waited < ANSWERED_WITHIN,
        "B waited {:?} for a provider that answers in {PROVIDER_DELAY:?}",
        race.waited
    );
    let seen = race.reply.upstream_headers();
    assert_eq!(
        seen.get(USERNAME_HEADER).map(String::as_str),
        Some(username),
        "upstream headers: {seen:?}"
    );
}

/// Envoy saw client A leave mid-request (else the test proved nothing), the gauge counted the
/// call while it was out, and it is back to 0 now that every call was answered.
fn assert_reset_seen_and_in_flight_back_to_zero(stack: &Stack, race: &Race) {
    assert!(
        stack.envoy.counter(CLIENT_RESETS) >= 1,
        "Envoy saw client A close its connection mid-request"
    );
    assert!(
        matches!(race.in_flight_peak, Some(n) if n >= 1),
        "{IN_FLIGHT} counted the call while it was out: {:?}",
        race.in_flight_peak
    );
    let settled = stack.in_flight_settles(Duration::from_secs(3));
    assert_eq!(
        settled,
        Some(0),
        "{IN_FLIGHT} back to 0 once the provider answered: {:?}",
        stack.envoy.stats_under(IN_FLIGHT)
    );
}

/// A userinfo provider at `/userinfo` that knows `token` as `username` and answers after
/// `PROVIDER_DELAY`; any other token is refused at once.
fn slow_userinfo(token: &str, username: &str) -> (FakeProvider, Value) {
    let idp = FakeProvider::start();
    idp.reply_by_bearer(
        "GET",
        USERINFO,
        [(
            token,
            Answer::ok(json!({ "sub": format!("{username}-id"), "preferred_username": username }))
                .after(PROVIDER_DELAY),
        )],
        Answer::status(401),
    );
    let provider = userinfo_provider(&idp);
    (idp, provider)
}

/// Provider `ui`: userinfo at `idp`'s `/userinfo`, username `preferred_username`, answers
/// cached 300 s, the default `timeout_ms`.
fn userinfo_provider(idp: &FakeProvider) -> Value {
    json!({
        "name": "ui",
        "mode": "userinfo",
        "userinfo_uri": idp.url(USERINFO),
        "username_claim": ["preferred_username"],
        "cache_seconds": 300,
        "timeout_ms": TIMEOUT_MS,
    })
}

#[test]
fn opaque_lookup_outlives_the_client_that_started_it() {
    let token = "opaque-lifecycle-token-0000000000000000000001";
    let (idp, provider) = slow_userinfo(token, "alice");
    let stack = Stack::start(idp, provider);

    let race = abandoned_while_another_waits(&stack, token, token);

    assert_answered_in_time_as(&race, "alice");
    assert_eq!(
        stack.idp.calls(USERINFO),
        1,
        "one call for both clients: {:?}",
        stack.idp.requests()
    );
    assert_reset_seen_and_in_flight_back_to_zero(&stack, &race);
}

#[test]
fn answer_to_an_abandoned_lookup_lands_in_the_cache() {
    let token = "opaque-lifecycle-token-0000000000000000000002";
    let (idp, provider) = slow_userinfo(token, "alice");
    let stack = Stack::start(idp, provider);

    let started = Instant::now();
    stack.abandon(token, RESET_AFTER);
    assert_eq!(
        stack.idp.calls(USERINFO),
        1,
        "client A's request reached the provider"
    );
    // The provider answers at PROVIDER_DELAY; the answer is stored by then, whoever waits.
    std::thread::sleep(
        (PROVIDER_DELAY + Duration::from_millis(700)).saturating_sub(started.elapsed()),
    );
    let (reply, waited) = stack.get(token);

    assert_eq!(
        reply.status, 200,
        "a later request with the same token, after {waited:?}: {reply:?}"
    );
    assert_eq!(
        reply
            .upstream_headers()
            .get(USERNAME_HEADER)
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        stack.idp.calls(USERINFO),
        1,
        "answered from the cache, no second call: {:?}",
        stack.idp.requests()
    );
    assert!(
        waited < Duration::from_secs(1),
        "a cached answer needs no wait: {waited:?}"
    );
    assert!(
        stack.envoy.counter(CLIENT_RESETS) >= 1,
        "Envoy saw client A close its connection mid-request"
    );
    assert_eq!(
        stack.in_flight_settles(Duration::from_secs(3)),
        Some(0),
        "{IN_FLIGHT} back to 0"
    );
}

#[test]
fn kid_triggered_jwks_refresh_outlives_the_client_that_started_it() {
    let old = SigningKey::rs256();
    let new = SigningKey::rs256_rotated();
    let idp = FakeProvider::start();
    idp.serve_jwks(jwks_of(&[&old]));
    let provider = json!({
        "name": "corp",
        "issuer": idp.issuer(),
        "audiences": [AUDIENCE],
        "jwks_uri": idp.jwks_uri(),
        "username_claim": ["preferred_username"],
        // No scheduled refresh during the test: every fetch after the first is the kid's.
        "jwks_refresh_seconds": 3600,
        "timeout_ms": TIMEOUT_MS,
    });
    let stack = Stack::start(idp, provider);
    let issuer = stack.idp.issuer();
    let (warm, _) = stack.get(&tokens::mint(&old, &valid_claims(&issuer, "alice")));
    assert_eq!(warm.status, 200, "the first keys are in: {warm:?}");
    let fetched_at_start = stack.idp.calls(JWKS);

    // The provider rotates to the new key; its JWKS endpoint is slow now.
    stack.idp.reply(
        "GET",
        JWKS,
        Answer::ok(jwks_of(&[&old, &new])).after(PROVIDER_DELAY),
    );
    let abandoned = tokens::mint(&new, &valid_claims(&issuer, "carol"));
    let waiting = tokens::mint(&new, &valid_claims(&issuer, "bob"));
    let race = abandoned_while_another_waits(&stack, &abandoned, &waiting);

    assert_answered_in_time_as(&race, "bob");
    assert_eq!(
        stack.idp.calls(JWKS) - fetched_at_start,
        1,
        "one refresh for the unknown kid"
    );
    assert_reset_seen_and_in_flight_back_to_zero(&stack, &race);

    // SPEC 1.4: an unknown kid triggers one refresh per 30 s. That one was used and succeeded,
    // so another unknown kid now is decided by the fresh keys at once: 401, no second refresh.
    let unknown = tokens::mint_with_kid(&new, "never-published", &valid_claims(&issuer, "mallory"));
    let (reply, waited) = stack.get(&unknown);
    assert_invalid_token(&reply, "jira", Some("unknown key id"));
    assert!(
        waited < Duration::from_secs(1),
        "no wait for a refresh the rate limit forbids: {waited:?}"
    );
    assert_eq!(
        stack.idp.calls(JWKS) - fetched_at_start,
        1,
        "still one refresh"
    );
}

/// First lookups measured against cache hits of the same stack.
const LATENCY_SAMPLES: usize = 15;
/// What a first lookup may add to a cache hit, median against median: the provider answers at
/// once, so this is the filter's own delay before its call. Sending calls only from the 25 ms
/// tick added 12.5 ms here on average.
const LOOKUP_OVERHEAD: Duration = Duration::from_millis(8);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A request's calls leave as soon as its callback returns (the root context is woken through
/// the VM's own shared queue), not at the next tick: a new token costs the provider's answer
/// time and nothing more.
#[test]
fn a_first_lookup_sends_its_call_at_once_not_at_the_next_tick() {
    let idp = FakeProvider::start();
    idp.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "dave-id", "preferred_username": "dave" })),
    );
    let provider = userinfo_provider(&idp);
    let stack = Stack::start(idp, provider);
    let token = |i: usize| format!("opaque-latency-token-{i:026}");
    let mut first = Vec::new();
    let mut cached = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let (reply, waited) = stack.get(&token(i));
        assert_eq!(reply.status, 200, "first lookup {i}: {reply:?}");
        first.push(waited);
        let (reply, waited) = stack.get(&token(i));
        assert_eq!(reply.status, 200, "cache hit {i}: {reply:?}");
        cached.push(waited);
    }
    assert_eq!(
        stack.idp.calls(USERINFO),
        LATENCY_SAMPLES,
        "one call per new token"
    );
    let (first, cached) = (median(first), median(cached));
    eprintln!("median: first lookup {first:?}, cache hit {cached:?}");
    assert!(
        first < cached + LOOKUP_OVERHEAD,
        "a first lookup took {first:?} (median) where a cache hit took {cached:?}"
    );
}

/// New tokens, each sent by several clients at once to a fresh Envoy with two workers.
const RACED_TOKENS: usize = 12;
const CLIENTS_PER_TOKEN: usize = 4;

/// Concurrent requests with the same new token cause one call (SPEC section 6), also when they
/// land on two workers and the token's cache slot was never used: shared data cannot
/// compare-and-swap a missing key, and both workers used to claim the slot.
#[test]
fn clients_racing_with_a_new_token_on_a_fresh_envoy_cause_one_call_each() {
    let idp = FakeProvider::start();
    idp.reply(
        "GET",
        USERINFO,
        Answer::ok(json!({ "sub": "erin-id", "preferred_username": "erin" }))
            .after(Duration::from_millis(100)),
    );
    let provider = userinfo_provider(&idp);
    let stack = Stack::start(idp, provider);
    for i in 0..RACED_TOKENS {
        let token = format!("opaque-raced-token-{i:028}");
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..CLIENTS_PER_TOKEN)
                .map(|_| scope.spawn(|| stack.get(&token).0.status))
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().expect("client"))
                .collect()
        });
        assert_eq!(statuses, vec![200; CLIENTS_PER_TOKEN], "token {i}");
        assert_eq!(
            stack.idp.calls(USERINFO),
            i + 1,
            "token {i}: {CLIENTS_PER_TOKEN} clients at once, one call"
        );
    }
}
