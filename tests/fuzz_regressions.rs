//! Inputs the fuzz targets (`fuzz/`, `make fuzz`) found or need, replayed natively: every crash a
//! target ever found stays here as a test that feeds the same input to the same function and
//! asserts the refusal the filter owes, so it can never come back unnoticed.
//!
//! Also the generator of the fuzz fixtures and seed corpora (ignored: run it by hand after a
//! fixture key changes):
//! `cargo test --test fuzz_regressions -- --ignored write_fuzz_seeds`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use support::keys::{jwks_of, Alg, SigningKey};
use support::tokens::{github_token, hs256_with_rsa_public_key, mint, sign, unsigned};

/// The time every seed token is valid at (`fuzz/src/lib.rs` `NOW_SECS`).
const NOW: u64 = 1_800_000_000;
/// `fuzz/src/lib.rs` `ISSUER`.
const ISSUER: &str = "https://idp.test";

// ---------------------------------------------------------------------------------------------
// Crashes the fuzz targets reported, replayed.

/// `authenticator` target, first run: `fuzz/artifacts/authenticator/crash-2c3b1b00...` (74
/// bytes). Not a filter bug: the target's own leak check searched the reply for the credential
/// text, and `lication/jso` is in `content-type: application/json`. The check now compares the
/// whole reply with the fixed one of its error instead. The input stays: a credential without a
/// scheme, under a method and path full of NULs and invalid UTF-8, is a malformed header.
#[test]
fn schemeless_credential_under_a_garbled_request_line_is_a_malformed_header() {
    use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step};
    use atlassian_rest_auth::cache::NoCache;
    use atlassian_rest_auth::config::Config;
    use atlassian_rest_auth::decision::deny;
    use atlassian_rest_auth::error::AuthError;
    use atlassian_rest_auth::time::UnixTime;
    let input: &[u8] = b"\x01\x00\x00\x00\x00O\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00PTIONS\n/\xff\xff\xff\xff\xff\xff\xff,/2/.yself\nlication/jso\niss200\n{}";
    let parts: Vec<String> = input[5..]
        .splitn(5, |&b| b == b'\n')
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let head = RequestHead {
        method: parts[0].clone(),
        path: parts[1].clone(),
        authorization: Some(parts[2].clone()),
        cors_headers: input[0] & 1 == 1,
        form_body: false,
    };
    let config = Config::parse(
        flow_config(&json!({"keys": [SigningKey::rs256().public_jwk()]}))
            .to_string()
            .as_bytes(),
        &|_| None,
    )
    .unwrap();
    let auth = Authenticator::new(config);
    let keys: Vec<_> = auth
        .config
        .providers
        .iter()
        .map(atlassian_rest_auth::keys::ProviderKeys::new)
        .collect();

    let Step::Decide(verdict) = auth.start(&head, &keys, &NoCache, UnixTime::from_secs(NOW), true)
    else {
        panic!("undecided")
    };

    assert_eq!(verdict.denied().cloned(), Some(AuthError::MalformedHeader));
    assert_eq!(
        verdict.decision,
        deny(&AuthError::MalformedHeader, "jira", true)
    );
    let note = verdict.to_string();
    // A malformed header may hold a password: not even a keyed fingerprint of it is logged.
    assert_eq!(note, "deny 401: malformed authorization header");
}

/// `lookup` target: `fuzz/artifacts/lookup/crash-f6977152...`, minimised to step 1
/// (introspection), provider 7 (`intro`), HTTP 200, `now` = `NOW` + 97 s and this answer, whose
/// `exp` (`NOW` + 60) passed 37 s ago: inside the 60 s clock skew, so the answer is valid, but
/// `lookup::lifetime` ends it at `exp`, in the past. The cache entry is dead before it is
/// stored; the request finds no answer and asks again, and again (through Envoy: thousands of
/// calls a second, the request never answered; `e2e_faults` shows it).
const SKEWED_INTROSPECTION: &[u8] =
    br#"{"active":true,"aud":["jira"],"exp":1800000060,"sope":"read","username":"ce"}"#;

