//! JWT bearer tokens through the real Envoy and the real filter (SPEC.md sections 1, 4, 5, 6).
//!
//! Each test starts its own echo upstream, identity provider and Envoy on free 127.0.0.1 ports,
//! states the filter configuration it needs, and stops everything when it ends. Needs Envoy
//! (`make envoy`) and the filter (`make build`); `make test` does both.
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::tokens::{self, bearer, now, valid_claims, AUDIENCE};
use support::*;

/// The header the filter sets to the caller's username in every test configuration.
const USERNAME_HEADER: &str = "x-forwarded-user";

/// Request headers the upstream sees with no filter at all: from the client (ureq) and Envoy.
const TRANSPORT_HEADERS: [&str; 6] = [
    "accept",
    "host",
    "user-agent",
    "x-envoy-expected-rq-timeout-ms",
    "x-forwarded-proto",
    "x-request-id",
];

/// The filter configuration most tests use: realm `jira`, one provider served by `idp`,
/// `/status` open, `/rest/` and everything else requiring a token.
fn filter_config(idp: &JwksServer) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "required",
        "providers": [{
            "name": "test",
            "issuer": idp.issuer(),
            "audiences": [AUDIENCE],
            "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username", "sub"],
            "clock_skew_seconds": 30,
            "timeout_ms": 2000,
        }],
        "rules": [
            { "path_prefix": "/status", "auth": "none" },
            { "path_prefix": "/rest/", "auth": "required" },
        ],
        "forward": { "username_header": USERNAME_HEADER },
        "clusters": { idp.authority(): IDP_CLUSTER },
    })
}

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    idp: JwksServer,
    /// Never read: held so the upstream lives as long as the stack.
    _echo: EchoUpstream,
}

impl Stack {
    /// An identity provider publishing `keys`, and Envoy running `filter_config` as `adjust`
    /// changes it.
    fn start(keys: &[&SigningKey], adjust: impl FnOnce(&mut Value)) -> Stack {
        Self::start_with(JwksServer::start(jwks_of(keys)), adjust)
    }

    fn start_with(idp: JwksServer, adjust: impl FnOnce(&mut Value)) -> Stack {
        let echo = EchoUpstream::start();
        let mut config = filter_config(&idp);
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

    fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &bearer(token))])
    }

    /// Claims this stack's filter accepts, for `username`.
    fn claims(&self, username: &str) -> Value {
        valid_claims(&self.idp.issuer(), username)
    }
}

fn no_change(_: &mut Value) {}

/// The RFC 6750 challenge of the reply: its `WWW-Authenticate` value for the Bearer scheme.
fn bearer_challenge(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.clone())
        .find(|value| value.starts_with("Bearer "))
        .unwrap_or_else(|| panic!("no Bearer challenge in {reply:?}"))
}

