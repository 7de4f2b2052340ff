//! The audit trail (issue 14 item 8): the filter publishes its decision on every request as
//! Envoy filter state (`wasm.atlassian_rest_auth`), and the access-log format `envoy.yaml` ships
//! records it: who was let in and by which provider, why a request was refused (with the keyed
//! token fingerprint of the filter's log line) or passed, never a token. Through the real Envoy
//! (two workers) with a file access log. Needs Envoy (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::attacks::{assert_envoy_unharmed, raw_request};
use support::envoy::{bootstrap_yaml, envoy_binary, Launch, IDP_CLUSTER};
use support::providers::FakeProvider;
use support::tokens::{self, bearer, valid_claims};
use support::*;

const PATH: &str = "/rest/api/2/myself";

/// The access-log format of `envoy.yaml`, the one the README tells operators to use.
fn shipped_format() -> String {
    let text = std::fs::read_to_string(repo_root().join("envoy.yaml")).unwrap();
    let bootstrap: Value = serde_norway::from_str(&text).unwrap();
    let manager = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let format = manager["access_log"][0]["typed_config"]["log_format"]["text_format_source"]
        ["inline_string"]
        .as_str()
        .unwrap_or_else(|| panic!("envoy.yaml has no text access-log format: {manager}"));
    assert!(
        format.contains("%FILTER_STATE(wasm.atlassian_rest_auth:PLAIN)%"),
        "envoy.yaml's access log does not record the filter's decision: {format}"
    );
    format.to_string()
}

/// Envoy running the filter with `config`, its access log (the shipped format) in a file.
struct Audited {
    envoy: Envoy,
    access_log: PathBuf,
}

impl Audited {
    fn start(config: Value, idp: &FakeProvider, echo: &EchoUpstream) -> Self {
        let options = EnvoyOptions::with_filter(echo.port(), idp.port(), config);
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ara-audit-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            tokens::now()
        ));
        let access_log = dir.join("access.log");
        let manager = "          stat_prefix: ingress\n";
        let yaml = bootstrap_yaml(&options);
        assert!(yaml.contains(manager), "bootstrap layout changed:\n{yaml}");
        let logger = format!(
            "{manager}          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {path}
              log_format: {{ text_format_source: {{ inline_string: {format} }} }}
",
            path = support::envoy::yaml_quoted(&access_log.display().to_string()),
            format = serde_json::to_string(&shipped_format()).unwrap(),
        );
        let mut launch = Launch::for_tests(dir);
        // Envoy writes the access log out every 10 s by default: the test reads it sooner.
        launch
            .log_flags
            .extend(["--file-flush-interval-msec".into(), "100".into()]);
        let mut envoy = Envoy::spawn(
            Command::new(envoy_binary()),
            &launch,
            &yaml.replace(manager, &logger),
        );
        if let Err(reason) = envoy.wait_ready(Duration::from_secs(20)) {
            panic!("Envoy did not start: {reason}\n{}", envoy.log_tail(40));
        }
        Audited { envoy, access_log }
    }

    /// The access-log lines, once there are `count` (at most 10 s).
    fn lines(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= count || Instant::now() > deadline {
                assert!(
                    lines.len() >= count,
                    "{} of {count} access-log lines:\n{text}",
                    lines.len()
                );
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The one access-log line of the request to `path` (among `count` lines), and its audit
    /// fields: what follows the response flags and duration, `-` when nothing was published.
    fn audit(&self, count: usize, path: &str) -> String {
        let lines = self.lines(count);
        let mine: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&format!(" {path} ")))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "one line for {path} in:\n{}",
            lines.join("\n")
        );
        let (_, audit) = mine[0]
            .split_once("outcome=")
            .unwrap_or_else(|| panic!("no decision recorded for {path}: {}", mine[0]));
        format!("outcome={audit}")
    }
}

fn config(idp: &FakeProvider, dry_run: bool) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "required",
        "dry_run": dry_run,
        "rules": [{ "path_prefix": "/status", "auth": "none" }],
        "forward": { "username_header": "x-forwarded-user" },
        "providers": [{
            "name": "idp", "issuer": idp.issuer(), "audiences": [tokens::AUDIENCE], "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username"], "timeout_ms": 2000,
        }],
        "clusters": {idp.authority(): IDP_CLUSTER},
    })
}

/// The `token=` fingerprint in `text`, if any.
fn fingerprint(text: &str) -> Option<String> {
    let (_, after) = text.split_once("token=")?;
    Some(after.chars().take_while(char::is_ascii_hexdigit).collect())
}

