//! Whole request flows through the sans-IO core, natively: configuration → `start` →
//! "wait for keys" → the outbound JWKS call → a canned provider reply → `start` → decision.
//! Tokens are really signed with the committed test keys; nothing here needs Envoy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use atlassian_rest_auth::authenticator::{Authenticator, Outcome, RequestHead, Step, Verdict};
use atlassian_rest_auth::cache::NoCache;
use atlassian_rest_auth::config::{Config, ProviderId};
use atlassian_rest_auth::decision::Decision;
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::keys::{FetchKind, ProviderKeys};
use atlassian_rest_auth::outbound::Outbound;
use atlassian_rest_auth::time::UnixTime;
use serde_json::{json, Value};
use support::keys::{jwks_of, Alg, SigningKey};
use support::tokens::{
    github_token, hs256_with_rsa_public_key, mint, mint_with_kid, sign, unsigned, with_payload,
};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

/// Valid claims at `NOW`: issued now, valid an hour, audience `jira`.
fn claims(username: &str) -> Value {
    json!({"iss": ISSUER, "aud": "jira", "sub": "s-1", "preferred_username": username, "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
}

fn base_config() -> Value {
    json!({
        "realm": "jira",
        "default_auth": "optional",
        "providers": [{"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
                       "username_claim": ["preferred_username", "sub"], "clock_skew_seconds": 30}],
        "rules": [
            {"path_prefix": "/status", "auth": "none"},
            {"path_prefix": "/rest/api/2/user", "methods": ["DELETE"], "auth": "required", "require_claims": {"groups": "jira-administrators"}},
            {"path_prefix": "/rest/", "auth": "required"}
        ],
        "forward": {"username_header": "x-forwarded-user", "provider_header": "x-forwarded-auth-provider", "claims_to_headers": {"email": "x-forwarded-email"}},
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}

/// A core plus the key state one worker would hold.
struct Flow {
    auth: Authenticator,
    keys: Vec<ProviderKeys>,
}

impl Flow {
    fn new(config: Value) -> Self {
        let config = Config::parse(config.to_string().as_bytes(), &|_| None).unwrap();
        let keys = config.providers.iter().map(ProviderKeys::new).collect();
        Flow {
            auth: Authenticator::new(config),
            keys,
        }
    }

    /// The configuration's provider named `name`.
    fn id(&self, name: &str) -> ProviderId {
        self.auth.config.provider_named(name).unwrap()
    }

    /// The provider answered the JWKS fetch with `status` and `body`.
    fn jwks_reply(&mut self, status: u32, body: &Value, now: u64) {
        let provider = &self.auth.config.providers[0];
        let result = self.keys[0].record.after_reply(
            FetchKind::Jwks,
            provider,
            status,
            body.to_string().as_bytes(),
            at(now),
        );
        self.keys[0].adopt(result.record);
    }

    fn with_keys(config: Value, keys: &[&SigningKey]) -> Self {
        let mut flow = Flow::new(config);
        flow.jwks_reply(200, &jwks_of(keys), NOW);
        flow
    }

    fn start(&self, method: &str, path: &str, authorization: Option<String>) -> Step {
        let head = RequestHead {
            method: method.into(),
            path: path.into(),
            authorization,
            cors_headers: false,
            form_body: false,
        };
        self.auth.start(&head, &self.keys, &NoCache, at(NOW), true)
    }

    fn verdict(&self, path: &str, token: &str) -> Verdict {
        match self.start("GET", path, Some(format!("Bearer {token}"))) {
            Step::Decide(v) => v,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn denial(&self, token: &str) -> AuthError {
        let v = self.verdict("/rest/api/2/issue/X-1", token);
        assert!(matches!(v.decision, Decision::Respond { .. }), "{v:?}");
        v.denied().cloned().expect("a denial reason")
    }
}

fn set_headers(d: &Decision) -> Vec<(String, String)> {
    match d {
        Decision::Continue { set, .. } => set.clone(),
        Decision::Respond { .. } => panic!("request was refused: {d:?}"),
    }
}

fn removed(d: &Decision) -> Vec<String> {
    match d {
        Decision::Continue { remove, .. } => remove.clone(),
        Decision::Respond { .. } => panic!("request was refused: {d:?}"),
    }
}

#[test]
fn cold_start_waits_for_keys_then_accepts_after_the_jwks_reply() {
    let key = SigningKey::rs256();
    let mut flow = Flow::new(base_config());
    let token = mint(&key, &claims("alice"));
    assert_eq!(
        flow.start("GET", "/rest/x", Some(format!("Bearer {token}"))),
        Step::WaitForKeys {
            provider: flow.id("idp"),
            kid_refresh: false
        }
    );

    let provider = &flow.auth.config.providers[0];
    assert_eq!(
        flow.keys[0].record.due(provider, at(NOW), false),
        Some(FetchKind::Jwks)
    );
    let out = Outbound::get_json(
        &flow.auth.config,
        provider,
        &flow.keys[0].record.jwks_uri(provider).unwrap(),
    );
    assert_eq!(out.cluster, "idp");
    assert!(out.headers.contains(&(":path".into(), "/jwks".into())));

    flow.jwks_reply(200, &jwks_of(&[&key]), NOW);
    let v = flow.verdict("/rest/x", &token);
    assert_eq!(
        set_headers(&v.decision)[0],
        ("x-forwarded-user".into(), "alice".into())
    );
}

#[test]
fn every_supported_algorithm_is_accepted() {
    let keys: Vec<SigningKey> = Alg::ALL.iter().map(|&a| SigningKey::for_alg(a)).collect();
    let flow = Flow::with_keys(base_config(), &keys.iter().collect::<Vec<_>>());
    for key in &keys {
        let v = flow.verdict("/rest/x", &mint(key, &claims("alice")));
        assert!(v.denied().is_none(), "{:?}: {:?}", key.alg, v);
    }
}

#[test]
fn valid_token_sets_identity_headers_and_removes_authorization() {
    let key = SigningKey::for_alg(Alg::ES256);
    let flow = Flow::with_keys(base_config(), &[&key]);
    let mut c = claims("Alice");
    c["email"] = json!("alice@example.com");
    let d = flow.verdict("/rest/x", &mint(&key, &c)).decision;
    assert_eq!(
        set_headers(&d),
        vec![
            ("x-forwarded-user".to_string(), "Alice".to_string()),
            ("x-forwarded-auth-provider".to_string(), "idp".to_string()),
            (
                "x-forwarded-email".to_string(),
                "alice@example.com".to_string()
            )
        ]
    );
    let r = removed(&d);
    for h in [
        "x-forwarded-user",
        "x-forwarded-auth-provider",
        "x-forwarded-email",
        "authorization",
    ] {
        assert!(r.contains(&h.to_string()), "{h} not removed: {r:?}");
    }
}

#[test]
fn authorization_is_kept_when_configured() {
    let key = SigningKey::rs256();
    let mut config = base_config();
    config["forward"]["authorization"] = json!("keep");
    let flow = Flow::with_keys(config, &[&key]);
    assert!(
        !removed(&flow.verdict("/rest/x", &mint(&key, &claims("a"))).decision)
            .contains(&"authorization".to_string())
    );
}

#[test]
fn expired_not_yet_valid_and_future_tokens_are_refused_beyond_skew() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let mut c = claims("a");
    c["exp"] = json!(NOW - 31);
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::Expired);
    c["exp"] = json!(NOW - 29); // within clock_skew_seconds = 30
    assert!(flow.verdict("/rest/x", &mint(&key, &c)).denied().is_none());
    let mut c = claims("a");
    c["nbf"] = json!(NOW + 31);
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::NotYetValid);
    let mut c = claims("a");
    c["iat"] = json!(NOW + 31);
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::IssuedInFuture);
}

#[test]
fn token_without_exp_is_refused_unless_allowed() {
    let key = SigningKey::rs256();
    let mut c = claims("a");
    c.as_object_mut().unwrap().remove("exp");
    let flow = Flow::with_keys(base_config(), &[&key]);
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::MissingExpiration);
    let mut config = base_config();
    config["providers"][0]["require_expiration"] = json!(false);
    assert!(Flow::with_keys(config, &[&key])
        .verdict("/rest/x", &mint(&key, &c))
        .denied()
        .is_none());
}

#[test]
fn wrong_issuer_and_wrong_audience_are_refused() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let mut c = claims("a");
    c["iss"] = json!("https://evil.test");
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::UnknownIssuer);
    let mut c = claims("a");
    c["aud"] = json!(["confluence", "bitbucket"]);
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::AudienceMismatch);
    c["aud"] = json!(["confluence", "jira"]);
    assert!(flow.verdict("/rest/x", &mint(&key, &c)).denied().is_none());
}

