//! The bearer tokens this worker accepted lately, in front of the shared cache: an
//! `Authorization` value seen again is decided without parsing, SHA-256, a shared-data read or a
//! JSON parse (issue 7: SHA-256 of an 830-byte token alone costs about 11 µs in V8).
//!
//! It only ever repeats an answer the shared cache holds (same entry, same `until`), so it
//! changes no decision; it is per worker and dropped with the configuration. Bounded in bytes:
//! two generations, the older dropped whole when the younger fills (a cheap approximate LRU).

use crate::config::ProviderId;
use crate::digest::Fingerprint;
use crate::identity::Identity;
use crate::time::UnixTime;
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

/// Bytes one generation may hold (tokens and what is kept with them); the memo holds at most two.
pub(crate) const GENERATION_BYTES: usize = 1 << 20;
/// Bytes counted per entry on top of the header value and the claims it keeps.
const ENTRY_OVERHEAD: usize = 160;

/// What a worker keeps about a token it accepted.
#[derive(Debug, Clone)]
pub(crate) struct Recalled {
    /// The token's log fingerprint, computed once (`Fingerprint::shown`).
    pub(crate) token: Fingerprint,
    /// When the shared entry this repeats runs out.
    pub(crate) until_ms: u64,
    /// The provider that vouched for the token.
    pub(crate) provider: ProviderId,
    pub(crate) identity: Identity,
    /// The claims rules are checked against.
    pub(crate) claims: Value,
}

#[derive(Clone)]
struct Kept {
    header: Box<str>,
    recalled: Rc<Recalled>,
}

/// A bounded map from `Authorization` value to `Recalled`, per worker.
#[derive(Clone)]
pub(crate) struct Memo {
    /// Where `key` starts: random per worker.
    seed: u64,
    young: HashMap<u64, Kept>,
    old: HashMap<u64, Kept>,
    young_bytes: usize,
    budget: usize,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} tokens)", self.len())
    }
}

impl Default for Memo {
    fn default() -> Self {
        Memo::with_budget(GENERATION_BYTES)
    }
}

impl Memo {
    /// A memo whose generations hold `budget` bytes each.
    pub(crate) fn with_budget(budget: usize) -> Self {
        Memo {
            seed: RandomState::new().hash_one(0u8),
            young: HashMap::new(),
            old: HashMap::new(),
            young_bytes: 0,
            budget,
        }
    }

    /// What was kept about `header` (an `Authorization` value), while its entry lives at `now`.
    pub(crate) fn recall(&mut self, header: &str, now: UnixTime) -> Option<Rc<Recalled>> {
        let key = self.key(header);
        let kept = match self.young.get(&key) {
            Some(kept) => kept,
            None => {
                let kept = self.old.remove(&key)?;
                self.promote(key, kept);
                self.young.get(&key)?
            }
        };
        if !same_bytes(kept.header.as_bytes(), header.as_bytes())
            || now.as_millis() >= kept.recalled.until_ms
        {
            return None;
        }
        Some(Rc::clone(&kept.recalled))
    }

    /// Keeps `recalled` for `header` until its `until_ms`.
    pub(crate) fn keep(&mut self, header: &str, recalled: Recalled) {
        let key = self.key(header);
        self.old.remove(&key);
        self.promote(
            key,
            Kept {
                header: header.into(),
                recalled: Rc::new(recalled),
            },
        );
    }

    /// The slot of `header`: a multiply-rotate hash of the whole value, eight bytes a step,
    /// from a per-worker random seed (a SipHash of an 830-byte token costs several times
    /// more in wasm). The map hashes the slot again under its own random key, so no value can
    /// be aimed at a bucket; values that share a slot only take turns in it, because `recall`
    /// compares the whole value.
    fn key(&self, header: &str) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
        let bytes = header.as_bytes();
        let mut words = bytes.chunks_exact(8);
        let h = words
            .by_ref()
            .fold(self.seed ^ bytes.len() as u64, |h, w| step(h, word(w)));
        words
            .remainder()
            .iter()
            .fold(h, |h, &b| step(h, u64::from(b)))
    }

    /// How many tokens are kept.
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn promote(&mut self, key: u64, kept: Kept) {
        let size = cost(&kept);
        if size > self.budget {
            return;
        }
        if self.young_bytes + size > self.budget {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += size;
        if let Some(previous) = self.young.insert(key, kept) {
            self.young_bytes = self.young_bytes.saturating_sub(cost(&previous));
        }
    }
}

