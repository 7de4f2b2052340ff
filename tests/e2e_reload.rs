//! A configuration change applied while traffic flows, through the real Envoy.
//!
//! Envoy takes its listener (and so the filter's configuration) from a watched file, LDS over
//! the filesystem; clusters stay static. While client threads send a steady stream of requests
//! with a valid token, each on a new connection, the test renames a new `lds.yaml` into place
//! whose filter configuration differs visibly: the username and provider headers swap places,
//! the realm and the provider's name change. Envoy drains the old filter chain and serves the
//! new one on the same port. Every request must still reach the upstream as the token's user,
//! under exactly one of the two configurations, with no spoofed identity header getting
//! through; the new configuration must take over; Envoy must stay healthy; and the identity
//! provider must not be asked for its keys more than a handful of times.
//! Needs Envoy (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::attacks::{assert_log_has_no_secrets, bearer_challenge};
use support::client::try_send;
use support::envoy::IDP_CLUSTER;
use support::reload::ReloadableEnvoy;
use support::tokens::{self, bearer, valid_claims, AUDIENCE};
use support::*;

const API_PATH: &str = "/rest/api/2/myself";
const USER: &str = "alice";
/// What the client claims to be in both identity headers; must never reach the upstream.
const SPOOF: &str = "mallory";
const FORWARDED_USER: &str = "x-forwarded-user";
const REMOTE_USER: &str = "x-remote-user";
/// How long the client threads send, at most.
const STREAM_FOR: Duration = Duration::from_secs(6);
/// When, into the stream, the new listener is renamed into place.
const CHANGE_AT: Duration = Duration::from_millis(1500);
const CLIENT_THREADS: usize = 2;
/// JWKS fetches allowed from start to end: one per configuration and worker, and then some.
const MAX_JWKS_FETCHES: usize = 6;

/// The two configurations: which header carries the username, which the provider's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Old,
    New,
}

impl Version {
    fn realm(self) -> &'static str {
        match self {
            Version::Old => "jira",
            Version::New => "jira-v2",
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Version::Old => "idp-v1",
            Version::New => "idp-v2",
        }
    }

    /// `(username header, provider header)`: swapped by the change, so both are identity
    /// headers (stripped from the client's request) under either configuration.
    fn headers(self) -> (&'static str, &'static str) {
        match self {
            Version::Old => (FORWARDED_USER, REMOTE_USER),
            Version::New => (REMOTE_USER, FORWARDED_USER),
        }
    }
}

fn filter_config(idp: &JwksServer, version: Version) -> Value {
    let (username_header, provider_header) = version.headers();
    json!({
        "realm": version.realm(),
        "default_auth": "required",
        "providers": [{
            "name": version.provider(),
            "issuer": idp.issuer(),
            "audiences": [AUDIENCE],
            "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username", "sub"],
            "clock_skew_seconds": 30,
            "timeout_ms": 2000,
        }],
        "forward": { "username_header": username_header, "provider_header": provider_header },
        "clusters": { idp.authority(): IDP_CLUSTER },
    })
}

/// One request of the stream: when it started (since the stream began), how long it took, and
/// what came back: the status and the two identity headers as the upstream saw them.
#[derive(Debug, Clone)]
struct Sample {
    started: Duration,
    took: Duration,
    outcome: Result<Seen, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    forwarded_user: Option<String>,
    remote_user: Option<String>,
    body: String,
}

impl Seen {
    /// The configuration this reply was produced under, if it matches one exactly.
    fn version(&self) -> Option<Version> {
        [Version::Old, Version::New].into_iter().find(|v| {
            let (username_header, _) = v.headers();
            let (user, provider) = if username_header == FORWARDED_USER {
                (&self.forwarded_user, &self.remote_user)
            } else {
                (&self.remote_user, &self.forwarded_user)
            };
            self.status == 200
                && user.as_deref() == Some(USER)
                && provider.as_deref() == Some(v.provider())
        })
    }
}

/// One request, with a valid token and both identity headers spoofed, on a new connection
/// (the client builds a new agent per request).
fn request(envoy_url: &str, token: &str) -> Result<Seen, String> {
    let reply = try_send(
        "GET",
        envoy_url,
        &[
            ("authorization", &bearer(token)),
            (FORWARDED_USER, SPOOF),
            (REMOTE_USER, SPOOF),
        ],
    )?;
    let (forwarded_user, remote_user) = if reply.status == 200 {
        let headers = reply.upstream_headers();
        (
            headers.get(FORWARDED_USER).cloned(),
            headers.get(REMOTE_USER).cloned(),
        )
    } else {
        (None, None)
    };
    Ok(Seen {
        status: reply.status,
        forwarded_user,
        remote_user,
        body: reply.body,
    })
}