#[test]
fn tampered_payload_fails_the_signature() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let forged = with_payload(&mint(&key, &claims("alice")), &claims("admin"));
    assert_eq!(flow.denial(&forged), AuthError::BadSignature);
}

#[test]
fn alg_none_and_hmac_with_the_rsa_public_key_are_refused() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    assert_eq!(
        flow.denial(&unsigned(&key.kid, &claims("admin"))),
        AuthError::MalformedToken
    );
    assert_eq!(
        flow.denial(&hs256_with_rsa_public_key(&key, &claims("admin"))),
        AuthError::AlgorithmNotAllowed
    );
}

#[test]
fn algorithm_outside_the_allow_list_is_refused() {
    let key = SigningKey::for_alg(Alg::PS256);
    let mut config = base_config();
    config["providers"][0]["algorithms"] = json!(["RS256"]);
    let flow = Flow::with_keys(config, &[&key]);
    assert_eq!(
        flow.denial(&mint(&key, &claims("a"))),
        AuthError::AlgorithmNotAllowed
    );
}

#[test]
fn token_alg_never_picks_another_key_type() {
    // An ES256 token naming the kid of an RSA key: the RSA key is not used for ES256.
    let rsa = SigningKey::rs256();
    let ec = SigningKey::for_alg(Alg::ES256);
    let flow = Flow::with_keys(base_config(), &[&rsa]);
    assert_eq!(
        flow.denial(&mint_with_kid(&ec, &rsa.kid, &claims("a"))),
        AuthError::BadSignature
    );
}

// Unknown kids that wait for a refresh: tests/worker.rs drives them through the worker.

#[test]
fn unknown_kid_during_backoff_is_unavailable_without_waiting() {
    let key = SigningKey::rs256();
    let mut flow = Flow::with_keys(base_config(), &[&key]);
    // A scheduled refresh failed; the kid refresh is allowed but the backoff forbids a fetch.
    flow.jwks_reply(503, &json!("down"), NOW);
    assert!(flow.keys[0].record.backing_off(at(NOW)));
    assert!(flow.keys[0].record.kid_refresh_allowed(at(NOW)));
    assert_eq!(
        flow.denial(&mint(&SigningKey::rs256_rotated(), &claims("a"))),
        AuthError::KeysUnavailable
    );
}

#[test]
fn rotated_key_is_accepted_after_the_refresh() {
    let key = SigningKey::rs256();
    let rotated = SigningKey::rs256_rotated();
    let mut flow = Flow::with_keys(base_config(), &[&key]);
    flow.jwks_reply(200, &jwks_of(&[&key, &rotated]), NOW);
    assert!(flow
        .verdict("/rest/x", &mint(&rotated, &claims("a")))
        .denied()
        .is_none());
}

#[test]
fn provider_down_keeps_the_last_good_keys() {
    let key = SigningKey::rs256();
    let mut flow = Flow::with_keys(base_config(), &[&key]);
    flow.jwks_reply(503, &json!("down"), NOW);
    flow.jwks_reply(200, &json!({"keys": "garbage"}), NOW);
    assert!(flow
        .verdict("/rest/x", &mint(&key, &claims("a")))
        .denied()
        .is_none());
}

#[test]
fn provider_down_at_start_gives_503_with_retry_after() {
    let key = SigningKey::rs256();
    let mut flow = Flow::new(base_config());
    flow.jwks_reply(0, &json!(null), NOW);
    let v = flow.verdict("/rest/x", &mint(&key, &claims("a")));
    assert_eq!(v.denied().cloned(), Some(AuthError::KeysUnavailable));
    assert_eq!(v.decision.status(), 503);
}

#[test]
fn waiting_request_past_its_deadline_gets_503() {
    let key = SigningKey::rs256();
    let flow = Flow::new(base_config());
    let head = RequestHead {
        method: "GET".into(),
        path: "/rest/x".into(),
        authorization: Some(format!("Bearer {}", mint(&key, &claims("a")))),
        cors_headers: false,
        form_body: false,
    };
    let Step::Decide(v) = flow.auth.start(&head, &flow.keys, &NoCache, at(NOW), false) else {
        panic!("must decide")
    };
    assert_eq!(v.decision.status(), 503);
}

#[test]
fn oversized_token_is_refused() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let mut c = claims("a");
    c["padding"] = json!("x".repeat(17 * 1024));
    assert_eq!(flow.denial(&mint(&key, &c)), AuthError::TokenTooLarge);
}