/// 401 for a token that was sent: challenge and JSON body both say `invalid_token`, and
/// `error_description` is `why` when given.
fn assert_invalid_token(reply: &Reply, why: Option<&str>) {
    assert_eq!(
        reply.status, 401,
        "expected 401 invalid_token, got {reply:?}"
    );
    let challenge = bearer_challenge(reply);
    assert!(
        challenge.starts_with(r#"Bearer realm="jira""#),
        "challenge names the realm: {challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge says invalid_token: {challenge}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "401 body is JSON: {reply:?}"
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token", "body: {}", reply.body);
    assert!(
        body["error_description"].is_string(),
        "body: {}",
        reply.body
    );
    if let Some(why) = why {
        assert!(
            challenge.contains(&format!(r#"error_description="{why}""#)),
            "challenge says {why:?}: {challenge}"
        );
        assert_eq!(body["error_description"], why, "body: {}", reply.body);
    }
}

/// The request reached the upstream as `username`, without the token.
fn assert_forwarded_as(reply: &Reply, username: &str) {
    let seen = reply.upstream_headers();
    assert_eq!(
        seen.get(USERNAME_HEADER).map(String::as_str),
        Some(username),
        "upstream headers: {seen:?}"
    );
    assert!(
        !seen.contains_key("authorization"),
        "authorization removed by default: {seen:?}"
    );
}

/// The request reached the upstream with no username.
fn assert_forwarded_anonymously(reply: &Reply) {
    let seen = reply.upstream_headers();
    assert!(
        !seen.contains_key(USERNAME_HEADER),
        "no username expected upstream: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The harness itself: these pass without the filter.

#[test]
fn smoke_envoy_without_filter_reaches_echo_upstream() {
    let echo = EchoUpstream::start();
    let envoy = Envoy::expect_start(&EnvoyOptions::without_filter(echo.port()));

    let reply = send(
        "GET",
        &envoy.url("/rest/api/2/myself?expand=groups"),
        &[("x-test", "a")],
    );

    let seen = reply.upstream();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/rest/api/2/myself?expand=groups");
    assert_eq!(seen.headers["x-test"], "a");
    let names: BTreeSet<&str> = seen.headers.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = TRANSPORT_HEADERS.into_iter().chain(["x-test"]).collect();
    assert_eq!(names, expected, "headers a filterless Envoy forwards");
}

#[test]
fn smoke_envoy_that_cannot_start_fails_fast_with_its_log() {
    let echo = EchoUpstream::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut options = EnvoyOptions::without_filter(echo.port());
    options.admin_port = taken.local_addr().unwrap().port();
    let started = Instant::now();

    let failure = Envoy::start(&options)
        .map(|_| ())
        .expect_err("Envoy must not start");

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed fast: {failure}"
    );
    assert!(failure.reason.contains("exited"), "{failure}");
    assert!(
        failure.log.contains("127.0.0.1"),
        "the log comes with the failure: {failure}"
    );
}

#[test]
fn smoke_identity_provider_serves_discovery_jwks_and_faults() {
    let key = SigningKey::rs256();
    let mut idp = JwksServer::down(jwks_of(&[&key]));
    assert!(
        try_send("GET", &idp.jwks_uri(), &[]).is_err(),
        "down at start"
    );

    idp.come_up();
    let discovery = send(
        "GET",
        &format!("{}/.well-known/openid-configuration", idp.base_url()),
        &[],
    )
    .json();
    assert_eq!(discovery["issuer"], idp.issuer());
    assert_eq!(discovery["jwks_uri"], idp.jwks_uri());
    let jwks = send("GET", &idp.jwks_uri(), &[]).json();
    assert_eq!(jwks["keys"][0]["kid"], "rs256");

    idp.set_mode(IdpMode::Status(503));
    assert_eq!(send("GET", &idp.jwks_uri(), &[]).status, 503);
    idp.set_mode(IdpMode::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(send("GET", &idp.jwks_uri(), &[]).status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "slow mode delays"
    );

    assert_eq!(idp.jwks_requests(), 3);
    assert_eq!(idp.discovery_requests(), 1);
}

#[test]
fn smoke_minted_tokens_verify_against_the_published_jwks() {
    use jwt_simple::prelude::*;
    type Claims = serde_json::Map<String, Value>;
    for alg in Alg::ALL {
        let key = SigningKey::for_alg(alg);
        let claims = valid_claims("https://issuer.test", "alice");
        let token = tokens::mint(&key, &claims);
        let jwk = key.public_jwk().to_string();
        let verified =
            match alg {
                Alg::RS256 => RS256PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::RS384 => RS384PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::RS512 => RS512PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::PS256 => PS256PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::PS384 => PS384PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::PS512 => PS512PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::ES256 => ES256PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::ES384 => ES384PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
                Alg::EdDSA => Ed25519PublicKey::from_jwk(&jwk)
                    .and_then(|k| k.verify_token::<Claims>(&token, None)),
            };
        let verified = verified.unwrap_or_else(|e| panic!("{}: {e}", alg.name()));
        assert_eq!(
            verified.custom["preferred_username"],
            "alice",
            "{}",
            alg.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Valid tokens.

#[test]
fn valid_token_forwards_username_and_removes_authorization() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_forwarded_as(&reply, "alice");
    assert_eq!(reply.upstream().path, "/rest/api/2/myself");
}

#[test]
fn upstream_sees_the_username_as_its_only_identity_header() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    let seen = reply.upstream_headers();
    let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = TRANSPORT_HEADERS
        .into_iter()
        .chain([USERNAME_HEADER])
        .collect();
    assert_eq!(names, expected, "upstream headers: {seen:?}");
}

#[test]
fn authorization_is_kept_when_configured_to_keep() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["forward"]["authorization"] = json!("keep"));
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    let seen = reply.upstream_headers();
    assert_eq!(seen[USERNAME_HEADER], "alice");
    assert_eq!(seen["authorization"], bearer(&token));
}

#[test]
fn username_falls_back_to_sub_when_preferred_username_is_absent() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims.as_object_mut().unwrap().remove("preferred_username");

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_forwarded_as(&reply, "alice-subject-id");
}

#[test]
fn token_expired_within_clock_skew_is_accepted() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims["iat"] = json!(now() - 3600);
    claims["nbf"] = json!(now() - 3600);
    claims["exp"] = json!(now() - 5); // clock_skew_seconds is 30

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_forwarded_as(&reply, "alice");
}

#[test]
fn every_supported_algorithm_is_accepted() {
    let keys: Vec<SigningKey> = Alg::ALL.into_iter().map(SigningKey::for_alg).collect();
    let stack = Stack::start(&keys.iter().collect::<Vec<_>>(), no_change);

    for key in &keys {
        let username = format!("user-{}", key.alg.name().to_ascii_lowercase());
        let token = tokens::mint(key, &stack.claims(&username));

        let reply = stack.get_with_token("/rest/api/2/myself", &token);

        assert_eq!(reply.status, 200, "{}: {reply:?}", key.alg.name());
        assert_forwarded_as(&reply, &username);
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid tokens and missing credentials (SPEC section 5).

#[test]
fn request_without_credential_to_required_path_gets_a_bare_challenge() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = stack.get("/rest/api/2/myself", &[]);

    assert_eq!(reply.status, 401, "{reply:?}");
    let challenge = bearer_challenge(&reply);
    assert_eq!(
        challenge, r#"Bearer realm="jira""#,
        "no error attribute without a token"
    );
}

#[test]
fn expired_token_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims["iat"] = json!(now() - 7200);
    claims["nbf"] = json!(now() - 7200);
    claims["exp"] = json!(now() - 600);

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_invalid_token(&reply, Some("token expired"));
}

#[test]
fn token_not_yet_valid_beyond_clock_skew_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims["nbf"] = json!(now() + 600);

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn token_without_exp_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims.as_object_mut().unwrap().remove("exp");

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn token_from_another_issuer_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims["iss"] = json!("https://attacker.test");

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn token_for_another_audience_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let mut claims = stack.claims("alice");
    claims["aud"] = json!(["confluence", "bitbucket"]);

    let reply = stack.get_with_token("/rest/api/2/myself", &tokens::mint(&key, &claims));

    assert_invalid_token(&reply, None);
}

#[test]
fn token_with_unknown_kid_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::mint_with_kid(&key, "no-such-kid", &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_invalid_token(&reply, Some("unknown key id"));
}

#[test]
fn token_with_tampered_payload_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let genuine = tokens::mint(&key, &stack.claims("alice"));
    let forged = tokens::with_payload(&genuine, &stack.claims("admin"));

    let reply = stack.get_with_token("/rest/api/2/myself", &forged);

    assert_invalid_token(&reply, Some("invalid signature"));
}

/// `token` with one bit of its signature flipped.
fn with_flipped_signature_bit(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x10;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn rs_signatures_are_verified_by_envoy_and_bad_ones_are_refused_there() {
    // Issue 15: RS256/RS384/RS512 go to Envoy's BoringSSL (foreign function verify_signature),
    // which says so once per VM; a refusal there is final.
    let keys: Vec<SigningKey> = [Alg::RS256, Alg::RS384, Alg::RS512]
        .into_iter()
        .map(SigningKey::for_alg)
        .collect();
    let stack = Stack::start(&keys.iter().collect::<Vec<_>>(), no_change);

    for key in &keys {
        let name = key.alg.name();
        let genuine = tokens::mint(key, &stack.claims("alice"));
        let reply = stack.get_with_token("/rest/api/2/myself", &genuine);
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
        assert_forwarded_as(&reply, "alice");

        let flipped = with_flipped_signature_bit(&genuine);
        let reply = stack.get_with_token("/rest/api/2/myself", &flipped);
        assert_invalid_token(&reply, Some("invalid signature"));

        // Another key's signature under this key's kid (and algorithm).
        let signer = SigningKey::load(key.alg, "rsa-2048-rotated.pem", &key.kid);
        let foreign = tokens::mint(&signer, &stack.claims("admin"));
        let reply = stack.get_with_token("/rest/api/2/myself", &foreign);
        assert_invalid_token(&reply, Some("invalid signature"));
    }

    let announced = poll(Duration::from_secs(5), || {
        let log = stack.envoy.log();
        log.contains("are verified by Envoy (foreign function verify_signature)")
            .then_some(log)
    });
    let log = announced.unwrap_or_else(|| {
        panic!(
            "no line says Envoy verifies RSA signatures:\n{}",
            stack.envoy.log_tail(40)
        )
    });
    // Every answer came from Envoy: no fallback, not even for the refused signatures.
    assert!(!log.contains("own arithmetic"), "{log}");
}

#[test]
fn unsigned_token_with_alg_none_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::unsigned(&key.kid, &stack.claims("admin"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_invalid_token(&reply, None);
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::hs256_with_rsa_public_key(&key, &stack.claims("admin"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_invalid_token(&reply, None);
}

#[test]
fn algorithm_outside_the_provider_allow_list_is_rejected() {
    let rsa = SigningKey::rs256();
    let ec = SigningKey::for_alg(Alg::ES256);
    let stack = Stack::start(&[&rsa, &ec], |c| {
        c["providers"][0]["algorithms"] = json!(["ES256"]);
    });
    let token = tokens::mint(&rsa, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_invalid_token(&reply, Some("algorithm not allowed"));
}

// ---------------------------------------------------------------------------------------------
// Auth modes (SPEC section 4) and rule matching.

#[test]
fn path_with_auth_none_passes_without_credential() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = stack.get("/status", &[]);

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_forwarded_anonymously(&reply);
}

#[test]
fn path_with_auth_none_passes_a_bad_token_untouched() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = stack.get("/status", &[("authorization", "Bearer not-a-token")]);

    let seen = reply.upstream_headers();
    assert_eq!(seen["authorization"], "Bearer not-a-token");
    assert!(!seen.contains_key(USERNAME_HEADER), "{seen:?}");
}

#[test]
fn optional_path_without_credential_passes_anonymously() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["default_auth"] = json!("optional"));

    let reply = stack.get("/secure/Dashboard.jspa", &[("cookie", "JSESSIONID=abc")]);

    assert_forwarded_anonymously(&reply);
    assert_eq!(reply.upstream_headers()["cookie"], "JSESSIONID=abc");
}

#[test]
fn optional_path_with_valid_token_forwards_username() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["default_auth"] = json!("optional"));
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/secure/Dashboard.jspa", &token);

    assert_forwarded_as(&reply, "alice");
}

