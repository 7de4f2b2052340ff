//! OAuth 1.0a two-legged impersonation through the real Envoy and the real filter (issue 13,
//! way 1): `forward.atlassian_oauth1` signs every authenticated request, and a third-party
//! verifier stands where Jira would (`tests/oauth1/verifier.py`: oauthlib's
//! `SignatureOnlyEndpoint`, RSA-SHA1 only, timestamps within 300 s, each nonce once, an empty
//! `oauth_token`, exactly one `xoauth_requestor_id` in the query).
//!
//! What a user relies on: the product sees the caller and no one else, with a signature it
//! accepts, and the rest of the request as the client sent it. The verifier answers every request
//! 200 with its verdict and what it received, and keeps a record the tests count.
//! Needs Envoy, the filter (`make build`) and the verifier's Python packages (`make oauth1`);
//! `make test` does all three.
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};

use std::time::{Duration, Instant};
use support::client::{try_send_body, try_send_within, Reply};
use support::oauth1::{self, Verifier, BASE_URL, CONSUMER_KEY, KEY_ENV};
use support::tokens::{self, bearer, valid_claims, AUDIENCE};
use support::*;

const ISSUER: &str = "https://idp.example.com/oauth1-e2e";
const USERNAME_HEADER: &str = "x-forwarded-user";
const FORM: &str = "application/x-www-form-urlencoded";

/// One test's world. Fields drop in order: Envoy stops before the verifier it forwards to.
struct Stack {
    envoy: Envoy,
    verifier: Verifier,
    key: SigningKey,
}

impl Stack {
    /// The verifier with a fresh key pair, and Envoy signing with its private key: `/status`
    /// open (`none`), `/public/` `optional`, everything else `required`.
    fn start() -> Stack {
        Stack::start_with(true)
    }

    /// As `start`; `body_while_paused`: the plugin's `allow_on_headers_stop_iteration`.
    fn start_with(body_while_paused: bool) -> Stack {
        oauth1::require_python_packages();
        let verifier = Verifier::start();
        let key = SigningKey::rs256();
        let config = json!({
            "realm": "jira",
            "default_auth": "required",
            "providers": [{
                "name": "test",
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks": jwks_of(&[&key]),
                "username_claim": ["preferred_username"],
            }],
            "rules": [
                { "path_prefix": "/status", "auth": "none" },
                { "path_prefix": "/public/", "auth": "optional" },
                { "path_prefix": "/rest/", "auth": "required" },
            ],
            "forward": {
                "username_header": USERNAME_HEADER,
                "atlassian_oauth1": {
                    "consumer_key": CONSUMER_KEY,
                    "private_key": { "env": KEY_ENV },
                    "base_url": BASE_URL,
                },
            },
        });
        let envoy = oauth1::start_envoy(
            verifier.port(),
            &config,
            &[(KEY_ENV, verifier.private_pem())],
            body_while_paused,
        );
        Stack {
            envoy,
            verifier,
            key,
        }
    }

