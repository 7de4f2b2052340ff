//! The whole request path: `Authenticator::start` with any method, path and `Authorization`,
//! against the flow configurations (every provider kind, API tokens, dry run), with any provider
//! reply to whatever call it asks for, until it decides. Every verdict must keep
//! `check_verdict`'s promises; a request past its deadline must always be decided; a provider's
//! answer, once stored, must decide (no second call for the same token); the same request
//! decided again with the same keys, cache and clock must decide the same way (the worker's memo
//! answers then where it kept the token); a result the core asks to remember must decide the
//! same way from the cache alone (a fresh core, nothing in its memo).
//!
//! Input: flags byte (bit 0 CORS headers; bits 1-2 the `idp` provider's keys: fresh, none,
//! stale, failing; bits 3-4 the configuration; bits 5-6 the rate-limit headers of a lookup reply:
//! none, `x-ratelimit-remaining: 0`, `retry-after: 5`, `x-ratelimit-remaining: 12`), 4 bytes
//! offset of `now`, then `method \n path \n authorization \n status \n reply body` (an empty
//! authorization line means no header; status is decimal text). Each input gets a fresh core:
//! nothing one input leaves in a memo reaches the next.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use atlassian_rest_auth::authenticator::{Authenticator, RequestHead, Step, Verdict};
use atlassian_rest_auth::cache::{CacheEntry, EntryState, ResultCache};
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::keys::{FetchKind, KeyRecord, ProviderKeys};
use atlassian_rest_auth::lookup::{Progress, ReplyHead};
use atlassian_rest_auth::time::UnixTime;
use atlassian_rest_auth_fuzz::{auth_of, check_verdict, fields, flow_configs, now_from, trace, JWKS, NOW_SECS};
use libfuzzer_sys::fuzz_target;

/// The shared result cache, as one map.
#[derive(Default)]
struct MapCache(RefCell<HashMap<String, CacheEntry>>);

impl ResultCache for MapCache {
    fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
        self.0.borrow().get(&digest.to_hex()).cloned()
    }
}

impl MapCache {
    fn put(&self, entry: CacheEntry) {
        self.0.borrow_mut().insert(entry.digest.clone(), entry);
    }
}

/// The providers' keys of configuration `config` in key state `state` (fresh, none, stale; the
/// failing state starts from none), parsed and warmed once per thread: parsing and warming the
/// fixture keys again for every input took most of this target's time.
fn starting_keys(config: usize, state: u8) -> Vec<ProviderKeys> {
    thread_local! {
        static KEYS: RefCell<HashMap<(usize, u8), Vec<ProviderKeys>>> = RefCell::new(HashMap::new());
    }
    let state = if state == 3 { 1 } else { state };
    KEYS.with(|keys| {
        keys.borrow_mut()
            .entry((config, state))
            .or_insert_with(|| {
                let mut keys: Vec<ProviderKeys> = flow_configs()[config].providers.iter().map(ProviderKeys::new).collect();
                match state {
                    0 => keys[0].adopt(KeyRecord::default().with_jwks(JWKS.to_string(), UnixTime::from_secs(NOW_SECS))),
                    2 => keys[0].adopt(KeyRecord::default().with_jwks(JWKS.to_string(), UnixTime::from_secs(NOW_SECS - 90_000))),
                    _ => {}
                }
                keys
            })
            .clone()
    })
}

/// Rounds of "the provider answered, decide again" before the deadline passes.
const ROUNDS: usize = 4;

/// What the request is decided with, besides the core.
struct World<'a> {
    head: &'a RequestHead,
    keys: &'a [ProviderKeys],
    cache: &'a MapCache,
    now: UnixTime,
    may_wait: bool,
}

/// Checks `verdict` and decides the request again: the same core must decide the same way (from
/// its memo where it kept the token); when the verdict asks to be remembered, that is stored and
/// a fresh core must decide the same way from the cache alone.
fn settle(auth: &Authenticator, verdict: &Verdict, world: &World<'_>) {
    if trace() {
        eprintln!("{} {} -> {verdict} (remember: {})", world.head.method, world.head.path, verdict.remember.is_some());
    }
    check_verdict(auth, verdict);
    if let Some(entry) = verdict.remember.clone() {
        assert!(verdict.denied.is_none() && verdict.identity.is_some(), "a refusal to remember: {verdict:?}");
        world.cache.put(entry);
        decide_again(&auth_of(&auth.config), verdict, world, "from the cache");
    }
    decide_again(auth, verdict, world, "the second time");
}

