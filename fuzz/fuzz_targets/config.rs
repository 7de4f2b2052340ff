//! `config::Config::parse` on any bytes; whatever it accepts must drive the rest of the core
//! without a panic: key records, outgoing calls (no header injection) and a few requests.
#![no_main]

use std::collections::HashSet;

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step};
use atlassian_rest_auth::cache::NoCache;
use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::keys::{discovery_uri, KeyRecord, ProviderKeys};
use atlassian_rest_auth::lookup::LookupStep;
use atlassian_rest_auth::outbound::Outbound;
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth_fuzz::{check_verdict, log_key, NOW_SECS};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const TOKEN: &str = "opaque-fuzz-token-0123456789";

fn env(name: &str) -> Option<String> {
    (name == "SECRET").then(|| "from-env".to_string())
}

fn header_safe(out: &Outbound) {
    for (name, value) in &out.headers {
        assert!(
            !name.is_empty() && !value.contains(['\r', '\n', '\0']),
            "header injection in {name}: {value:?}"
        );
    }
    assert!(!out.cluster.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Config::parse(data, &env) else {
        return;
    };
    let now = UnixTime::from_secs(NOW_SECS);
    let names: HashSet<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names.len(),
        config.providers.len(),
        "duplicate provider names accepted"
    );
    for provider in &config.providers {
        assert!(!provider.username_claims.is_empty() && !provider.algorithms.is_empty());
        let record = KeyRecord::default();
        let _ = record.due(provider, now, true);
        let _ = provider.issuer.as_deref().map(discovery_uri);
        if let Some(uri) = record.jwks_uri(provider) {
            header_safe(&Outbound::get_json(&config, provider, &uri));
        }
        for step in [LookupStep::first(provider), LookupStep::Userinfo] {
            if let Some(out) = step.outbound(&config, provider, &record, TOKEN) {
                header_safe(&out);
            }
        }
    }
    let _ = config
        .kept_claims(&json!({"email": "a@b.c", "groups": ["x"], "realm_access": {"roles": ["r"]}}));
    // A fixed log key: the same input logs the same fingerprints, run after run.
    let auth = Authenticator::with_log_key(config, log_key());
    let keys: Vec<ProviderKeys> = auth
        .config
        .providers
        .iter()
        .map(ProviderKeys::new)
        .collect();
    for (method, path, authorization) in [
        ("GET", "/rest/api/2/myself", None),
        ("GET", "/rest/api/2/myself", Some(format!("Bearer {TOKEN}"))),
        (
            "DELETE",
            "/rest/api/2/user?x=1",
            Some("Basic YTpi".to_string()),
        ),
        ("OPTIONS", "/", Some("Bearer a.b.c".to_string())),
    ] {
        let head = RequestHead {
            method: method.into(),
            path: path.into(),
            authorization: authorization.clone(),
            cors_headers: method == "OPTIONS",
            form_body: false,
        };
        let _ = auth.start(&head, &keys, &NoCache, now, true);
        // Past its deadline a request is always decided: the adapter relies on it.
        match auth.start(&head, &keys, &NoCache, now, false) {
            Step::Decide(verdict) => check_verdict(&auth, &verdict),
            other => panic!("undecided past the deadline: {other:?}"),
        }
    }
});