#[test]
fn control_characters_in_username_never_reach_a_header() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    assert_eq!(
        flow.denial(&mint(&key, &claims("alice\r\nx-forwarded-user: admin"))),
        AuthError::InvalidUsername
    );
}

#[test]
fn username_falls_back_through_claims_and_is_transformed() {
    let key = SigningKey::rs256();
    let mut config = base_config();
    config["providers"][0]["username_claim"] = json!(["upn", "email"]);
    config["providers"][0]["username_transform"] =
        json!({"lowercase": true, "strip_domain": ["example.com"]});
    let flow = Flow::with_keys(config, &[&key]);
    let mut c = claims("ignored");
    c["email"] = json!("Bob.Smith@Example.com");
    assert_eq!(
        set_headers(&flow.verdict("/rest/x", &mint(&key, &c)).decision)[0].1,
        "bob.smith"
    );
    assert_eq!(
        flow.denial(&mint(&key, &claims("no-upn-no-email"))),
        AuthError::NoUsername
    );
}

#[test]
fn unmet_required_claim_is_403() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let token = mint(&key, &claims("a"));
    let v = match flow.start(
        "DELETE",
        "/rest/api/2/user?username=x",
        Some(format!("Bearer {token}")),
    ) {
        Step::Decide(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (v.decision.status(), v.denied().cloned()),
        (403, Some(AuthError::InsufficientScope))
    );
    let mut admin = claims("root");
    admin["groups"] = json!(["jira-administrators"]);
    let token = mint(&key, &admin);
    assert!(
        matches!(flow.start("DELETE", "/rest/api/2/user", Some(format!("Bearer {token}"))), Step::Decide(v) if v.denied().is_none())
    );
}

#[test]
fn rule_can_restrict_providers() {
    let key = SigningKey::rs256();
    let mut config = base_config();
    config["providers"].as_array_mut().unwrap().push(json!({"name": "other", "issuer": "https://other", "audiences": ["jira"], "jwks": jwks_of(&[&key])}));
    config["rules"] = json!([{"path_prefix": "/", "auth": "required", "providers": ["other"]}]);
    let flow = Flow::with_keys(config, &[&key]);
    assert_eq!(
        flow.denial(&mint(&key, &claims("a"))),
        AuthError::ProviderNotAllowed
    );
}

#[test]
fn modes_none_optional_required_and_spoofed_headers() {
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256()]);
    for (path, auth, status) in [
        ("/status", Some("Bearer garbage"), 200),
        ("/secure/Dashboard.jspa", None, 200),
        ("/secure/Dashboard.jspa", Some("Bearer garbage"), 401),
        ("/rest/api/2/issue", None, 401),
    ] {
        let Step::Decide(v) = flow.start("GET", path, auth.map(str::to_string)) else {
            panic!()
        };
        assert_eq!(v.decision.status(), status, "{path} {auth:?}");
        if status == 200 {
            assert!(
                removed(&v.decision).contains(&"x-forwarded-user".to_string()),
                "{path}: spoofed header must be stripped"
            );
            assert!(set_headers(&v.decision).is_empty());
        }
    }
}

#[test]
fn cors_preflight_bypasses_authentication_unless_disabled() {
    let head = RequestHead {
        method: "OPTIONS".into(),
        path: "/rest/x".into(),
        authorization: None,
        cors_headers: true,
        form_body: false,
    };
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256()]);
    assert!(
        matches!(flow.auth.start(&head, &flow.keys, &NoCache, at(NOW), true), Step::Decide(v) if v.denied().is_none())
    );
    let mut config = base_config();
    config["bypass_cors_preflight"] = json!(false);
    let flow = Flow::with_keys(config, &[&SigningKey::rs256()]);
    assert!(
        matches!(flow.auth.start(&head, &flow.keys, &NoCache, at(NOW), true), Step::Decide(v) if v.denied() == Some(&AuthError::Missing))
    );
}

#[test]
fn cors_preflight_pass_strips_credentials() {
    let mut config = base_config();
    config["basic"] = json!("reject");
    let flow = Flow::with_keys(config, &[&SigningKey::rs256()]);
    let head = RequestHead {
        method: "OPTIONS".into(),
        path: "/rest/x".into(),
        authorization: Some("Basic YWxpY2U6c2VjcmV0".into()),
        cors_headers: true,
        form_body: false,
    };
    let Step::Decide(v) = flow.auth.start(&head, &flow.keys, &NoCache, at(NOW), true) else {
        panic!()
    };
    let r = removed(&v.decision);
    for header in ["authorization", "cookie", "x-forwarded-user"] {
        assert!(
            r.contains(&header.to_string()),
            "{header} must be stripped from a preflight: {r:?}"
        );
    }
}

/// Item 4 of issue 11: one admission check, whatever path the credential takes.
mod admission {
    use super::*;

    /// `/admin` admits only provider `other` (whose tokens carry `groups: admins`).
    fn restricted(basic: &str, unknown_bearer: &str) -> Flow {
        let key = SigningKey::rs256();
        let mut config = base_config();
        config["basic"] = json!(basic);
        config["unknown_bearer"] = json!(unknown_bearer);
        config["providers"].as_array_mut().unwrap().push(json!({"name": "other", "issuer": "https://other", "audiences": ["jira"], "jwks": jwks_of(&[&key])}));
        config["rules"] = json!([
            {"path_prefix": "/admin", "auth": "optional", "providers": ["other"]},
            {"path_prefix": "/claims", "auth": "optional", "require_claims": {"groups": "admins"}},
            {"path_prefix": "/", "auth": "optional"}
        ]);
        Flow::with_keys(config, &[&key])
    }

    fn status(flow: &Flow, path: &str, authorization: &str) -> (u32, Option<AuthError>) {
        let Step::Decide(v) = flow.start("GET", path, Some(authorization.to_string())) else {
            panic!()
        };
        (v.decision.status(), v.denied().cloned())
    }

    #[test]
    fn basic_passthrough_is_refused_where_a_rule_names_providers_or_claims() {
        let flow = restricted("passthrough", "reject");
        let basic = "Basic YWxpY2U6c2VjcmV0";
        assert_eq!(status(&flow, "/rest/x", basic), (200, None));
        assert_eq!(
            status(&flow, "/admin/x", basic),
            (401, Some(AuthError::BasicRejected))
        );
        assert_eq!(
            status(&flow, "/claims/x", basic),
            (401, Some(AuthError::BasicRejected))
        );
    }

