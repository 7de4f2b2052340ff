//! Signing keys per provider: the record all workers share, and when to fetch again.
//!
//! The record lives in proxy-wasm shared data (JSON, compare-and-swap on write), so one worker
//! fetches and every worker uses the result. All times are inputs.

use crate::config::{Provider, ProviderMode};
use crate::jwks::KeySet;
use crate::time::UnixTime;
use crate::uri::HttpUri;
use serde::{Deserialize, Serialize};

/// An unknown `kid` refreshes the JWKS at most this often per provider.
pub const KID_REFRESH_INTERVAL_MS: u64 = 30_000;
/// Retry backoff while no key was ever fetched: short, requests are waiting.
const COLD_BACKOFF_CAP_MS: u64 = 5_000;
/// Retry backoff while stale keys still serve.
const WARM_BACKOFF_CAP_MS: u64 = 60_000;

/// What every worker knows about one provider's keys; stored in shared data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRecord {
    /// Discovery has succeeded (its endpoints are below).
    pub discovered: bool,
    /// The `jwks_uri` found by discovery.
    pub discovered_jwks_uri: Option<String>,
    pub discovered_userinfo_uri: Option<String>,
    pub discovered_introspection_uri: Option<String>,
    /// The last good JWKS body (already validated by the worker that fetched it).
    pub jwks: Option<String>,
    pub fetched_at_ms: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// No attempt before this time (backoff after failures).
    pub retry_at_ms: u64,
    /// A worker is fetching until this time; others wait for its result.
    pub lease_until_ms: u64,
    /// When an unknown `kid` last forced a refresh.
    pub kid_refresh_at_ms: u64,
    /// Bumped by every finished attempt, good or bad: waiters re-decide when it moves.
    pub serial: u64,
}

/// Which document a fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    /// `<issuer>/.well-known/openid-configuration`.
    Discovery,
    /// The JWKS.
    Jwks,
}

impl KeyRecord {
    /// Parses a stored record; a damaged one reads as empty (it is refetched, never trusted).
    pub fn parse(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The JWKS URI: configured, else discovered.
    pub fn jwks_uri(&self, provider: &Provider) -> Option<HttpUri> {
        provider
            .jwks_uri
            .clone()
            .or_else(|| parse_uri(&self.discovered_jwks_uri))
    }

    /// The userinfo endpoint: configured, else discovered.
    pub fn userinfo_uri(&self, provider: &Provider) -> Option<HttpUri> {
        provider
            .userinfo_uri
            .clone()
            .or_else(|| parse_uri(&self.discovered_userinfo_uri))
    }

    /// The introspection endpoint: configured, else discovered.
    pub fn introspection_uri(&self, provider: &Provider) -> Option<HttpUri> {
        provider
            .introspection_uri
            .clone()
            .or_else(|| parse_uri(&self.discovered_introspection_uri))
    }

    /// Whether the provider's metadata is complete: discovery done, if it is on.
    pub fn ready(&self, provider: &Provider) -> bool {
        !provider.discovery || self.discovered
    }

    /// Whether a fetch is due now, and of what; `kid_refresh` asks for an early JWKS fetch.
    pub fn due(&self, provider: &Provider, now: UnixTime, kid_refresh: bool) -> Option<FetchKind> {
        let now = now.as_millis();
        if now < self.lease_until_ms || now < self.retry_at_ms {
            return None;
        }
        if !self.ready(provider) {
            return Some(FetchKind::Discovery);
        }
        if !uses_jwks(provider) {
            return None;
        }
        self.jwks_uri(provider)?;
        let refresh_ms = provider.jwks_refresh_seconds.saturating_mul(1000);
        let stale = self.jwks.is_none() || now >= self.fetched_at_ms.saturating_add(refresh_ms);
        (stale || kid_refresh && self.kid_refresh_allowed(UnixTime::from_millis(now)))
            .then_some(FetchKind::Jwks)
    }

    /// Whether an unknown `kid` may trigger a refresh now (rate limit per provider).
    pub fn kid_refresh_allowed(&self, now: UnixTime) -> bool {
        now.as_millis()
            >= self
                .kid_refresh_at_ms
                .saturating_add(KID_REFRESH_INTERVAL_MS)
    }

    /// Whether the last attempt failed and the backoff forbids another one yet.
    pub fn backing_off(&self, now: UnixTime) -> bool {
        self.failures > 0 && now.as_millis() < self.retry_at_ms
    }

    /// Whether some worker is fetching right now.
    pub fn fetching(&self, now: UnixTime) -> bool {
        now.as_millis() < self.lease_until_ms
    }

    /// This record with a lease taken for one fetch.
    pub fn leased(&self, provider: &Provider, now: UnixTime, kid_refresh: bool) -> Self {
        let mut next = self.clone();
        // The lease outlives the call's timeout, so a worker that vanished mid-fetch is replaced.
        next.lease_until_ms = now
            .as_millis()
            .saturating_add(provider.timeout_ms)
            .saturating_add(1000);
        if kid_refresh {
            next.kid_refresh_at_ms = now.as_millis();
        }
        next
    }

    /// This record after a good JWKS.
    pub fn with_jwks(&self, body: String, now: UnixTime) -> Self {
        KeyRecord {
            jwks: Some(body),
            fetched_at_ms: now.as_millis(),
            failures: 0,
            retry_at_ms: 0,
            lease_until_ms: 0,
            serial: self.serial.wrapping_add(1),
            ..self.clone()
        }
    }

    /// This record after discovery succeeded.
    pub fn with_discovered(&self, found: Discovered) -> Self {
        KeyRecord {
            discovered: true,
            discovered_jwks_uri: found.jwks_uri,
            discovered_userinfo_uri: found.userinfo_uri,
            discovered_introspection_uri: found.introspection_uri,
            failures: 0,
            retry_at_ms: 0,
            lease_until_ms: 0,
            serial: self.serial.wrapping_add(1),
            ..self.clone()
        }
    }

    /// This record after a failed attempt: exponential backoff, the last good keys kept.
    pub fn with_failure(&self, now: UnixTime) -> Self {
        let failures = self.failures.saturating_add(1);
        let cap = if self.jwks.is_some() {
            WARM_BACKOFF_CAP_MS
        } else {
            COLD_BACKOFF_CAP_MS
        };
        let backoff = 500u64.saturating_mul(1u64 << failures.min(16)).min(cap);
        KeyRecord {
            failures,
            retry_at_ms: now.as_millis().saturating_add(backoff),
            lease_until_ms: 0,
            serial: self.serial.wrapping_add(1),
            ..self.clone()
        }
    }

    /// Whether the stored keys may still be used: fresh, or stale within `jwks_max_stale_seconds`.
    pub fn keys_usable(&self, provider: &Provider, now: UnixTime) -> bool {
        let limit = provider
            .jwks_refresh_seconds
            .saturating_add(provider.jwks_max_stale_seconds)
            .saturating_mul(1000);
        self.jwks.is_some() && now.as_millis() <= self.fetched_at_ms.saturating_add(limit)
    }

    /// Whether the provider is known to be failing with nothing to serve: answer 503 at once.
    pub fn known_down(&self, provider: &Provider, now: UnixTime) -> bool {
        let nothing = !self.ready(provider) || uses_jwks(provider) && self.jwks.is_none();
        nothing && self.failures > 0 && !self.fetching(now) && now.as_millis() < self.retry_at_ms
    }
}

/// The outcome of a fetch: the record to store and a line for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub record: KeyRecord,
    /// `Ok` describes what was learned; `Err` says why the attempt failed.
    pub summary: Result<String, String>,
}