/// Calls `done` every 100 ms until it holds or `limit` has passed.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn filter_configuration_change_under_traffic_loses_no_request_and_takes_over() {
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    let echo = EchoUpstream::start();
    let mut envoy =
        ReloadableEnvoy::start(echo.port(), idp.port(), &filter_config(&idp, Version::Old));
    let url = envoy.url(API_PATH);
    let token = tokens::mint(&key, &valid_claims(&idp.issuer(), USER));

    // The old configuration serves, and the spoofed headers are replaced.
    let first = request(&url, &token).unwrap_or_else(|e| panic!("first request: {e}"));
    assert_eq!(
        first.version(),
        Some(Version::Old),
        "old configuration in force: {first:?}"
    );
    let jwks_before_change = idp.jwks_requests();

    // The stream.
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|n| {
            let (url, token, stop) = (url.clone(), token.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("client-{n}"))
                .spawn(move || {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Acquire) && began.elapsed() < STREAM_FOR {
                        let started = began.elapsed();
                        let outcome = request(&url, &token);
                        samples.push(Sample {
                            started,
                            took: began.elapsed() - started,
                            outcome,
                        });
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    samples
                })
                .expect("spawn client thread")
        })
        .collect();

    std::thread::sleep(CHANGE_AT);
    let changed_at = began.elapsed();
    envoy.replace_filter(&filter_config(&idp, Version::New));
    let accepted = wait_until(Duration::from_secs(10), || {
        envoy.stat("listener_manager.lds.update_success") >= 2
    });
    let accepted_after = began.elapsed() - changed_at;
    assert!(
        accepted,
        "Envoy did not take the new lds.yaml (update_success {}, update_rejected {})",
        envoy.stat("listener_manager.lds.update_success"),
        envoy.stat("listener_manager.lds.update_rejected")
    );

    let mut samples: Vec<Sample> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    stop.store(true, Ordering::Release);
    samples.sort_by_key(|s| s.started);

    // (1) Every request reached the upstream: no 5xx, no 401, no connection error.
    let failures: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(&s.outcome, Ok(seen) if seen.status == 200))
        .collect();
    // (2) ...as the token's user, under exactly one of the two configurations: the username in
    // one header, the provider's name in the other, the client's spoofed value in neither.
    let mixed: Vec<&Sample> = samples
        .iter()
        .filter(
            |s| matches!(&s.outcome, Ok(seen) if seen.status == 200 && seen.version().is_none()),
        )
        .collect();
    let of = |v: Version| {
        samples
            .iter()
            .filter(|s| matches!(&s.outcome, Ok(seen) if seen.version() == Some(v)))
            .collect::<Vec<_>>()
    };
    let (old, new) = (of(Version::Old), of(Version::New));
    let last_old = old.last().map(|s| s.started);
    let first_new = new.first().map(|s| s.started);
    // An old answer after a new one: workers switch one by one, so this may happen briefly.
    let back_to_old = first_new.map_or(0, |f| old.iter().filter(|s| s.started > f).count());
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    let slowest_at = samples
        .iter()
        .max_by_key(|s| s.took)
        .map(|s| s.started)
        .unwrap_or_default();
    eprintln!(
        "stream: {} requests over {:?} on {CLIENT_THREADS} threads; change written at {changed_at:?}, \
         accepted by Envoy within {accepted_after:?}; old answers {} (last started at {last_old:?}), \
         new answers {} (first started at {first_new:?}), old after first new: {back_to_old}; \
         slowest request {slowest:?} (started at {slowest_at:?}); failures {}, mixed {}",
        samples.len(),
        samples.last().map(|s| s.started).unwrap_or_default(),
        old.len(),
        new.len(),
        failures.len(),
        mixed.len()
    );
    if !failures.is_empty() || !mixed.is_empty() {
        let log = envoy.log();
        let interesting: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("wasm")
                    || l.contains("lds")
                    || l.contains("listener")
                    || l.contains("503")
            })
            .collect();
        eprintln!(
            "--- Envoy log lines about wasm / listeners ---\n{}",
            interesting.join("\n")
        );
    }
    assert!(
        failures.is_empty(),
        "{} requests did not reach the upstream, e.g. {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        mixed.is_empty(),
        "{} answers match neither configuration, e.g. {:#?}",
        mixed.len(),
        &mixed[..mixed.len().min(5)]
    );
    assert!(!old.is_empty(), "no request was served before the change");
    assert!(
        old.iter()
            .all(|s| s.started < changed_at + accepted_after + Duration::from_secs(2)),
        "the old configuration served long after the change"
    );

    // (3) Once settled, the new configuration serves: username in x-remote-user, realm jira-v2.
    let settled = wait_until(Duration::from_secs(10), || {
        (0..10).all(
            |_| matches!(request(&url, &token), Ok(seen) if seen.version() == Some(Version::New)),
        )
    });
    assert!(
        settled,
        "the new configuration did not take over: {:?}",
        request(&url, &token)
    );
    let denied =
        try_send("GET", &url, &[]).unwrap_or_else(|e| panic!("request without a token: {e}"));
    assert_eq!(denied.status, 401, "no token, no entry: {denied:?}");
    let challenge = bearer_challenge(&denied);
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}\"", Version::New.realm())),
        "new realm: {challenge}"
    );

    // (4) Envoy is unharmed and the listener was modified, not rejected.
    envoy.assert_unharmed();
    assert_log_has_no_secrets(&envoy.log(), &[&token]);
    assert_eq!(
        envoy.stat("listener_manager.lds.update_rejected"),
        0,
        "Envoy rejected an lds.yaml"
    );

    // (5) The identity provider was not hammered.
    let fetches = idp.jwks_requests();
    eprintln!("JWKS fetches: {jwks_before_change} before the change, {fetches} in all");
    assert!(
        fetches <= MAX_JWKS_FETCHES,
        "{fetches} JWKS fetches for one change"
    );
}
