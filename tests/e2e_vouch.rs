//! Which provider vouches, on which path (issue 11 items 4 to 7), through the real Envoy: a
//! rule's `providers` and `require_claims` bind every credential alike (cached answers, Basic
//! passwords, passthroughs); CORS preflights reach the upstream without credentials; opaque
//! tokens go only where they belong; audiences are never optional by accident.
//!
//! Each test starts its own simulated provider (`support::providers::FakeProvider`, which
//! records every request it gets), echo upstream and Envoy on free 127.0.0.1 ports, and asserts
//! what a user relies on: the status, the headers the upstream saw, the calls the provider got.
//! Needs Envoy (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use support::attacks::{assert_invalid_token, reason};
use support::envoy::IDP_CLUSTER;
use support::providers::{with_header_field, Answer, FakeProvider};
use support::tokens::{self, bearer, github_token, valid_claims};
use support::*;

const REALM: &str = "jira";
const USERNAME_HEADER: &str = "x-forwarded-user";
/// An Atlassian personal access token: no provider's, Atlassian checks it.
const ATLASSIAN_PAT: &str = "NjE0NzM5MDg4NDU3OtA8MEl2GzQh6rL6dZtZxhGAc3wn";

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    idp: FakeProvider,
    _echo: EchoUpstream,
}

