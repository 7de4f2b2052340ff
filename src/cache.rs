//! The shared result cache: what a provider said about a token, keyed by the token's SHA-256.
//!
//! Entries live in proxy-wasm shared data in a fixed number of slots (`cache_entries`), so the
//! cache is bounded whatever the traffic: a new token evicts whatever shared its slot. An entry
//! holds the full digest, so a slot never answers for another token. Time is always an input.

use crate::digest::TokenDigest;
use crate::error::AuthError;
use crate::time::UnixTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Refusals are remembered this long at most (SPEC section 6: "cached briefly").
pub const NEGATIVE_TTL_MS: u64 = 10_000;
/// "Provider unavailable" is remembered this long: enough to stop a stampede, short enough to recover.
pub const UNAVAILABLE_TTL_MS: u64 = 1_000;
/// The claims an entry keeps (only those rules and claim headers read) hold at most this many
/// bytes of JSON: the cache takes at most `cache_entries` times this. Larger answers are not
/// shared for long (`OVERSIZED_TTL_MS`), and never stored without their claims (issue 11).
pub const MAX_CLAIMS_BYTES: usize = 8 * 1024;
/// How long a provider's answer whose kept claims exceed `MAX_CLAIMS_BYTES` is stored: long
/// enough for the requests waiting for it, on any worker, to be decided by it.
pub const OVERSIZED_TTL_MS: u64 = 1_000;

/// Whether `claims` (already trimmed to what the configuration reads) fit in a cache entry.
pub fn claims_fit(claims: &Value) -> bool {
    claims.to_string().len() <= MAX_CLAIMS_BYTES
}

/// Why a token was refused, in a form that survives shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Rejected,
    Expired,
    NotYetValid,
    Audience,
    TokenUse,
    NoUsername,
    InvalidUsername,
}

impl Refusal {
    /// The error a client sees.
    pub fn to_error(self) -> AuthError {
        match self {
            Refusal::Rejected => AuthError::ProviderRejected,
            Refusal::Expired => AuthError::Expired,
            Refusal::NotYetValid => AuthError::NotYetValid,
            Refusal::Audience => AuthError::AudienceMismatch,
            Refusal::TokenUse => AuthError::WrongTokenUse,
            Refusal::NoUsername => AuthError::NoUsername,
            Refusal::InvalidUsername => AuthError::InvalidUsername,
        }
    }

    /// The refusal for `err`, when it is one a provider lookup can produce.
    pub fn from_error(err: &AuthError) -> Option<Self> {
        Some(match err {
            AuthError::ProviderRejected => Refusal::Rejected,
            AuthError::Expired => Refusal::Expired,
            AuthError::NotYetValid => Refusal::NotYetValid,
            AuthError::AudienceMismatch => Refusal::Audience,
            AuthError::WrongTokenUse => Refusal::TokenUse,
            AuthError::NoUsername => Refusal::NoUsername,
            AuthError::InvalidUsername => Refusal::InvalidUsername,
            _ => return None,
        })
    }
}

/// What a slot says about one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// A worker is asking the provider; others wait for it. `by` names the worker that claimed
    /// the slot (a random number of its own), so that it can tell its claim is still there
    /// before its call leaves.
    Pending {
        #[serde(default)]
        by: u64,
    },
    /// The provider vouched for the token.
    Valid {
        username: String,
        provider: String,
        /// The claims rules and claim headers refer to (not the whole answer).
        claims: Value,
    },
    /// The token is bad.
    Refused { refusal: Refusal },
    /// The provider could not be asked (5xx, timeout, garbage).
    Unavailable,
}

/// One slot's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Hex SHA-256 of the token this entry is about.
    pub digest: String,
    /// Until when the entry holds (for `Pending`: until the lease runs out).
    pub until_ms: u64,
    #[serde(flatten)]
    pub state: EntryState,
}