#[test]
fn optional_path_with_bad_token_is_rejected() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["default_auth"] = json!("optional"));
    let token = tokens::mint_with_kid(&key, "no-such-kid", &stack.claims("alice"));

    let reply = stack.get_with_token("/secure/Dashboard.jspa", &token);

    assert_invalid_token(&reply, None);
}

#[test]
fn path_normalisation_cannot_escape_a_required_rule() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["default_auth"] = json!("none"));

    for path in ["/status/../rest/api/2/myself", "//rest//api/2/myself"] {
        let reply = stack.get(path, &[]);

        assert_eq!(reply.status, 401, "{path} normalises to /rest/: {reply:?}");
    }
}

#[test]
fn cors_preflight_to_required_path_passes_without_credential() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = send(
        "OPTIONS",
        &stack.envoy.url("/rest/api/2/issue"),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
    );

    let seen = reply.upstream();
    assert_eq!(seen.method, "OPTIONS");
    assert!(!seen.headers.contains_key(USERNAME_HEADER), "{seen:?}");
}

#[test]
fn options_without_preflight_headers_still_needs_a_credential() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = send(
        "OPTIONS",
        &stack.envoy.url("/rest/api/2/issue"),
        &[("origin", "https://app.example")],
    );

    assert_eq!(reply.status, 401, "{reply:?}");
}

