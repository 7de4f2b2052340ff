//! Envoy stats after traffic (SPEC section 6): what an operator graphs and alerts on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::envoy::IDP_CLUSTER;
use support::providers::{Answer, FakeProvider};
use support::tokens::{bearer, mint, valid_claims, AUDIENCE};
use support::*;

#[test]
fn decisions_calls_and_cache_use_show_up_as_envoy_stats() {
    let key = SigningKey::rs256();
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[&key]));
    fake.reply(
        "GET",
        "/userinfo",
        Answer::ok(json!({"email": "bob@example.com"})),
    );
    let echo = EchoUpstream::start();
    let config = json!({
        "realm": "jira", "default_auth": "required",
        "providers": [
            {"name": "corp", "issuer": fake.issuer(), "audiences": [AUDIENCE], "jwks_uri": fake.jwks_uri()},
            {"name": "ui", "userinfo_uri": fake.url("/userinfo"), "username_claim": ["email"]}
        ],
        "rules": [{"path_prefix": "/status", "auth": "none"}],
        "clusters": {fake.authority(): IDP_CLUSTER}
    });
    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(echo.port(), fake.port(), config));
    let get = |path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        send("GET", &envoy.url(path), &headers).status
    };
    let good = mint(&key, &valid_claims(&fake.issuer(), "alice"));
    let mut expired_claims = valid_claims(&fake.issuer(), "alice");
    expired_claims["exp"] = json!(1_000_000_000);
    let expired = mint(&key, &expired_claims);

    assert_eq!(get("/rest/a", Some(&good)), 200);
    assert_eq!(get("/rest/a", Some(&good)), 200);
    assert_eq!(get("/rest/a", Some(&expired)), 401);
    assert_eq!(get("/rest/a", None), 401);
    assert_eq!(get("/status", None), 200);
    assert_eq!(get("/rest/a", Some("opaque-1")), 200);
    assert_eq!(get("/rest/a", Some("opaque-1")), 200);

    let stat = |name: &str| envoy.counter(&format!("wasmcustom.atlassian_rest_auth.{name}"));
    assert_eq!(stat("allowed.corp"), 2);
    assert_eq!(stat("allowed.ui"), 2);
    assert_eq!(stat("denied.token_expired"), 1);
    assert_eq!(stat("denied.no_credentials"), 1);
    assert_eq!(stat("passed.auth_none"), 1);
    assert_eq!(
        stat("cache.miss"),
        1,
        "the first opaque request asked the provider"
    );
    assert_eq!(
        stat("cache.hit"),
        2,
        "the second JWT and the second opaque request came from the cache"
    );
    assert!(stat("jwks.ok.corp") >= 1);
    assert_eq!(stat("calls.ui"), 1);
    let histograms = send("GET", &envoy.admin_url("/stats?filter=call_ms"), &[]).body;
    assert!(
        histograms.contains("wasmcustom.atlassian_rest_auth.call_ms.ui"),
        "{histograms}"
    );
}