/// What the request path can learn from the cache about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Nothing usable: ask the provider.
    Miss,
    /// Someone is asking: wait.
    Pending,
    /// A live answer.
    Hit(EntryState),
}

impl CacheEntry {
    /// A pending entry for `digest`, claimed by worker `by`, leased until `until`.
    pub fn pending(digest: TokenDigest, until: UnixTime, by: u64) -> Self {
        CacheEntry {
            digest: digest.to_hex(),
            until_ms: until.as_millis(),
            state: EntryState::Pending { by },
        }
    }

    /// Whether this entry is a live claim on `digest`'s slot by worker `by`.
    pub fn claimed_by(&self, digest: &TokenDigest, by: u64, now: UnixTime) -> bool {
        self.is_for(digest)
            && now.as_millis() < self.until_ms
            && self.state == EntryState::Pending { by }
    }

    /// An answer for `digest`, valid until `until`, stored as it is: claims are never dropped
    /// (an entry without them would fail `require_claims` for a caller who meets it).
    pub fn answer(digest: TokenDigest, state: EntryState, until: UnixTime) -> Self {
        CacheEntry {
            digest: digest.to_hex(),
            until_ms: until.as_millis(),
            state,
        }
    }

    /// Parses a stored entry; anything damaged is a miss.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Parses a stored entry if it is about `digest`. Entries are written digest first, so a
    /// slot holding another token's entry (the usual case for a new token) is passed over
    /// without parsing it.
    pub fn parse_for(bytes: &[u8], digest: &TokenDigest) -> Option<Self> {
        const DIGEST_AT: usize = br#"{"digest":""#.len();
        if bytes.get(DIGEST_AT..DIGEST_AT + 64) != Some(digest.to_hex().as_bytes()) {
            return None;
        }
        Self::parse(bytes).filter(|e| e.is_for(digest))
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether a new lookup for `digest` may take this slot: nothing live, or a failed lookup.
    pub fn claimable(entry: Option<&CacheEntry>, digest: &TokenDigest, now: UnixTime) -> bool {
        matches!(
            Self::view(entry, digest, now),
            Cached::Miss | Cached::Hit(EntryState::Unavailable)
        )
    }

    /// Whether a lookup by provider `provider` may take the slot: as `claimable`, or the slot
    /// holds another provider's answer (an answer counts only for the provider that gave it).
    pub fn claimable_by(
        entry: Option<&CacheEntry>,
        digest: &TokenDigest,
        provider: &str,
        now: UnixTime,
    ) -> bool {
        match Self::view(entry, digest, now) {
            Cached::Hit(EntryState::Valid { provider: by, .. }) => by != provider,
            _ => Self::claimable(entry, digest, now),
        }
    }

    /// Whether this entry records that asking about `digest` failed.
    pub fn is_failure_for(&self, digest: &TokenDigest) -> bool {
        self.is_for(digest) && self.state == EntryState::Unavailable
    }

    /// The digest this entry is about.
    pub fn digest_bytes(&self) -> Option<TokenDigest> {
        TokenDigest::from_hex(&self.digest)
    }

    /// Whether this entry is about `digest`.
    pub fn is_for(&self, digest: &TokenDigest) -> bool {
        self.digest == digest.to_hex()
    }

    /// What this entry (found in `digest`'s slot) says at `now`.
    pub fn view(entry: Option<&CacheEntry>, digest: &TokenDigest, now: UnixTime) -> Cached {
        match entry {
            Some(e) if e.is_for(digest) && now.as_millis() < e.until_ms => match &e.state {
                EntryState::Pending { .. } => Cached::Pending,
                state => Cached::Hit(state.clone()),
            },
            _ => Cached::Miss,
        }
    }
}

/// The shared-data key of `digest`'s slot among `slots`, in the cache of configuration `namespace`
/// (answers given under one configuration never serve another).
pub fn slot_key(namespace: &str, digest: &TokenDigest, slots: u32) -> String {
    let bytes = digest.to_bytes();
    let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    format!(
        "atlassian-rest-auth/v1/cache/{namespace}/{}",
        n % slots.max(1)
    )
}

/// Read access to the shared cache, as the request path needs it.
pub trait ResultCache {
    /// The entry in `digest`'s slot, if it is about `digest`.
    fn get(&self, digest: &TokenDigest) -> Option<CacheEntry>;