#[test]
fn introspection_answer_accepted_within_the_clock_skew_decides_the_request() {
    use std::cell::RefCell;

    use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step};
    use atlassian_rest_auth::cache::{CacheEntry, ResultCache};
    use atlassian_rest_auth::config::Config;
    use atlassian_rest_auth::digest::TokenDigest;
    use atlassian_rest_auth::keys::ProviderKeys;
    use atlassian_rest_auth::lookup::{lifetime, Progress, ReplyHead};
    use atlassian_rest_auth::time::UnixTime;

    struct OneSlot(RefCell<Option<CacheEntry>>);
    impl ResultCache for OneSlot {
        fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
            self.0.borrow().clone().filter(|e| e.is_for(digest))
        }
    }
    let config = Config::parse(
        flow_config(&json!({"keys": [SigningKey::rs256().public_jwk()]}))
            .to_string()
            .as_bytes(),
        &|_| None,
    )
    .unwrap();
    let auth = Authenticator::new(config);
    let keys: Vec<ProviderKeys> = auth
        .config
        .providers
        .iter()
        .map(ProviderKeys::new)
        .collect();
    let now = UnixTime::from_secs(NOW + 97);
    let head = RequestHead {
        method: "GET".into(),
        path: "/rest/api/2/myself".into(),
        authorization: Some("Bearer intro_abc".into()),
        cors_headers: false,
        form_body: false,
    };
    let cache = OneSlot(RefCell::new(None));

    let Step::Lookup(start) = auth.start(&head, &keys, &cache, now, true) else {
        panic!("the token goes to introspection")
    };
    let provider = auth.config.provider(start.provider).unwrap();
    let Progress::Done(state) =
        start
            .step
            .on_reply(provider, ReplyHead::status(200), SKEWED_INTROSPECTION, now)
    else {
        panic!("one call")
    };
    let until = lifetime(&state, provider, now, start.token_exp);
    cache.0.replace(Some(auth.cache_entry(
        start.provider,
        start.digest,
        state,
        now,
        start.token_exp,
    )));
    let again = auth.start(&head, &keys, &cache, now, true);

    assert!(
        matches!(again, Step::Decide(_)),
        "the stored answer decides (it lives until {until}, now is {now}): {again:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The fuzz crate's own lock file.

/// `(name, version)` of every package a `Cargo.lock` pins.
fn locked_packages(lock: &str) -> Vec<(String, String)> {
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim_matches('"').to_string())
    };
    let mut packages = vec![];
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = value(line, "name = ") {
            name = Some(n);
        } else if let (Some(version), Some(n)) = (value(line, "version = "), name.take()) {
            packages.push((n, version));
        }
    }
    packages
}

/// The fuzz targets run the dependencies the filter ships: every crate `fuzz/Cargo.lock` shares
/// with the top-level `Cargo.lock` is pinned at a version the top-level one has (`make lint`'s
/// `--locked` only says that the fuzz lock fits its own manifest).
#[test]
fn fuzz_lock_pins_the_versions_the_filter_ships() {
    let root = support::repo_root();
    let shipped = locked_packages(&std::fs::read_to_string(root.join("Cargo.lock")).unwrap());
    let fuzzed = locked_packages(&std::fs::read_to_string(root.join("fuzz/Cargo.lock")).unwrap());
    assert!(
        fuzzed.iter().any(|(n, _)| n == "p256") && shipped.iter().any(|(n, _)| n == "p256"),
        "lock files not read"
    );
    let differ: Vec<_> = fuzzed
        .iter()
        .filter(|(n, v)| {
            shipped.iter().any(|(s, _)| s == n) && !shipped.iter().any(|(s, w)| s == n && w == v)
        })
        .collect();
    assert!(differ.is_empty(), "fuzz/Cargo.lock pins versions Cargo.lock does not: {differ:?} (cargo update --manifest-path fuzz/Cargo.toml -p NAME --precise VERSION)");
}

