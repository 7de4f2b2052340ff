//! What the fuzz targets share: the fixture keys and configurations they run against, the
//! input layouts, and the invariants every verdict must keep whatever the input.
//!
//! The fixtures are generated from `tests/fixtures/keys/` by
//! `cargo test --test fuzz_regressions -- --ignored write_fuzz_seeds` (see README.md), which
//! also writes the seed corpora, so seeds and fixtures always agree.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use atlassian_rest_auth::authenticator::{Authenticator, Outcome, Verdict, API_TOKEN_PROVIDER};
use atlassian_rest_auth::config::{AuthorizationForward, BasicMode, Config};
use atlassian_rest_auth::decision::{deny, Decision};
use atlassian_rest_auth::digest::{LogKey, TokenDigest};
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::identity::MAX_USERNAME_BYTES;
use atlassian_rest_auth::jwks::KeySet;
use atlassian_rest_auth::time::UnixTime;
use serde_json::{json, Value};

/// The time every seed token is valid at (issued then, valid an hour).
pub const NOW_SECS: u64 = 1_800_000_000;
/// The `iss` of the seed tokens; the provider the JWT targets verify with.
pub const ISSUER: &str = "https://idp.test";
/// Public JWKs of every fixture key (`kid` = algorithm, lowercased).
pub const JWKS: &str = include_str!("../fixtures/jwks.json");
/// One valid token per algorithm, without `kid`, one per line (for the JWKS target).
pub const TOKENS_WITHOUT_KID: &str = include_str!("../fixtures/tokens-without-kid.txt");

/// The fixture keys, parsed once.
pub fn keyset() -> &'static KeySet {
    static SET: OnceLock<KeySet> = OnceLock::new();
    SET.get_or_init(|| KeySet::parse(JWKS.as_bytes()).unwrap_or_default())
}

/// A configuration with one JWT provider for `ISSUER` (keys fetched from `jwks_uri`).
pub fn jwt_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| parse_fixture(&json!({
        "providers": [{
            "name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
            "username_claim": ["preferred_username", "emails.0", "sub"], "clock_skew_seconds": 30
        }],
        "clusters": {"127.0.0.1:9999": "idp"}
    })))
}

/// The whole-flow configuration: a JWT provider with fetched keys and a userinfo fallback, one
/// with inline keys, discovery, the presets with quirks, introspection and a catch-all userinfo.
pub fn flow_config_json() -> Value {
    let jwks: Value = serde_json::from_str(JWKS).unwrap_or(Value::Null);
    json!({
        "realm": "jira",
        "default_auth": "optional",
        "providers": [
            {"name": "idp", "issuer": ISSUER, "audiences": ["jira"], "jwks_uri": "http://127.0.0.1:9999/jwks",
             "userinfo_uri": "http://127.0.0.1:9999/userinfo", "token_prefixes": ["idp-"], "username_claim": ["preferred_username", "emails.0", "sub"],
             "clock_skew_seconds": 30},
            {"name": "inline", "issuer": "https://inline.test", "audiences": "any", "jwks": jwks, "require_expiration": false,
             "username_claim": ["email", "sub"], "username_transform": {"lowercase": true, "strip_domain": ["example.com"]}},
            {"name": "kc", "preset": "keycloak", "issuer": "http://127.0.0.1:9999/realms/x", "audiences": ["jira"], "token_prefixes": ["kc-"]},
            {"name": "cognito", "preset": "cognito", "issuer": "https://cognito.test", "audiences": ["app"],
             "jwks_uri": "http://127.0.0.1:9999/cognito/jwks"},
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
            {"path_prefix": "/rest/gh/", "auth": "required", "providers": ["gh"]},
            {"path_prefix": "/rest/", "auth": "required"}
        ],
        "forward": {"username_header": "x-forwarded-user", "provider_header": "x-forwarded-auth-provider",
                    "claims_to_headers": {"email": "x-forwarded-email", "groups": "x-forwarded-groups"}},
        "clusters": {"127.0.0.1:9999": "idp"}
    })
}

/// `flow_config`, parsed once.
pub fn flow_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| parse_fixture(&flow_config_json()))
}

/// The API token of user `ci-bot` in `alt_flow_config_json` (minted from fixed bytes).
pub fn api_token() -> String {
    atlassian_rest_auth::api_token::mint(&[7; 32])
}