#[test]
fn dry_run_lets_an_invalid_token_through_without_identity() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["dry_run"] = json!(true));
    let token = tokens::mint_with_kid(&key, "no-such-kid", &stack.claims("alice"));
    let authorization = bearer(&token);

    let reply = stack.get(
        "/rest/api/2/myself",
        &[
            ("authorization", &authorization),
            (USERNAME_HEADER, "admin"),
        ],
    );

    let seen = reply.upstream_headers();
    assert!(
        !seen.contains_key(USERNAME_HEADER),
        "spoofed header stripped: {seen:?}"
    );
    assert_eq!(
        seen.get("authorization"),
        Some(&authorization),
        "dry run changes no other header: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Spoofed identity (SPEC section 1 step 1): a client never chooses its own username.

#[test]
fn spoofed_username_is_stripped_on_a_path_with_auth_none() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    let reply = stack.get("/status", &[(USERNAME_HEADER, "admin")]);

    assert_forwarded_anonymously(&reply);
}

/// A pass sets no header, so the filter looks for each identity header before removing it (a
/// removal makes Envoy match the route again): every one a client sends, in any case and any
/// number of times, is still gone upstream, on an auth-none path and on an anonymous one.
#[test]
fn every_spoofed_identity_header_is_stripped_on_a_pass() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| {
        c["default_auth"] = json!("optional");
        c["forward"]["provider_header"] = json!("x-forwarded-auth-provider");
        c["forward"]["claims_to_headers"] = json!({ "email": "x-forwarded-email" });
    });
    let identity = [
        "x-forwarded-user",
        "x-forwarded-auth-provider",
        "x-forwarded-email",
    ];
    // Each name twice in two cases; an empty value alone; an empty value before another (the
    // filter looks before it removes, and a look that took an empty value for no header would let
    // the header through). Sent raw: the HTTP client would send one value per name.
    let upper: Vec<String> = identity.iter().map(|n| n.to_uppercase()).collect();
    let sends: [Vec<(&str, &str)>; 3] = [
        identity
            .iter()
            .zip(&upper)
            .flat_map(|(n, u)| [(*n, "admin"), (u.as_str(), "root")])
            .collect(),
        identity.iter().map(|n| (*n, "")).collect(),
        identity
            .iter()
            .flat_map(|n| [(*n, ""), (*n, "admin")])
            .collect(),
    ];
    for path in ["/status", "/secure/Dashboard.jspa"] {
        for headers in &sends {
            let reply = attacks::raw_request(stack.envoy.port(), "GET", path, headers);
            assert_eq!(reply.status, 200, "{path}");
            let seen = reply.upstream_headers();
            for name in identity {
                assert!(
                    !seen.contains_key(name),
                    "{path} {headers:?}: {name} stripped: {seen:?}"
                );
            }
        }
    }
}