// ---------------------------------------------------------------------------------------------
// Seed corpora and fixtures for `fuzz/`.

fn claims(iss: &str, username: &str) -> Value {
    json!({"iss": iss, "aud": "jira", "sub": format!("{username}-sub"), "preferred_username": username,
           "email": format!("{username}@example.com"), "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
}

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    /// Empties `fuzz/corpus/<target>` and writes `seeds` there, one file each.
    fn corpus(&self, target: &str, seeds: &[(&str, Vec<u8>)]) {
        let dir = self.root.join("corpus").join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn fixture(&self, name: &str, text: &str) {
        let dir = self.root.join("fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// `offset` (4 bytes, big-endian) then `rest`: the jwt, lookup and authenticator layouts.
fn at(offset: i32, rest: &[u8]) -> Vec<u8> {
    let mut v = offset.to_be_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

fn authenticator_seed(
    flags: u8,
    offset: i32,
    method: &str,
    path: &str,
    authorization: &str,
    status: u16,
    body: &Value,
) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend(at(
        offset,
        format!("{method}\n{path}\n{authorization}\n{status}\n{body}").as_bytes(),
    ));
    v
}

fn lookup_seed(step: u8, provider: u8, status: u16, body: &Value) -> Vec<u8> {
    let mut v = vec![step, provider];
    v.extend_from_slice(&status.to_be_bytes());
    v.extend(at(0, body.to_string().as_bytes()));
    v
}

#[test]
#[ignore = "writes fuzz/fixtures and fuzz/corpus; run by hand"]
fn write_fuzz_seeds() {
    let seeds = Seeds {
        root: support::repo_root().join("fuzz"),
    };
    let keys: Vec<SigningKey> = Alg::ALL.into_iter().map(SigningKey::for_alg).collect();
    let key_refs: Vec<&SigningKey> = keys.iter().collect();
    let jwks = jwks_of(&key_refs);
    seeds.fixture("jwks.json", &format!("{jwks}\n"));
    let without_kid: Vec<String> = keys
        .iter()
        .map(|k| sign(k, None, &claims(ISSUER, "alice")))
        .collect();
    seeds.fixture("tokens-without-kid.txt", &(without_kid.join("\n") + "\n"));

    let rs256 = &keys[0];
    let valid = mint(rs256, &claims(ISSUER, "alice"));
    seeds.corpus(
        "authorization",
        &[
            ("bearer-jwt", format!("Bearer {valid}").into_bytes()),
            (
                "bearer-opaque",
                b"bearer   gho_16C7e42F292c6912E7710c838347Ae178B4a".to_vec(),
            ),
            ("bearer-padded", b"Bearer abc.def-_~+/==".to_vec()),
            ("basic", b"Basic Y2ktYm90OnBhOnNz".to_vec()),
            ("basic-no-colon", b"Basic bm9jb2xvbg==".to_vec()),
            ("digest", b"Digest username=\"a\", realm=\"b\"".to_vec()),
            ("two-credentials", b"Bearer a, Bearer b".to_vec()),
            ("tabs", b"\tBearer\tabc\t".to_vec()),
        ],
    );

    let mut jwt_seeds: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|k| {
            (
                format!("valid-{}", k.kid),
                at(
                    0,
                    format!("\0{}", mint(k, &claims(ISSUER, "alice"))).as_bytes(),
                ),
            )
        })
        .collect();
    let mut expired = claims(ISSUER, "alice");
    expired["exp"] = json!(NOW - 600);
    let mut nested = claims(ISSUER, "alice");
    nested["emails"] = json!([["deep", {"a": [1, 2.5, null, true]}]]);
    jwt_seeds.extend([
        (
            "valid-without-kid".to_string(),
            at(0, format!("\0{}", without_kid[0]).as_bytes()),
        ),
        (
            "valid-later".to_string(),
            at(3000, format!("\0{valid}").as_bytes()),
        ),
        (
            "expired".to_string(),
            at(0, format!("\0{}", mint(rs256, &expired)).as_bytes()),
        ),
        (
            "nested-claims".to_string(),
            at(0, format!("\0{}", mint(&keys[8], &nested)).as_bytes()),
        ),
        (
            "alg-none".to_string(),
            at(
                0,
                format!("\0{}", unsigned("rs256", &claims(ISSUER, "admin"))).as_bytes(),
            ),
        ),
        (
            "hs256-confusion".to_string(),
            at(
                0,
                format!(
                    "\0{}",
                    hs256_with_rsa_public_key(rs256, &claims(ISSUER, "admin"))
                )
                .as_bytes(),
            ),
        ),
        (
            "structured".to_string(),
            at(
                0,
                format!(
                    "\x01{}\n{}\nsignature",
                    json!({"alg": "ES256", "kid": "es256", "crit": ["b64"]}),
                    claims(ISSUER, "bob")
                )
                .as_bytes(),
            ),
        ),
    ]);
    let jwt_seeds: Vec<(&str, Vec<u8>)> = jwt_seeds
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    seeds.corpus("jwt", &jwt_seeds);

    let rsa_only = jwks_of(&[rs256]);
    seeds.corpus(
        "jwks",
        &[
            ("all-fixture-keys", jwks.to_string().into_bytes()),
            ("rsa-only", rsa_only.to_string().into_bytes()),
            ("ed25519-only", jwks_of(&[&keys[8]]).to_string().into_bytes()),
            (
                "skipped-keys",
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}, keys[6].public_jwk()]})
                    .to_string()
                    .into_bytes(),
            ),
            ("discovery", json!({"issuer": ISSUER, "jwks_uri": "https://idp.test/jwks", "userinfo_endpoint": "https://idp.test/me"}).to_string().into_bytes()),
            ("no-keys", b"{\"keys\": []}".to_vec()),
        ],
    );

    let flow = flow_config(&jwks);
    seeds.corpus(
        "config",
        &[
            ("flow", flow.to_string().into_bytes()),
            ("minimal", json!({"providers": [{"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "https://idp.test/keys"}]}).to_string().into_bytes()),
            (
                "presets",
                json!({"providers": [
                    {"name": "az", "preset": "azure_ad", "issuer": "https://login.microsoftonline.com/t/v2.0", "audiences": ["api://jira"]},
                    {"name": "b2c", "preset": "azure_b2c", "issuer": "https://c.b2clogin.com/t/v2.0/", "audiences": ["app"]},
                    {"name": "okta", "preset": "okta", "issuer": "https://o.okta.com", "audiences": ["api://default"]},
                    {"name": "g", "preset": "google", "audiences": ["client.apps.googleusercontent.com"]},
                    {"name": "gl", "preset": "gitlab", "audiences": "any"},
                    {"name": "env", "mode": "introspection", "introspection_uri": "https://i/x", "client_id": "c", "client_secret": {"env": "SECRET"}}
                ], "basic": "reject", "dry_run": true, "cache_entries": 16})
                .to_string()
                .into_bytes(),
            ),
            ("readme", br#"{"realm":"jira","providers":[{"name":"kc","preset":"keycloak","issuer":"https://sso.example.com/realms/staff","audiences":["jira"]}],"rules":[{"path_prefix":"/rest/","auth":"required"}]}"#.to_vec()),
        ],
    );

    // Step bytes: 0 userinfo, 1 introspection, 2 github app, 3 facebook debug. Provider bytes
    // index `flow_config` below: 4 gh, 5 slack, 6 fb, 7 intro, 8 any.
    seeds.corpus(
        "lookup",
        &[
            ("userinfo", lookup_seed(0, 8, 200, &json!({"sub": "1", "email": "alice@example.com"}))),
            ("userinfo-401", lookup_seed(0, 8, 401, &json!({"error": "invalid_token"}))),
            ("slack-ok", lookup_seed(0, 5, 200, &json!({"ok": true, "email": "a@b.c"}))),
            ("slack-not-ok", lookup_seed(0, 5, 200, &json!({"ok": false, "error": "invalid_auth"}))),
            ("github-app", lookup_seed(2, 4, 200, &json!({"user": {"login": "octocat"}}))),
            // Step byte bits 2-3 = 1: `x-ratelimit-remaining: 0`.
            ("github-app-rate-limited", lookup_seed(2 | 4, 4, 403, &json!({"message": "API rate limit exceeded"}))),
            ("facebook-debug", lookup_seed(3, 6, 200, &json!({"data": {"is_valid": true, "app_id": "123"}}))),
            ("introspection", lookup_seed(1, 7, 200, &json!({"active": true, "username": "alice", "aud": ["jira"], "exp": NOW + 60, "scope": "read"}))),
            ("nested", lookup_seed(0, 8, 200, &json!({"a": [[[[{"b": [1]}]]]], "email": "x@y.z"}))),
        ],
    );

    let inline = sign(
        &keys[8],
        None,
        &claims("https://inline.test", "Carol.Smith"),
    );
    let no_username = {
        let mut c = claims(ISSUER, "x");
        let m = c.as_object_mut().unwrap();
        m.remove("preferred_username");
        m.remove("sub");
        mint(rs256, &c)
    };
    let keycloak = mint(rs256, &claims("http://127.0.0.1:9999/realms/x", "kc-user"));
    let mut admin = claims(ISSUER, "root");
    admin["groups"] = json!(["jira-administrators"]);
    let api_token = atlassian_rest_auth::api_token::mint(&[7; 32]);
    let mut discovery_and_jwks = jwks.clone();
    discovery_and_jwks["issuer"] = json!("http://127.0.0.1:9999/realms/x");
    discovery_and_jwks["jwks_uri"] = json!("http://127.0.0.1:9999/realms/x/certs");
    let github = github_token("gho_", "16C7e42F292c6912E7710c838347Ae");
    let get = "GET";
    let api = "/rest/api/2/myself";
    seeds.corpus(
        "authenticator",
        &[
            ("jwt", authenticator_seed(0, 0, get, api, &format!("Bearer {valid}"), 200, &json!({}))),
            ("jwt-no-keys-yet", authenticator_seed(2, 0, get, api, &format!("Bearer {valid}"), 200, &jwks)),
            ("jwt-stale-keys", authenticator_seed(4, 0, get, api, &format!("Bearer {valid}"), 503, &json!({}))),
            ("jwt-inline", authenticator_seed(0, 0, get, api, &format!("Bearer {inline}"), 200, &json!({}))),
            ("jwt-userinfo", authenticator_seed(0, 0, get, api, &format!("Bearer {no_username}"), 200, &json!({"preferred_username": "from-userinfo"}))),
            // One body that is a discovery document and a JWKS: both fetches succeed.
            ("jwt-discovery", authenticator_seed(0, 0, get, api, &format!("Bearer {keycloak}"), 200, &discovery_and_jwks)),
            ("admin-delete", authenticator_seed(0, 0, "DELETE", "/rest/api/2/user?username=x", &format!("Bearer {}", mint(rs256, &admin)), 200, &json!({}))),
            ("github", authenticator_seed(0, 0, get, "/rest/gh/x", &format!("Bearer {github}"), 200, &json!({"user": {"login": "octocat"}}))),
            // Flags 32: `x-ratelimit-remaining: 0` on the reply.
            ("github-rate-limited", authenticator_seed(32, 0, get, "/rest/gh/x", &format!("Bearer {github}"), 403, &json!({"message": "API rate limit exceeded"}))),
            ("malformed-path", authenticator_seed(0, 0, get, "/rest/api/2/%2fmyself", &format!("Bearer {valid}"), 200, &json!({}))),
            ("slack", authenticator_seed(0, 0, get, api, "Bearer xoxp-1234-5678", 200, &json!({"ok": true, "email": "a@b.c"}))),
            ("facebook", authenticator_seed(0, 0, get, api, "Bearer EAAabc", 200, &json!({"data": {"is_valid": true, "app_id": "123"}, "email": "f@b.c", "id": "9"}))),
            ("introspection", authenticator_seed(0, 0, get, api, "Bearer intro_abc", 200, &json!({"active": true, "username": "i", "aud": "jira"}))),
            ("opaque-503", authenticator_seed(0, 0, get, api, "Bearer anything-else", 503, &json!({}))),
            ("basic", authenticator_seed(0, 0, get, api, "Basic Y2ktYm90OnBhOnNz", 200, &json!({}))),
            ("anonymous", authenticator_seed(0, 0, get, "/secure/Dashboard.jspa", "", 200, &json!({}))),
            ("cors", authenticator_seed(1, 0, "OPTIONS", api, "", 200, &json!({}))),
            // Flags 8: the API-token configuration; 16: the same in dry run.
            ("api-token", authenticator_seed(8, 0, get, api, &format!("Bearer {api_token}"), 200, &json!({}))),
            ("api-token-basic", authenticator_seed(8, 0, get, api, &format!("Basic {}", STANDARD.encode(format!("ci-bot:{api_token}"))), 200, &json!({}))),
            ("basic-jwt-password", authenticator_seed(8, 0, get, api, &format!("Basic {}", STANDARD.encode(format!("alice:{valid}"))), 200, &json!({}))),
            ("unknown-bearer-passthrough", authenticator_seed(8, 0, get, api, "Bearer atlassian-pat-123", 200, &json!({}))),
            // A rule that names providers: nobody here can vouch for an unknown token (401).
            ("unknown-bearer-named-providers", authenticator_seed(8, 0, get, "/rest/gh/x", "Bearer atlassian-pat-123", 200, &json!({}))),
            ("dry-run", authenticator_seed(16, 0, get, api, &format!("Bearer {valid}x"), 200, &json!({}))),
        ],
    );
}

/// A configuration close to `fuzz/src/lib.rs` `flow_config_json` (a seed for the config target).
fn flow_config(jwks: &Value) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "optional",
        "providers": [
            {"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
             "userinfo_uri": "http://127.0.0.1:9999/userinfo", "token_prefixes": ["idp-"], "username_claim": ["preferred_username", "emails.0", "sub"]},
            {"name": "inline", "issuer": "https://inline.test", "audiences": "any", "jwks": jwks, "require_expiration": false,
             "username_claim": ["email", "sub"], "username_transform": {"lowercase": true, "strip_domain": ["example.com"]}},
            {"name": "kc", "preset": "keycloak", "issuer": "http://127.0.0.1:9999/realms/x", "audiences": ["jira"], "token_prefixes": ["kc-"]},
            {"name": "cognito", "preset": "cognito", "issuer": "https://cognito.test", "audiences": ["app"], "jwks_uri": "http://127.0.0.1:9999/c/jwks"},
            {"name": "gh", "preset": "github", "userinfo_uri": "http://127.0.0.1:9999/user", "client_id": "Iv1.abc", "client_secret": "gh-s3cret"},
            {"name": "slack", "preset": "slack", "userinfo_uri": "http://127.0.0.1:9999/slack"},
            {"name": "fb", "preset": "facebook", "userinfo_uri": "http://127.0.0.1:9999/me?fields=id,name,email", "client_id": "123", "client_secret": "fb-s3cret"},
            {"name": "intro", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9999/introspect",
             "client_id": "rs", "client_secret": "intro-s3cret", "audiences": ["jira"], "token_prefixes": ["intro_"]},
            {"name": "any", "userinfo_uri": "http://127.0.0.1:9999/ui", "cache_seconds": 0}
        ],
        "rules": [
            {"path_prefix": "/status", "auth": "none"},
            {"path_prefix": "/rest/api/2/user", "methods": ["DELETE"], "auth": "required", "require_claims": {"groups": "jira-administrators"}},
            {"path_prefix": "/rest/", "auth": "required"}
        ],
        "forward": {"username_header": "x-forwarded-user", "provider_header": "x-forwarded-auth-provider",
                    "claims_to_headers": {"email": "x-forwarded-email"}},
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}