fn decide_again(auth: &Authenticator, first: &Verdict, world: &World<'_>, how: &str) {
    match auth.start(world.head, world.keys, world.cache, world.now, world.may_wait) {
        Step::Decide(again) => {
            check_verdict(auth, &again);
            assert_eq!(again.decision, first.decision, "decided otherwise {how}: {again} after {first}");
        }
        other => panic!("undecided {how}: {other:?} after {first}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let flags = data[0];
    let config = usize::from((flags >> 3) & 3) % 3;
    let auth = auth_of(&flow_configs()[config]);
    let auth = &auth;
    let now = now_from(&data[1..5]);
    let parts = fields(&data[5..], 5);
    let text = |i: usize| parts.get(i).map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let authorization = Some(text(2)).filter(|a| !a.is_empty());
    let head = RequestHead { method: text(0), path: text(1), authorization, cors_headers: flags & 1 == 1 };
    let status: u32 = text(3).trim().parse().unwrap_or(200);
    let body: &[u8] = parts.get(4).copied().unwrap_or_default();
    let reply = match (flags >> 5) & 3 {
        0 => ReplyHead::status(status),
        1 => ReplyHead { ratelimit_remaining: Some("0"), ..ReplyHead::status(status) },
        2 => ReplyHead { retry_after: Some("5"), ..ReplyHead::status(status) },
        _ => ReplyHead { ratelimit_remaining: Some("12"), ..ReplyHead::status(status) },
    };

    let mut keys = starting_keys(config, (flags >> 1) & 3);
    if (flags >> 1) & 3 == 3 {
        keys[0].adopt(KeyRecord::default().with_failure(now));
    }
    let cache = MapCache::default();
    for _ in 0..ROUNDS {
        match auth.start(&head, &keys, &cache, now, true) {
            Step::Decide(verdict) => {
                settle(auth, &verdict, &World { head: &head, keys: &keys, cache: &cache, now, may_wait: true });
                return;
            }
            Step::WaitForKeys { provider, kid_refresh } => {
                let p = &auth.config.providers[provider];
                let record = &keys[provider].record;
                let kind = record.due(p, now, kid_refresh).unwrap_or(FetchKind::Jwks);
                let result = record.leased(p, now, kid_refresh).after_reply(kind, p, status, body, now);
                keys[provider].adopt(result.record);
            }
            Step::Lookup(start) => {
                // An answer the provider gave must decide: asking again is a call loop.
                let asked_before = cache.get(&start.digest).is_some_and(|e| e.state != EntryState::Unavailable);
                assert!(!asked_before, "the provider's answer was not used; the token is looked up again");
                let provider = &auth.config.providers[start.provider];
                let mut step = start.step;
                // Facebook's check, then its userinfo call: at most two calls per lookup.
                let state = loop {
                    match step.on_reply(provider, reply, body, now) {
                        Progress::Next(next) if next != step => step = next,
                        Progress::Next(_) => panic!("a lookup step repeats itself"),
                        Progress::Done(state) => break state,
                        // As the adapter does: no verdict on the token, the waiters get a 503.
                        Progress::Unavailable(_) => break EntryState::Unavailable,
                    }
                };
                if trace() {
                    eprintln!("  {:?} of {} HTTP {status} -> {state:?}", start.step, provider.name);
                }
                cache.put(auth.cache_entry(start.provider, start.digest, state, now, start.token_exp));
            }
            Step::WaitForLookup { .. } => {}
        }
    }
    // Past its deadline a request is always decided: the adapter relies on it.
    let late = World { head: &head, keys: &keys, cache: &cache, now: now.plus_millis(1), may_wait: false };
    match auth.start(&head, &keys, &cache, late.now, false) {
        Step::Decide(verdict) => settle(auth, &verdict, &late),
        other => panic!("undecided past the deadline: {other:?}"),
    }
});