/// `flow_config_json` with the filter's own API tokens, Basic checked against them, and opaque
/// tokens no provider takes passed through to Atlassian.
pub fn alt_flow_config_json() -> Value {
    let mut config = flow_config_json();
    config["basic"] = json!("api_tokens");
    config["unknown_bearer"] = json!("passthrough");
    // Passthrough needs prefixes on every provider that takes opaque tokens.
    if let Some(any) = config["providers"]
        .as_array_mut()
        .and_then(|p| p.iter_mut().find(|p| p["name"] == "any"))
    {
        any["token_prefixes"] = json!(["any-"]);
    }
    let sha256 = TokenDigest::of(api_token().as_bytes()).to_hex();
    config["api_tokens"] = json!([
        {"user": "ci-bot", "sha256": sha256, "name": "CI"},
        {"user": "old-bot", "sha256": "00".repeat(32), "expires_at": "2020-01-01T00:00:00Z"}
    ]);
    config
}

/// The key every fuzzed core fingerprints with: log notes are the same from run to run, so a
/// crash replays exactly.
pub fn log_key() -> Option<LogKey> {
    LogKey::from_bytes(&[0x5a; 32])
}

/// A fresh core for `config`: its memo (the tokens a worker accepted lately) starts empty, so
/// nothing one input did reaches the next and every crash replays alone.
pub fn auth_of(config: &Config) -> Authenticator {
    Authenticator::with_log_key(config.clone(), log_key())
}

/// A core for `flow_config`, built once per thread (a core is not `Sync`: its memo is a
/// `RefCell`). Only for what keeps no state in it (`cache_entry`, `config`): a target that calls
/// `start` builds its own core with `auth_of`.
pub fn flow_auth() -> &'static Authenticator {
    thread_local! {
        static AUTH: &'static Authenticator = Box::leak(Box::new(auth_of(flow_config())));
    }
    AUTH.with(|auth| *auth)
}

/// The configurations the authenticator target chooses from: `flow_config`, its API-token
/// variant, and the same in dry run.
pub fn flow_configs() -> &'static [Config; 3] {
    static CONFIGS: OnceLock<[Config; 3]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut dry = alt_flow_config_json();
        dry["dry_run"] = json!(true);
        [
            flow_config().clone(),
            parse_fixture(&alt_flow_config_json()),
            parse_fixture(&dry),
        ]
    })
}

fn parse_fixture(config: &Value) -> Config {
    match Config::parse(config.to_string().as_bytes(), &|_| None) {
        Ok(config) => config,
        // A broken fixture is a broken harness, not a finding: stop loudly at once.
        Err(e) => panic!("fuzz fixture configuration rejected: {e}"),
    }
}

/// Whether `FUZZ_TRACE` is set: targets then print what each input led to (seed checking).
pub fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// `NOW_SECS` moved by a signed offset read from `bytes` (big-endian, up to 4 bytes).
pub fn now_from(bytes: &[u8]) -> UnixTime {
    let mut buf = [0u8; 4];
    let n = bytes.len().min(4);
    buf[..n].copy_from_slice(&bytes[..n]);
    let offset = i64::from(i32::from_be_bytes(buf));
    UnixTime::from_secs(NOW_SECS.saturating_add_signed(offset))
}

/// `data` split at its first `n - 1` newlines (fewer parts when it has fewer).
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == b'\n').collect()
}

