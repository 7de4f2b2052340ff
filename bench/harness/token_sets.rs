//! Distinct valid tokens, minted once and kept under `target/bench/` (RS256 minting takes about
//! a millisecond a token), so a rerun starts at once.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::tokens::{self, AUDIENCE};
use crate::support::SigningKey;

/// The `iss` of every bench token; the providers of every configuration expect it.
pub const ISSUER: &str = "https://issuer.bench.invalid/";

/// How long minted tokens stay valid, and how much of that a cached set must still have.
const VALID_SECONDS: i64 = 30 * 86_400;
const REUSE_MIN_LEFT_SECONDS: i64 = 86_400;
/// The most tokens one set may hold.
const MAX_COUNT: usize = 1_000_000;

/// Claims of bench token `index`: what a directory-backed provider typically puts in an
/// access token (about 350 bytes of JSON), valid for 30 days from `now`.
pub fn claims(index: usize, now: i64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("bench-subject-{index:08}"),
        "preferred_username": format!("bench.user{index}"),
        "email": format!("bench.user{index}@example.com"),
        "name": format!("Bench User {index}"),
        "groups": ["jira-software-users", "confluence-users", "bitbucket-users"],
        "scope": "openid profile email",
        "iat": now,
        "nbf": now,
        "exp": now + VALID_SECONDS,
    })
}

/// `count` distinct tokens signed by `key`, one a line in a file.
pub struct TokenSet {
    pub path: PathBuf,
    pub tokens: Vec<String>,
}

impl TokenSet {
    /// The set for (`key`, `count`) from `dir`, minted and saved there when missing or when
    /// its tokens expire within a day.
    pub fn load_or_mint(key: &SigningKey, count: usize, dir: &std::path::Path) -> Self {
        assert!(
            (1..=MAX_COUNT).contains(&count),
            "token count {count} outside 1..={MAX_COUNT}"
        );
        let fingerprint = hex(&Sha256::digest(key.public_jwk().to_string()))[..12].to_string();
        let path = dir.join(format!(
            "tokens-{}-{}-{fingerprint}-{count}.txt",
            key.alg.name(),
            key.kid
        ));
        if let Some(tokens) = reusable(&path, count) {
            return TokenSet { path, tokens };
        }
        let started = Instant::now();
        print!("minting {count} {} tokens ... ", key.alg.name());
        let _ = std::io::stdout().flush();
        let tokens = mint_parallel(key, count);
        println!("{:.1} s", started.elapsed().as_secs_f64());
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let partial = path.with_extension("partial");
        std::fs::write(&partial, tokens.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", partial.display()));
        std::fs::rename(&partial, &path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
        TokenSet { path, tokens }
    }
}

/// The tokens of `path` when it holds `count` of them, all valid for another day.
fn reusable(path: &std::path::Path, count: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let tokens: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.len() != count {
        return None;
    }
    // Minted together, so the first token's `exp` is the earliest but a few seconds.
    let payload = tokens.first()?.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims["exp"].as_i64()?;
    (exp - tokens::now() > REUSE_MIN_LEFT_SECONDS).then_some(tokens)
}

/// Mints tokens `0..count` on every CPU.
fn mint_parallel(key: &SigningKey, count: usize) -> Vec<String> {
    let now = tokens::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk)..((t + 1) * chunk).min(count);
                scope.spawn(move || {
                    range
                        .map(|i| tokens::mint(key, &claims(i, now)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("minting thread"))
            .collect()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
