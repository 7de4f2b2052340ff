//! Interoperability with a real, third-party OpenID provider: the npm package `oidc-provider`
//! (tests/oidc/server.mjs), through the real Envoy and the real filter (SPEC.md sections 1, 2,
//! 5, 6).
//!
//! The other end-to-end tests speak to a provider simulated by this project, which can only
//! prove that the filter agrees with itself. Here the discovery document, the JWKS, the JWT
//! access tokens (RFC 9068), userinfo, introspection (RFC 7662) and revocation (RFC 7009) all
//! come from an implementation written by someone else, configured as an operator would.
//!
//! What oidc-provider 8.8 really sends (pinned in tests/oidc/package-lock.json), and so what
//! the filter configurations below rely on:
//! - JWT access token: header `{alg: RS256, typ: at+jwt, kid}`; claims `jti, sub, iat, exp,
//!   scope, client_id, iss, aud` (`sub` is the account id, e.g. `alice-sub`; `aud` the
//!   resource). No `preferred_username`/`email`: a username from a JWT is its `sub`.
//! - userinfo (opaque token with scope `openid email profile`): `sub, email, email_verified,
//!   preferred_username, name`.
//! - introspection: `active, sub, client_id, exp, iat, iss, scope, token_type` (no `username`);
//!   `{"active": false}` once revoked. JWT access tokens are not stored by the provider, so
//!   they introspect as inactive and cannot be revoked: they are verified with keys only.
//!
//! Needs Node.js 20 and `npm ci --prefix tests/oidc`, Envoy (`make envoy`) and the filter
//! (`make build`); `make test` does all of it.
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::oidc::{APP_CLIENT_ID, OPAQUE_SCOPE, RESOURCE_SCOPE};
use support::*;

/// The header the filter sets to the caller's username in every configuration here.
const USERNAME_HEADER: &str = "x-forwarded-user";
const PROVIDER_HEADER: &str = "x-forwarded-auth-provider";
/// The provider's `cache_seconds` in the userinfo and introspection configurations.
const CACHE_SECONDS: u64 = 2;

/// The claims of oidc-provider's JWT access tokens, sorted.
const JWT_ACCESS_TOKEN_CLAIMS: [&str; 8] = [
    "aud",
    "client_id",
    "exp",
    "iat",
    "iss",
    "jti",
    "scope",
    "sub",
];
/// The members of oidc-provider's introspection response for an active token, sorted.
const INTROSPECTION_MEMBERS: [&str; 8] = [
    "active",
    "client_id",
    "exp",
    "iat",
    "iss",
    "scope",
    "sub",
    "token_type",
];

/// The filter configuration: realm `jira`, `/rest/` requires a credential, the one `provider`
/// reached through the `idp` cluster.
fn filter_config(op: &OidcProvider, provider: Value) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "required",
        "providers": [provider],
        "rules": [{ "path_prefix": "/rest/", "auth": "required" }],
        "forward": {
            "username_header": USERNAME_HEADER,
            "provider_header": PROVIDER_HEADER,
        },
        "clusters": { op.authority(): IDP_CLUSTER },
    })
}

/// A jwt-mode provider: keys from discovery, the resource as audience, username from `sub`
/// (the only user claim oidc-provider puts in its JWT access tokens).
fn jwt_provider(op: &OidcProvider) -> Value {
    json!({
        "name": "op",
        "issuer": op.issuer(),
        "discovery": true,
        "audiences": [op.resource()],
        "username_claim": ["sub"],
        "timeout_ms": 2000,
    })
}

/// A provider without `mode` whose discovery gives keys and a userinfo endpoint: JWTs are
/// verified with the keys, opaque tokens resolved through userinfo.
fn userinfo_provider(op: &OidcProvider) -> Value {
    json!({
        "name": "op",
        "issuer": op.issuer(),
        "discovery": true,
        "audiences": [op.resource()],
        // Opaque tokens go to a jwt provider only with its userinfo endpoint stated here.
        "userinfo_uri": op.userinfo_uri(),
        "username_claim": ["preferred_username", "sub"],
        "cache_seconds": CACHE_SECONDS,
        "timeout_ms": 2000,
    })
}

/// An introspection-mode provider, authenticating as the provider's `jira-filter` client.
fn introspection_provider(op: &OidcProvider) -> Value {
    json!({
        "name": "op",
        "issuer": op.issuer(),
        "mode": "introspection",
        "discovery": true,
        "client_id": op.client_id(),
        "client_secret": op.client_secret(),
        "username_claim": ["username", "sub"],
        "cache_seconds": CACHE_SECONDS,
        "timeout_ms": 2000,
    })
}

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    op: OidcProvider,
    /// Never read: held so the upstream lives as long as the stack.
    _echo: EchoUpstream,
}

