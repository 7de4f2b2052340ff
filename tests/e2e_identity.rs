//! Who the caller is, through the real Envoy and the real filter: the presets take the username
//! only from claims the provider keeps unique, usernames are canonical, and claim headers cannot
//! forge list entries (issue 11). The Keycloak, Okta, GitLab and Azure AD B2C providers are
//! simulated with their real issuers, discovery paths and token shapes (`support::presets`).
//!
//! Needs Envoy (`make envoy`) and the filter (`make build`).
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::presets::PresetIdp;
use support::tokens::{bearer, valid_claims};
use support::*;

const USERNAME_HEADER: &str = "x-forwarded-user";
const API_PATH: &str = "/rest/api/2/myself";

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    idp: PresetIdp,
    _echo: EchoUpstream,
}

impl Stack {
    /// `provider` behind the filter; `/rest/` needs a credential; `adjust` changes the whole
    /// filter configuration first.
    fn start(idp: PresetIdp, provider: Value, adjust: impl FnOnce(&mut Value)) -> Self {
        let echo = EchoUpstream::start();
        let mut config = json!({
            "realm": "jira",
            "default_auth": "required",
            "providers": [provider],
            "rules": [{ "path_prefix": "/rest/", "auth": "required" }],
            "forward": { "username_header": USERNAME_HEADER },
            "clusters": { idp.fake.authority(): IDP_CLUSTER },
        });
        adjust(&mut config);
        let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(
            echo.port(),
            idp.fake.port(),
            config,
        ));
        Stack {
            envoy,
            idp,
            _echo: echo,
        }
    }

    fn get(&self, token: &str) -> Reply {
        send(
            "GET",
            &self.envoy.url(API_PATH),
            &[("authorization", &bearer(token))],
        )
    }

    /// The token of `claims`, signed by the provider.
    fn get_claims(&self, claims: &Value) -> Reply {
        self.get(&self.idp.mint(claims))
    }
}

/// A provider of `preset` at `idp`'s issuer, with `extra` fields.
fn preset_provider(idp: &PresetIdp, preset: &str, extra: Value) -> Value {
    let mut p =
        json!({ "name": preset, "preset": preset, "issuer": idp.issuer, "timeout_ms": 2000 });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn assert_forwarded_as(reply: &Reply, username: &str) {
    let seen = reply.upstream_headers();
    assert_eq!(
        seen.get(USERNAME_HEADER).map(String::as_str),
        Some(username),
        "upstream headers: {seen:?}"
    );
}

/// 401 `invalid_token` saying `why`; the request never reached the upstream.
fn assert_refused(reply: &Reply, why: &str) {
    assert_eq!(reply.status, 401, "expected 401 {why}, got {reply:?}");
    assert_eq!(
        reply.json()["error_description"],
        why,
        "body: {}",
        reply.body
    );
}

// ---------------------------------------------------------------------------------------------
// Item 1: no user-chosen names as usernames.

#[test]
fn b2c_display_name_never_becomes_the_username() {
    let idp = PresetIdp::azure_b2c("contoso.onmicrosoft.com", "b2c_1a_signup_signin");
    let provider = preset_provider(&idp, "azure_b2c", json!({ "audiences": ["jira"] }));
    let stack = Stack::start(idp, provider, |_| {});
    // A social account without email that named itself "admin" at sign-up.
    let reply = stack.get_claims(&stack.idp.b2c_access_token(&[], "admin", "jira"));
    assert_forwarded_as(&reply, "9a0b1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d");
    let reply = stack.get_claims(&stack.idp.b2c_access_token(
        &["kate@contoso.com"],
        "admin",
        "jira",
    ));
    assert_forwarded_as(&reply, "kate@contoso.com");
    assert_eq!(stack.idp.fake.calls(&stack.idp.discovery_path), 1);
}

#[test]
fn email_marked_unverified_never_becomes_the_username() {
    let idp = PresetIdp::keycloak("acme");
    let provider = json!({
        "name": "custom", "issuer": idp.issuer, "discovery": true, "audiences": ["jira"],
        "username_claim": ["email", "sub"], "timeout_ms": 2000,
    });
    let stack = Stack::start(idp, provider, |_| {});
    let mut claims = valid_claims(&stack.idp.issuer, "kate");
    claims["email"] = json!("admin@example.com");
    claims["email_verified"] = json!(false);
    assert_forwarded_as(&stack.get_claims(&claims), "kate-subject-id");
    claims["email_verified"] = json!(true);
    assert_forwarded_as(&stack.get_claims(&claims), "admin@example.com");
}

// ---------------------------------------------------------------------------------------------
// Item 2: canonical usernames.

/// A custom JWT provider at `idp` taking `preferred_username`, with `transform`.
fn transformed(idp: &PresetIdp, transform: Value) -> Value {
    json!({
        "name": "custom", "issuer": idp.issuer, "discovery": true, "audiences": ["jira"],
        "username_claim": "preferred_username", "username_transform": transform, "timeout_ms": 2000,
    })
}

#[test]
fn username_with_a_space_at_either_end_is_refused() {
    let idp = PresetIdp::keycloak("acme");
    let provider = transformed(&idp, json!({}));
    let stack = Stack::start(idp, provider, |_| {});
    for name in ["admin ", " admin", "admin\t"] {
        let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, name));
        assert_refused(&reply, "invalid username");
    }
    let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, "Kate Smith"));
    assert_forwarded_as(&reply, "Kate Smith");
}

