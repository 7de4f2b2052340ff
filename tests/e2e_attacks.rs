//! Attacks on the filter through the real Envoy (SPEC.md sections 1 and 5): forged and
//! malformed JWTs, header tricks that name their own keys, identity smuggled through claims or
//! userinfo answers, oversized and deeply nested inputs, repeated `Authorization` headers.
//! One behaviour per test; every test ends by checking that Envoy is alive and ready, that its
//! log shows no panic or Wasm trap, and that no token, signature or client secret is in it.
//!
//! The SPEC section 5 limits are also pinned natively at their exact boundaries (last section).
//! Each Envoy test starts its own simulated provider (`support::providers::FakeProvider`, which
//! records every request it gets), echo upstream and Envoy on free 127.0.0.1 ports. Needs Envoy
//! (`make envoy`) and the filter (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};

use atlassian_rest_auth::credentials::{parse_authorization, Credentials};
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::jwks::{KeySet, MAX_JWKS_BYTES, MAX_KEYS};
use atlassian_rest_auth::jwt::{Jwt, MAX_JSON_DEPTH, MAX_TOKEN_BYTES};
use support::attacks::{
    assert_envoy_unharmed, assert_invalid_token, assert_unavailable, b64url, json_members,
    raw_request, reason, signature_of, with_signature, RawSigner,
};
use support::envoy::IDP_CLUSTER;
use support::providers::{Answer, FakeProvider};
use support::tokens::{self, bearer, valid_claims};
use support::*;

const REALM: &str = "jira";
const USERNAME_HEADER: &str = "x-forwarded-user";
const API_PATH: &str = "/rest/api/2/myself";
const USERINFO: &str = "/userinfo";

// ---------------------------------------------------------------------------------------------
// The stack.

/// One test's world: a provider publishing every fixture key at `/jwks` (and answering what
/// the test adds), Envoy in front of the echo upstream. Fields drop in order.
struct Stack {
    envoy: Envoy,
    idp: FakeProvider,
    _echo: EchoUpstream,
}

/// Every fixture key (kids `rs256` ... `eddsa`): any algorithm an attack relabels to exists.
fn fixture_keys() -> Vec<SigningKey> {
    Alg::ALL.into_iter().map(SigningKey::for_alg).collect()
}

impl Stack {
    /// A JWT provider (`issuer` = the fake provider) with the fixture keys.
    fn jwt() -> Stack {
        Self::jwt_adjusted(|_| {})
    }