/// Panics unless `verdict` keeps the filter's promises: a refusal is exactly the fixed reply of
/// its error (SPEC section 5: status, challenge, JSON body; nothing from the request in it); the
/// log line (the verdict's `Display`) has its fixed shape, agrees with the verdict and shows the
/// credential by an 8-hex-digit keyed fingerprint at most; every forwarded request loses the
/// identity headers it came with, and only an authenticated caller gets them set, as safe header
/// values; in dry run every request goes on with nothing set, and the outcome says what would
/// have happened.
pub fn check_verdict(auth: &Authenticator, verdict: &Verdict) {
    let config = &auth.config;
    if let Some(err) = verdict.denied() {
        assert!(
            !matches!(err, AuthError::Internal(_)),
            "a state that cannot happen was reached: {err:?}"
        );
    }
    let shown = verdict.to_string();
    // Dry run marks what it would have allowed or refused; a pass is a pass either way.
    let dry = verdict.dry_run;
    assert_eq!(
        dry,
        config.dry_run && !matches!(verdict.outcome, Outcome::Pass(_)),
        "{verdict:?} with dry_run {}",
        config.dry_run
    );
    let line = if dry {
        let Decision::Continue { remove, set } = &verdict.decision else {
            panic!("dry run answered the request: {verdict:?}")
        };
        assert_stripped(config, remove);
        assert!(set.is_empty(), "dry run set headers: {set:?}");
        shown
            .strip_prefix("dry run: ")
            .unwrap_or_else(|| panic!("log: {shown}"))
    } else {
        shown.as_str()
    };
    match &verdict.outcome {
        Outcome::Pass(why) => {
            assert_eq!(line, format!("pass: {why}"));
            assert!(
                verdict.remember.is_none(),
                "a pass to remember: {verdict:?}"
            );
            let Decision::Continue { remove, set } = &verdict.decision else {
                panic!("a pass answered the request: {verdict:?}")
            };
            assert_stripped(config, remove);
            assert!(
                set.is_empty(),
                "identity set on a request that passed as {why}: {set:?}"
            );
        }
        Outcome::Deny {
            error,
            status,
            token,
            provider,
        } => {
            if let Some(name) = provider {
                assert!(
                    name == API_TOKEN_PROVIDER || config.providers.iter().any(|p| &p.name == name),
                    "a refusal counted for {name:?}, which is not a configured provider"
                );
            }
            let reply = deny(error, &config.realm, config.basic != BasicMode::Reject);
            assert_eq!(
                *status,
                reply.status(),
                "the log says {line}, the reply is {reply:?}"
            );
            assert!(
                [400, 401, 403, 503].contains(status),
                "unexpected status {status}"
            );
            assert!(
                verdict.remember.is_none(),
                "a refusal to remember: {verdict:?}"
            );
            if let Decision::Respond {
                status: 503,
                headers,
                ..
            } = &reply
            {
                assert!(
                    headers.iter().any(|(n, _)| n == "retry-after"),
                    "503 without retry-after"
                );
            }
            if !dry {
                assert_eq!(verdict.decision, reply, "not the fixed reply of {error:?}");
            }
            let rest = line
                .strip_prefix(&format!("deny {status}: {error}"))
                .unwrap_or_else(|| panic!("log: {shown}"));
            match token {
                Some(fingerprint) => assert!(
                    rest == format!(" token={fingerprint}")
                        && is_fingerprint(&fingerprint.to_string()),
                    "log: {shown}"
                ),
                None => assert!(rest.is_empty(), "log: {shown}"),
            }
        }
        Outcome::Allow {
            identity: who,
            token,
        } => {
            let username = who.username.as_str();
            assert!(
                !username.is_empty()
                    && username.len() <= MAX_USERNAME_BYTES
                    && !username.chars().any(char::is_control),
                "{username:?}"
            );
            assert_eq!(
                line,
                format!("allow {username} via {} token={token}", who.provider)
            );
            assert!(is_fingerprint(&token.to_string()), "log: {shown}");
            if !dry {
                let Decision::Continue { remove, set } = &verdict.decision else {
                    panic!("an allowed request was answered: {verdict:?}")
                };
                assert_stripped(config, remove);
                if config.forward.authorization == AuthorizationForward::Remove {
                    assert!(
                        remove.iter().any(|r| r == "authorization"),
                        "authorization forwarded: {remove:?}"
                    );
                }
                let identity_headers: Vec<&str> = config.forward.identity_headers().collect();
                for (name, value) in set {
                    assert!(
                        identity_headers.contains(&name.as_str()),
                        "{name} is no identity header"
                    );
                    assert!(
                        !value.is_empty() && !value.chars().any(char::is_control),
                        "unsafe value for {name}: {value:?}"
                    );
                }
                assert!(
                    set.contains(&(config.forward.username_header.clone(), username.to_string())),
                    "username not set: {set:?}"
                );
                if let Some(header) = &config.forward.provider_header {
                    assert!(
                        set.contains(&(header.clone(), who.provider.clone())),
                        "provider not set: {set:?}"
                    );
                }
            }
        }
    }
}

/// Panics unless `remove` strips every identity header (a client may send its own).
fn assert_stripped(config: &Config, remove: &[String]) {
    for header in config.forward.identity_headers() {
        assert!(
            remove.iter().any(|r| r == header),
            "identity header {header} not stripped: {remove:?}"
        );
    }
}

/// The 8 lowercase hex digits of a `TokenDigest` as logs print it.
fn is_fingerprint(text: &str) -> bool {
    text.len() == 8
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
