//! Rules hold on the path the product serves (issue 11 item 15), through the real Envoy with its
//! own path normalisation OFF (`normalize_path`, `merge_slashes`): the path reaches the filter as
//! the client wrote it, as on an Envoy configured without them. Tomcat, under Jira, Confluence
//! and Bitbucket, drops `;parameters`, decodes `%2e`, merges `//` and resolves `..`: each such
//! spelling of `/rest/...` must meet the `/rest/` rule, and what Tomcat would read in another
//! way (an encoded `/`, `\` or `;`) is refused with 400 before any rule. A `GET` rule also
//! covers `HEAD`. Needs Envoy (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};

use support::attacks::{assert_envoy_unharmed, bearer_challenge, raw_request, reason};
use support::envoy::IDP_CLUSTER;
use support::providers::FakeProvider;
use support::tokens::{self, bearer, valid_claims};
use support::*;

const REALM: &str = "jira";

/// Envoy (normalisation off) → filter → echo; a JWT provider. `/status` is open, `/rest/` needs
/// a token, `GET /rest/api/2/user` needs `jira-administrators`; anything else is optional.
struct Stack {
    envoy: Envoy,
    idp: FakeProvider,
    _echo: EchoUpstream,
}

impl Stack {
    fn start() -> Stack {
        let idp = FakeProvider::start();
        idp.serve_jwks(jwks_of(&[&SigningKey::rs256()]));
        let echo = EchoUpstream::start();
        let config = json!({
            "realm": REALM,
            "default_auth": "optional",
            "providers": [{
                "name": "idp", "issuer": idp.issuer(), "audiences": [tokens::AUDIENCE], "jwks_uri": idp.jwks_uri(),
                "username_claim": ["preferred_username"], "timeout_ms": 2000,
            }],
            "rules": [
                {"path_prefix": "/status", "auth": "none"},
                {"path_prefix": "/rest/api/2/user", "methods": ["GET"], "auth": "required", "require_claims": {"groups": "jira-administrators"}},
                {"path_prefix": "/rest/", "auth": "required"}
            ],
            "forward": {"username_header": "x-forwarded-user"},
            "clusters": {idp.authority(): IDP_CLUSTER},
        });
        let options = EnvoyOptions {
            normalize_path: false,
            ..EnvoyOptions::with_filter(echo.port(), idp.port(), config)
        };
        let envoy = Envoy::expect_start(&options);
        Stack {
            envoy,
            idp,
            _echo: echo,
        }
    }

    fn token(&self, username: &str, groups: &[&str]) -> String {
        let mut claims: Value = valid_claims(&self.idp.issuer(), username);
        claims["groups"] = json!(groups);
        tokens::mint(&SigningKey::rs256(), &claims)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        raw_request(self.envoy.port(), method, path, headers)
    }

    fn finish(mut self, secrets: &[&str]) {
        assert_envoy_unharmed(&mut self.envoy, secrets);
    }
}

#[test]
fn spellings_of_a_rest_path_meet_the_rest_rule_without_envoy_normalisation() {
    let stack = Stack::start();
    // Each is /rest/api/2/myself to Tomcat.
    let paths = [
        "/status/..;/rest/api/2/myself",
        "/status;x/..;y/rest/api/2/myself",
        "//rest/api/2/myself",
        "/status/%2e%2e/rest/api/2/myself",
        "/status/%2E./rest/api/2/myself",
        "/status/./../rest/api/2/myself",
        "/%72est/api/2/myself",
        "/rest;jsessionid=1/api/2/myself",
    ];
    let mut reached = Vec::new();
    for path in paths {
        let reply = stack.request("GET", path, &[]);
        if reply.status == 200 {
            reached.push(path);
            continue;
        }
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        assert_eq!(
            bearer_challenge(&reply),
            format!("Bearer realm=\"{REALM}\""),
            "{path}"
        );
    }
    assert!(
        reached.is_empty(),
        "reached the upstream without a credential: {reached:?}"
    );

    // The same spellings with a token pass, and the token's user is who the upstream sees.
    let token = stack.token("alice", &[]);
    for path in paths {
        let seen = stack
            .request("GET", path, &[("authorization", &bearer(&token))])
            .upstream();
        assert_eq!(
            seen.headers.get("x-forwarded-user").map(String::as_str),
            Some("alice"),
            "{path}"
        );
    }
    stack.finish(&[&token]);
}

#[test]
fn paths_with_more_than_one_reading_get_400_before_any_rule() {
    let stack = Stack::start();
    let token = stack.token("alice", &[]);
    let paths = [
        "/rest%2Fapi/2/myself",
        "/status/..%2Frest/api/2/myself",
        "/status/..%2frest/api/2/myself",
        "/status%5C..%5Crest/api/2/myself",
        "/status/..%3B/rest/api/2/myself",
        "/rest/api/2/my%00self",
        "/status/%zz/../../rest/api/2/myself",
        "/status/../../rest/api/2/myself",
    ];
    let mut passed = Vec::new();
    for path in paths {
        for headers in [vec![], vec![("authorization", bearer(&token))]] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let reply = stack.request("GET", path, &headers);
            if reply.status == 200 {
                passed.push(path);
                continue;
            }
            assert_eq!(
                (reply.status, reason(&reply)),
                (400, "malformed request path".to_string()),
                "{path}: {reply:?}"
            );
            assert!(
                reply.header("www-authenticate").is_none(),
                "{path}: a path error asks for no credential"
            );
        }
    }
    assert!(
        passed.is_empty(),
        "forwarded with no single reading: {passed:?}"
    );
    stack.finish(&[&token]);
}

#[test]
fn a_get_rule_also_covers_head() {
    let stack = Stack::start();
    let alice = stack.token("alice", &["jira-users"]);
    let admin = stack.token("root", &["jira-administrators"]);
    let path = "/rest/api/2/user?username=bob";

    assert_eq!(
        stack
            .request("GET", path, &[("authorization", &bearer(&alice))])
            .status,
        403
    );
    let head = stack.request("HEAD", path, &[("authorization", &bearer(&alice))]);
    assert_eq!(
        head.status, 403,
        "HEAD skipped the GET rule's require_claims: {head:?}"
    );
    assert_eq!(
        stack
            .request("HEAD", path, &[("authorization", &bearer(&admin))])
            .status,
        200
    );
    // Another method is not covered by a GET rule: the /rest/ rule applies.
    assert_eq!(
        stack
            .request(
                "POST",
                path,
                &[("authorization", &bearer(&alice)), ("content-length", "0")]
            )
            .status,
        200
    );
    stack.finish(&[&alice, &admin]);
}