    /// Notes that the worker's memo answered in its place (a hit, for the metrics).
    fn count_hit(&self) {}
}

/// A cache that never holds anything (for callers without one).
pub struct NoCache;

impl ResultCache for NoCache {
    fn get(&self, _: &TokenDigest) -> Option<CacheEntry> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    #[test]
    fn live_answer_is_a_hit_until_it_expires() {
        let d = TokenDigest::of(b"t");
        let e = CacheEntry::answer(
            d,
            EntryState::Refused {
                refusal: Refusal::Rejected,
            },
            NOW.plus_secs(10),
        );
        assert!(matches!(
            CacheEntry::view(Some(&e), &d, NOW),
            Cached::Hit(_)
        ));
        assert_eq!(
            CacheEntry::view(Some(&e), &d, NOW.plus_secs(10)),
            Cached::Miss
        );
    }

    #[test]
    fn slot_holding_another_token_is_a_miss() {
        let e = CacheEntry::pending(TokenDigest::of(b"a"), NOW.plus_secs(5), 1);
        assert_eq!(
            CacheEntry::view(Some(&e), &TokenDigest::of(b"b"), NOW),
            Cached::Miss
        );
        assert_eq!(
            CacheEntry::view(Some(&e), &TokenDigest::of(b"a"), NOW),
            Cached::Pending
        );
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let d = TokenDigest::of(b"t");
        let e = CacheEntry::answer(
            d,
            EntryState::Valid {
                username: "alice".into(),
                provider: "gh".into(),
                claims: json!({"groups": ["x"]}),
            },
            NOW,
        );
        assert_eq!(CacheEntry::parse(&e.to_bytes()), Some(e));
        assert_eq!(CacheEntry::parse(b"garbage"), None);
    }

    #[test]
    fn parse_for_finds_only_the_entry_of_its_digest() {
        let (a, b) = (TokenDigest::of(b"a"), TokenDigest::of(b"b"));
        let e = CacheEntry::answer(
            a,
            EntryState::Refused {
                refusal: Refusal::Expired,
            },
            NOW,
        );
        assert_eq!(CacheEntry::parse_for(&e.to_bytes(), &a), Some(e.clone()));
        assert_eq!(CacheEntry::parse_for(&e.to_bytes(), &b), None);
        assert_eq!(CacheEntry::parse_for(b"{}", &a), None);
    }

    #[test]
    fn claims_are_never_dropped_from_an_entry() {
        let big = json!({"groups": vec!["g".repeat(40); 400]});
        let state = EntryState::Valid {
            username: "a".into(),
            provider: "p".into(),
            claims: big.clone(),
        };
        let e = CacheEntry::answer(TokenDigest::of(b"t"), state, NOW);
        assert!(matches!(e.state, EntryState::Valid { ref claims, .. } if claims == &big));
        assert_eq!(CacheEntry::parse(&e.to_bytes()), Some(e));
    }

    #[test]
    fn claims_fit_up_to_the_bound() {
        let of_length = |n: usize| json!({"g": "x".repeat(n - r#"{"g":""}"#.len())});
        assert!(claims_fit(&of_length(MAX_CLAIMS_BYTES)));
        assert!(!claims_fit(&of_length(MAX_CLAIMS_BYTES + 1)));
    }

    #[test]
    fn slots_are_bounded() {
        for i in 0..100u32 {
            let key = slot_key("ns", &TokenDigest::of(&i.to_be_bytes()), 16);
            let slot: u32 = key.rsplit('/').next().unwrap().parse().unwrap();
            assert!(slot < 16);
        }
    }
}