/// `a == b`, eight bytes at a time: a hit compares the whole header value, and in wasm
/// `memcmp` is a byte loop.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let words = words_a
        .by_ref()
        .zip(words_b.by_ref())
        .all(|(x, y)| word(x) == word(y));
    words && words_a.remainder() == words_b.remainder()
}

/// Eight bytes as one number (`chunks_exact(8)` gives exactly eight).
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

fn cost(kept: &Kept) -> usize {
    let identity = &kept.recalled.identity;
    let headers: usize = identity
        .claim_headers
        .iter()
        .map(|(h, v)| h.len() + v.len())
        .sum();
    kept.header.len()
        + identity.username.as_str().len()
        + identity.provider.len()
        + headers
        + claims_cost(&kept.recalled.claims)
        + ENTRY_OVERHEAD
}

/// A rough size of a JSON value in memory, without serialising it.
fn claims_cost(value: &Value) -> usize {
    match value {
        Value::String(s) => 24 + s.len(),
        Value::Array(items) => 24 + items.iter().map(claims_cost).sum::<usize>(),
        Value::Object(map) => {
            48 + map
                .iter()
                .map(|(k, v)| 24 + k.len() + claims_cost(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::TokenDigest;
    use crate::identity::Username;
    use serde_json::json;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn recalled(name: &str, until: UnixTime) -> Recalled {
        let identity = Identity {
            username: Username::parse(name.to_string()).unwrap(),
            provider: "p".into(),
            claim_headers: vec![],
        };
        Recalled {
            token: Fingerprint::new(TokenDigest::of(name.as_bytes()), None),
            until_ms: until.as_millis(),
            provider: ProviderId::nth(0),
            identity,
            claims: json!({}),
        }
    }

    #[test]
    fn kept_token_is_recalled_until_its_entry_runs_out() {
        let mut memo = Memo::default();
        memo.keep("token-a", recalled("alice", NOW.plus_secs(10)));
        assert_eq!(
            memo.recall("token-a", NOW)
                .unwrap()
                .identity
                .username
                .as_str(),
            "alice"
        );
        assert!(memo.recall("token-a", NOW.plus_secs(10)).is_none());
    }

    #[test]
    fn another_token_is_never_recalled() {
        let mut memo = Memo::default();
        memo.keep("token-a", recalled("alice", NOW.plus_secs(10)));
        for other in ["token-b", "token-a ", "token-", "", "TOKEN-A"] {
            assert!(memo.recall(other, NOW).is_none(), "{other:?}");
        }
    }

    #[test]
    fn a_value_in_the_slot_of_another_is_never_taken_for_it() {
        let (a, b) = ("Bearer token-a", "Bearer token-b");
        let mut memo = Memo::default();
        // As if `b` hashed to `a`'s slot.
        let slot = memo.key(a);
        memo.young.insert(
            slot,
            Kept {
                header: b.into(),
                recalled: Rc::new(recalled("bob", NOW.plus_secs(10))),
            },
        );
        assert!(memo.recall(a, NOW).is_none());
        memo.keep(a, recalled("alice", NOW.plus_secs(10)));
        assert_eq!(
            memo.recall(a, NOW).unwrap().identity.username.as_str(),
            "alice"
        );
        assert!(memo.recall(b, NOW).is_none());
    }

    #[test]
    fn same_bytes_is_equality_at_every_length_and_every_difference() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..=base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a));
            assert!(!same_bytes(a, &base[..len.saturating_sub(1)]) || len == 0);
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(a, &b), "len {len}, byte {at}");
            }
        }
    }

    #[test]
    fn memory_is_bounded_and_recent_tokens_survive() {
        let mut memo = Memo::with_budget(10_000);
        for i in 0..1000 {
            memo.keep(
                &format!("token-{i:04}-{}", "x".repeat(100)),
                recalled("alice", NOW.plus_secs(60)),
            );
            // Token 0 is used all along: promotion keeps it young.
            assert!(
                memo.recall(&format!("token-0000-{}", "x".repeat(100)), NOW)
                    .is_some(),
                "after {i}"
            );
        }
        // Two generations of at most 10,000 bytes at about 300 bytes an entry.
        assert!(memo.len() <= 2 * 10_000 / 280, "{} kept", memo.len());
        assert!(memo
            .recall(&format!("token-0999-{}", "x".repeat(100)), NOW)
            .is_some());
        assert!(memo
            .recall(&format!("token-0001-{}", "x".repeat(100)), NOW)
            .is_none());
    }

    #[test]
    fn a_token_larger_than_a_generation_is_not_kept() {
        let mut memo = Memo::with_budget(1000);
        memo.keep(&"t".repeat(2000), recalled("alice", NOW.plus_secs(60)));
        assert_eq!(memo.len(), 0);
    }
}