#[test]
fn spoofed_username_is_stripped_on_an_optional_path_without_token() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| c["default_auth"] = json!("optional"));

    let reply = stack.get("/secure/Dashboard.jspa", &[("X-Forwarded-User", "admin")]);

    assert_forwarded_anonymously(&reply);
}

#[test]
fn spoofed_username_is_replaced_by_the_token_username() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::mint(&key, &stack.claims("alice"));
    let authorization = bearer(&token);

    let reply = stack.get(
        "/rest/api/2/myself",
        &[
            ("authorization", &authorization),
            (USERNAME_HEADER, "admin"),
        ],
    );

    assert_forwarded_as(&reply, "alice");
}

#[test]
fn spoofed_username_sent_twice_is_replaced_whole_on_a_verify_and_on_a_cache_hit() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let token = tokens::mint(&key, &stack.claims("alice"));
    let authorization = bearer(&token);

    // The username is set without removing the client's values first: setting replaces them
    // all, whether the token is verified (first request) or recalled (second).
    // Raw: the HTTP client would send one value per name.
    for _ in 0..2 {
        let reply = attacks::raw_request(
            stack.envoy.port(),
            "GET",
            "/rest/api/2/myself",
            &[
                ("authorization", &authorization),
                (USERNAME_HEADER, "admin"),
                ("X-Forwarded-User", "root"),
                (USERNAME_HEADER, ""),
            ],
        );
        assert_forwarded_as(&reply, "alice");
    }
}