/// The filter's own log line for a decision containing `needle` (at most 10 s).
fn filter_line(envoy: &Envoy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = envoy.log().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the filter's log:\n{}",
            envoy.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_access_log_records_who_was_let_in_and_why_others_were_not() {
    let key = SigningKey::rs256();
    let idp = FakeProvider::start();
    idp.serve_jwks(jwks_of(&[&key]));
    let echo = EchoUpstream::start();
    let alice = tokens::mint(&key, &valid_claims(&idp.issuer(), "alice"));
    // Signed by a key the provider never published: refused.
    let stranger = SigningKey::for_alg(Alg::ES256);
    let mallory = tokens::mint(&stranger, &valid_claims(&idp.issuer(), "mallory"));
    let mut audited = Audited::start(config(&idp, false), &idp, &echo);
    let port = audited.envoy.port();
    let spoof = ("x-forwarded-user", "admin");

    // The first request waits for the provider's keys, and is resumed from the root context.
    let first = raw_request(
        port,
        "GET",
        &format!("{PATH}?n=first"),
        &[("authorization", &bearer(&alice)), spoof],
    );
    assert_eq!(
        first
            .upstream()
            .headers
            .get("x-forwarded-user")
            .map(String::as_str),
        Some("alice")
    );
    // Decided at once, on the request's own callback.
    let again = raw_request(
        port,
        "GET",
        &format!("{PATH}?n=again"),
        &[("authorization", &bearer(&alice)), spoof],
    );
    assert_eq!(
        again
            .upstream()
            .headers
            .get("x-forwarded-user")
            .map(String::as_str),
        Some("alice")
    );
    let refused = raw_request(
        port,
        "GET",
        &format!("{PATH}?n=refused"),
        &[("authorization", &bearer(&mallory)), spoof],
    );
    assert_eq!(refused.status, 401, "{refused:?}");
    let bare = raw_request(port, "GET", &format!("{PATH}?n=bare"), &[spoof]);
    assert_eq!(bare.status, 401, "{bare:?}");
    let status = raw_request(port, "GET", "/status?n=open", &[spoof]);
    assert_eq!(
        status
            .upstream()
            .headers
            .get("x-forwarded-user")
            .map(String::as_str),
        None
    );

    let lines = 5;
    let allowed = fingerprint(&filter_line(&audited.envoy, " allow alice via idp token=")).unwrap();
    for path in ["first", "again"] {
        assert_eq!(
            audited.audit(lines, &format!("{PATH}?n={path}")),
            format!("outcome=allow user=alice provider=idp token={allowed}"),
            "request {path}"
        );
    }
    let denied = filter_line(&audited.envoy, " deny 401: ");
    let audit = audited.audit(lines, &format!("{PATH}?n=refused"));
    assert!(
        audit.starts_with("outcome=deny status=401 reason="),
        "{audit}"
    );
    let token = fingerprint(&audit).expect("a refused token's fingerprint");
    assert_eq!(token.len(), 8, "{audit}");
    assert_eq!(
        Some(token),
        fingerprint(&denied),
        "the access log and the filter's line name the token alike: {audit} / {denied}"
    );
    assert_eq!(
        audited.audit(lines, &format!("{PATH}?n=bare")),
        "outcome=deny status=401 reason=no_credentials"
    );
    assert_eq!(
        audited.audit(lines, "/status?n=open"),
        "outcome=pass reason=auth_none"
    );

    let log = audited.lines(lines).join("\n");
    for secret in [alice.as_str(), mallory.as_str(), "Bearer", "admin"] {
        assert!(
            !log.contains(secret),
            "{secret:?} in the access log:\n{log}"
        );
    }
    assert_envoy_unharmed(&mut audited.envoy, &[&alice, &mallory]);
}

#[test]
fn the_access_log_marks_dry_run_decisions() {
    let key = SigningKey::rs256();
    let idp = FakeProvider::start();
    idp.serve_jwks(jwks_of(&[&key]));
    let echo = EchoUpstream::start();
    let expired = {
        let mut claims = valid_claims(&idp.issuer(), "alice");
        claims["exp"] = json!(tokens::now() - 3600);
        tokens::mint(&key, &claims)
    };
    let mut audited = Audited::start(config(&idp, true), &idp, &echo);
    let port = audited.envoy.port();

    // Let through without an identity, and recorded as what would have happened.
    let reply = raw_request(
        port,
        "GET",
        &format!("{PATH}?n=expired"),
        &[("authorization", &bearer(&expired))],
    );
    assert_eq!(
        reply
            .upstream()
            .headers
            .get("x-forwarded-user")
            .map(String::as_str),
        None
    );
    let audit = audited.audit(1, &format!("{PATH}?n=expired"));
    assert!(
        audit.starts_with("outcome=deny status=401 reason=token_expired provider=idp token=")
            && audit.ends_with(" dry_run=true"),
        "{audit}"
    );
    assert!(!audited.lines(1).join("\n").contains(&expired));
    assert_envoy_unharmed(&mut audited.envoy, &[&expired]);
}
