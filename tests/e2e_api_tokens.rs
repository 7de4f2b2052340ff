//! API tokens and Basic through the real Envoy (SPEC section 3), with tokens minted by the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine;
use serde_json::{json, Value};
use std::process::Command;
use support::*;

/// `new-token`'s token and config entry.
fn new_token(user: &str, expires: Option<&str>) -> (String, Value) {
    let mut args = vec!["new-token", "--user", user];
    if let Some(e) = expires {
        args.extend(["--expires", e]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_atlassian-rest-auth"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout
        .split_whitespace()
        .find(|w| w.starts_with("arat_"))
        .unwrap()
        .to_string();
    let entry = serde_json::from_str(
        stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap()
            .trim(),
    )
    .unwrap();
    (token, entry)
}

struct Stack {
    envoy: Envoy,
    _echo: EchoUpstream,
}

fn stack(basic: &str, api_tokens: Vec<Value>) -> Stack {
    let echo = EchoUpstream::start();
    let config = json!({"realm": "jira", "default_auth": "required", "basic": basic, "api_tokens": api_tokens});
    // No provider here: the idp cluster points at the echo server and is never called.
    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), echo.port(), config));
    Stack { envoy, _echo: echo }
}

fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

impl Stack {
    fn get(&self, authorization: &str) -> Reply {
        send(
            "GET",
            &self.envoy.url("/rest/api/2/myself"),
            &[
                ("authorization", authorization),
                ("x-forwarded-user", "admin"),
            ],
        )
    }
}

fn challenges(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn minted_token_is_accepted_as_bearer_and_as_basic_of_its_user() {
    let (token, entry) = new_token("ci-bot", Some("90d"));
    let s = stack("api_tokens", vec![entry]);
    for auth in [format!("Bearer {token}"), basic("ci-bot", &token)] {
        let reply = s.get(&auth);
        assert_eq!(reply.status, 200, "{reply:?}");
        let seen = reply.upstream_headers();
        assert_eq!(
            seen.get("x-forwarded-user").map(String::as_str),
            Some("ci-bot")
        );
        assert!(
            !seen.contains_key("authorization"),
            "the token never reaches Jira"
        );
    }
}

#[test]
fn expired_token_and_wrong_user_are_refused() {
    let (expired, expired_entry) = new_token("old-bot", Some("2020-01-01T00:00:00Z"));
    let (token, entry) = new_token("ci-bot", None);
    let s = stack("api_tokens", vec![expired_entry, entry]);
    let reply = s.get(&format!("Bearer {expired}"));
    assert_eq!(reply.status, 401);
    assert!(
        challenges(&reply)[0].contains("api token expired"),
        "{reply:?}"
    );
    let reply = s.get(&basic("admin", &token));
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(
        challenges(&reply)[0].contains("api token of another user"),
        "{reply:?}"
    );
}

#[test]
fn passthrough_leaves_basic_untouched_for_atlassian() {
    let s = stack("passthrough", vec![]);
    let auth = basic("alice", "her-jira-password");
    let reply = s.get(&auth);
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = reply.upstream_headers();
    assert_eq!(
        seen.get("authorization"),
        Some(&auth),
        "Atlassian checks Basic itself"
    );
    assert!(
        !seen.contains_key("x-forwarded-user"),
        "the spoofed identity is still stripped"
    );
}

#[test]
fn reject_challenges_with_bearer_only_while_api_tokens_offers_basic_too() {
    let reply = stack("reject", vec![]).get(&basic("alice", "pw"));
    assert_eq!(reply.status, 401);
    assert_eq!(challenges(&reply).len(), 1, "{reply:?}");
    assert!(challenges(&reply)[0].starts_with("Bearer realm=\"jira\""));

    let reply = stack("api_tokens", vec![]).get(&basic("alice", "pw"));
    assert_eq!(reply.status, 401);
    assert!(
        challenges(&reply)
            .iter()
            .any(|c| c == "Basic realm=\"jira\""),
        "{reply:?}"
    );
}