impl Stack {
    /// `providers` behind `rules` (then `/rest/` optional), all calls to `idp`; `adjust` last.
    fn start(
        idp: FakeProvider,
        providers: Value,
        rules: Value,
        adjust: impl FnOnce(&mut Value),
    ) -> Stack {
        let echo = EchoUpstream::start();
        let mut all_rules = rules.as_array().cloned().unwrap_or_default();
        all_rules.push(json!({ "path_prefix": "/rest/", "auth": "optional" }));
        let mut config = json!({
            "realm": REALM,
            "default_auth": "optional",
            "providers": providers,
            "rules": all_rules,
            "forward": { "username_header": USERNAME_HEADER },
            "clusters": { idp.authority(): IDP_CLUSTER },
        });
        adjust(&mut config);
        let envoy =
            Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config));
        Stack {
            envoy,
            idp,
            _echo: echo,
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send("GET", &self.envoy.url(path), headers)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// The filter refuses `config` at start, and its log names `field`.
fn assert_refused_at_start(config: Value, field: &str) {
    let echo = EchoUpstream::start();
    let idp = FakeProvider::start();
    let failure = Envoy::start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config))
        .map(|_| ())
        .expect_err("Envoy must refuse the configuration");
    assert!(
        failure.log.contains(field),
        "the log names {field}: {failure}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: rules bind every credential the same way.

/// Two userinfo providers taking `tok-` tokens: `ua` (answers for any token) and `ub` (knows
/// none); `/rest/a` admits only `ua`, `/rest/b` only `ub`. Basic passwords may be tokens.
fn two_providers() -> Stack {
    let fake = FakeProvider::start();
    fake.reply(
        "GET",
        "/a/userinfo",
        Answer::ok(json!({ "email": "mallory@a.example" })),
    );
    fake.reply("GET", "/b/userinfo", Answer::status(401));
    let provider = |name: &str, path: &str| {
        json!({ "name": name, "mode": "userinfo", "userinfo_uri": fake.url(path), "token_prefixes": ["tok-"],
                "username_claim": ["email"], "cache_seconds": 60, "timeout_ms": 2000 })
    };
    let providers = json!([provider("ua", "/a/userinfo"), provider("ub", "/b/userinfo")]);
    let rules = json!([
        { "path_prefix": "/rest/a", "auth": "required", "providers": ["ua"] },
        { "path_prefix": "/rest/b", "auth": "required", "providers": ["ub"] },
    ]);
    Stack::start(fake, providers, rules, |c| c["basic"] = json!("api_tokens"))
}

#[test]
fn answer_cached_from_one_provider_never_admits_a_basic_password_where_only_another_may_vouch() {
    let stack = two_providers();
    let token = "tok-issued-by-provider-a";
    let at_a = stack.get("/rest/a/x", &[("authorization", &bearer(token))]);
    assert_eq!(
        at_a.upstream_headers()[USERNAME_HEADER],
        "mallory@a.example"
    );

    let at_b = stack.get("/rest/b/x", &[("authorization", &basic("mallory", token))]);

    assert_invalid_token(&at_b, REALM, Some("token rejected by provider"));
    assert_eq!(
        stack.idp.calls("/b/userinfo"),
        1,
        "provider ub was asked itself"
    );
    assert_eq!(stack.idp.calls("/a/userinfo"), 1);
}

#[test]
fn answer_cached_from_one_provider_never_admits_a_bearer_where_only_another_may_vouch() {
    let stack = two_providers();
    let token = "tok-bearer-issued-by-provider-a";
    let at_a = stack.get("/rest/a/x", &[("authorization", &bearer(token))]);
    assert_eq!(
        at_a.upstream_headers()[USERNAME_HEADER],
        "mallory@a.example"
    );

    // Twice: the first answer is the worker memo's or the shared cache's, the second the other's.
    for _ in 0..2 {
        let at_b = stack.get("/rest/b/x", &[("authorization", &bearer(token))]);
        assert_invalid_token(&at_b, REALM, Some("token rejected by provider"));
    }
    assert!(
        stack.idp.calls("/b/userinfo") >= 1,
        "provider ub decides for its own path"
    );
}

/// A JWT provider `idp`; `/rest/admin` admits only it, `/rest/claims` needs `groups: admins`.
fn restricted(fake: FakeProvider, extra: Value, adjust: impl FnOnce(&mut Value)) -> Stack {
    let key = SigningKey::rs256();
    fake.serve_jwks(jwks_of(&[&key]));
    let mut providers = vec![
        json!({ "name": "idp", "issuer": fake.issuer(), "audiences": [tokens::AUDIENCE],
                                     "jwks_uri": fake.jwks_uri(), "timeout_ms": 2000 }),
    ];
    providers.extend(extra.as_array().cloned().unwrap_or_default());
    let rules = json!([
        { "path_prefix": "/rest/admin", "auth": "optional", "providers": ["idp"] },
        { "path_prefix": "/rest/claims", "auth": "optional", "require_claims": { "groups": "admins" } },
    ]);
    Stack::start(fake, json!(providers), rules, adjust)
}

#[test]
fn basic_passthrough_is_refused_where_a_rule_names_providers_or_claims() {
    let stack = restricted(FakeProvider::start(), json!([]), |_| {});
    let password = basic("admin", "guessable");

    let open = stack.get("/rest/api/2/myself", &[("authorization", &password)]);
    assert_eq!(
        open.upstream_headers()["authorization"],
        password,
        "elsewhere Atlassian checks Basic"
    );
    for path in ["/rest/admin/x", "/rest/claims/x"] {
        let reply = stack.get(path, &[("authorization", &password)]);

        assert_invalid_token(&reply, REALM, Some("basic authentication not accepted"));
    }
}

#[test]
fn unknown_bearer_passthrough_is_refused_where_a_rule_names_providers_or_claims() {
    let fake = FakeProvider::start();
    let github = json!({ "name": "gh", "preset": "github", "userinfo_uri": fake.url("/user"), "timeout_ms": 2000 });
    let stack = restricted(fake, json!([github]), |c| {
        c["unknown_bearer"] = json!("passthrough")
    });
    let pat = bearer(ATLASSIAN_PAT);

    let open = stack.get("/rest/api/2/myself", &[("authorization", &pat)]);
    assert_eq!(
        open.upstream_headers()["authorization"],
        pat,
        "elsewhere Atlassian checks its own tokens"
    );
    for path in ["/rest/admin/x", "/rest/claims/x"] {
        let reply = stack.get(path, &[("authorization", &pat)]);

        assert_invalid_token(&reply, REALM, Some("no provider accepts this token"));
    }
    assert!(
        stack.idp.requests_to("/user").is_empty(),
        "never sent to GitHub"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 5: CORS preflights carry no credentials.

#[test]
fn cors_preflight_reaches_the_upstream_without_authorization_or_cookie() {
    let stack = restricted(FakeProvider::start(), json!([]), |c| {
        c["basic"] = json!("reject")
    });
    let password = basic("admin", "secret");

    let reply = send(
        "OPTIONS",
        &stack.envoy.url("/rest/api/2/issue"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "DELETE"),
            ("authorization", &password),
            ("cookie", "JSESSIONID=victim-session"),
            (USERNAME_HEADER, "admin"),
        ],
    );

    let seen = reply.upstream_headers();
    for header in ["authorization", "cookie", USERNAME_HEADER] {
        assert!(
            !seen.contains_key(header),
            "the upstream saw {header}: {seen:?}"
        );
    }
    assert_eq!(
        seen["origin"], "https://evil.example",
        "the preflight itself passes"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 6: opaque tokens go only where they belong.

#[test]
fn malformed_github_token_is_refused_without_calling_github() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/user", Answer::ok(json!({ "login": "octocat" })));
    let github = json!({ "name": "gh", "preset": "github", "userinfo_uri": fake.url("/user"), "timeout_ms": 2000 });
    let stack = Stack::start(fake, json!([github]), json!([]), |_| {});
    let good = github_token("ghp_", "Zq3LmN8pRt5VwX2yB7cD4fG6hJ9kA1");
    let last = if good.ends_with('x') { 'y' } else { 'x' };
    let bad_checksum = format!("{}{last}", &good[..good.len() - 1]);

    for token in [
        bad_checksum.as_str(),
        "gho_abc",
        "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
    ] {
        let reply = stack.get("/rest/api/2/myself", &[("authorization", &bearer(token))]);

        assert_invalid_token(&reply, REALM, Some("malformed token"));
    }
    assert_eq!(
        stack.idp.calls("/user"),
        0,
        "no call for a token GitHub never issued"
    );
    let reply = stack.get("/rest/api/2/myself", &[("authorization", &bearer(&good))]);
    assert_eq!(reply.upstream_headers()[USERNAME_HEADER], "octocat");
    assert_eq!(stack.idp.calls("/user"), 1);
}

#[test]
fn google_preset_leaves_atlassian_personal_access_tokens_to_atlassian() {
    let fake = FakeProvider::start();
    fake.reply("GET", "/v1/userinfo", Answer::status(401));
    let google = json!({ "name": "google", "preset": "google", "issuer": fake.issuer(), "jwks_uri": fake.jwks_uri(),
                         "userinfo_uri": fake.url("/v1/userinfo"), "audiences": ["1234-app.apps.googleusercontent.com"],
                         "timeout_ms": 2000 });
    let stack = Stack::start(fake, json!([google]), json!([]), |c| {
        c["unknown_bearer"] = json!("passthrough")
    });

    let reply = stack.get(
        "/rest/api/2/myself",
        &[("authorization", &bearer(ATLASSIAN_PAT))],
    );

    assert_eq!(
        reply.upstream_headers()["authorization"],
        bearer(ATLASSIAN_PAT)
    );
    assert_eq!(
        stack.idp.calls("/v1/userinfo"),
        0,
        "the PAT never reached Google"
    );
}

#[test]
fn unknown_bearer_passthrough_with_a_provider_taking_any_opaque_token_stops_envoy() {
    let config = json!({
        "unknown_bearer": "passthrough",
        "providers": [{ "name": "ui", "userinfo_uri": "http://127.0.0.1:9/userinfo" }],
    });
    assert_refused_at_start(config, "providers[0].token_prefixes");
}

// ---------------------------------------------------------------------------------------------
// Item 7: audiences are not optional by accident.

#[test]
fn jwt_provider_without_audiences_stops_envoy() {
    let config = json!({ "providers": [{ "name": "idp", "issuer": "http://127.0.0.1:9", "jwks_uri": "http://127.0.0.1:9/jwks" }] });
    assert_refused_at_start(config, "providers[0].audiences");
}

#[test]
fn audiences_on_a_userinfo_provider_stop_envoy() {
    let config = json!({ "providers": [{ "name": "ui", "userinfo_uri": "http://127.0.0.1:9/userinfo", "audiences": ["jira"] }] });
    assert_refused_at_start(config, "providers[0].audiences");
}

#[test]
fn audiences_any_is_said_explicitly_and_accepts_any_audience() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    let provider = json!({ "name": "idp", "issuer": fake.issuer(), "audiences": "any", "jwks_uri": fake.jwks_uri(), "timeout_ms": 2000 });
    let mut claims = valid_claims(&fake.issuer(), "alice");
    claims["aud"] = json!("some-other-app");
    let token = tokens::mint(&key, &claims);
    let stack = Stack::start(fake, json!([provider]), json!([]), |_| {});

    let reply = stack.get("/rest/api/2/myself", &[("authorization", &bearer(&token))]);

    assert_eq!(reply.upstream_headers()[USERNAME_HEADER], "alice");
}

/// An Azure AD provider served by `fake`, and a Graph token (header `nonce`, `aud` Graph).
fn azure_with_graph_token(accept_graph_tokens: bool) -> (Stack, String) {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/oidc/userinfo",
        Answer::ok(json!({ "sub": "x", "email": "alice@contoso.com" })),
    );
    let mut claims = valid_claims(&fake.issuer(), "alice@contoso.com");
    claims["aud"] = json!("00000003-0000-0000-c000-000000000000");
    let graph = with_header_field(
        &tokens::mint(&key, &claims),
        "nonce",
        "AQABAAAA-graph-nonce",
    );
    let provider = json!({ "name": "entra", "preset": "azure_ad", "issuer": fake.issuer(), "audiences": ["api://jira"],
                           "jwks_uri": fake.jwks_uri(), "userinfo_uri": fake.url("/oidc/userinfo"),
                           "accept_graph_tokens": accept_graph_tokens, "timeout_ms": 2000,
                           // Graph's userinfo names the user only by `email`, which the preset does not read by default.
                           "username_claim": ["preferred_username", "upn", "email"] });
    (
        Stack::start(fake, json!([provider]), json!([]), |_| {}),
        graph,
    )
}

#[test]
fn azure_graph_token_is_refused_by_default_without_a_call() {
    let (stack, graph) = azure_with_graph_token(false);

    let reply = stack.get("/rest/api/2/myself", &[("authorization", &bearer(&graph))]);

    assert_invalid_token(&reply, REALM, Some("audience not allowed"));
    assert_eq!(stack.idp.calls("/oidc/userinfo"), 0);
}

#[test]
fn azure_graph_token_goes_to_graph_userinfo_when_the_provider_opts_in() {
    let (stack, graph) = azure_with_graph_token(true);

    let reply = stack.get("/rest/api/2/myself", &[("authorization", &bearer(&graph))]);

    assert_eq!(
        reply.upstream_headers()[USERNAME_HEADER],
        "alice@contoso.com",
        "{}",
        reason(&reply)
    );
    assert_eq!(stack.idp.calls("/oidc/userinfo"), 1);
}