    fn jwt_adjusted(adjust: impl FnOnce(&mut Value)) -> Stack {
        let idp = FakeProvider::start();
        let keys = fixture_keys();
        idp.serve_jwks(jwks_of(&keys.iter().collect::<Vec<_>>()));
        let provider = json!({
            "name": "idp", "issuer": idp.issuer(), "audiences": [tokens::AUDIENCE], "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username", "sub"], "clock_skew_seconds": 30, "timeout_ms": 2000,
        });
        Self::start(idp, provider, adjust)
    }

    /// A userinfo provider at `/userinfo` whose username is the answer's `email`.
    fn userinfo() -> Stack {
        let idp = FakeProvider::start();
        let provider = json!({"name": "ui", "mode": "userinfo", "userinfo_uri": idp.url(USERINFO), "username_claim": ["email"], "timeout_ms": 2000});
        Self::start(idp, provider, |_| {})
    }

    fn start(idp: FakeProvider, provider: Value, adjust: impl FnOnce(&mut Value)) -> Stack {
        let echo = EchoUpstream::start();
        let mut config = json!({
            "realm": REALM,
            "default_auth": "required",
            "providers": [provider],
            "rules": [{ "path_prefix": "/status", "auth": "none" }, { "path_prefix": "/rest/", "auth": "required" }],
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

    fn claims(&self, username: &str) -> Value {
        valid_claims(&self.idp.issuer(), username)
    }

    fn get_with_token(&self, token: &str) -> Reply {
        send(
            "GET",
            &self.envoy.url(API_PATH),
            &[("authorization", &bearer(token))],
        )
    }

    /// `token` is refused with 401 `invalid_token` (and `why`, when given).
    fn assert_refused(&self, token: &str, why: Option<&str>) {
        let reply = self.get_with_token(token);
        assert_invalid_token(&reply, REALM, why);
    }

    /// Only the published JWKS was ever fetched from the provider.
    fn assert_only_jwks_fetched(&self) {
        let others: Vec<String> = self
            .idp
            .requests()
            .into_iter()
            .filter(|r| r.route_path() != "/jwks")
            .map(|r| r.path)
            .collect();
        assert!(
            others.is_empty(),
            "the filter fetched what a token named: {others:?}"
        );
    }

    /// Envoy alive and ready, no crash and none of `secrets` in its log.
    fn finish(mut self, secrets: &[&str]) {
        assert_envoy_unharmed(&mut self.envoy, secrets);
    }
}

fn eddsa_header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
}

// ---------------------------------------------------------------------------------------------
// The harness: a token signed by `RawSigner` with the provider's key is a good token.

#[test]
fn smoke_raw_signed_token_of_the_provider_key_is_accepted() {
    let stack = Stack::jwt();
    let token = RawSigner::provider().sign_claims(&stack.claims("alice"));

    let reply = stack.get_with_token(&token);

    assert_eq!(reply.upstream_headers()[USERNAME_HEADER], "alice");
    stack.finish(&[&token]);
}

// ---------------------------------------------------------------------------------------------
// Algorithm and key confusion.

#[test]
fn alg_none_in_any_spelling_is_refused() {
    let stack = Stack::jwt();
    let payload = b64url(stack.claims("admin").to_string());
    let mut sent = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64url(json!({"alg": alg, "typ": "JWT", "kid": "rs256"}).to_string());
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{header}.{payload}.{signature}");

            stack.assert_refused(&token, None);
            sent.push(token);
        }
    }
    stack.assert_only_jwks_fetched();
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn hmac_token_keyed_with_any_form_of_the_published_rsa_key_is_refused() {
    use jwt_simple::prelude::*;
    let stack = Stack::jwt();
    let rsa = SigningKey::rs256();
    let jwk = rsa.public_jwk();
    let public = RS256PublicKey::from_pem(&rsa.rsa_public_pem()).unwrap();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", rsa.rsa_public_pem().into_bytes()),
        ("SPKI DER", public.to_der().unwrap()),
        ("JWK JSON", jwk.to_string().into_bytes()),
        (
            "modulus",
            base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                jwk["n"].as_str().unwrap(),
            )
            .unwrap(),
        ),
    ];
    let claims = stack.claims("admin");
    let custom: JWTClaims<serde_json::Map<String, Value>> = JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims.as_object().unwrap().clone(),
    };
    let mut sent = Vec::new();
    for (form, secret) in secrets {
        let tokens = [
            HS256Key::from_bytes(&secret)
                .with_key_id("rs256")
                .authenticate(custom.clone())
                .unwrap(),
            HS384Key::from_bytes(&secret)
                .with_key_id("rs256")
                .authenticate(custom.clone())
                .unwrap(),
            HS512Key::from_bytes(&secret)
                .authenticate(custom.clone())
                .unwrap(),
        ];
        for token in tokens {
            let reply = stack.get_with_token(&token);

            assert_eq!(reply.status, 401, "HMAC keyed with the {form}: {reply:?}");
            assert_invalid_token(&reply, REALM, Some("algorithm not allowed"));
            sent.push(token);
        }
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn token_naming_the_kid_of_a_key_of_another_type_is_refused() {
    let stack = Stack::jwt();
    let claims = stack.claims("admin");
    // Each really signed by its own fixture key, but pointing at a key of another type.
    let tokens = [
        tokens::mint_with_kid(&SigningKey::for_alg(Alg::ES256), "rs256", &claims),
        tokens::mint_with_kid(&SigningKey::for_alg(Alg::EdDSA), "es256", &claims),
        tokens::mint_with_kid(&SigningKey::for_alg(Alg::PS256), "eddsa", &claims),
        tokens::mint_with_kid(&SigningKey::for_alg(Alg::ES384), "es256", &claims),
    ];
    for token in &tokens {
        stack.assert_refused(token, Some("invalid signature"));
    }
    stack.finish(&tokens.iter().map(String::as_str).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Header parameters that name their own key or extension.

#[test]
fn embedded_jwk_header_is_ignored() {
    let stack = Stack::jwt();
    let attacker = RawSigner::attacker("attacker");
    let claims = stack.claims("admin");
    let mut sent = Vec::new();
    // The attacker's public key rides in the header, under its own kid or the provider's.
    for kid in ["eddsa", "attacker"] {
        let mut header = eddsa_header(kid);
        header["jwk"] = attacker.public_jwk();
        let token = attacker.sign(&header, &claims);

        stack.assert_refused(&token, None);
        sent.push(token);
    }
    // No kid at all: only the provider's own EdDSA key may be tried.
    let mut header = json!({"alg": "EdDSA", "typ": "JWT"});
    header["jwk"] = attacker.public_jwk();
    let token = attacker.sign(&header, &claims);
    stack.assert_refused(&token, None);
    sent.push(token);

    stack.assert_only_jwks_fetched();
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn jku_header_pointing_to_an_attacker_jwks_is_never_fetched() {
    let stack = Stack::jwt();
    let attacker = RawSigner::attacker("attacker");
    // Reachable through the provider's own cluster: a filter that followed jku would get it.
    stack.idp.reply(
        "GET",
        "/attacker/jwks",
        Answer::ok(json!({ "keys": [attacker.public_jwk()] })),
    );
    let claims = stack.claims("admin");
    let mut sent = Vec::new();
    for kid in ["attacker", "eddsa"] {
        let mut header = eddsa_header(kid);
        header["jku"] = json!(stack.idp.url("/attacker/jwks"));
        let token = attacker.sign(&header, &claims);

        stack.assert_refused(&token, None);
        sent.push(token);
    }

    assert_eq!(stack.idp.calls("/attacker/jwks"), 0, "jku was fetched");
    stack.assert_only_jwks_fetched();
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn x5u_header_pointing_to_an_attacker_certificate_is_never_fetched() {
    let stack = Stack::jwt();
    let attacker = RawSigner::attacker("attacker");
    stack.idp.reply(
        "GET",
        "/attacker/cert.pem",
        Answer::text(
            200,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        ),
    );
    let mut header = eddsa_header("attacker");
    header["x5u"] = json!(stack.idp.url("/attacker/cert.pem"));
    let token = attacker.sign(&header, &stack.claims("admin"));

    stack.assert_refused(&token, None);

    assert_eq!(stack.idp.calls("/attacker/cert.pem"), 0, "x5u was fetched");
    stack.assert_only_jwks_fetched();
    stack.finish(&[&token]);
}

#[test]
fn crit_naming_an_unknown_extension_is_refused() {
    let stack = Stack::jwt();
    let provider = RawSigner::provider();
    let mut header = eddsa_header(&provider.kid);
    header["crit"] = json!(["urn:example:must-understand"]);
    header["urn:example:must-understand"] = json!(true);
    // Signed by the provider's real key: only the extension is wrong with it.
    let token = provider.sign(&header, &stack.claims("alice"));

    stack.assert_refused(&token, Some("unsupported critical header"));
    stack.finish(&[&token]);
}

// ---------------------------------------------------------------------------------------------
// Signatures and encodings.

#[test]
fn ecdsa_signature_with_r_and_s_zero_is_refused() {
    let stack = Stack::jwt();
    let mut sent = Vec::new();
    for (alg, width) in [(Alg::ES256, 32), (Alg::ES384, 48)] {
        let genuine = tokens::mint(&SigningKey::for_alg(alg), &stack.claims("admin"));
        // The "psychic signature": r = s = 0 satisfies a verifier that skips the range check.
        let forged = with_signature(&genuine, &b64url(vec![0u8; 2 * width]));

        stack.assert_refused(&forged, Some("invalid signature"));
        sent.push(genuine);
        sent.push(forged);
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn truncated_signatures_are_refused() {
    let stack = Stack::jwt();
    let mut sent = Vec::new();
    for alg in [Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA] {
        let genuine = tokens::mint(&SigningKey::for_alg(alg), &stack.claims("alice"));
        let signature = signature_of(&genuine).to_string();
        // Whole bytes cut (a multiple of 4 characters), one character cut, all but a few kept.
        for cut in [
            &signature[..signature.len() - 4],
            &signature[..signature.len() - 1],
            &signature[..signature.len() / 2],
            &signature[..4],
        ] {
            let token = with_signature(&genuine, cut);

            stack.assert_refused(&token, None);
            sent.push(token);
        }
        sent.push(genuine);
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn non_canonical_base64url_and_padding_are_refused() {
    let stack = Stack::jwt();
    let genuine = tokens::mint(&SigningKey::rs256(), &stack.claims("alice"));
    assert_eq!(
        stack.get_with_token(&genuine).status,
        200,
        "the genuine token passes"
    );
    let parts: Vec<&str> = genuine.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    // A 256-byte RSA signature is 342 characters; the last one carries 2 unused bits.
    let last = signature.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).unwrap();
    let sibling = alphabet.chars().nth(index ^ 1).unwrap();
    let variants = [
        format!("{header}=.{payload}.{signature}"),
        format!("{header}.{payload}==.{signature}"),
        format!("{header}.{payload}.{signature}=="),
        format!(
            "{header}.{payload}.{}{sibling}",
            &signature[..signature.len() - 1]
        ),
        format!(
            "{header}.{payload}.{}",
            signature.replace('-', "+").replace('_', "/")
        ),
        format!(
            "{header}.{}.{signature}",
            payload.replace('-', "+").replace('_', "/")
        ),
    ];
    assert!(
        variants[4] != genuine || variants[5] != genuine,
        "the fixture token has a - or _ to swap"
    );
    for token in variants.iter().filter(|t| **t != genuine) {
        stack.assert_refused(token, None);
    }
    let mut sent: Vec<&str> = variants.iter().map(String::as_str).collect();
    sent.push(&genuine);
    stack.finish(&sent);
}

// ---------------------------------------------------------------------------------------------
// Duplicate JSON members: RFC 7519 section 4 lets a parser keep the lexically last one, but an
// identity provider that emits duplicates (a user-controlled attribute named like a standard
// claim) meant the first. Two parsers (ours, jwt-simple's) must not pick different identities;
// the safe outcome is a refusal.

#[test]
fn payload_with_two_username_claims_is_refused() {
    let stack = Stack::jwt();
    let provider = RawSigner::provider();
    let claims = stack.claims("alice");
    let mut members: Vec<(&str, Value)> = claims
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    members.push(("preferred_username", json!("admin")));
    let token = provider.sign_text(
        &eddsa_header(&provider.kid).to_string(),
        &json_members(&members),
    );

    let reply = stack.get_with_token(&token);

    if reply.status == 200 {
        panic!(
            "a token with two usernames was accepted as {:?}",
            reply.upstream_headers().get(USERNAME_HEADER)
        );
    }
    assert_invalid_token(&reply, REALM, None);
    stack.finish(&[&token]);
}

#[test]
fn payload_with_two_issuers_is_refused() {
    let stack = Stack::jwt();
    let provider = RawSigner::provider();
    let claims = stack.claims("alice");
    let others: Vec<(&str, Value)> = claims
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "iss")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut sent = Vec::new();
    for issuers in [
        [stack.idp.issuer(), "https://attacker.test".into()],
        ["https://attacker.test".into(), stack.idp.issuer()],
    ] {
        let mut members = vec![("iss", json!(issuers[0])), ("iss", json!(issuers[1]))];
        members.extend(others.iter().cloned());
        let token = provider.sign_text(
            &eddsa_header(&provider.kid).to_string(),
            &json_members(&members),
        );

        stack.assert_refused(&token, None);
        sent.push(token);
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn header_with_two_algorithms_or_key_ids_is_refused() {
    let stack = Stack::jwt();
    let provider = RawSigner::provider();
    let claims = stack.claims("alice").to_string();
    let headers = [
        json_members(&[
            ("alg", json!("EdDSA")),
            ("kid", json!("eddsa")),
            ("alg", json!("none")),
        ]),
        json_members(&[
            ("alg", json!("none")),
            ("kid", json!("eddsa")),
            ("alg", json!("EdDSA")),
        ]),
        json_members(&[
            ("alg", json!("EdDSA")),
            ("kid", json!("eddsa")),
            ("kid", json!("rs256")),
        ]),
        json_members(&[
            ("alg", json!("EdDSA")),
            ("kid", json!("rs256")),
            ("kid", json!("eddsa")),
        ]),
    ];
    let mut sent = Vec::new();
    for header in headers {
        let token = provider.sign_text(&header, &claims);

        stack.assert_refused(&token, None);
        sent.push(token);
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Token shape and size.

#[test]
fn jwe_shaped_token_is_refused() {
    let stack = Stack::jwt();
    let header =
        b64url(json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rs256"}).to_string());
    let token = format!(
        "{header}.{}.{}.{}.{}",
        b64url([7u8; 256]),
        b64url([1u8; 12]),
        b64url(b"ciphertext of the claims"),
        b64url([2u8; 16])
    );

    stack.assert_refused(&token, None);

    stack.assert_only_jwks_fetched();
    stack.finish(&[&token]);
}

/// A valid token for `username` whose payload is padded (claim `pad`) to `len` bytes in total,
/// or within 2 bytes of it (base64 cannot hit every length).
fn token_of_length(key: &SigningKey, claims: &Value, len: usize) -> String {
    let mut claims = claims.clone();
    claims["pad"] = json!("");
    let overhead = tokens::mint(key, &claims).len();
    // Each byte of padding adds 4/3 characters to the payload segment.
    let mut pad = len.saturating_sub(overhead + 8) * 3 / 4;
    loop {
        claims["pad"] = json!("x".repeat(pad));
        let token = tokens::mint(key, &claims);
        if token.len() + 2 >= len {
            assert!(token.len() <= len, "overshot: {} > {len}", token.len());
            return token;
        }
        pad += 1;
    }
}

#[test]
fn token_over_16_kib_is_refused_as_too_large() {
    let stack = Stack::jwt();
    // 17 KiB: far below Envoy's own 60 KiB header limit, so the filter decides.
    let token = token_of_length(&SigningKey::rs256(), &stack.claims("alice"), 17 * 1024);

    stack.assert_refused(&token, Some("token too large"));
    stack.finish(&[&token]);
}

#[test]
fn token_just_under_16_kib_is_accepted() {
    let stack = Stack::jwt();
    let token = token_of_length(
        &SigningKey::rs256(),
        &stack.claims("alice"),
        MAX_TOKEN_BYTES,
    );
    assert!(token.len() > MAX_TOKEN_BYTES - 3);

    let reply = stack.get_with_token(&token);

    assert_eq!(
        reply.upstream_headers()[USERNAME_HEADER],
        "alice",
        "{} bytes",
        token.len()
    );
    stack.finish(&[&token]);
}

#[test]
fn opaque_token_over_16_kib_is_refused_without_a_provider_call() {
    let stack = Stack::userinfo();
    let token = format!("opaque-{}", "A".repeat(17 * 1024));

    stack.assert_refused(&token, Some("token too large"));

    assert_eq!(stack.idp.calls(USERINFO), 0);
    stack.finish(&[&token]);
}

// ---------------------------------------------------------------------------------------------
// Identity smuggled into a header through a claim or a userinfo answer (SPEC section 1 step 6).

/// Usernames with ASCII and C1 control characters, header-injection text among them.
const CONTROL_USERNAMES: [&str; 7] = [
    "alice\r\nx-forwarded-user: admin",
    "alice\nx-forwarded-user: admin",
    "alice\rx",
    "alice\0admin",
    "alice\tadmin",
    "alice\u{7f}",
    "alice\u{85}admin",
];

/// Unicode line and paragraph separators, bidi overrides and isolates, zero-width and BOM:
/// not C0/C1 controls, but text no username holds and that can rewrite how a log line or an
/// admin screen reads ("admin" displayed for another string).
const UNICODE_CONTROL_USERNAMES: [&str; 6] = [
    "alice\u{2028}admin",
    "alice\u{2029}admin",
    "\u{202e}nimda",
    "alice\u{2066}admin\u{2069}",
    "ad\u{200b}min",
    "\u{feff}admin",
];

#[test]
fn control_characters_in_a_token_username_are_refused() {
    let stack = Stack::jwt();
    let key = SigningKey::rs256();
    let mut sent = Vec::new();
    for username in CONTROL_USERNAMES {
        let token = tokens::mint(&key, &stack.claims(username));

        stack.assert_refused(&token, Some("invalid username"));
        sent.push(token);
    }
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn unicode_separators_and_bidi_controls_in_a_token_username_are_refused() {
    let stack = Stack::jwt();
    let key = SigningKey::rs256();
    let mut accepted = Vec::new();
    let mut sent = Vec::new();
    for username in UNICODE_CONTROL_USERNAMES {
        let token = tokens::mint(&key, &stack.claims(username));
        let reply = stack.get_with_token(&token);
        if reply.status == 200 {
            accepted.push(format!(
                "{username:?} forwarded as {:?}",
                reply.upstream_headers().get(USERNAME_HEADER)
            ));
        } else {
            assert_invalid_token(&reply, REALM, Some("invalid username"));
        }
        sent.push(token);
    }
    assert!(
        accepted.is_empty(),
        "usernames with Unicode controls reached the upstream:\n{}",
        accepted.join("\n")
    );
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn control_characters_in_a_userinfo_username_are_refused() {
    let stack = Stack::userinfo();
    let tokens: Vec<String> = (0..CONTROL_USERNAMES.len())
        .map(|i| format!("opaque-control-{i}"))
        .collect();
    let answers: Vec<(&str, Answer)> = tokens
        .iter()
        .zip(CONTROL_USERNAMES)
        .map(|(t, name)| (t.as_str(), Answer::ok(json!({ "email": name }))))
        .collect();
    stack
        .idp
        .reply_by_bearer("GET", USERINFO, answers, Answer::status(401));
    for token in &tokens {
        stack.assert_refused(token, Some("invalid username"));
    }
    stack.finish(&tokens.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn unicode_separators_and_bidi_controls_in_a_userinfo_username_are_refused() {
    let stack = Stack::userinfo();
    let tokens: Vec<String> = (0..UNICODE_CONTROL_USERNAMES.len())
        .map(|i| format!("opaque-unicode-{i}"))
        .collect();
    let answers: Vec<(&str, Answer)> = tokens
        .iter()
        .zip(UNICODE_CONTROL_USERNAMES)
        .map(|(t, name)| (t.as_str(), Answer::ok(json!({ "email": name }))))
        .collect();
    stack
        .idp
        .reply_by_bearer("GET", USERINFO, answers, Answer::status(401));
    let mut accepted = Vec::new();
    for (token, username) in tokens.iter().zip(UNICODE_CONTROL_USERNAMES) {
        let reply = stack.get_with_token(token);
        if reply.status == 200 {
            accepted.push(format!(
                "{username:?} forwarded as {:?}",
                reply.upstream_headers().get(USERNAME_HEADER)
            ));
        } else {
            assert_invalid_token(&reply, REALM, Some("invalid username"));
        }
    }
    assert!(
        accepted.is_empty(),
        "usernames with Unicode controls reached the upstream:\n{}",
        accepted.join("\n")
    );
    stack.finish(&tokens.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn userinfo_answer_over_64_kib_is_503() {
    let stack = Stack::userinfo();
    let answer = json!({"email": "alice@example.com", "blob": "x".repeat(65 * 1024)});
    stack.idp.reply("GET", USERINFO, Answer::ok(answer));

    let reply = stack.get_with_token("opaque-oversized-answer");

    assert_unavailable(&reply);
    stack.finish(&["opaque-oversized-answer"]);
}

#[test]
fn userinfo_answer_nested_deeper_than_32_is_503() {
    let stack = Stack::userinfo();
    // 1 (the answer) + 32 arrays = 33 levels.
    let nested = format!(
        "{{\"email\":\"alice@example.com\",\"deep\":{}1{}}}",
        "[".repeat(32),
        "]".repeat(32)
    );
    stack.idp.reply(
        "GET",
        USERINFO,
        Answer {
            body: nested,
            ..Answer::ok(json!({}))
        },
    );

    let reply = stack.get_with_token("opaque-nested-answer");

    assert_unavailable(&reply);
    stack.finish(&["opaque-nested-answer"]);
}

// ---------------------------------------------------------------------------------------------
// Repeated `Authorization` headers: the filter must never authenticate one of two credentials.
// Envoy's proxy-wasm `get_header_map_value` returns only the first value of a repeated header
// (unless its codec merged them), so the filter alone cannot see the second one.

fn repeated_authorization(stack: &Stack, values: &[&str]) -> Reply {
    let headers: Vec<(&str, &str)> = values.iter().map(|v| ("authorization", *v)).collect();
    let reply = raw_request(stack.envoy.port(), "GET", API_PATH, &headers);
    eprintln!(
        "repeated authorization {:?}: {} {:?} -> upstream {:?}",
        values
            .iter()
            .map(|v| &v[..v.len().min(20)])
            .collect::<Vec<_>>(),
        reply.status,
        reason(&reply),
        (reply.status == 200).then(|| reply.body.clone())
    );
    reply
}

#[test]
fn repeated_authorization_valid_then_garbage_is_refused() {
    let stack = Stack::jwt();
    let valid = bearer(&tokens::mint(&SigningKey::rs256(), &stack.claims("alice")));

    let reply = repeated_authorization(&stack, &[&valid, "Bearer garbage"]);

    assert_eq!(
        reply.status, 401,
        "authenticated although a second credential is garbage: {reply:?}"
    );
    stack.finish(&[&valid]);
}

#[test]
fn repeated_authorization_garbage_then_valid_is_refused() {
    let stack = Stack::jwt();
    let valid = bearer(&tokens::mint(&SigningKey::rs256(), &stack.claims("alice")));

    let reply = repeated_authorization(&stack, &["Bearer garbage", &valid]);

    assert_eq!(
        reply.status, 401,
        "authenticated although a credential is garbage: {reply:?}"
    );
    stack.finish(&[&valid]);
}

#[test]
fn repeated_authorization_with_two_users_is_refused() {
    let stack = Stack::jwt();
    let key = SigningKey::rs256();
    let alice = bearer(&tokens::mint(&key, &stack.claims("alice")));
    let bob = bearer(&tokens::mint(&key, &stack.claims("bob")));

    let reply = repeated_authorization(&stack, &[&alice, &bob]);

    assert_eq!(
        reply.status, 401,
        "one of two identities was chosen: {reply:?}"
    );
    stack.finish(&[&alice, &bob]);
}

// ---------------------------------------------------------------------------------------------
// SPEC section 5 limits at their exact boundaries, natively (no Envoy).

fn b64_token_of(header: &Value, payload: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string()),
        b64url(payload),
        b64url(b"signature")
    )
}

/// `{"iss":"x","deep":[[..1..]]}` holding `levels` nested containers in all.
fn nested_object(levels: usize) -> String {
    let arrays = levels - 1;
    format!(
        "{{\"iss\":\"x\",\"email\":\"a@b.c\",\"deep\":{}1{}}}",
        "[".repeat(arrays),
        "]".repeat(arrays)
    )
}

#[test]
fn token_of_exactly_16_kib_is_read_and_one_byte_more_is_too_large() {
    let header = json!({"alg": "RS256"});
    let fill = |len: usize| {
        let base = b64_token_of(&header, "{}");
        let (h, rest) = base.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let payload_len = len - h.len() - s.len() - 2;
        // A payload segment of `payload_len` characters: base64 of a JSON object padded by spaces.
        let bytes = payload_len * 3 / 4;
        let text = format!("{{{}}}", " ".repeat(bytes - 2));
        format!("{h}.{}.{s}", b64url(text))
    };
    let exact = fill(MAX_TOKEN_BYTES);
    assert_eq!(exact.len(), MAX_TOKEN_BYTES);
    let over = fill(MAX_TOKEN_BYTES + 1);
    let over = if over.len() == MAX_TOKEN_BYTES + 1 {
        over
    } else {
        format!("{exact}A")
    };

    assert!(Jwt::parse(&exact).is_ok());
    assert_eq!(Jwt::parse(&over).unwrap_err(), AuthError::TokenTooLarge);
    assert_eq!(
        parse_authorization(Some(&format!("Bearer {exact}"))),
        Ok(Credentials::Bearer(exact.as_str()))
    );
}

#[test]
fn authorization_header_of_any_size_over_the_limit_is_refused_before_parsing() {
    for len in [MAX_TOKEN_BYTES + 17, 64 * 1024, 1 << 20] {
        let value = format!("Bearer {}", "a".repeat(len));
        assert_eq!(
            parse_authorization(Some(&value)),
            Err(AuthError::TokenTooLarge),
            "{len}"
        );
    }
}

#[test]
fn jwks_of_exactly_100_keys_is_read_and_101_are_refused() {
    let key = SigningKey::for_alg(Alg::ES256);
    let keys = |n: usize| {
        let list: Vec<Value> = (0..n)
            .map(|i| {
                let mut jwk = key.public_jwk();
                jwk["kid"] = json!(format!("k{i}"));
                jwk
            })
            .collect();
        json!({ "keys": list }).to_string()
    };

    assert_eq!(
        KeySet::parse(keys(MAX_KEYS).as_bytes()).unwrap().keys.len(),
        100
    );
    assert!(KeySet::parse(keys(MAX_KEYS + 1).as_bytes()).is_err());
}

#[test]
fn jwks_of_exactly_512_kib_is_read_and_one_byte_more_is_refused() {
    let doc = jwks_of(&[&SigningKey::rs256()]).to_string();
    let padded = |len: usize| format!("{doc}{}", " ".repeat(len - doc.len()));

    assert_eq!(
        KeySet::parse(padded(MAX_JWKS_BYTES).as_bytes())
            .unwrap()
            .keys
            .len(),
        1
    );
    assert!(KeySet::parse(padded(MAX_JWKS_BYTES + 1).as_bytes()).is_err());
}

#[test]
fn json_nested_32_deep_is_read_and_33_deep_is_refused_everywhere() {
    use atlassian_rest_auth::cache::EntryState;
    use atlassian_rest_auth::config::Config;
    use atlassian_rest_auth::lookup::{LookupStep, Outage, Progress, ReplyHead};
    use atlassian_rest_auth::time::UnixTime;
    assert_eq!(MAX_JSON_DEPTH, 32);
    let (ok, deep) = (
        nested_object(MAX_JSON_DEPTH),
        nested_object(MAX_JSON_DEPTH + 1),
    );
    let header = json!({"alg": "RS256"});

    assert!(
        Jwt::parse(&b64_token_of(&header, &ok)).is_ok(),
        "payload 32 deep"
    );
    assert_eq!(
        Jwt::parse(&b64_token_of(&header, &deep)).unwrap_err(),
        AuthError::MalformedToken,
        "payload 33 deep"
    );

    let jwk = SigningKey::rs256().public_jwk();
    let jwks = |levels: usize| {
        format!(
            "{{\"keys\":[{jwk}],\"x\":{}1{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    assert!(
        KeySet::parse(jwks(MAX_JSON_DEPTH).as_bytes()).is_ok(),
        "JWKS 32 deep"
    );
    assert!(
        KeySet::parse(jwks(MAX_JSON_DEPTH + 1).as_bytes()).is_err(),
        "JWKS 33 deep"
    );

    let config = Config::parse(br#"{"providers":[{"name":"u","userinfo_uri":"http://127.0.0.1:9/me","username_claim":"email"}]}"#, &|_| None).unwrap();
    let provider = &config.providers[0];
    let now = UnixTime::from_secs(1_800_000_000);
    assert!(
        matches!(
            LookupStep::Userinfo.on_reply(provider, ReplyHead::status(200), ok.as_bytes(), now),
            Progress::Done(EntryState::Valid { .. })
        ),
        "userinfo 32 deep"
    );
    assert_eq!(
        LookupStep::Userinfo.on_reply(provider, ReplyHead::status(200), deep.as_bytes(), now),
        Progress::Unavailable(Outage::Unparsable),
        "userinfo 33 deep"
    );
}

// ---------------------------------------------------------------------------------------------
// Header bytes that are not UTF-8: HTTP allows them (obs-text) and Envoy passes them on, while
// proxy-wasm's Rust SDK (0.2.5 `hostcalls::get_map_value`) unwraps `String::from_utf8` of every
// header value it hands over. A panic aborts the worker's Wasm VM, and with `fail_open: false`
// every later request on that worker gets 503: two such requests take down both workers.

/// Sends `header: value` (raw bytes) to `path` on several connections, so that both workers
/// get one, and returns the replies.
fn send_on_every_worker(stack: &Stack, path: &str, header: &str, value: &[u8]) -> Vec<Reply> {
    (0..4)
        .map(|_| {
            support::attacks::raw_request_bytes(stack.envoy.port(), "GET", path, &[(header, value)])
        })
        .collect()
}

/// Valid requests on fresh connections (both workers): the tokens sent and the statuses.
fn later_statuses(stack: &Stack, key: &SigningKey) -> (Vec<String>, Vec<u16>) {
    let tokens: Vec<String> = (0..6)
        .map(|n| tokens::mint(key, &stack.claims(&format!("after{n}"))))
        .collect();
    let statuses = tokens
        .iter()
        .map(|t| stack.get_with_token(t).status)
        .collect();
    (tokens, statuses)
}

#[test]
fn non_utf8_authorization_is_refused_without_crashing_the_filter() {
    let stack = Stack::jwt();
    let key = SigningKey::rs256();

    let replies = send_on_every_worker(&stack, API_PATH, "authorization", b"Bearer abc\xff\xfedef");

    let (sent, after) = later_statuses(&stack, &key);
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|&s| s == 401), "a malformed header is a 401 (SPEC section 1 step 3): {statuses:?}; valid requests after it: {after:?}");
    assert!(
        after.iter().all(|&s| s == 200),
        "valid requests after the bad header: {after:?}"
    );
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn non_utf8_cors_headers_do_not_crash_the_filter() {
    let stack = Stack::jwt();
    let key = SigningKey::rs256();

    // No credential needed: the filter reads Origin on every request (and then
    // Access-Control-Request-Method) for the CORS preflight check.
    let mut replies = send_on_every_worker(&stack, "/status", "origin", b"https://\xe9vil.example");
    for _ in 0..2 {
        let headers: [(&str, &[u8]); 2] = [
            ("origin", b"https://app.example"),
            ("access-control-request-method", b"P\xffST"),
        ];
        replies.push(support::attacks::raw_request_bytes(
            stack.envoy.port(),
            "OPTIONS",
            API_PATH,
            &headers,
        ));
    }

    let (sent, after) = later_statuses(&stack, &key);
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|&s| s == 200), "an auth-none path and a preflight pass: {statuses:?}; valid requests after them: {after:?}");
    assert!(
        after.iter().all(|&s| s == 200),
        "valid requests after the bad headers: {after:?}"
    );
    stack.finish(&sent.iter().map(String::as_str).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Paths the rules read one way and Atlassian another. Jira, Confluence and Bitbucket run on
// Tomcat, which drops `;parameters` from every path segment before it maps the request
// (`/rest/api/2;x/user` is served as `/rest/api/2/user`); Envoy's normalisation keeps them.

#[test]
fn path_parameters_cannot_skip_a_require_claims_rule() {
    let stack = Stack::jwt_adjusted(|c| {
        c["rules"] = json!([
            {"path_prefix": "/rest/api/2/user", "methods": ["DELETE"], "auth": "required", "require_claims": {"groups": "jira-administrators"}},
            {"path_prefix": "/rest/", "auth": "required"}
        ]);
    });
    // A valid token of a user who is not in jira-administrators.
    let token = tokens::mint(&SigningKey::rs256(), &stack.claims("alice"));
    let mut forwarded = Vec::new();
    for path in [
        "/rest/api/2/user?username=bob",
        "/rest/api/2;x/user?username=bob",
        "/rest/api;/2/user?username=bob",
        "/rest;x/api/2/user?username=bob",
    ] {
        let reply = raw_request(
            stack.envoy.port(),
            "DELETE",
            path,
            &[("authorization", &bearer(&token))],
        );
        if reply.status == 200 {
            forwarded.push(path);
        } else {
            assert_eq!(
                (reply.status, reason(&reply)),
                (403, "required claim missing".to_string()),
                "{path}"
            );
        }
    }
    assert!(
        forwarded.is_empty(),
        "DELETE reached Tomcat's /rest/api/2/user as a non-administrator via {forwarded:?}"
    );
    stack.finish(&[&token]);
}

#[test]
fn dot_dot_semicolon_cannot_escape_a_required_rule() {
    let stack = Stack::jwt();

    // Tomcat reads `..;` as `..`: this is /rest/api/2/myself to Jira, /status/... to the rules.
    let reply = raw_request(
        stack.envoy.port(),
        "GET",
        "/status/..;/rest/api/2/myself",
        &[],
    );

    let seen = (reply.status == 200).then(|| reply.body.clone());
    assert_eq!(
        reply.status, 401,
        "reached the upstream without a credential: {seen:?}"
    );
    stack.finish(&[]);
}