impl KeyRecord {
    /// Folds a provider's reply into the record; `status` 0 means no reply (reset, timeout).
    pub fn after_reply(
        &self,
        kind: FetchKind,
        provider: &Provider,
        status: u32,
        body: &[u8],
        now: UnixTime,
    ) -> FetchResult {
        let learned = if status == 0 {
            Err("no response (connection failed or timed out)".to_string())
        } else if status != 200 {
            Err(format!("HTTP {status}"))
        } else {
            match kind {
                FetchKind::Discovery => discover(body, provider).map(|found| {
                    let summary = format!("discovered {found:?}");
                    (self.with_discovered(found), summary)
                }),
                FetchKind::Jwks => match KeySet::parse(body) {
                    Ok(set) => match String::from_utf8(body.to_vec()) {
                        Ok(text) => Ok((
                            self.with_jwks(text, now),
                            format!("{} keys ({} skipped)", set.keys.len(), set.skipped),
                        )),
                        Err(_) => Err("JWKS is not UTF-8".to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                },
            }
        };
        match learned {
            Ok((record, summary)) => FetchResult {
                record,
                summary: Ok(summary),
            },
            Err(why) => FetchResult {
                record: self.with_failure(now),
                summary: Err(why),
            },
        }
    }
}

/// Endpoints an OpenID Provider Configuration announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub jwks_uri: Option<String>,
    pub userinfo_uri: Option<String>,
    pub introspection_uri: Option<String>,
}

/// Reads a discovery document whose `issuer` is the provider's (OIDC Discovery 4.3).
fn discover(body: &[u8], provider: &Provider) -> Result<Discovered, String> {
    if body.len() > crate::jwks::MAX_JWKS_BYTES {
        return Err("discovery document too large".into());
    }
    let doc = crate::jwt::parse_json(body).map_err(|e| format!("discovery document: {e}"))?;
    let issuer = doc.get("issuer").and_then(serde_json::Value::as_str);
    if issuer != provider.issuer.as_deref() {
        return Err("discovery document names another issuer".into());
    }
    let endpoint = |name: &str| -> Result<Option<String>, String> {
        match doc.get(name).and_then(serde_json::Value::as_str) {
            None => Ok(None),
            Some(uri) => HttpUri::parse(uri)
                .map(|_| Some(uri.to_string()))
                .map_err(|e| format!("discovered {name} {e}")),
        }
    };
    let found = Discovered {
        jwks_uri: endpoint("jwks_uri")?,
        userinfo_uri: endpoint("userinfo_endpoint")?,
        introspection_uri: endpoint("introspection_endpoint")?,
    };
    let missing = match provider.mode {
        ProviderMode::Jwt => {
            uses_jwks(provider) && provider.jwks_uri.is_none() && found.jwks_uri.is_none()
        }
        ProviderMode::Userinfo => provider.userinfo_uri.is_none() && found.userinfo_uri.is_none(),
        ProviderMode::Introspection => {
            provider.introspection_uri.is_none() && found.introspection_uri.is_none()
        }
    };
    if missing {
        return Err(format!(
            "discovery document lacks the endpoint {:?} mode needs",
            provider.mode
        ));
    }
    Ok(found)
}

/// Whether `provider` verifies JWTs with fetched keys.
pub fn uses_jwks(provider: &Provider) -> bool {
    provider.mode == ProviderMode::Jwt && provider.inline_keys.is_none()
}

fn parse_uri(text: &Option<String>) -> Option<HttpUri> {
    text.as_deref().and_then(|u| HttpUri::parse(u).ok())
}

/// The discovery URL of `issuer` (OIDC Discovery section 4: trailing slash removed first).
pub fn discovery_uri(issuer: &str) -> Option<HttpUri> {
    HttpUri::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
    .ok()
}

/// One worker's view of a provider's keys: the last record seen and its parsed key set.
#[derive(Debug, Clone, Default)]
pub struct ProviderKeys {
    pub record: KeyRecord,
    set: Option<KeySet>,
}

impl ProviderKeys {
    /// Keys for `provider` at start: inline keys are ready at once.
    pub fn new(provider: &Provider) -> Self {
        let set = provider.inline_keys.clone();
        if let Some(set) = &set {
            set.warm();
        }
        ProviderKeys {
            record: KeyRecord::default(),
            set,
        }
    }