impl Stack {
    /// The provider, and Envoy with the filter configured with the provider entry `provider`
    /// builds for it, as `adjust` changes the whole configuration.
    fn start(provider: fn(&OidcProvider) -> Value, adjust: impl FnOnce(&mut Value)) -> Stack {
        let op = OidcProvider::start();
        let echo = EchoUpstream::start();
        let mut config = filter_config(&op, provider(&op));
        adjust(&mut config);
        let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), op.port(), config));
        Stack {
            envoy,
            op,
            _echo: echo,
        }
    }

    fn get_with_token(&self, token: &str) -> Reply {
        send(
            "GET",
            &self.envoy.url("/rest/api/2/myself"),
            &[("authorization", &format!("Bearer {token}"))],
        )
    }
}

fn no_change(_: &mut Value) {}

/// The payload of a JWT, decoded without verification (to state what the provider issued).
fn jwt_part(token: &str, index: usize) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a JWT: part {index} missing"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWT part {index} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT part {index} is not JSON: {e}"))
}

/// The sorted member names of a JSON object.
fn names(object: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

/// The request reached the upstream as `username`, authenticated by provider `op`, without
/// the token.
fn assert_forwarded_as(reply: &Reply, username: &str) {
    let seen = reply.upstream_headers();
    assert_eq!(
        seen.get(USERNAME_HEADER).map(String::as_str),
        Some(username),
        "upstream headers: {seen:?}"
    );
    assert_eq!(
        seen.get(PROVIDER_HEADER).map(String::as_str),
        Some("op"),
        "upstream headers: {seen:?}"
    );
    assert!(
        !seen.contains_key("authorization"),
        "authorization removed by default: {seen:?}"
    );
}

/// 401 for a token that was sent (SPEC section 5): challenge and JSON body say `invalid_token`.
fn assert_invalid_token(reply: &Reply) {
    assert_eq!(
        reply.status, 401,
        "expected 401 invalid_token, got {reply:?}"
    );
    let challenge = reply
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.as_str())
        .find(|value| value.starts_with("Bearer "))
        .unwrap_or_else(|| panic!("no Bearer challenge in {reply:?}"));
    assert!(
        challenge.starts_with(r#"Bearer realm="jira""#),
        "challenge names the realm: {challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge says invalid_token: {challenge}"
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token", "body: {}", reply.body);
    assert!(
        body["error_description"].is_string(),
        "body: {}",
        reply.body
    );
}

/// Calls `attempt` every 200 ms until it yields a value or `limit` has passed.
fn poll<T>(limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The provider itself, without Envoy: what the filter configurations below rely on.

#[test]
fn smoke_oidc_provider_serves_what_the_filter_relies_on() {
    let op = OidcProvider::start();

    let discovery = op.discovery();
    assert_eq!(discovery["issuer"], op.issuer());
    for endpoint in ["jwks_uri", "userinfo_endpoint", "introspection_endpoint"] {
        let uri = discovery[endpoint].as_str().unwrap_or_default();
        assert!(
            uri.starts_with(&op.issuer()),
            "discovery lists {endpoint}: {discovery}"
        );
    }

    let jwt = op.jwt_access_token("alice");
    let header = jwt_part(&jwt, 0);
    let claims = jwt_part(&jwt, 1);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let kids: Vec<Value> = op.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&header["kid"]), "kid {header} in {kids:?}");
    assert_eq!(names(&claims), JWT_ACCESS_TOKEN_CLAIMS, "{claims}");
    assert_eq!(claims["iss"], op.issuer());
    assert_eq!(claims["aud"], op.resource());
    assert_eq!(claims["sub"], op.subject("alice"));
    assert_eq!(claims["client_id"], APP_CLIENT_ID);
    assert_eq!(claims["scope"], RESOURCE_SCOPE);

    let opaque = op.opaque_token("alice");
    assert_eq!(opaque.split('.').count(), 1, "opaque, not a JWT");
    let (status, body) = op.userinfo(&opaque);
    assert_eq!(status, 200, "userinfo: {body}");
    let userinfo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        userinfo,
        json!({
            "sub": "alice-sub",
            "preferred_username": "alice",
            "name": "Alice Example",
            "email": "alice@example.com",
            "email_verified": true,
        })
    );

    let introspection = op.introspect(&opaque);
    assert_eq!(
        names(&introspection),
        INTROSPECTION_MEMBERS,
        "{introspection}"
    );
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["sub"], "alice-sub");
    assert_eq!(introspection["client_id"], APP_CLIENT_ID);
    assert_eq!(introspection["scope"], OPAQUE_SCOPE);
    assert_eq!(introspection["token_type"], "Bearer");

    op.revoke(&opaque);
    assert_eq!(op.introspect(&opaque), json!({ "active": false }));
    assert_eq!(op.userinfo(&opaque).0, 401, "revoked token at userinfo");

    assert_eq!(
        op.userinfo_requests(),
        2,
        "the provider counts what it is asked"
    );
    assert_eq!(op.introspection_requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// JWT access tokens: verified with the provider's keys, found through discovery.

#[test]
fn jwt_access_token_from_oidc_provider_is_verified_through_its_jwks() {
    let stack = Stack::start(jwt_provider, |c| {
        c["forward"]["claims_to_headers"] = json!({ "client_id": "x-forwarded-client-id" });
    });
    let token = stack.op.jwt_access_token("alice");

    let reply = stack.get_with_token(&token);

    assert_forwarded_as(&reply, "alice-sub");
    assert_eq!(
        reply.upstream_headers()["x-forwarded-client-id"],
        APP_CLIENT_ID,
        "claims of the provider's token reach the upstream"
    );

    let bob = stack.get_with_token(&stack.op.jwt_access_token("bob"));
    assert_forwarded_as(&bob, "bob-sub");
}

#[test]
fn jwt_access_token_for_another_audience_is_refused() {
    let stack = Stack::start(jwt_provider, |c| {
        c["providers"][0]["audiences"] = json!(["urn:atlassian:confluence"]);
    });

    let reply = stack.get_with_token(&stack.op.jwt_access_token("alice"));

    assert_invalid_token(&reply);
    assert_eq!(reply.json()["error_description"], "audience not allowed");
}

// ---------------------------------------------------------------------------------------------
// Opaque access tokens: resolved by the provider (userinfo or introspection), cached.

#[test]
fn opaque_token_is_resolved_through_userinfo() {
    let stack = Stack::start(userinfo_provider, no_change);

    let alice = stack.get_with_token(&stack.op.opaque_token("alice"));
    let bob = stack.get_with_token(&stack.op.opaque_token("bob"));

    assert_forwarded_as(&alice, "alice");
    assert_forwarded_as(&bob, "bob");
    assert_eq!(
        stack.op.userinfo_requests(),
        2,
        "one userinfo call per token"
    );
}

#[test]
fn userinfo_claims_reach_the_upstream_as_configured_headers() {
    let stack = Stack::start(userinfo_provider, |c| {
        c["forward"]["claims_to_headers"] = json!({ "email": "x-forwarded-email" });
    });

    let reply = stack.get_with_token(&stack.op.opaque_token("alice"));

    assert_forwarded_as(&reply, "alice");
    assert_eq!(
        reply.upstream_headers()["x-forwarded-email"],
        "alice@example.com"
    );
}

#[test]
fn jwt_of_a_provider_with_userinfo_is_still_verified_with_its_keys() {
    // The same configuration as the userinfo tests: a JWT access token (which oidc-provider's
    // userinfo endpoint would refuse, since it has an audience) is verified locally.
    let stack = Stack::start(userinfo_provider, no_change);

    let reply = stack.get_with_token(&stack.op.jwt_access_token("alice"));

    assert_forwarded_as(&reply, "alice-sub");
}

#[test]
fn unknown_opaque_token_is_refused_by_userinfo() {
    let stack = Stack::start(userinfo_provider, no_change);

    let reply = stack.get_with_token("tHiS-iS-nOt-A-tOkEn-ThE-pRoViDeR-iSsUeD-0123");

    assert_invalid_token(&reply);
    assert_eq!(
        stack.op.userinfo_requests(),
        1,
        "refused because userinfo said 401, not for want of a provider: {reply:?}"
    );
}

#[test]
fn userinfo_answer_is_cached_for_repeated_requests() {
    let stack = Stack::start(userinfo_provider, no_change);
    let token = stack.op.opaque_token("alice");

    let first = stack.get_with_token(&token);
    let second = stack.get_with_token(&token);

    assert_forwarded_as(&first, "alice");
    assert_forwarded_as(&second, "alice");
    assert_eq!(
        stack.op.userinfo_requests(),
        1,
        "the second answer came from the cache"
    );
}

#[test]
fn opaque_token_is_resolved_through_introspection() {
    let stack = Stack::start(introspection_provider, no_change);

    let reply = stack.get_with_token(&stack.op.opaque_token("alice"));

    // oidc-provider's introspection has no `username`: `sub` is the first claim present.
    assert_forwarded_as(&reply, "alice-sub");
}

#[test]
fn unknown_opaque_token_is_refused_by_introspection() {
    let stack = Stack::start(introspection_provider, no_change);

    let reply = stack.get_with_token("tHiS-iS-nOt-A-tOkEn-ThE-pRoViDeR-iSsUeD-0123");

    // `{"active": false}` is a 200 of the provider, and an invalid token to the filter.
    assert_invalid_token(&reply);
    assert_eq!(
        stack.op.introspection_requests(),
        1,
        "refused because introspection said inactive, not for want of a provider: {reply:?}"
    );
}

#[test]
fn introspection_answer_is_cached_for_repeated_requests() {
    let stack = Stack::start(introspection_provider, no_change);
    let token = stack.op.opaque_token("bob");

    let first = stack.get_with_token(&token);
    let second = stack.get_with_token(&token);

    assert_forwarded_as(&first, "bob-sub");
    assert_forwarded_as(&second, "bob-sub");
    assert_eq!(
        stack.op.introspection_requests(),
        1,
        "the second answer came from the cache"
    );
}

/// Accepted, revoked at the provider, still accepted from the cache, then refused once the
/// cache entry (`cache_seconds`) has expired.
fn assert_revocation_takes_effect_after_the_cache(provider: fn(&OidcProvider) -> Value) {
    let stack = Stack::start(provider, no_change);
    let token = stack.op.opaque_token("alice");
    let first = stack.get_with_token(&token);
    let cached_at = Instant::now();
    assert_eq!(first.status, 200, "before revocation: {first:?}");

    stack.op.revoke(&token);
    let cached = stack.get_with_token(&token);
    let cached_for = cached_at.elapsed();

    // The entry lives `cache_seconds` (2 s), counted in whole seconds perhaps, so more than
    // 1 s for sure; on a machine too slow to ask again within that, nothing cached is left.
    if cached_for < Duration::from_millis(900) {
        assert_eq!(
            cached.status, 200,
            "revoked {cached_for:?} ago, the result cached for {CACHE_SECONDS} s still holds: {cached:?}"
        );
    } else {
        eprintln!("cache check skipped: revoking and asking again took {cached_for:?}");
    }
    let refused = poll(Duration::from_secs(10), || {
        let reply = stack.get_with_token(&token);
        (reply.status != 200).then_some(reply)
    })
    .unwrap_or_else(|| panic!("revoked token still accepted 10 s after revocation"));
    let refused_after = cached_at.elapsed();
    assert_invalid_token(&refused);
    assert!(
        refused_after >= Duration::from_secs(CACHE_SECONDS - 1),
        "refused only once the cache entry expired, not at once ({refused_after:?})"
    );
}

#[test]
fn revoked_token_is_refused_once_its_cache_entry_expires() {
    assert_revocation_takes_effect_after_the_cache(userinfo_provider);
}

#[test]
fn revoked_token_is_refused_by_introspection_once_its_cache_entry_expires() {
    assert_revocation_takes_effect_after_the_cache(introspection_provider);
}

#[test]
fn introspection_refusing_the_filter_client_secret_is_503_logged_and_not_cached() {
    const WRONG_SECRET: &str = "not-the-filter-secret-7f3a";
    let stack = Stack::start(introspection_provider, |c| {
        c["providers"][0]["client_secret"] = json!(WRONG_SECRET)
    });
    let token = stack.op.opaque_token("alice");

    let first = stack.get_with_token(&token);
    let second = stack.get_with_token(&token);

    // RFC 7662 section 2.3: oidc-provider answers 401 invalid_client; the user's token is fine.
    for reply in [&first, &second] {
        assert_eq!(
            reply.status, 503,
            "the filter's credentials were refused: {reply:?}"
        );
        assert!(
            reply.header("retry-after").is_some(),
            "503 says when to retry: {reply:?}"
        );
    }
    assert_eq!(
        stack.op.introspection_requests(),
        2,
        "the second request asked again: the refusal of the credentials is no verdict on the token"
    );
    let log = stack.envoy.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains("[error]") && l.contains("provider op") && l.contains("client credentials")
        })
        .unwrap_or_else(|| panic!("no error line about the client credentials in:\n{log}"));
    assert!(
        line.contains("HTTP 401") && line.contains("\"jira-filter\""),
        "status and client_id named: {line}"
    );
    assert!(!log.contains(WRONG_SECRET), "the secret is never logged");
    assert!(!log.contains(&token), "the token is never logged");
}
