//! The native CLI against test providers on 127.0.0.1: what an administrator sees before
//! turning enforcement on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::process::Command;
use support::providers::{Answer, FakeProvider};
use support::tokens::{mint, valid_claims, AUDIENCE};
use support::{jwks_of, JwksServer, SigningKey};

struct Run {
    code: i32,
    stdout: String,
}

fn cli(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_atlassian-rest-auth"))
        .args(args)
        .output()
        .expect("run the CLI");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn config_file(name: &str, config: &Value) -> String {
    let path = std::env::temp_dir().join(format!("ara-cli-{}-{name}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn jwt_config(idp: &JwksServer) -> Value {
    json!({"realm": "jira", "default_auth": "required",
           "providers": [{"name": "corp", "issuer": idp.issuer(), "audiences": [AUDIENCE], "jwks_uri": idp.jwks_uri(),
                          "username_claim": ["upn", "preferred_username"]}]})
}

#[test]
fn check_config_lists_every_error_with_its_field() {
    let file = config_file(
        "bad",
        &json!({
            "bogus": true,
            "providers": [{"name": "a", "issuer": "https://a", "audiences": ["jira"], "jwks_uri": "nope"}],
            "rules": [{"path_prefix": "rest", "auth": "required"}]
        }),
    );
    let run = cli(&["check-config", &file]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    for field in ["bogus", "providers[0].jwks_uri", "rules[0].path_prefix"] {
        assert!(
            run.stdout.contains(field),
            "{field} missing in:\n{}",
            run.stdout
        );
    }
}

#[test]
fn check_config_accepts_a_good_file() {
    let run = cli(&[
        "check-config",
        &config_file("good", &json!({"realm": "jira"})),
    ]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("OK"));
}

#[test]
fn check_token_verifies_a_jwt_and_shows_the_username_candidates() {
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    let token = mint(&key, &valid_claims(&idp.issuer(), "alice"));
    let run = cli(&[
        "check-token",
        "--config",
        &config_file("jwt", &jwt_config(&idp)),
        &token,
    ]);
    println!("{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("provider: corp"), "{}", run.stdout);
    assert!(run.stdout.contains("verified claims"), "{}", run.stdout);
    assert!(
        run.stdout.contains("* preferred_username = \"alice\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("username forwarded: alice"),
        "{}",
        run.stdout
    );
    assert_eq!(
        idp.jwks_requests(),
        1,
        "the CLI fetched the keys over real HTTP"
    );
}

#[test]
fn check_token_gives_the_filters_reason_for_a_refusal() {
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    let mut claims = valid_claims(&idp.issuer(), "alice");
    claims["exp"] = json!(1_000_000_000);
    let run = cli(&[
        "check-token",
        "--config",
        &config_file("expired", &jwt_config(&idp)),
        &mint(&key, &claims),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("refused (401): token expired"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("claims (NOT verified)"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_token_asks_userinfo_for_an_opaque_token_and_prints_its_answer() {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/userinfo",
        Answer::ok(json!({"sub": "42", "email": "bob@example.com", "login": "bob"})),
    );
    let config = json!({"providers": [{"name": "ui", "userinfo_uri": fake.url("/userinfo"), "username_claim": ["email"]}]});
    let run = cli(&[
        "check-token",
        "--config",
        &config_file("ui", &config),
        "--provider",
        "ui",
        "opaque-token-1",
    ]);
    println!("{}", run.stdout);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("provider answer"), "{}", run.stdout);
    assert!(run.stdout.contains("    login = \"bob\""), "{}", run.stdout);
    assert!(
        run.stdout.contains("username forwarded: bob@example.com"),
        "{}",
        run.stdout
    );
    assert_eq!(fake.calls("/userinfo"), 1);
}

#[test]
fn new_token_prints_a_token_and_the_entry_that_accepts_it() {
    let run = cli(&[
        "new-token",
        "--user",
        "ci-bot",
        "--expires",
        "90d",
        "--name",
        "CI",
    ]);
    assert_eq!(run.code, 0);
    let token = run
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("arat_"))
        .expect("a token")
        .to_string();
    let entry: Value = serde_json::from_str(
        run.stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(entry["user"], "ci-bot");
    assert_eq!(entry["name"], "CI");
    assert!(entry["expires_at"].as_str().unwrap().ends_with('Z'));
    let config = json!({"realm": "jira", "api_tokens": [entry], "default_auth": "required"});
    let check = cli(&[
        "check-token",
        "--config",
        &config_file("api", &config),
        &token,
    ]);
    assert!(
        check.stdout.contains("username forwarded: ci-bot"),
        "{}",
        check.stdout
    );
    let other = cli(&["new-token", "--user", "ci-bot"]);
    assert!(!other.stdout.contains(&token), "every token is new");
}