    /// Takes a newer shared record; reparses the JWKS only when its text changed.
    pub fn adopt(&mut self, record: KeyRecord) {
        if record.jwks != self.record.jwks {
            if let Some(set) = record
                .jwks
                .as_deref()
                .and_then(|body| KeySet::parse(body.as_bytes()).ok())
            {
                // New keys get their tables here, when the keys arrive, not in a request.
                set.warm();
                self.set = Some(set);
            }
        }
        self.record = record;
    }

    /// The keys to verify with now, if any are usable.
    pub fn usable(&self, provider: &Provider, now: UnixTime) -> Option<&KeySet> {
        if provider.inline_keys.is_some() {
            return self.set.as_ref();
        }
        self.set
            .as_ref()
            .filter(|_| self.record.keys_usable(provider, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);
    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn provider(extra: serde_json::Value) -> Provider {
        let mut p = serde_json::json!({"name": "p", "issuer": "https://idp", "audiences": ["jira"], "jwks_uri": "https://idp/keys", "jwks_refresh_seconds": 600});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let json = serde_json::json!({ "providers": [p] }).to_string();
        Config::parse(json.as_bytes(), &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn fresh_start_fetches_jwks() {
        assert_eq!(
            KeyRecord::default().due(&provider(serde_json::json!({})), NOW, false),
            Some(FetchKind::Jwks)
        );
    }

    #[test]
    fn discovery_comes_first_when_no_jwks_uri() {
        let p = provider(serde_json::json!({"jwks_uri": null, "discovery": true}));
        assert_eq!(
            KeyRecord::default().due(&p, NOW, false),
            Some(FetchKind::Discovery)
        );
        let found = KeyRecord::default().with_discovered(Discovered {
            jwks_uri: Some("https://idp/certs".into()),
            ..Discovered::default()
        });
        assert_eq!(found.due(&p, NOW, false), Some(FetchKind::Jwks));
        assert_eq!(found.jwks_uri(&p).unwrap().path_and_query(), "/certs");
    }

    #[test]
    fn a_lease_keeps_other_workers_from_fetching() {
        let p = provider(serde_json::json!({}));
        let leased = KeyRecord::default().leased(&p, NOW, false);
        assert_eq!(leased.due(&p, NOW.plus_millis(10), false), None);
        assert!(leased
            .due(&p, NOW.plus_millis(p.timeout_ms + 1001), false)
            .is_some());
    }

    #[test]
    fn keys_are_refreshed_after_jwks_refresh_seconds() {
        let p = provider(serde_json::json!({}));
        let rec = KeyRecord::default().with_jwks(JWKS.into(), NOW);
        assert_eq!(rec.due(&p, NOW.plus_secs(599), false), None);
        assert_eq!(
            rec.due(&p, NOW.plus_secs(600), false),
            Some(FetchKind::Jwks)
        );
    }

    #[test]
    fn unknown_kid_refresh_is_rate_limited() {
        let p = provider(serde_json::json!({}));
        let rec = KeyRecord::default()
            .with_jwks(JWKS.into(), NOW)
            .leased(&p, NOW, true)
            .with_jwks(JWKS.into(), NOW);
        assert_eq!(rec.due(&p, NOW.plus_secs(1), true), None);
        assert_eq!(
            rec.due(&p, NOW.plus_millis(KID_REFRESH_INTERVAL_MS), true),
            Some(FetchKind::Jwks)
        );
    }

    #[test]
    fn failures_back_off_and_keep_the_last_good_keys() {
        let p = provider(serde_json::json!({}));
        let rec = KeyRecord::default()
            .with_jwks(JWKS.into(), NOW)
            .with_failure(NOW.plus_secs(600));
        assert_eq!(rec.jwks.as_deref(), Some(JWKS));
        assert_eq!(rec.due(&p, NOW.plus_secs(600), false), None);
        assert!(rec.keys_usable(&p, NOW.plus_secs(3600)));
    }

    #[test]
    fn stale_keys_expire_after_the_stale_bound() {
        let p = provider(serde_json::json!({"jwks_max_stale_seconds": 60}));
        let rec = KeyRecord::default().with_jwks(JWKS.into(), NOW);
        assert!(rec.keys_usable(&p, NOW.plus_secs(660)));
        assert!(!rec.keys_usable(&p, NOW.plus_secs(661)));
    }

    #[test]
    fn cold_failure_is_known_down_until_retry() {
        let p = provider(serde_json::json!({}));
        let rec = KeyRecord::default().with_failure(NOW);
        assert!(rec.known_down(&p, NOW.plus_millis(1)));
        assert!(!rec.known_down(&p, NOW.plus_millis(COLD_BACKOFF_CAP_MS + 1)));
        assert!(!rec
            .with_jwks(JWKS.into(), NOW)
            .with_failure(NOW)
            .known_down(&p, NOW.plus_millis(1)));
        assert!(rec.retry_at_ms - NOW.as_millis() <= COLD_BACKOFF_CAP_MS);
    }

    #[test]
    fn adopting_a_record_parses_its_keys_once() {
        let p = provider(serde_json::json!({}));
        let mut keys = ProviderKeys::new(&p);
        assert!(keys.usable(&p, NOW).is_none());
        keys.adopt(KeyRecord::default().with_jwks(JWKS.into(), NOW));
        assert!(keys.usable(&p, NOW).unwrap().has_kid("k"));
    }

    #[test]
    fn damaged_record_reads_as_empty() {
        assert_eq!(KeyRecord::parse(b"{not json"), KeyRecord::default());
    }

    #[test]
    fn good_jwks_reply_is_stored_and_bad_one_is_a_failure() {
        let p = provider(serde_json::json!({}));
        let ok = KeyRecord::default().after_reply(FetchKind::Jwks, &p, 200, JWKS.as_bytes(), NOW);
        assert_eq!(
            (ok.record.jwks.as_deref(), ok.record.serial),
            (Some(JWKS), 1)
        );
        for (status, body) in [(200, &b"<html>"[..]), (503, JWKS.as_bytes()), (0, &b""[..])] {
            let bad = ok
                .record
                .after_reply(FetchKind::Jwks, &p, status, body, NOW);
            assert!(bad.summary.is_err());
            assert_eq!(
                (bad.record.jwks.as_deref(), bad.record.failures),
                (Some(JWKS), 1)
            );
        }
    }

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let p = provider(serde_json::json!({"jwks_uri": null, "discovery": true}));
        let good = br#"{"issuer":"https://idp","jwks_uri":"https://idp/certs"}"#;
        let evil = br#"{"issuer":"https://evil","jwks_uri":"https://evil/certs"}"#;
        let found = KeyRecord::default().after_reply(FetchKind::Discovery, &p, 200, good, NOW);
        assert_eq!(
            found.record.discovered_jwks_uri.as_deref(),
            Some("https://idp/certs")
        );
        assert!(KeyRecord::default()
            .after_reply(FetchKind::Discovery, &p, 200, evil, NOW)
            .summary
            .is_err());
    }

    #[test]
    fn discovery_uri_follows_the_issuer_path() {
        assert_eq!(
            discovery_uri("https://kc/realms/x/")
                .unwrap()
                .path_and_query(),
            "/realms/x/.well-known/openid-configuration"
        );
    }
}