    #[test]
    fn unknown_bearer_passthrough_is_refused_where_a_rule_names_providers_or_claims() {
        let flow = restricted("passthrough", "passthrough");
        let pat = "Bearer NjE0NzM5MDg4NDU3OtA8MEl2GzQh6rL6dZtZxhGAc3wn";
        assert_eq!(status(&flow, "/rest/x", pat), (200, None));
        assert_eq!(
            status(&flow, "/admin/x", pat),
            (401, Some(AuthError::NoProvider))
        );
        assert_eq!(
            status(&flow, "/claims/x", pat),
            (401, Some(AuthError::NoProvider))
        );
    }

    #[test]
    fn basic_password_token_meets_providers_and_claims_as_a_bearer_does() {
        let flow = restricted("api_tokens", "reject");
        let token = mint(&SigningKey::rs256(), &claims("alice"));
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("alice:{token}")
            )
        );
        assert_eq!(status(&flow, "/rest/x", &basic), (200, None));
        assert_eq!(
            status(&flow, "/admin/x", &basic),
            (401, Some(AuthError::ProviderNotAllowed))
        );
        assert_eq!(
            status(&flow, "/claims/x", &basic),
            (403, Some(AuthError::InsufficientScope))
        );
        assert_eq!(
            status(&flow, "/admin/x", &format!("Bearer {token}")),
            (401, Some(AuthError::ProviderNotAllowed))
        );
    }
}

#[test]
fn dry_run_decides_but_never_refuses_nor_sets_identity() {
    let key = SigningKey::rs256();
    let mut config = base_config();
    config["dry_run"] = json!(true);
    let flow = Flow::with_keys(config, &[&key]);
    let mut c = claims("a");
    c["exp"] = json!(NOW - 3600);
    let v = flow.verdict("/rest/x", &mint(&key, &c));
    assert_eq!(v.denied().cloned(), Some(AuthError::Expired));
    assert!(
        v.dry_run && matches!(v.outcome, Outcome::Deny { status: 401, .. }),
        "the refusal it would have been: {v:?}"
    );
    assert!(
        v.to_string()
            .starts_with("dry run: deny 401: token expired token="),
        "{v}"
    );
    assert!(set_headers(&v.decision).is_empty());
    assert!(removed(&v.decision).contains(&"x-forwarded-user".to_string()));
    let ok = flow.verdict("/rest/x", &mint(&key, &claims("a")));
    assert!(
        set_headers(&ok.decision).is_empty()
            && !removed(&ok.decision).contains(&"authorization".to_string())
    );
    assert_eq!(
        ok.identity().map(|i| i.username.as_str()),
        Some("a"),
        "who it would have been"
    );
    assert!(
        ok.to_string()
            .starts_with("dry run: allow a via idp token="),
        "{ok}"
    );
}

#[test]
fn basic_passes_through_or_is_rejected() {
    let basic = Some("Basic YWxpY2U6c2VjcmV0".to_string()); // alice:secret
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256()]);
    let Step::Decide(v) = flow.start("GET", "/rest/x", basic.clone()) else {
        panic!()
    };
    assert!(!removed(&v.decision).contains(&"authorization".to_string()));
    let mut config = base_config();
    config["basic"] = json!("reject");
    let flow = Flow::with_keys(config, &[&SigningKey::rs256()]);
    let Step::Decide(v) = flow.start("GET", "/rest/x", basic) else {
        panic!()
    };
    let Decision::Respond {
        status: 401,
        headers,
        ..
    } = v.decision
    else {
        panic!("{v:?}")
    };
    let challenges: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        challenges.len(),
        1,
        "reject offers Bearer only: {challenges:?}"
    );
}

#[test]
fn opaque_token_without_opaque_provider_is_refused() {
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256()]);
    assert_eq!(
        flow.denial("gho_16C7e42F292c6912E7710c838347Ae178B4a"),
        AuthError::NoProvider
    );
}