    /// A valid token of `username`.
    fn token(&self, username: &str) -> String {
        tokens::mint(&self.key, &valid_claims(ISSUER, username))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        try_send_body(method, &self.envoy.url(path), headers, body)
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `method path` with `username`'s token (and `body` with `content_type`); the verifier's
    /// answer, which must come back 200.
    fn as_user(
        &self,
        username: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Value {
        let authorization = bearer(&self.token(username));
        let mut headers = vec![("authorization", authorization.as_str())];
        if let Some((content_type, _)) = body {
            headers.push(("content-type", content_type));
        }
        let reply = self.send(method, path, &headers, body.map(|(_, b)| b));
        assert_eq!(reply.status, 200, "{method} {path}: {reply:?}");
        reply.json()
    }
}

/// The verifier's verdict on `answer` was "valid", for `username` alone.
#[track_caller]
fn assert_signed_for(answer: &Value, username: &str) {
    assert_eq!(
        answer["valid"], true,
        "the product refused the signature: {answer}"
    );
    assert_eq!(
        answer["user"],
        json!([username]),
        "the user the product sees: {answer}"
    );
}

#[test]
fn verifier_alone_accepts_signed_requests_and_refuses_the_rest() {
    // The verifier is the judge of every test below: proved first on requests signed in Python
    // (a valid one, a tampered one, a reused nonce, an old timestamp, another key, a second
    // xoauth_requestor_id, a form body changed after signing, ...), without Envoy or the filter.
    oauth1::require_python_packages();
    let output = Command::new(oauth1::python())
        .arg(repo_root().join("tests/oauth1/selftest.py"))
        .output()
        .expect("run tests/oauth1/selftest.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the verifier's self-test failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all cases hold"), "{stdout}");
    assert!(
        stdout.contains("ok   same request again (nonce reused)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   query changed after signing"),
        "{stdout}"
    );
}

#[test]
fn authenticated_get_reaches_the_product_signed_for_the_caller_without_the_token() {
    let stack = Stack::start();
    let token = stack.token("alice");
    let reply = stack.send(
        "GET",
        "/rest/api/2/myself",
        &[("authorization", &bearer(&token))],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    assert_signed_for(&answer, "alice");
    assert_eq!(answer["method"], "GET");
    assert_eq!(
        answer["path"],
        "/rest/api/2/myself?xoauth_requestor_id=alice"
    );
    let authorization = answer["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(authorization.starts_with("OAuth "), "{authorization}");
    assert_eq!(answer["authorization_headers"], 1, "{answer}");
    assert!(
        !answer.to_string().contains(&token),
        "the bearer token reached the product: {answer}"
    );
    // The start line names the release and the mode, for the operator reading Envoy's log.
    let started = format!(
        "atlassian-rest-auth {}: configured: realm \"jira\", 1 provider(s), 3 rule(s), signing for the product (OAuth 1.0a)",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        stack.envoy.log().contains(&started),
        "no {started:?} in Envoy's log"
    );
    let oauth = &answer["oauth"];
    assert_eq!(oauth["oauth_consumer_key"], CONSUMER_KEY);
    assert_eq!(oauth["oauth_signature_method"], "RSA-SHA1");
    assert_eq!(oauth["oauth_version"], "1.0");
    assert_eq!(oauth["oauth_token"], "");
    let timestamp: i64 = oauth["oauth_timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        (timestamp - tokens::now()).abs() <= 5,
        "timestamp {timestamp}"
    );
    assert_eq!(stack.verifier.counts(), (1, 0));
}

#[test]
fn users_named_by_the_client_never_reach_the_product() {
    let stack = Stack::start();
    let forged = [
        "xoauth_requestor_id=admin",
        "user_id=admin",
        "xoauth%5Frequestor%5Fid=admin",
        "xoauth_requestor_id=admin&xoauth_requestor_id=root",
        "oauth_signature=forged&oauth_consumer_key=evil&oauth_token=stolen",
        "oauth_nonce=1&oauth_timestamp=1&oauth_signature_method=PLAINTEXT&oauth_version=1.0",
        "user_id=admin&xoauth_requestor_id=admin&oauth_signature=x&user%5Fid=root",
    ];
    for query in forged {
        for path in [
            format!("/rest/api/2/myself?{query}"),
            format!("/rest/api/2/myself?maxResults=5&{query}&fields=summary"),
        ] {
            let answer = stack.as_user("alice", "GET", &path, None);
            assert_signed_for(&answer, "alice");
            let seen = answer["path"].as_str().unwrap();
            for name in [
                "admin",
                "root",
                "forged",
                "evil",
                "stolen",
                "user_id",
                "PLAINTEXT",
            ] {
                assert!(!seen.contains(name), "{path} reached the product as {seen}");
            }
        }
    }
    let checks = stack.verifier.checks();
    assert_eq!(checks.len(), 2 * forged.len());
    assert!(checks.iter().all(|c| c["valid"] == true), "{checks:?}");
}

#[test]
fn other_query_parameters_reach_the_product_byte_for_byte() {
    let stack = Stack::start();
    for (sent, seen) in [
        (
            "/rest/api/2/search?jql=project%20%3D%20ABC&maxResults=5",
            "/rest/api/2/search?jql=project%20%3D%20ABC&maxResults=5&xoauth_requestor_id=alice",
        ),
        (
            "/rest/api/2/search?jql=summary~%22a+b%2Bc%22&fields=summary,status&expand=&flag",
            "/rest/api/2/search?jql=summary~%22a+b%2Bc%22&fields=summary,status&expand=&flag&xoauth_requestor_id=alice",
        ),
        (
            "/rest/api/2/search?a=1&xoauth_requestor_id=admin&b=%2B&user_id=root&c=%E2%82%AC",
            "/rest/api/2/search?a=1&b=%2B&c=%E2%82%AC&xoauth_requestor_id=alice",
        ),
    ] {
        let answer = stack.as_user("alice", "GET", sent, None);
        assert_signed_for(&answer, "alice");
        assert_eq!(answer["path"], seen, "sent {sent}");
    }
}

#[test]
fn form_post_is_signed_over_its_body_which_arrives_unchanged() {
    let stack = Stack::start();
    for (content_type, body) in [
        (
            FORM,
            "summary=a+b%2Bc&labels=x&labels=y&empty=&description=caf%C3%A9",
        ),
        (
            "application/x-www-form-urlencoded; charset=UTF-8",
            "name=+&value=%2B%2B+",
        ),
    ] {
        let answer = stack.as_user(
            "alice",
            "POST",
            "/rest/api/2/issue?notify=false",
            Some((content_type, body.as_bytes())),
        );
        assert_signed_for(&answer, "alice");
        assert_eq!(answer["body"], body, "the body the product got");
        assert_eq!(
            answer["path"],
            "/rest/api/2/issue?notify=false&xoauth_requestor_id=alice"
        );
    }
    assert_eq!(stack.verifier.counts(), (2, 0));
}

#[test]
fn json_post_is_signed_without_its_body() {
    let stack = Stack::start();
    let body = r#"{"fields":{"summary":"a=b&c","project":{"key":"ABC"}}}"#;
    let answer = stack.as_user(
        "alice",
        "POST",
        "/rest/api/2/issue",
        Some(("application/json", body.as_bytes())),
    );
    assert_signed_for(&answer, "alice");
    assert_eq!(answer["body"], body);
    assert_eq!(stack.verifier.counts(), (1, 0));
}

#[test]
fn form_body_naming_a_user_or_carrying_oauth_parameters_is_refused_before_the_product() {
    let stack = Stack::start();
    let token = bearer(&stack.token("alice"));
    for body in [
        "summary=x&xoauth_requestor_id=admin",
        "xoauth%5Frequestor%5Fid=admin",
        "user_id=admin&summary=x",
        "summary=x&oauth_signature=forged",
        "oauth_token=",
    ] {
        let reply = stack.send(
            "POST",
            "/rest/api/2/issue",
            &[("authorization", &token), ("content-type", FORM)],
            Some(body.as_bytes()),
        );
        assert_eq!(reply.status, 400, "form body {body:?}: {reply:?}");
    }
    assert!(
        stack.verifier.checks().is_empty(),
        "the product received: {:?}",
        stack.verifier.checks()
    );
}

#[test]
fn large_form_body_is_signed() {
    let stack = Stack::start();
    // 200 KiB: well under Envoy's default 1 MiB buffer limit.
    let body: String = (0..2100)
        .map(|i| format!("field{i:04}={}", "v%2B".repeat(22)))
        .collect::<Vec<_>>()
        .join("&");
    assert!(body.len() > 200 * 1024, "{}", body.len());
    let answer = stack.as_user(
        "alice",
        "POST",
        "/rest/api/2/issue/bulk",
        Some((FORM, body.as_bytes())),
    );
    assert_signed_for(&answer, "alice");
    assert_eq!(answer["body"].as_str().map(str::len), Some(body.len()));
    assert!(
        answer["body"] == body.as_str(),
        "the body changed on the way"
    );
}

#[test]
fn every_request_has_its_own_nonce() {
    let stack = Stack::start();
    let token = bearer(&stack.token("alice"));
    let mut nonces = BTreeSet::new();
    for i in 0..20 {
        let reply = stack.send(
            "GET",
            &format!("/rest/api/2/issue/ABC-{i}"),
            &[("authorization", &token)],
            None,
        );
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        let answer = reply.json();
        assert_signed_for(&answer, "alice");
        let nonce = answer["oauth"]["oauth_nonce"].as_str().unwrap().to_string();
        assert!(nonce.len() >= 16, "nonce {nonce:?}");
        nonces.insert(nonce);
    }
    assert_eq!(nonces.len(), 20, "nonces repeat: {nonces:?}");
    assert_eq!(stack.verifier.counts(), (20, 0));
}

#[test]
fn requests_passing_without_a_token_are_forwarded_unsigned() {
    let stack = Stack::start();
    // `none`: the client's own Authorization (not a bearer token) and query stay as they are.
    let basic = "Basic dXNlcjpwYXNzd29yZA==";
    let reply = stack.send(
        "GET",
        "/status?verbose=1",
        &[("authorization", basic)],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["path"], "/status?verbose=1");
    assert_eq!(answer["headers"]["authorization"], basic);
    assert_eq!(answer["user"], json!([]));
    // `optional` without a token: anonymous, unsigned.
    let reply = stack.send("GET", "/public/info?x=1", &[], None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer = reply.json();
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["reason"], "no OAuth Authorization header");
    assert_eq!(answer["path"], "/public/info?x=1");
    assert_eq!(answer["authorization_headers"], 0, "{answer}");
    // `optional` with a token: authenticated, so signed.
    let answer = stack.as_user("alice", "GET", "/public/info?x=1", None);
    assert_signed_for(&answer, "alice");
    assert_eq!(answer["path"], "/public/info?x=1&xoauth_requestor_id=alice");
    assert_eq!(stack.verifier.counts(), (1, 2));
}

#[test]
fn usernames_with_spaces_symbols_and_letters_beyond_ascii_reach_the_product_intact() {
    let stack = Stack::start();
    for username in ["Zoë Doe", "r&d+ops=1%20x", "Ελένη", "山田"] {
        let answer = stack.as_user(username, "GET", "/rest/api/2/myself", None);
        assert_signed_for(&answer, username);
    }
    assert_eq!(stack.verifier.counts(), (4, 0));
}

/// Envoy withholds the body from a Wasm filter that paused the headers unless the plugin sets
/// `allow_on_headers_stop_iteration`: a form POST then gets a 500 that says so after the wait,
/// never hangs, and never reaches the product; requests without a form body are unaffected.
#[test]
fn without_allow_on_headers_stop_iteration_a_form_post_is_refused_after_the_wait_not_hung() {
    let stack = Stack::start_with(false);
    let token = bearer(&stack.token("alice"));
    let answer = stack.as_user("alice", "GET", "/rest/api/2/myself", None);
    assert_signed_for(&answer, "alice");
    let started = Instant::now();
    let reply = try_send_within(
        "POST",
        &stack.envoy.url("/rest/api/2/issue"),
        &[("authorization", &token), ("content-type", FORM)],
        Some(b"summary=x"),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("the form POST hung: {e}"));
    let waited = started.elapsed();
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("form body not delivered"), "{reply:?}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    assert_eq!(
        stack.verifier.counts(),
        (1, 0),
        "only the GET reached the product"
    );
}
