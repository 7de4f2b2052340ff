//! Which rule a request meets, natively through the core (issue 11 item 15): the canonical path
//! decides, a path with no single reading is 400 before any rule (also before the CORS bypass
//! and `auth: none`), a `GET` rule covers `HEAD`. And what the log line of a refusal shows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step, Verdict};
use atlassian_rest_auth::cache::NoCache;
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::time::UnixTime;
use serde_json::{json, Value};

fn auth(extra: Value) -> Authenticator {
    let mut config = json!({
        "realm": "jira",
        "default_auth": "optional",
        "basic": "api_tokens",
        "bypass_cors_preflight": true,
        "rules": [
            {"path_prefix": "/status", "auth": "none"},
            {"path_prefix": "/rest/", "auth": "required"}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    Authenticator::new(Config::parse(config.to_string().as_bytes(), &|_| None).unwrap())
}

fn decide(
    auth: &Authenticator,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    cors: bool,
) -> Verdict {
    let head = RequestHead {
        method: method.into(),
        path: path.into(),
        authorization: authorization.map(str::to_string),
        cors_headers: cors,
        form_body: false,
    };
    match auth.start(
        &head,
        &[],
        &NoCache,
        UnixTime::from_secs(1_800_000_000),
        true,
    ) {
        Step::Decide(verdict) => verdict,
        other => panic!("undecided: {other:?}"),
    }
}

#[test]
fn non_canonical_spellings_meet_the_rule_of_the_canonical_path() {
    let auth = auth(json!({}));
    for path in [
        "/status/..;/rest/x",
        "//rest/x",
        "/status/%2e%2e/rest/x",
        "/status/./%2E%2e;p/rest/x",
        "/%72est/x",
    ] {
        assert_eq!(
            decide(&auth, "GET", path, None, false).denied().cloned(),
            Some(AuthError::Missing),
            "{path}"
        );
    }
    assert_eq!(
        decide(&auth, "GET", "/status/x/../y", None, false).passed(),
        Some("auth_none")
    );
}

#[test]
fn a_path_with_no_single_reading_is_400_before_any_rule() {
    let auth = auth(json!({}));
    for path in [
        "/status/..%2Frest/x",
        "/status%5C..%5Crest",
        "/status/..%3B/rest",
        "/../rest/x",
        "/status/%zz",
    ] {
        for (method, cors) in [("GET", false), ("OPTIONS", true)] {
            let verdict = decide(&auth, method, path, None, cors);
            assert_eq!(
                (verdict.decision.status(), verdict.denied().cloned()),
                (400, Some(AuthError::MalformedPath)),
                "{method} {path}"
            );
            assert_eq!(verdict.to_string(), "deny 400: malformed request path");
        }
    }
}

#[test]
fn a_get_rule_covers_head_and_no_other_method() {
    let auth = auth(
        json!({"default_auth": "none", "rules": [{"path_prefix": "/rest/admin", "methods": ["GET"], "auth": "required"}]}),
    );
    assert_eq!(
        decide(&auth, "GET", "/rest/admin/x", None, false)
            .denied()
            .cloned(),
        Some(AuthError::Missing)
    );
    assert_eq!(
        decide(&auth, "HEAD", "/rest/admin/x", None, false)
            .denied()
            .cloned(),
        Some(AuthError::Missing)
    );
    assert_eq!(
        decide(&auth, "POST", "/rest/admin/x", None, false).passed(),
        Some("auth_none")
    );
}

#[test]
fn a_refused_basic_password_gets_no_fingerprint_and_a_bad_token_a_keyed_one() {
    let auth = auth(json!({}));
    let basic = format!("Basic {}", base64_of("alice:hunter2"));
    let refused = decide(&auth, "GET", "/rest/x", Some(&basic), false);
    assert_eq!(
        refused.to_string(),
        "deny 401: basic authentication not accepted"
    );
    let malformed = decide(&auth, "GET", "/rest/x", Some("Basic !!!"), false);
    assert_eq!(
        malformed.to_string(),
        "deny 401: malformed authorization header"
    );

    let line = |auth: &Authenticator| {
        decide(
            auth,
            "GET",
            "/rest/x",
            Some("Bearer arat_notarealtoken"),
            false,
        )
        .to_string()
    };
    let first = line(&auth);
    let (reason, print) = first.rsplit_once(" token=").unwrap();
    assert!(reason.starts_with("deny 401: "), "{first}");
    assert!(
        print.len() == 8 && print.bytes().all(|b| b.is_ascii_hexdigit()),
        "{first}"
    );
    assert_eq!(
        line(&auth),
        first,
        "one core, one key: the same token shows the same fingerprint"
    );
    assert_ne!(
        line(&self::auth(json!({}))),
        first,
        "another core, another key"
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
