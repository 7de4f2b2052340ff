//! Envoy stats after traffic (SPEC section 6): what an operator graphs and alerts on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::envoy::IDP_CLUSTER;
use support::prometheus;
use support::providers::{Answer, FakeProvider};
use support::tokens::{bearer, mint, valid_claims, AUDIENCE};
use support::*;

#[test]
fn decisions_calls_and_cache_use_show_up_as_envoy_stats() {
    let key = SigningKey::rs256();
    let fake = provider_of(&key);
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
    assert_eq!(stat("denied.token_expired.corp"), 1);
    assert_eq!(stat("denied.no_credentials.none"), 1);
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

/// The filter's series in Envoy's `/stats/prometheus` (polled until `ready` holds, at most
/// 12 s: histograms show their samples only after Envoy's stats flush, every 5 s), read first
/// after `STATS_LAG` (the filter hands its counters over on its tick).
/// A provider serving `key`'s JWKS and a userinfo that knows bob.
fn provider_of(key: &SigningKey) -> FakeProvider {
    let fake = FakeProvider::start();
    fake.serve_jwks(jwks_of(&[key]));
    fake.reply(
        "GET",
        "/userinfo",
        Answer::ok(json!({"email": "bob@example.com"})),
    );
    fake
}

fn scrape(envoy: &Envoy, ready: impl Fn(&[prometheus::Series]) -> bool) -> Vec<prometheus::Series> {
    std::thread::sleep(support::envoy::STATS_LAG);
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let text = send("GET", &envoy.admin_url("/stats/prometheus"), &[]).body;
        let series: Vec<_> = prometheus::parse(&text)
            .into_iter()
            .filter(|s| s.name.starts_with(prometheus::PREFIX))
            .collect();
        if ready(&series) || Instant::now() > deadline {
            return series;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of the series `name` whose labels are exactly `labels` (histogram buckets aside).
fn value(series: &[prometheus::Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    series
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Every series is a documented metric with exactly its documented labels.
fn assert_documented(series: &[prometheus::Series]) {
    let documented = prometheus::documented();
    for s in series {
        let (metric, labels) = prometheus::metric_of(&documented, &s.name).unwrap_or_else(|| {
            panic!(
                "{} is not in docs/troubleshooting.md's metrics table: {s:?}",
                s.name
            )
        });
        let shown: BTreeSet<String> = s.labels.keys().cloned().collect();
        assert_eq!(shown, labels, "labels of {} ({metric}): {s:?}", s.name);
    }
}

#[test]
fn prometheus_shows_reason_provider_and_why_as_labels_with_the_shipped_stats_tags() {
    let key = SigningKey::rs256();
    let fake = provider_of(&key);
    let echo = EchoUpstream::start();
    let config = |dry_run: bool| {
        json!({
            "realm": "jira", "default_auth": "required", "dry_run": dry_run,
            "providers": [
                {"name": "corp.sso", "issuer": fake.issuer(), "audiences": [AUDIENCE], "jwks_uri": fake.jwks_uri()},
                {"name": "ui", "userinfo_uri": fake.url("/userinfo"), "username_claim": ["email"]}
            ],
            "rules": [{"path_prefix": "/status", "auth": "none"}],
            "clusters": {fake.authority(): IDP_CLUSTER}
        })
    };
    let good = mint(&key, &valid_claims(&fake.issuer(), "alice"));
    let mut expired_claims = valid_claims(&fake.issuer(), "alice");
    expired_claims["exp"] = json!(1_000_000_000);
    let expired = mint(&key, &expired_claims);
    let get = |envoy: &Envoy, path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        send("GET", &envoy.url(path), &headers).status
    };

    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(
        echo.port(),
        fake.port(),
        config(false),
    ));
    assert_eq!(get(&envoy, "/rest/a", Some(&good)), 200);
    assert_eq!(get(&envoy, "/rest/a", Some(&expired)), 401);
    assert_eq!(get(&envoy, "/rest/a", Some(&expired)), 401);
    assert_eq!(get(&envoy, "/rest/a", None), 401);
    assert_eq!(get(&envoy, "/status", None), 200);
    assert_eq!(get(&envoy, "/rest/a", Some("opaque-1")), 200);
    let call_ms = "atlassian_rest_auth_call_ms_count";
    let series = scrape(&envoy, |s| {
        value(s, call_ms, &[("provider", "ui")]).is_some_and(|v| v >= 1.0)
    });
    let denied = "atlassian_rest_auth_denied";
    let counters = [
        (
            denied,
            vec![("reason", "token_expired"), ("provider", "corp.sso")],
            2.0,
        ),
        (
            denied,
            vec![("reason", "no_credentials"), ("provider", "none")],
            1.0,
        ),
        (
            "atlassian_rest_auth_allowed",
            vec![("provider", "corp.sso")],
            1.0,
        ),
        ("atlassian_rest_auth_allowed", vec![("provider", "ui")], 1.0),
        (
            "atlassian_rest_auth_passed",
            vec![("why", "auth_none")],
            1.0,
        ),
        ("atlassian_rest_auth_calls", vec![("provider", "ui")], 1.0),
        ("atlassian_rest_auth_cache_miss", vec![], 1.0),
        (call_ms, vec![("provider", "ui")], 1.0),
    ];
    for (name, labels, want) in &counters {
        assert_eq!(
            value(&series, name, labels),
            Some(*want),
            "{name}{labels:?} in {series:#?}"
        );
    }
    assert!(
        value(
            &series,
            "atlassian_rest_auth_jwks_ok",
            &[("provider", "corp.sso")]
        ) >= Some(1.0)
    );
    assert_eq!(
        value(&series, "atlassian_rest_auth_calls_in_flight", &[]),
        Some(0.0)
    );
    assert!(
        series
            .iter()
            .any(|s| s.name == "atlassian_rest_auth_call_ms_bucket"
                && s.labels.get("provider").map(String::as_str) == Some("ui")),
        "{series:#?}"
    );
    assert!(
        value(
            &series,
            "atlassian_rest_auth_call_ms_sum",
            &[("provider", "ui")]
        )
        .is_some(),
        "{series:#?}"
    );
    assert_documented(&series);
    drop(envoy);

    // In dry run the same traffic is counted under dry_run_*, and nothing under denied/allowed.
    let envoy = Envoy::expect_start(&EnvoyOptions::with_filter(
        echo.port(),
        fake.port(),
        config(true),
    ));
    assert_eq!(get(&envoy, "/rest/a", Some(&good)), 200);
    assert_eq!(get(&envoy, "/rest/a", Some(&expired)), 200);
    assert_eq!(get(&envoy, "/rest/a", None), 200);
    let series = scrape(&envoy, |_| true);
    let dry_denied = "atlassian_rest_auth_dry_run_denied";
    assert_eq!(
        value(
            &series,
            dry_denied,
            &[("reason", "token_expired"), ("provider", "corp.sso")]
        ),
        Some(1.0),
        "{series:#?}"
    );
    assert_eq!(
        value(
            &series,
            dry_denied,
            &[("reason", "no_credentials"), ("provider", "none")]
        ),
        Some(1.0),
        "{series:#?}"
    );
    assert_eq!(
        value(
            &series,
            "atlassian_rest_auth_dry_run_allowed",
            &[("provider", "corp.sso")]
        ),
        Some(1.0),
        "{series:#?}"
    );
    assert!(
        !series
            .iter()
            .any(|s| s.name == denied || s.name == "atlassian_rest_auth_allowed"),
        "dry run counted as enforced: {series:#?}"
    );
    assert_documented(&series);
}
