//! Calls outlive the request that caused them (issue 12): a client that goes away while the
//! filter asks the provider about its token cancels nothing, so a second client waiting on the
//! same answer gets it as soon as the provider gives it, and no call is left in flight.
//! Needs Envoy (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::envoy::IDP_CLUSTER;
use support::providers::{Answer, FakeProvider};
use support::tokens::{bearer, mint, valid_claims, AUDIENCE};
use support::*;

const PROVIDER_DELAY: Duration = Duration::from_secs(2);
const IN_FLIGHT: &str = "wasmcustom.atlassian_rest_auth.calls_in_flight";

/// Sends a request with `token` on a raw connection and closes it after `after`, unanswered.
fn send_and_reset(envoy: &Envoy, token: &str, after: Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
    let request = format!(
        "GET /rest/api/2/myself HTTP/1.1\r\nhost: jira\r\nauthorization: {}\r\n\r\n",
        bearer(token)
    );
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(after);
    drop(stream);
}

/// Polls the calls-in-flight gauge until it reads 0 (at most 5 s); true when it did. The gauge
/// must exist: a call was made.
fn calls_in_flight_return_to_zero(envoy: &Envoy) -> bool {
    let stats = send(
        "GET",
        &envoy.admin_url("/stats?filter=calls_in_flight"),
        &[],
    )
    .body;
    assert!(
        stats.contains(IN_FLIGHT),
        "no gauge {IN_FLIGHT} in:\n{stats}"
    );
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if envoy.counter(IN_FLIGHT) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_client_reset_mid_lookup_does_not_hold_up_the_next_client_with_the_same_token() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/userinfo",
        Answer::ok(json!({"email": "bob@example.com"})).after(PROVIDER_DELAY),
    );
    let echo = EchoUpstream::start();
    let config = json!({
        "realm": "jira", "default_auth": "required",
        "providers": [{"name": "ui", "userinfo_uri": fake.url("/userinfo"), "username_claim": ["email"], "timeout_ms": 5000}],
        "clusters": {fake.authority(): IDP_CLUSTER}
    });
    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), fake.port(), config));

    let started = Instant::now();
    send_and_reset(&envoy, "opaque-reset-1", Duration::from_millis(300));
    let reply = send(
        "GET",
        &envoy.url("/rest/api/2/myself"),
        &[("authorization", &bearer("opaque-reset-1"))],
    );
    let waited = started.elapsed();
    assert_eq!(reply.status, 200, "{}", envoy.log_tail(40));
    assert_eq!(
        reply
            .upstream_headers()
            .get("x-forwarded-user")
            .map(String::as_str),
        Some("bob@example.com")
    );
    assert!(
        waited < PROVIDER_DELAY + Duration::from_millis(1500),
        "the second client waited {waited:?}"
    );
    assert_eq!(fake.calls("/userinfo"), 1, "one call answered both clients");
    assert!(
        calls_in_flight_return_to_zero(&envoy),
        "calls in flight: {}",
        envoy.counter(IN_FLIGHT)
    );
}

#[test]
fn a_client_reset_during_a_kid_refresh_does_not_waste_the_refresh() {
    let old = SigningKey::rs256();
    let new = SigningKey::rs256_rotated();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&old]));
    let echo = EchoUpstream::start();
    let config = json!({
        "realm": "jira", "default_auth": "required",
        "providers": [{"name": "corp", "issuer": fake.issuer(), "audiences": [AUDIENCE], "jwks_uri": fake.jwks_uri(), "timeout_ms": 5000}],
        "clusters": {fake.authority(): IDP_CLUSTER}
    });
    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), fake.port(), config));
    let before = mint(&old, &valid_claims(&fake.issuer(), "alice"));
    assert_eq!(
        send(
            "GET",
            &envoy.url("/rest/a"),
            &[("authorization", &bearer(&before))]
        )
        .status,
        200
    );

    // The provider rotates; its JWKS answers slowly from now on.
    fake.reply(
        "GET",
        "/jwks",
        Answer::ok(jwks_of(&[&old, &new])).after(PROVIDER_DELAY),
    );
    let rotated = mint(&new, &valid_claims(&fake.issuer(), "carol"));
    let started = Instant::now();
    send_and_reset(&envoy, &rotated, Duration::from_millis(300));
    let reply = send(
        "GET",
        &envoy.url("/rest/a"),
        &[("authorization", &bearer(&rotated))],
    );
    let waited = started.elapsed();
    assert_eq!(reply.status, 200, "{}", envoy.log_tail(40));
    assert_eq!(
        reply
            .upstream_headers()
            .get("x-forwarded-user")
            .map(String::as_str),
        Some("carol")
    );
    assert!(
        waited < PROVIDER_DELAY + Duration::from_millis(1500),
        "the second client waited {waited:?}"
    );
    assert!(
        calls_in_flight_return_to_zero(&envoy),
        "calls in flight: {}",
        envoy.counter(IN_FLIGHT)
    );
}