// ---------------------------------------------------------------------------------------------
// Keys: fetching, sharing, rotation, provider outage (SPEC sections 5 and 6).

#[test]
fn jwks_is_fetched_once_and_shared_by_both_workers() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);

    for n in 0..12 {
        // A fresh token and a fresh connection each time: no verified-token cache hit, and
        // the requests spread over Envoy's two workers.
        let token = tokens::mint(&key, &stack.claims(&format!("user{n}")));
        let reply = stack.get_with_token("/rest/api/2/myself", &token);
        assert_forwarded_as(&reply, &format!("user{n}"));
    }

    let per_worker = stack.envoy.connections_per_worker();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers served requests: {per_worker:?}"
    );
    let fetches = stack.idp.jwks_requests();
    assert!(
        (1..=2).contains(&fetches),
        "JWKS fetched {fetches} times for 12 requests"
    );
}

#[test]
fn rotated_key_is_accepted_without_restarting_envoy() {
    let old = SigningKey::rs256();
    let new = SigningKey::rs256_rotated();
    let stack = Stack::start(&[&old], no_change);
    let before = stack.get_with_token(
        "/rest/api/2/myself",
        &tokens::mint(&old, &stack.claims("alice")),
    );
    assert_forwarded_as(&before, "alice");
    let fetches_before = stack.idp.jwks_requests();

    stack.idp.set_jwks(jwks_of(&[&new]));
    let token = tokens::mint(&new, &stack.claims("bob"));
    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    // The unknown kid made the filter refresh the JWKS while this request waited.
    assert_forwarded_as(&reply, "bob");
    assert_eq!(
        stack.idp.jwks_requests(),
        fetches_before + 1,
        "one refresh for the new kid"
    );
}

#[test]
fn repeated_unknown_kids_refresh_the_jwks_at_most_once() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], no_change);
    let warm = stack.get_with_token(
        "/rest/api/2/myself",
        &tokens::mint(&key, &stack.claims("alice")),
    );
    assert_forwarded_as(&warm, "alice");
    let fetches_before = stack.idp.jwks_requests();

    for n in 0..6 {
        let token = tokens::mint_with_kid(&key, &format!("unknown-{n}"), &stack.claims("alice"));

        let reply = stack.get_with_token("/rest/api/2/myself", &token);

        assert_invalid_token(&reply, Some("unknown key id"));
    }
    let refreshes = stack.idp.jwks_requests() - fetches_before;
    assert!(
        refreshes <= 1,
        "a stream of unknown kids must not hammer the provider: {refreshes} refreshes"
    );
}

