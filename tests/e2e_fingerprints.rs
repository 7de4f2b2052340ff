//! Envoy's log never lets its reader test a password or a token guess (issue 11 item 13).
//! Denials carry a fingerprint so an operator can tell one token's requests from another's:
//! HMAC-SHA256 under a key made when the filter starts and shared by the workers, never an
//! unsalted hash; a Basic password no token format matched carries none at all. Through the
//! real Envoy (two workers) with the filter's debug log. Needs Envoy (`make envoy`) and the
//! filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use support::attacks::{assert_envoy_unharmed, raw_request};
use support::envoy::IDP_CLUSTER;
use support::providers::FakeProvider;
use support::tokens::{self, bearer, valid_claims};
use support::*;

const PATH: &str = "/rest/api/2/myself";

/// Envoy with a JWT provider and Basic handled as `basic`.
fn envoy(basic: &str, idp: &FakeProvider, echo: &EchoUpstream) -> Envoy {
    let config = json!({
        "realm": "jira",
        "default_auth": "required",
        "basic": basic,
        "providers": [{
            "name": "idp", "issuer": idp.issuer(), "audiences": [tokens::AUDIENCE], "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username"], "timeout_ms": 2000,
        }],
        "clusters": {idp.authority(): IDP_CLUSTER},
    });
    Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config))
}

fn sha256_prefix(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The filter's `deny` log lines, once `count` of them are there (at most 10 s).
fn deny_lines(envoy: &Envoy, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = envoy
            .log()
            .lines()
            .filter(|l| l.contains(" deny 40"))
            .map(str::to_string)
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            assert!(
                lines.len() >= count,
                "{} of {count} deny lines in the log:\n{}",
                lines.len(),
                envoy.log_tail(40)
            );
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `token=` fingerprint of a log line, if it has one.
fn fingerprint(line: &str) -> Option<String> {
    let (_, after) = line.split_once(" token=")?;
    Some(after.chars().take_while(char::is_ascii_hexdigit).collect())
}

#[test]
fn a_denied_basic_password_leaves_no_hash_of_it_in_the_log() {
    let idp = FakeProvider::start();
    idp.serve_jwks(jwks_of(&[&SigningKey::rs256()]));
    let echo = EchoUpstream::start();
    let (user, password) = ("alice", "correct horse battery staple");
    let credentials = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&credentials);
    let header = format!("Basic {encoded}");
    // Every unsalted hash a guess could be checked against.
    let hashes = [
        password,
        credentials.as_str(),
        encoded.as_str(),
        header.as_str(),
    ]
    .map(sha256_prefix);

    for basic in ["reject", "api_tokens"] {
        let mut envoy = envoy(basic, &idp, &echo);
        let reply = raw_request(envoy.port(), "GET", PATH, &[("authorization", &header)]);
        assert_eq!(reply.status, 401, "basic {basic}: {reply:?}");

        let lines = deny_lines(&envoy, 1);
        for line in &lines {
            for hash in &hashes {
                assert!(
                    !line.contains(hash.as_str()),
                    "basic {basic}: an unsalted SHA-256 of the Basic credentials is logged: {line}"
                );
            }
            assert_eq!(
                fingerprint(line),
                None,
                "basic {basic}: a password gets no fingerprint: {line}"
            );
        }
        assert_envoy_unharmed(&mut envoy, &[password, &encoded]);
    }
}

#[test]
fn a_token_has_one_keyed_fingerprint_across_workers_and_another_in_another_envoy() {
    let idp = FakeProvider::start();
    idp.serve_jwks(jwks_of(&[&SigningKey::rs256()]));
    let echo = EchoUpstream::start();
    // Signed by a key the provider never published: refused on every request.
    let stranger = SigningKey::for_alg(Alg::ES256);
    let token = tokens::mint(&stranger, &valid_claims(&idp.issuer(), "mallory"));
    let unsalted = sha256_prefix(&token);

    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut envoy = envoy("reject", &idp, &echo);
        // Fresh connections until both workers have answered some (Envoy picks the worker).
        let mut sent = 0;
        while sent < 8 || (sent < 40 && envoy.connections_per_worker().contains(&0)) {
            let reply = raw_request(
                envoy.port(),
                "GET",
                PATH,
                &[("authorization", &bearer(&token))],
            );
            assert_eq!(reply.status, 401, "{reply:?}");
            sent += 1;
        }
        assert!(
            envoy.connections_per_worker().iter().all(|&n| n > 0),
            "both workers answered: {:?}",
            envoy.connections_per_worker()
        );
        let lines = deny_lines(&envoy, sent);
        let prints: Vec<String> = lines
            .iter()
            .map(|l| fingerprint(l).unwrap_or_else(|| panic!("no fingerprint: {l}")))
            .collect();
        assert!(
            prints.iter().all(|p| p.len() == 8 && *p == prints[0]),
            "one token, one fingerprint in one Envoy: {prints:?}"
        );
        assert_ne!(
            prints[0], unsalted,
            "the fingerprint is the token's plain SHA-256"
        );
        // Neither the key nor any full digest is printed: no long run of hex digits.
        let log = envoy.log();
        let longest = log
            .lines()
            .filter(|l| l.contains("wasm"))
            .flat_map(|l| l.split(|c: char| !c.is_ascii_hexdigit()))
            .map(str::len)
            .max();
        assert!(
            longest.unwrap_or(0) < 32,
            "a key-sized hex string is in the log"
        );
        assert_envoy_unharmed(&mut envoy, &[&token]);
        seen.push(prints[0].clone());
    }
    assert_ne!(
        seen[0], seen[1],
        "two Envoys, two random keys: the fingerprint is keyed"
    );
}