#[test]
fn kidless_token_is_tried_against_matching_keys() {
    let key = SigningKey::for_alg(Alg::EdDSA);
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256(), &key]);
    assert!(flow
        .verdict("/rest/x", &sign(&key, None, &claims("a")))
        .denied()
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Opaque tokens: the lookup path through the core, with a cache the test holds.

mod lookups {
    use super::*;
    use atlassian_rest_auth::cache::{CacheEntry, EntryState, Refusal, ResultCache};
    use atlassian_rest_auth::digest::TokenDigest;
    use atlassian_rest_auth::lookup::{LookupStep, Progress, ReplyHead};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use support::providers::with_header_field;

    /// The shared cache as a map; a test writes what a finished lookup would.
    #[derive(Default)]
    struct MapCache(RefCell<HashMap<TokenDigest, CacheEntry>>);

    impl ResultCache for MapCache {
        fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
            self.0.borrow().get(digest).cloned()
        }
    }

    fn opaque_config() -> Value {
        json!({
            "realm": "jira", "default_auth": "required",
            "providers": [
                {"name": "gh", "preset": "github", "userinfo_uri": "http://127.0.0.1:9999/user"},
                {"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/userinfo", "username_claim": ["email"], "cache_seconds": 60},
                {"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks", "userinfo_uri": "http://127.0.0.1:9999/oidc/userinfo",
                 "username_claim": ["preferred_username"]}
            ],
            "forward": {"claims_to_headers": {"groups": "x-forwarded-groups"}},
            "rules": [{"path_prefix": "/admin", "auth": "required", "require_claims": {"groups": "admins"}}],
            "clusters": {"127.0.0.1:9999": "idp"}
        })
    }

    struct Lookups {
        flow: Flow,
        cache: MapCache,
    }

    impl Lookups {
        fn new() -> Self {
            let mut flow = Flow::new(opaque_config());
            let idp = 2;
            let key = SigningKey::rs256();
            let provider = &flow.auth.config.providers[idp];
            let result = flow.keys[idp].record.after_reply(
                FetchKind::Jwks,
                provider,
                200,
                jwks_of(&[&key]).to_string().as_bytes(),
                at(NOW),
            );
            flow.keys[idp].adopt(result.record);
            Lookups {
                flow,
                cache: MapCache::default(),
            }
        }

        fn start(&self, path: &str, token: &str) -> Step {
            let head = RequestHead {
                method: "GET".into(),
                path: path.into(),
                authorization: Some(format!("Bearer {token}")),
                cors_headers: false,
                form_body: false,
            };
            self.flow
                .auth
                .start(&head, &self.flow.keys, &self.cache, at(NOW), true)
        }

        /// What the adapter does when a lookup's reply comes: store the entry.
        fn answer(&self, provider: &str, token: &str, step: LookupStep, status: u32, body: &Value) {
            let provider = self.flow.id(provider);
            let p = self.flow.auth.config.provider(provider).unwrap();
            let state = match step.on_reply(
                p,
                ReplyHead::status(status),
                body.to_string().as_bytes(),
                at(NOW),
            ) {
                Progress::Done(state) => state,
                Progress::Unavailable(_) => EntryState::Unavailable,
                Progress::Next(_) => panic!("one step"),
            };
            let digest = TokenDigest::of(token.as_bytes());
            self.cache.0.borrow_mut().insert(
                digest,
                self.flow
                    .auth
                    .cache_entry(provider, digest, state, at(NOW), None),
            );
        }
    }

    fn lookup(step: Step) -> atlassian_rest_auth::authenticator::LookupStart {
        match step {
            Step::Lookup(start) => start,
            other => panic!("expected a lookup, got {other:?}"),
        }
    }

    fn decided(step: Step) -> Verdict {
        match step {
            Step::Decide(v) => v,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    #[test]
    fn opaque_token_goes_to_the_first_provider_whose_prefix_matches() {
        let l = Lookups::new();
        assert_eq!(
            lookup(l.start(
                "/rest/x",
                &github_token("gho_", "aW5ZtaBn9DwXkp0L3tGqRu7NcVe1Yf")
            ))
            .provider,
            l.flow.id("gh")
        );
        assert_eq!(
            lookup(l.start("/rest/x", "some-opaque-token")).provider,
            l.flow.id("ui")
        );
    }

    #[test]
    fn answer_in_the_cache_decides_without_a_call() {
        let l = Lookups::new();
        let start = lookup(l.start("/rest/x", "tok-1"));
        assert_eq!(start.step, LookupStep::Userinfo);
        l.answer(
            "ui",
            "tok-1",
            start.step,
            200,
            &json!({"email": "carol@example.com", "groups": ["admins"]}),
        );
        let v = decided(l.start("/admin/x", "tok-1"));
        assert_eq!(
            set_headers(&v.decision),
            vec![
                ("x-forwarded-user".into(), "carol@example.com".into()),
                ("x-forwarded-groups".into(), "admins".into())
            ]
        );
    }

    #[test]
    fn pending_lookup_makes_others_wait() {
        let l = Lookups::new();
        let digest = TokenDigest::of(b"tok-2");
        l.cache
            .0
            .borrow_mut()
            .insert(digest, CacheEntry::pending(digest, at(NOW + 5), 1));
        assert_eq!(
            l.start("/rest/x", "tok-2"),
            Step::WaitForLookup {
                provider: l.flow.id("ui"),
                digest
            }
        );
    }

    #[test]
    fn refusal_is_cached_and_failure_is_asked_again() {
        let l = Lookups::new();
        l.answer("ui", "tok-3", LookupStep::Userinfo, 401, &json!({}));
        assert_eq!(
            decided(l.start("/rest/x", "tok-3")).denied().cloned(),
            Some(AuthError::ProviderRejected)
        );
        l.answer("ui", "tok-4", LookupStep::Userinfo, 503, &json!({}));
        assert!(matches!(l.start("/rest/x", "tok-4"), Step::Lookup(_)));
        let digest = TokenDigest::of(b"tok-4");
        assert_eq!(l.cache.get(&digest).unwrap().state, EntryState::Unavailable);
    }

    #[test]
    fn verified_jwt_without_username_asks_userinfo() {
        let l = Lookups::new();
        let key = SigningKey::rs256();
        let mut c = claims("x");
        c.as_object_mut().unwrap().remove("preferred_username");
        let token = mint(&key, &c);
        let start = lookup(l.start("/rest/x", &token));
        assert_eq!(
            (start.provider, start.step, start.token_exp),
            (l.flow.id("idp"), LookupStep::Userinfo, Some(NOW + 3600))
        );
        assert!(start
            .outbound
            .headers
            .contains(&(":path".into(), "/oidc/userinfo".into())));
    }

    #[test]
    fn cached_username_is_checked_again_before_it_reaches_a_header() {
        let l = Lookups::new();
        let digest = TokenDigest::of(b"tok-5");
        let evil = EntryState::Valid {
            username: "a\r\nx-admin: 1".into(),
            provider: "ui".into(),
            claims: json!({}),
        };
        l.cache
            .0
            .borrow_mut()
            .insert(digest, CacheEntry::answer(digest, evil, at(NOW + 60)));
        assert_eq!(
            decided(l.start("/rest/x", "tok-5")).denied().cloned(),
            Some(AuthError::InvalidUsername)
        );
    }

    /// Two userinfo providers without prefixes: `/a` admits only `ua`, `/b` only `ub`.
    fn two_providers() -> Lookups {
        let config = json!({
            "realm": "jira", "default_auth": "required",
            "providers": [
                {"name": "ua", "userinfo_uri": "http://127.0.0.1:9999/a", "username_claim": ["email"]},
                {"name": "ub", "userinfo_uri": "http://127.0.0.1:9999/b", "username_claim": ["email"]}
            ],
            "rules": [{"path_prefix": "/a", "auth": "required", "providers": ["ua"]}, {"path_prefix": "/b", "auth": "required", "providers": ["ub"]}],
            "clusters": {"127.0.0.1:9999": "idp"}
        });
        Lookups {
            flow: Flow::new(config),
            cache: MapCache::default(),
        }
    }

    #[test]
    fn an_answer_counts_only_for_the_provider_that_gave_it() {
        let l = two_providers();
        assert_eq!(lookup(l.start("/a/x", "tok-6")).provider, l.flow.id("ua"));
        l.answer(
            "ua",
            "tok-6",
            LookupStep::Userinfo,
            200,
            &json!({"email": "mallory@a.example"}),
        );
        assert_eq!(
            set_headers(&decided(l.start("/a/x", "tok-6")).decision)[0].1,
            "mallory@a.example"
        );
        // Provider ub was never asked: its rule sends the token there, not to ua's answer.
        let start = lookup(l.start("/b/x", "tok-6"));
        assert_eq!(start.provider, l.flow.id("ub"));
        assert!(start
            .outbound
            .headers
            .contains(&(":path".into(), "/b".into())));
        let entry = l.cache.get(&TokenDigest::of(b"tok-6"));
        assert!(CacheEntry::claimable_by(
            entry.as_ref(),
            &TokenDigest::of(b"tok-6"),
            "ub",
            at(NOW)
        ));
        assert!(!CacheEntry::claimable_by(
            entry.as_ref(),
            &TokenDigest::of(b"tok-6"),
            "ua",
            at(NOW)
        ));
    }

    #[test]
    fn malformed_github_token_is_refused_without_a_call() {
        let l = Lookups::new();
        let good = github_token("ghp_", "Zq3LmN8pRt5VwX2yB7cD4fG6hJ9kA1");
        assert_eq!(lookup(l.start("/rest/x", &good)).provider, l.flow.id("gh"));
        let bad = format!(
            "{}{}",
            &good[..good.len() - 1],
            if good.ends_with('x') { 'y' } else { 'x' }
        );
        for token in [
            bad.as_str(),
            "gho_abc",
            "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
        ] {
            assert_eq!(
                decided(l.start("/rest/x", token)).denied().cloned(),
                Some(AuthError::MalformedToken),
                "{token}"
            );
        }
        // Fine-grained tokens publish no checksum: they go to GitHub.
        assert_eq!(
            lookup(l.start(
                "/rest/x",
                "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz"
            ))
            .provider,
            l.flow.id("gh")
        );
    }

    #[test]
    fn refused_entry_reads_back_as_the_same_error() {
        assert_eq!(
            Refusal::from_error(&AuthError::WrongTokenUse).map(Refusal::to_error),
            Some(AuthError::WrongTokenUse)
        );
    }

    fn azure_flow(accept_graph_tokens: bool) -> (Flow, SigningKey) {
        let key = SigningKey::rs256();
        let config = json!({
            "providers": [{"name": "entra", "preset": "azure_ad", "issuer": ISSUER, "audiences": ["jira"], "jwks": jwks_of(&[&key]),
                           "userinfo_uri": "http://127.0.0.1:9999/oidc/userinfo", "accept_graph_tokens": accept_graph_tokens}],
            "default_auth": "required"
        });
        (Flow::new(config), key)
    }

    #[test]
    fn azure_graph_token_with_header_nonce_goes_to_userinfo_when_accepted() {
        let (flow, key) = azure_flow(true);
        let token = with_header_field(&mint(&key, &claims("a")), "nonce", "abc");
        let head = RequestHead {
            method: "GET".into(),
            path: "/rest/x".into(),
            authorization: Some(format!("Bearer {token}")),
            cors_headers: false,
            form_body: false,
        };
        let start = lookup(
            flow.auth
                .start(&head, &flow.keys, &MapCache::default(), at(NOW), true),
        );
        assert_eq!(start.step, LookupStep::Userinfo);
    }

    #[test]
    fn azure_graph_token_is_refused_by_default_without_a_call() {
        let (flow, key) = azure_flow(false);
        let token = with_header_field(&mint(&key, &claims("a")), "nonce", "abc");
        assert_eq!(flow.denial(&token), AuthError::AudienceMismatch);
        // A token of the app itself (no header nonce) is verified as usual.
        assert_eq!(
            flow.verdict("/rest/x", &mint(&key, &claims("a")))
                .denied()
                .cloned(),
            None
        );
    }
}

// ---------------------------------------------------------------------------------------------
// API tokens and Basic (SPEC section 3).

mod api_tokens {
    use super::*;
    use atlassian_rest_auth::api_token::mint as mint_api_token;
    use atlassian_rest_auth::digest::TokenDigest;
    use base64::Engine;

    fn token(seed: u8) -> String {
        mint_api_token(&[seed; 32])
    }

    fn config(basic: &str) -> Value {
        let mut c = base_config();
        c["basic"] = json!(basic);
        c["api_tokens"] = json!([
            {"user": "ci-bot", "sha256": TokenDigest::of(token(1).as_bytes()).to_hex(), "name": "CI"},
            {"user": "old-bot", "sha256": TokenDigest::of(token(2).as_bytes()).to_hex(), "expires_at": "2020-01-01T00:00:00Z"}
        ]);
        c
    }

    fn basic(user: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
        )
    }

    fn decide(flow: &Flow, authorization: String) -> Verdict {
        match flow.start("GET", "/rest/x", Some(authorization)) {
            Step::Decide(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn api_token_is_accepted_as_bearer_and_as_basic_of_its_user() {
        let flow = Flow::with_keys(config("api_tokens"), &[&SigningKey::rs256()]);
        for auth in [format!("Bearer {}", token(1)), basic("ci-bot", &token(1))] {
            let v = decide(&flow, auth);
            assert_eq!(
                set_headers(&v.decision)[0],
                ("x-forwarded-user".into(), "ci-bot".into())
            );
            assert!(removed(&v.decision).contains(&"authorization".to_string()));
        }
    }

    #[test]
    fn expired_unknown_mistyped_and_foreign_api_tokens_are_refused() {
        let flow = Flow::with_keys(config("api_tokens"), &[&SigningKey::rs256()]);
        assert_eq!(
            decide(&flow, format!("Bearer {}", token(2)))
                .denied()
                .cloned(),
            Some(AuthError::ApiTokenExpired)
        );
        assert_eq!(
            decide(&flow, format!("Bearer {}", token(3)))
                .denied()
                .cloned(),
            Some(AuthError::ApiTokenUnknown)
        );
        let mut typo: Vec<char> = token(1).chars().collect();
        typo[8] = if typo[8] == 'x' { 'y' } else { 'x' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(
            decide(&flow, format!("Bearer {typo}")).denied().cloned(),
            Some(AuthError::ApiTokenMalformed)
        );
        assert_eq!(
            decide(&flow, basic("admin", &token(1))).denied().cloned(),
            Some(AuthError::ApiTokenWrongUser)
        );
    }

    #[test]
    fn basic_password_that_is_a_jwt_is_verified_as_one() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(config("api_tokens"), &[&key]);
        let v = decide(&flow, basic("whoever", &mint(&key, &claims("alice"))));
        assert_eq!(set_headers(&v.decision)[0].1, "alice");
    }

    #[test]
    fn ordinary_basic_password_is_never_sent_to_a_provider() {
        let mut c = config("api_tokens");
        c["providers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/me"}));
        let flow = Flow::with_keys(c, &[&SigningKey::rs256()]);
        assert_eq!(
            decide(&flow, basic("alice", "hunter2")).denied().cloned(),
            Some(AuthError::BasicRejected)
        );
    }

    #[test]
    fn basic_password_a_bearer_token_cannot_hold_is_malformed_before_any_call() {
        let mut c = config("api_tokens");
        c["providers"].as_array_mut().unwrap().push(json!({"name": "gl", "mode": "userinfo", "userinfo_uri": "http://127.0.0.1:9999/me", "token_prefixes": ["glpat-"]}));
        let flow = Flow::with_keys(c, &[&SigningKey::rs256()]);
        for password in [
            "glpat-with space",
            "glpat-quote\"d",
            "glpat-ctl\u{1}x",
            "glpat-\u{e9}",
        ] {
            assert_eq!(
                decide(&flow, basic("alice", password)).denied().cloned(),
                Some(AuthError::MalformedToken),
                "{password:?}"
            );
        }
        // A password that is a b64token goes to the provider whose prefix it carries.
        assert!(matches!(
            flow.start("GET", "/rest/x", Some(basic("alice", "glpat-Ab0_-.~+/="))),
            Step::Lookup(_)
        ));
        // One no provider takes is refused as before, whatever its characters.
        assert_eq!(
            decide(&flow, basic("alice", "hunter 2")).denied().cloned(),
            Some(AuthError::BasicRejected)
        );
    }

    #[test]
    fn reject_mode_challenges_with_bearer_only_and_api_tokens_mode_offers_basic() {
        let challenges = |mode: &str| -> Vec<String> {
            let flow = Flow::with_keys(config(mode), &[&SigningKey::rs256()]);
            match decide(&flow, basic("alice", "pw")).decision {
                Decision::Respond { headers, .. } => headers
                    .into_iter()
                    .filter(|(n, _)| n == "www-authenticate")
                    .map(|(_, v)| v)
                    .collect(),
                other => panic!("{other:?}"),
            }
        };
        assert!(challenges("reject").iter().all(|c| c.starts_with("Bearer")));
        assert!(challenges("api_tokens")
            .iter()
            .any(|c| c == "Basic realm=\"jira\""));
    }

    #[test]
    fn api_token_bearer_is_never_routed_to_a_provider() {
        let mut c = config("passthrough");
        c["providers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ui", "userinfo_uri": "http://127.0.0.1:9999/me"}));
        let flow = Flow::with_keys(c, &[&SigningKey::rs256()]);
        assert_eq!(
            decide(&flow, format!("Bearer {}", token(9)))
                .denied()
                .cloned(),
            Some(AuthError::ApiTokenUnknown)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The verified-result cache: a JWT seen before is decided without decoding or a signature check.

mod remembered {
    use super::*;
    use atlassian_rest_auth::cache::{CacheEntry, ResultCache};
    use atlassian_rest_auth::digest::TokenDigest;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MapCache(RefCell<HashMap<TokenDigest, CacheEntry>>);

    impl ResultCache for MapCache {
        fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
            self.0.borrow().get(digest).cloned()
        }
    }

    fn start(
        flow: &Flow,
        cache: &MapCache,
        method: &str,
        path: &str,
        token: &str,
        now: u64,
    ) -> Verdict {
        let head = RequestHead {
            method: method.into(),
            path: path.into(),
            authorization: Some(format!("Bearer {token}")),
            cors_headers: false,
            form_body: false,
        };
        match flow.auth.start(&head, &flow.keys, cache, at(now), true) {
            Step::Decide(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verified_token_is_remembered_until_its_exp_and_skew_at_the_latest() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let mut c = claims("alice");
        c["exp"] = json!(NOW + 120);
        let token = mint(&key, &c);
        let v = start(&flow, &MapCache::default(), "GET", "/rest/x", &token, NOW);
        let entry = v.remember.expect("a verified result to store");
        assert!(entry.is_for(&TokenDigest::of(token.as_bytes())));
        assert_eq!(
            entry.until_ms,
            (NOW + 120 + 30) * 1000,
            "exp + clock_skew_seconds comes before cache_seconds (300)"
        );
    }

    #[test]
    fn remembered_token_is_decided_without_decoding_it() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let cache = MapCache::default();
        let token = mint(&key, &claims("alice"));
        let entry = start(&flow, &cache, "GET", "/rest/x", &token, NOW)
            .remember
            .unwrap();
        // Stored under the digest of a string that is not even a JWT: only the cache can accept it.
        let not_a_jwt = "remembered-opaque-string";
        let digest = TokenDigest::of(not_a_jwt.as_bytes());
        let moved = CacheEntry {
            digest: digest.to_hex(),
            ..entry
        };
        cache.0.borrow_mut().insert(digest, moved);
        let v = start(&flow, &cache, "GET", "/rest/x", not_a_jwt, NOW + 10);
        assert_eq!(set_headers(&v.decision)[0].1, "alice");
        assert!(v.remember.is_none(), "a hit is not stored again");
    }

    #[test]
    fn remembered_token_still_meets_the_rules_of_each_path() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let cache = MapCache::default();
        let token = mint(&key, &claims("alice"));
        let entry = start(&flow, &cache, "GET", "/rest/x", &token, NOW)
            .remember
            .unwrap();
        cache
            .0
            .borrow_mut()
            .insert(TokenDigest::of(token.as_bytes()), entry);
        let v = start(&flow, &cache, "DELETE", "/rest/api/2/user", &token, NOW + 1);
        assert_eq!(
            v.denied().cloned(),
            Some(AuthError::InsufficientScope),
            "require_claims applies to cache hits too"
        );
    }

    #[test]
    fn remembered_result_expires() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let cache = MapCache::default();
        let mut c = claims("alice");
        c["exp"] = json!(NOW + 60);
        let token = mint(&key, &c);
        let entry = start(&flow, &cache, "GET", "/rest/x", &token, NOW)
            .remember
            .unwrap();
        cache
            .0
            .borrow_mut()
            .insert(TokenDigest::of(token.as_bytes()), entry);
        let v = start(&flow, &cache, "GET", "/rest/x", &token, NOW + 120);
        assert_eq!(
            v.denied().cloned(),
            Some(AuthError::Expired),
            "past exp the token is checked again, and refused"
        );
    }
}

#[test]
fn unknown_opaque_token_passes_untouched_to_atlassian_when_configured() {
    let pat = "NjE0NzM5MDg4NDU3OtA8MEl2GzQh6rL6dZtZxhGAc3wn";
    let flow = Flow::with_keys(base_config(), &[&SigningKey::rs256()]);
    assert_eq!(flow.denial(pat), AuthError::NoProvider);
    let mut config = base_config();
    config["unknown_bearer"] = json!("passthrough");
    let flow = Flow::with_keys(config, &[&SigningKey::rs256()]);
    let Step::Decide(v) = flow.start("GET", "/rest/x", Some(format!("Bearer {pat}"))) else {
        panic!()
    };
    assert!(set_headers(&v.decision).is_empty());
    let r = removed(&v.decision);
    assert!(
        r.contains(&"x-forwarded-user".to_string()) && !r.contains(&"authorization".to_string())
    );
    // A JWT from an unknown issuer is still refused: it is not Atlassian's.
    let mut c = claims("a");
    c["iss"] = json!("https://elsewhere");
    assert_eq!(
        flow.denial(&mint(&SigningKey::rs256(), &c)),
        AuthError::UnknownIssuer
    );
}

/// The worker's memo (`src/memo.rs`): a token accepted once is answered again without the keys,
/// the shared cache or a signature check, and never differently from a fresh check.
mod memo {
    use super::*;

    fn start_at(flow: &Flow, method: &str, path: &str, token: &str, now: u64) -> Verdict {
        let head = RequestHead {
            method: method.into(),
            path: path.into(),
            authorization: Some(format!("Bearer {token}")),
            cors_headers: false,
            form_body: false,
        };
        match flow.auth.start(&head, &flow.keys, &NoCache, at(now), true) {
            Step::Decide(v) => v,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    #[test]
    fn accepted_token_is_answered_again_without_keys() {
        let key = SigningKey::rs256();
        let mut flow = Flow::with_keys(base_config(), &[&key]);
        let token = mint(&key, &claims("alice"));
        let first = flow.verdict("/rest/x", &token);
        // The provider's JWKS now lacks the key: only the memo can still accept the token.
        flow.jwks_reply(200, &jwks_of(&[&SigningKey::for_alg(Alg::ES256)]), NOW);
        let again = flow.verdict("/rest/x", &token);
        assert_eq!(
            (&again.denied().cloned(), &again.decision),
            (&None, &first.decision)
        );
        assert_eq!(again.to_string(), first.to_string());
        // Another token from the same key is checked afresh: its kid is unknown now.
        let other = flow.start(
            "GET",
            "/rest/x",
            Some(format!("Bearer {}", mint(&key, &claims("bob")))),
        );
        assert_eq!(
            other,
            Step::WaitForKeys {
                provider: flow.id("idp"),
                kid_refresh: true
            }
        );
    }

    #[test]
    fn memo_answer_ends_when_the_token_expires() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let mut c = claims("alice");
        c["exp"] = json!(NOW + 60);
        let token = mint(&key, &c);
        assert_eq!(
            start_at(&flow, "GET", "/rest/x", &token, NOW)
                .denied()
                .cloned(),
            None
        );
        // exp + clock_skew_seconds (30) is the last second the token is good.
        assert_eq!(
            start_at(&flow, "GET", "/rest/x", &token, NOW + 90)
                .denied()
                .cloned(),
            None
        );
        assert_eq!(
            start_at(&flow, "GET", "/rest/x", &token, NOW + 91)
                .denied()
                .cloned(),
            Some(AuthError::Expired)
        );
    }

    #[test]
    fn memo_answer_still_meets_each_rule() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let token = mint(&key, &claims("alice"));
        assert_eq!(
            start_at(&flow, "GET", "/rest/x", &token, NOW)
                .denied()
                .cloned(),
            None
        );
        let v = start_at(&flow, "DELETE", "/rest/api/2/user", &token, NOW);
        assert_eq!(
            (v.decision.status(), v.denied().cloned()),
            (403, Some(AuthError::InsufficientScope))
        );
    }

    #[test]
    fn a_changed_byte_is_never_answered_by_the_memo() {
        let key = SigningKey::rs256();
        let flow = Flow::with_keys(base_config(), &[&key]);
        let token = mint(&key, &claims("alice"));
        assert_eq!(flow.verdict("/rest/x", &token).denied().cloned(), None);
        // A byte well inside the signature (the last one may carry only padding bits).
        let last = token.len() - 10;
        let flipped = if &token[last..last + 1] == "A" {
            "B"
        } else {
            "A"
        };
        let forged = format!("{}{flipped}{}", &token[..last], &token[last + 1..]);
        assert_eq!(flow.denial(&forged), AuthError::BadSignature);
        assert_eq!(flow.denial(&format!("{token}x")), AuthError::MalformedToken);
    }
}

#[test]
fn without_a_clock_only_requests_needing_no_credential_pass() {
    let key = SigningKey::rs256();
    let flow = Flow::with_keys(base_config(), &[&key]);
    let head = |path: &str, authorization: Option<String>| RequestHead {
        method: "GET".into(),
        path: path.into(),
        authorization,
        cors_headers: false,
        form_body: false,
    };

    // At time 0 an expired token would look fresh: no clock, no decision (503).
    let expired = mint(
        &key,
        &json!({"iss": ISSUER, "aud": "jira", "sub": "s", "iat": 1000, "exp": 2000}),
    );
    let refused = flow
        .auth
        .without_clock(&head("/rest/x", Some(format!("Bearer {expired}"))));
    assert_eq!(refused.decision.status(), 503);
    assert_eq!(refused.denied().cloned(), Some(AuthError::NoClock));
    assert!(
        matches!(&refused.decision, Decision::Respond { headers, .. } if headers.iter().any(|(n, _)| n == "retry-after"))
    );
    assert_eq!(
        flow.auth
            .without_clock(&head("/rest/x", None))
            .denied()
            .cloned(),
        Some(AuthError::NoClock),
        "required: 503, not 401"
    );
    assert_eq!(
        flow.auth
            .without_clock(&head("/browse/X-1", Some(format!("Bearer {expired}"))))
            .decision
            .status(),
        503
    );
    assert_eq!(
        flow.auth.without_clock(&head("/browse/X-1", None)).passed(),
        Some("anonymous"),
        "optional, no credential: no clock needed"
    );
    let open = flow
        .auth
        .without_clock(&head("/status", Some(format!("Bearer {expired}"))));
    assert_eq!(
        (open.decision.status(), open.passed()),
        (200, Some("auth_none"))
    );
    assert!(
        removed(&open.decision).contains(&"x-forwarded-user".to_string()),
        "identity headers are still stripped"
    );
}

#[test]
fn a_new_lookup_past_max_concurrent_calls_is_refused_with_503() {
    let mut c = base_config();
    c["providers"].as_array_mut().unwrap().push(json!({"name": "ui", "mode": "userinfo", "userinfo_uri": "http://127.0.0.1:9999/me", "max_concurrent_calls": 2}));
    let flow = Flow::with_keys(c, &[&SigningKey::rs256()]);
    let Step::Lookup(start) = flow.start("GET", "/rest/x", Some("Bearer opaque-1".into())) else {
        panic!("a lookup")
    };
    assert_eq!(flow.auth.over_capacity(&start, 0), None);
    assert_eq!(flow.auth.over_capacity(&start, 1), None);
    let refused = flow
        .auth
        .over_capacity(&start, 2)
        .expect("the third concurrent lookup is refused");
    assert_eq!(
        (refused.decision.status(), refused.denied().cloned()),
        (503, Some(AuthError::ProviderUnavailable))
    );
}