#[test]
fn provider_down_at_start_gives_503_then_recovers_when_it_comes_up() {
    let key = SigningKey::rs256();
    let idp = JwksServer::down(jwks_of(&[&key]));
    let mut stack = Stack::start_with(idp, |c| c["providers"][0]["timeout_ms"] = json!(1000));
    let token = tokens::mint(&key, &stack.claims("alice"));

    let started = Instant::now();
    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_eq!(
        reply.status, 503,
        "fail closed while the keys are unreachable: {reply:?}"
    );
    assert!(
        reply.header("retry-after").is_some(),
        "503 says when to retry: {reply:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by timeout_ms"
    );

    stack.idp.come_up();
    let reply = poll(Duration::from_secs(15), || {
        let reply = stack.get_with_token("/rest/api/2/myself", &token);
        (reply.status == 200).then_some(reply)
    })
    .unwrap_or_else(|| panic!("never recovered after the provider came up"));
    assert_forwarded_as(&reply, "alice");
}

#[test]
fn provider_answering_503_gives_503_with_retry_after() {
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    idp.set_mode(IdpMode::Status(503));
    let stack = Stack::start_with(idp, no_change);
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
}

#[test]
fn provider_slower_than_timeout_gives_503_within_the_timeout() {
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    idp.set_mode(IdpMode::Slow(Duration::from_secs(6)));
    let stack = Stack::start_with(idp, |c| c["providers"][0]["timeout_ms"] = json!(1000));
    let token = tokens::mint(&key, &stack.claims("alice"));

    let started = Instant::now();
    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}, not bounded by timeout_ms",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration errors stop Envoy (SPEC section 2).

#[test]
fn unknown_config_field_stops_envoy_and_the_log_names_it() {
    let key = SigningKey::rs256();
    let echo = EchoUpstream::start();
    let idp = JwksServer::start(jwks_of(&[&key]));
    let mut config = filter_config(&idp);
    config["bogus"] = json!(1);

    let failure = Envoy::start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config))
        .map(|_| ())
        .expect_err("Envoy must refuse the configuration");

    assert!(failure.log.contains("bogus"), "{failure}");
}

#[test]
fn jwks_uri_that_is_not_a_uri_stops_envoy_and_the_log_names_it() {
    let key = SigningKey::rs256();
    let echo = EchoUpstream::start();
    let idp = JwksServer::start(jwks_of(&[&key]));
    let mut config = filter_config(&idp);
    config["providers"][0]["jwks_uri"] = json!("not a uri");

    let failure = Envoy::start(&EnvoyOptions::with_filter(echo.port(), idp.port(), config))
        .map(|_| ())
        .expect_err("Envoy must refuse the configuration");

    assert!(failure.log.contains("providers[0].jwks_uri"), "{failure}");
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

#[test]
fn request_body_sent_while_waiting_for_keys_does_not_slip_through() {
    // A POST whose body arrives while its headers wait for keys must not reach Jira undecided.
    // (Envoy 1.40 itself keeps the headers stopped; the filter also holds body and trailers so
    // that no host continues them on a body callback.)
    let key = SigningKey::rs256();
    let idp = JwksServer::start(jwks_of(&[&key]));
    idp.set_mode(IdpMode::Slow(Duration::from_secs(3)));
    let stack = Stack::start_with(idp, |c| c["providers"][0]["timeout_ms"] = json!(1000));
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = support::client::try_send_body(
        "POST",
        &stack.envoy.url("/rest/api/2/issue"),
        &[
            ("authorization", &bearer(&token)),
            ("content-type", "application/json"),
        ],
        Some(br#"{"fields":{"summary":"x"}}"#),
    )
    .unwrap();

    assert_eq!(
        reply.status, 503,
        "undecided request must not pass: {reply:?}"
    );
}

#[test]
fn discovery_finds_the_jwks_uri_from_the_issuer() {
    let key = SigningKey::rs256();
    let stack = Stack::start(&[&key], |c| {
        let provider = c["providers"][0].as_object_mut().unwrap();
        provider.remove("jwks_uri");
        provider.insert("discovery".into(), json!(true));
    });
    let token = tokens::mint(&key, &stack.claims("alice"));

    let reply = stack.get_with_token("/rest/api/2/myself", &token);

    assert_forwarded_as(&reply, "alice");
    assert_eq!(
        stack.idp.discovery_requests(),
        1,
        "discovery is fetched once, by one worker"
    );
}