#[test]
fn unicode_look_alike_never_lowercases_onto_an_ascii_name() {
    let idp = PresetIdp::keycloak("acme");
    let provider = transformed(&idp, json!({ "lowercase": true }));
    let stack = Stack::start(idp, provider, |_| {});
    // KELVIN SIGN, LATIN SMALL LETTER DOTLESS I, FULLWIDTH A.
    for name in ["\u{212A}ate", "adm\u{131}n", "\u{FF21}dmin"] {
        let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, name));
        assert_refused(&reply, "invalid username");
    }
    let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, "\u{C9}lodie"));
    assert_forwarded_as(&reply, "\u{E9}lodie");
}

#[test]
fn strip_domain_strips_only_the_listed_domains() {
    let idp = PresetIdp::keycloak("acme");
    let provider = transformed(
        &idp,
        json!({ "lowercase": true, "strip_domain": ["example.com"] }),
    );
    let stack = Stack::start(idp, provider, |_| {});
    let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, "Kate@Example.COM"));
    assert_forwarded_as(&reply, "kate");
    for name in ["kate@attacker.example", "kate@attacker.example@example.com"] {
        let reply = stack.get_claims(&valid_claims(&stack.idp.issuer, name));
        assert_refused(&reply, "invalid username");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 3: claim headers cannot forge list entries.

#[test]
fn claim_list_element_with_a_comma_stays_one_element() {
    let idp = PresetIdp::keycloak("acme");
    let provider = transformed(&idp, json!({}));
    let stack = Stack::start(idp, provider, |c| {
        c["forward"]["claims_to_headers"] = json!({ "groups": "x-forwarded-groups" });
    });
    let mut claims = valid_claims(&stack.idp.issuer, "kate");
    claims["groups"] = json!(["users,jira-administrators", "Jira Users", " admins", "100%"]);
    let seen = stack.get_claims(&claims).upstream_headers();
    assert_eq!(
        seen.get("x-forwarded-groups").map(String::as_str),
        Some("users%2Cjira-administrators,Jira Users,%20admins,100%25"),
        "upstream headers: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 16: Keycloak, Okta and GitLab end to end.

#[test]
fn keycloak_realm_token_forwards_the_preferred_username() {
    let idp = PresetIdp::keycloak("acme");
    let provider = preset_provider(&idp, "keycloak", json!({ "audiences": ["jira"] }));
    let stack = Stack::start(idp, provider, |_| {});
    let claims = stack.idp.keycloak_access_token("kate", "jira-cli", "jira");
    assert_forwarded_as(&stack.get_claims(&claims), "kate");
    assert_eq!(stack.idp.fake.calls(&stack.idp.discovery_path), 1);
    assert_eq!(stack.idp.fake.calls(&stack.idp.keys_path), 1);
    // For another audience (a token issued to another client of the realm): refused.
    let other = stack
        .idp
        .keycloak_access_token("kate", "other-app", "other-app");
    assert_refused(&stack.get_claims(&other), "audience not allowed");
}

#[test]
fn keycloak_token_without_preferred_username_is_not_named_by_its_display_name() {
    let idp = PresetIdp::keycloak("acme");
    let provider = preset_provider(&idp, "keycloak", json!({ "audiences": ["jira"] }));
    let stack = Stack::start(idp, provider, |_| {});
    let mut claims = stack.idp.keycloak_access_token("kate", "jira-cli", "jira");
    claims.as_object_mut().unwrap().remove("preferred_username");
    claims["name"] = json!("admin");
    claims["given_name"] = json!("admin");
    let token = stack.idp.mint(&claims);
    // The filter asks the realm's userinfo, which knows no username either.
    let answer = json!({ "sub": claims["sub"], "name": "admin", "given_name": "admin", "email": "admin@example.com", "email_verified": false });
    stack.idp.userinfo_for(&token, answer);
    assert_refused(&stack.get(&token), "no username in token");
    assert_eq!(stack.idp.fake.calls(&stack.idp.userinfo_path), 1);
}

#[test]
fn okta_custom_server_access_token_forwards_the_login() {
    let idp = PresetIdp::okta("default");
    let provider = preset_provider(
        &idp,
        "okta",
        json!({ "audiences": ["api://default"], "username_transform": { "lowercase": true, "strip_domain": ["example.com"] } }),
    );
    let stack = Stack::start(idp, provider, |_| {});
    let claims = stack
        .idp
        .okta_access_token("Kate@example.com", "api://default");
    assert_forwarded_as(&stack.get_claims(&claims), "kate");
    assert_eq!(stack.idp.fake.calls(&stack.idp.discovery_path), 1);
    // An Okta login in another domain is not someone in ours.
    let claims = stack
        .idp
        .okta_access_token("kate@attacker.example", "api://default");
    assert_refused(&stack.get_claims(&claims), "invalid username");
}

#[test]
fn gitlab_id_token_forwards_the_email_and_a_groups_direct_rule_admits_it() {
    let idp = PresetIdp::gitlab();
    let provider = preset_provider(
        &idp,
        "gitlab",
        json!({ "audiences": ["gitlab-app-id"], "userinfo_uri": idp.fake.url(&idp.userinfo_path) }),
    );
    let stack = Stack::start(idp, provider, |c| {
        c["rules"] = json!([{ "path_prefix": "/", "auth": "required", "require_claims": { "groups_direct": "acme" } }]);
    });
    let claims = stack
        .idp
        .gitlab_id_token("admin", "kate@example.com", "gitlab-app-id", &["acme"]);
    assert_forwarded_as(&stack.get_claims(&claims), "kate@example.com");
    let outsider = stack.idp.gitlab_id_token(
        "kate",
        "kate@elsewhere.example",
        "gitlab-app-id",
        &["other"],
    );
    assert_eq!(stack.get_claims(&outsider).status, 403);
    assert_eq!(stack.idp.fake.calls(&stack.idp.userinfo_path), 0);
}

#[test]
fn gitlab_access_token_in_userinfo_mode_meets_the_groups_rule_and_id_tokens_are_refused() {
    let idp = PresetIdp::gitlab();
    let provider = preset_provider(
        &idp,
        "gitlab",
        json!({ "mode": "userinfo", "userinfo_uri": idp.fake.url(&idp.userinfo_path) }),
    );
    let access = "gitlab-opaque-access-token-0123456789abcdef";
    idp.userinfo_for(
        access,
        idp.gitlab_userinfo("admin", "kate@example.com", &["acme", "acme/jira"]),
    );
    let stack = Stack::start(idp, provider, |c| {
        c["rules"] = json!([{ "path_prefix": "/", "auth": "required", "require_claims": { "groups": "acme" } }]);
    });
    assert_forwarded_as(&stack.get(access), "kate@example.com");
    // An ID token goes to userinfo too, which refuses it: never admitted without `groups`.
    let id_token = stack.idp.mint(&stack.idp.gitlab_id_token(
        "kate",
        "kate@example.com",
        "gitlab-app-id",
        &["acme"],
    ));
    assert_refused(&stack.get(&id_token), "token rejected by provider");
    assert_eq!(stack.idp.fake.calls(&stack.idp.userinfo_path), 2);
}
