//! The proxy-wasm adapter: the only code that names `proxy_wasm`. No auth rule lives here.
//!
//! One `Worker` per VM (per Envoy thread) is shared by the root context and its HTTP contexts.
//! Provider records (keys, discovery) and token answers live in shared data, so one worker asks
//! a provider and every worker uses the answer.

mod host;
mod http;
mod metrics;
mod root;

use crate::authenticator::{Authenticator, LookupStart, RequestHead, Step, Verdict};
use crate::cache::{slot_key, CacheEntry, Cached, EntryState, ResultCache};
use crate::credentials::{parse_authorization, Credentials};
use crate::digest::{LogKey, TokenDigest};
use crate::jwks::MAX_JWKS_BYTES;
use crate::keys::{discovery_uri, FetchKind, KeyRecord, ProviderKeys};
use crate::lookup::{LookupStep, Outage, Progress, ReplyHead, MAX_ANSWER_BYTES, REPLY_HEADERS};
use crate::outbound::Outbound;
use crate::time::UnixTime;
use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(root::AuthRoot::new(context_id)));
}}

/// What a paused request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitOn {
    /// Provider `usize`'s record to move past this serial (keys, discovery).
    Record(usize, u64),
    /// The cache slot of this token to hold an answer.
    Lookup(TokenDigest),
}

/// A request paused until what it waits on changes or its deadline passes.
struct Waiter {
    head: RequestHead,
    on: WaitOn,
    deadline: UnixTime,
}

/// An outgoing call in flight, and when it was sent.
enum Call {
    Fetch(usize, FetchKind, UnixTime),
    Lookup(Asking, UnixTime),
}

/// A provider lookup in flight; holds the token for a second step (never logged).
struct Asking {
    provider: usize,
    digest: TokenDigest,
    step: LookupStep,
    token: String,
    token_exp: Option<u64>,
}

/// Per-VM state shared by the root context and the HTTP contexts it creates.
pub(crate) struct Worker {
    auth: Authenticator,
    keys: Vec<ProviderKeys>,
    /// Shared-data key of each provider's record.
    record_keys: Vec<String>,
    waiters: BTreeMap<u32, Waiter>,
    inflight: HashMap<u32, Call>,
    kid_wanted: Vec<bool>,
    metrics: metrics::Metrics,
}

type Shared = Rc<RefCell<Worker>>;

/// The result cache in shared data; remembers whether a read found a live answer.
struct SharedCache {
    namespace: String,
    slots: u32,
    hit: std::cell::Cell<bool>,
}

impl ResultCache for SharedCache {
    fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
        let entry = host::read_shared(&slot_key(&self.namespace, digest, self.slots)).and_then(|bytes| CacheEntry::parse_for(&bytes, digest));
        let live = match (&entry, host::now()) {
            (Some(e), Some(now)) => matches!(CacheEntry::view(Some(e), digest, now), Cached::Hit(EntryState::Valid { .. } | EntryState::Refused { .. })),
            _ => false,
        };
        self.hit.set(self.hit.get() || live);
        entry
    }

    fn count_hit(&self) {
        self.hit.set(true);
    }
}

impl Worker {
    fn new(auth: Authenticator) -> Self {
        let providers = &auth.config.providers;
        let record_keys = providers
            .iter()
            .map(|p| {
                let identity = format!("{}|{:?}|{:?}|{}|{:?}", p.name, p.issuer, p.jwks_uri, p.discovery, p.mode);
                format!("atlassian-rest-auth/v1/keys/{}/{}", p.name, &TokenDigest::of(identity.as_bytes()).to_hex()[..16])
            })
            .collect();
        Worker {
            keys: providers.iter().map(ProviderKeys::new).collect(),
            kid_wanted: vec![false; providers.len()],
            record_keys,
            waiters: BTreeMap::new(),
            inflight: HashMap::new(),
            metrics: metrics::Metrics::default(),
            auth,
        }
    }

    fn cache(&self) -> SharedCache {
        SharedCache { namespace: self.auth.config.fingerprint.clone(), slots: self.auth.config.cache_entries, hit: std::cell::Cell::new(false) }
    }

    /// Decides a new request now; counts a cache hit or miss when the answer cache was involved.
    fn decide(&mut self, head: &RequestHead, now: UnixTime) -> Step {
        let cache = self.cache();
        let step = self.auth.start(head, &self.keys, &cache, now, true);
        if cache.hit.get() {
            self.metrics.count("cache.hit");
        } else if matches!(step, Step::Lookup(_) | Step::WaitForLookup { .. }) {
            self.metrics.count("cache.miss");
        }
        step
    }

    /// Whether anything is pending: the root then ticks fast.
    fn busy(&self, now: UnixTime) -> bool {
        !self.waiters.is_empty()
            || !self.inflight.is_empty()
            || self.auth.config.providers.iter().zip(&self.keys).any(|(p, k)| k.record.due(p, now, false).is_some() || !k.record.ready(p))
    }

    /// Provider `provider`'s lookup calls in flight from this worker (key fetches not counted).
    fn lookups_in_flight(&self, provider: usize) -> usize {
        self.inflight.values().filter(|call| matches!(call, Call::Lookup(asking, _) if asking.provider == provider)).count()
    }

    /// The latest a request that starts waiting now on `on` may wait.
    fn deadline(&self, on: WaitOn, provider: usize, now: UnixTime) -> UnixTime {
        let timeout = self.auth.config.providers.get(provider).map_or(5000, |p| p.timeout_ms);
        // A lookup may take two calls (Facebook); a key wait one.
        now.plus_millis(if matches!(on, WaitOn::Lookup(_)) { 2 * timeout + 1000 } else { timeout })
    }

    /// Pauses request `id` until `on` changes or `deadline` passes; a request that waits again
    /// keeps its first deadline, so no sequence of retries can hold it forever.
    fn park(&mut self, id: u32, head: RequestHead, on: WaitOn, deadline: UnixTime) {
        self.waiters.insert(id, Waiter { head, on, deadline });
    }
}

/// Shared-data key of the log-fingerprint key: one per Envoy, whatever the configuration, so
/// fingerprints stay comparable across workers and reloads.
const LOG_KEY: &str = "atlassian-rest-auth/v1/log-key";

fn stored_log_key() -> Option<LogKey> {
    host::read_shared(LOG_KEY).and_then(|bytes| LogKey::from_bytes(&bytes))
}

/// The Envoy's log key: the stored one, else a fresh one stored for every worker (the first
/// write wins where compare-and-swap can tell). Shared data cannot compare-and-swap a missing
/// value, so two workers starting at once may both store theirs: every round re-reads the stored
/// key (`sync`), and the workers agree again within a round.
pub(crate) fn shared_log_key() -> Option<LogKey> {
    if let Some(key) = stored_log_key() {
        return Some(key);
    }
    let fresh = LogKey::generate()?;
    host::update_shared(LOG_KEY, |current| current.and_then(LogKey::from_bytes).is_none().then(|| fresh.to_bytes().to_vec()));
    stored_log_key().or(Some(fresh))
}

/// Adopts the shared records other workers wrote, and the Envoy's log key.
fn sync(worker: &Shared) {
    if let Some(key) = stored_log_key() {
        worker.borrow_mut().auth.set_log_key(key);
    }
    let keys: Vec<(usize, String)> = worker.borrow().record_keys.iter().cloned().enumerate().collect();
    for (i, key) in keys {
        let record = host::read_shared(&key).map(|b| KeyRecord::parse(&b)).unwrap_or_default();
        let mut w = worker.borrow_mut();
        if record != w.keys[i].record {
            w.keys[i].adopt(record);
        }
    }
}

/// Sends `out`; the reply comes to whichever context is running now.
fn dispatch(out: &Outbound) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = out.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    hostcalls::dispatch_http_call(&out.cluster, headers, out.body.as_deref(), vec![], host::timeout(out))
        .map_err(|s| format!("cannot call cluster {:?} ({s:?}): is it defined in Envoy?", out.cluster))
}

/// Starts every key or discovery fetch that is due and not leased by another worker.
fn fetch_due(worker: &Shared, now: UnixTime) {
    let count = worker.borrow().keys.len();
    for i in 0..count {
        let (key, due, kid) = {
            let w = worker.borrow();
            let kid = w.kid_wanted[i];
            (w.record_keys[i].clone(), w.keys[i].record.due(&w.auth.config.providers[i], now, kid), kid)
        };
        let Some(kind) = due else { continue };
        let (record, won) = {
            let w = worker.borrow();
            let provider = &w.auth.config.providers[i];
            host::update_record(&key, |r| (r.due(provider, now, kid) == Some(kind)).then(|| r.leased(provider, now, kid)))
        };
        let outbound = {
            let mut w = worker.borrow_mut();
            w.keys[i].adopt(record.clone());
            if !won {
                continue;
            }
            w.kid_wanted[i] = false;
            let provider = &w.auth.config.providers[i];
            let uri = match kind {
                FetchKind::Discovery => provider.issuer.as_deref().and_then(discovery_uri),
                FetchKind::Jwks => record.jwks_uri(provider),
            };
            uri.map(|uri| Outbound::get_json(&w.auth.config, provider, &uri))
        };
        let sent = outbound.ok_or_else(|| format!("no URI to fetch {kind:?} from")).and_then(|out| dispatch(&out));
        let mut w = worker.borrow_mut();
        let name = w.auth.config.providers[i].name.clone();
        match sent {
            Ok(token) => {
                debug!("provider {name}: fetching {kind:?}");
                w.metrics.count(&format!("calls.{name}"));
                w.inflight.insert(token, Call::Fetch(i, kind, now));
            }
            Err(why) => {
                warn!("provider {name}: {why}");
                drop(w);
                let (record, _) = host::update_record(&key, |r| Some(r.with_failure(now)));
                worker.borrow_mut().keys[i].adopt(record);
            }
        }
    }
}

/// Claims the cache slot for a lookup and sends its first call; request `id` waits on the slot.
/// Past the provider's `max_concurrent_calls` (on this worker) nothing is sent: the verdict
/// (503) is returned for the caller to apply.
fn begin_lookup(worker: &Shared, id: u32, head: RequestHead, start: LookupStart, deadline: Option<UnixTime>, now: UnixTime) -> Option<Verdict> {
    let refused = {
        let w = worker.borrow();
        w.auth.over_capacity(&start, w.lookups_in_flight(start.provider))
    };
    if refused.is_some() {
        let name = provider_name(worker, start.provider);
        debug!("#{id} provider {name}: max_concurrent_calls reached, no new lookup");
        worker.borrow_mut().metrics.count(&format!("calls_capped.{name}"));
        return refused;
    }
    let (slot, lease) = {
        let w = worker.borrow();
        let timeout = w.auth.config.providers.get(start.provider).map_or(5000, |p| p.timeout_ms);
        (slot_key(&w.auth.config.fingerprint, &start.digest, w.auth.config.cache_entries), now.plus_millis(2 * timeout + 1000))
    };
    let digest = start.digest;
    let name = provider_name(worker, start.provider);
    let claimed = host::update_shared(&slot, |current| {
        let current = current.and_then(CacheEntry::parse);
        CacheEntry::claimable_by(current.as_ref(), &digest, &name, now).then(|| CacheEntry::pending(digest, lease).to_bytes())
    });
    let token = match parse_authorization(head.authorization.as_deref()) {
        Ok(Credentials::Bearer(token)) => token.to_string(),
        _ => String::new(),
    };
    {
        let mut w = worker.borrow_mut();
        let deadline = deadline.unwrap_or_else(|| w.deadline(WaitOn::Lookup(digest), start.provider, now));
        w.park(id, head, WaitOn::Lookup(digest), deadline);
    }
    if !claimed {
        return None; // Another request, here or on another worker, is asking already.
    }
    let asking = Asking { provider: start.provider, digest, step: start.step, token, token_exp: start.token_exp };
    send_lookup(worker, asking, &start.outbound, now);
    None
}

/// Sends one lookup call; a call that cannot be sent is an unavailable provider.
fn send_lookup(worker: &Shared, asking: Asking, out: &Outbound, now: UnixTime) {
    match dispatch(out) {
        Ok(token) => {
            let name = provider_name(worker, asking.provider);
            let mut w = worker.borrow_mut();
            w.metrics.count(&format!("calls.{name}"));
            w.inflight.insert(token, Call::Lookup(asking, now));
        }
        Err(why) => {
            warn!("provider {}: {why}", provider_name(worker, asking.provider));
            finish_lookup(worker, &asking, EntryState::Unavailable, now);
        }
    }
}

/// Stores a lookup's answer in its cache slot, where every waiting request finds it.
fn finish_lookup(worker: &Shared, asking: &Asking, state: EntryState, now: UnixTime) {
    let (slot, entry) = {
        let w = worker.borrow();
        let entry = w.auth.cache_entry(asking.provider, asking.digest, state, now, asking.token_exp);
        (slot_key(&w.auth.config.fingerprint, &asking.digest, w.auth.config.cache_entries), entry)
    };
    host::write_shared(&slot, &entry.to_bytes());
}

fn provider_name(worker: &Shared, index: usize) -> String {
    worker.borrow().auth.config.providers.get(index).map_or_else(String::new, |p| p.name.clone())
}

/// Re-decides waiters whose record or cache slot changed, or whose deadline passed.
fn resolve_waiters(worker: &Shared, current_context: u32, now: UnixTime) {
    let parked: Vec<(u32, WaitOn, UnixTime)> = worker.borrow().waiters.iter().map(|(&id, w)| (id, w.on, w.deadline)).collect();
    let cache = worker.borrow().cache();
    let mut ready = Vec::new();
    let mut lookups = Vec::new();
    for (id, on, deadline) in parked {
        let expired = now >= deadline;
        let (changed, failed) = match on {
            WaitOn::Record(provider, serial) => (worker.borrow().keys[provider].record.serial != serial, false),
            WaitOn::Lookup(digest) => {
                let entry = cache.get(&digest);
                let failed = entry.as_ref().is_some_and(|e| e.is_failure_for(&digest));
                (CacheEntry::view(entry.as_ref(), &digest, now) != Cached::Pending, failed)
            }
        };
        if !changed && !expired {
            continue;
        }
        let mut guard = worker.borrow_mut();
        let w = &mut *guard;
        let Some(waiter) = w.waiters.get(&id) else { continue };
        if failed {
            // The lookup this request waited for failed: 503 now, not another attempt.
            let token = match parse_authorization(waiter.head.authorization.as_deref()) {
                Ok(Credentials::Bearer(token)) => Some(token),
                _ => None,
            };
            let verdict = w.auth.refuse(crate::error::AuthError::ProviderUnavailable, token);
            w.waiters.remove(&id);
            ready.push((id, verdict));
            continue;
        }
        match w.auth.start(&waiter.head, &w.keys, &cache, now, !expired) {
            Step::Decide(verdict) => {
                w.waiters.remove(&id);
                ready.push((id, verdict));
            }
            Step::WaitForKeys { provider, kid_refresh } => {
                let serial = w.keys[provider].record.serial;
                if let Some(waiter) = w.waiters.get_mut(&id) {
                    waiter.on = WaitOn::Record(provider, serial);
                }
                w.kid_wanted[provider] |= kid_refresh;
            }
            Step::WaitForLookup { digest, .. } => {
                if let Some(waiter) = w.waiters.get_mut(&id) {
                    waiter.on = WaitOn::Lookup(digest);
                }
            }
            Step::Lookup(start) => {
                if let Some(waiter) = w.waiters.remove(&id) {
                    lookups.push((id, waiter.head, start, waiter.deadline));
                }
            }
        }
    }
    for (id, head, start, deadline) in lookups {
        if let Some(verdict) = begin_lookup(worker, id, head, start, Some(deadline), now) {
            ready.push((id, verdict));
        }
    }
    for (id, verdict) in ready {
        if hostcalls::set_effective_context(id).is_err() {
            continue; // The stream is gone.
        }
        record_verdict(worker, id, &verdict);
        if host::apply(&verdict.decision) {
            if let Err(s) = hostcalls::resume_http_request() {
                warn!("#{id} cannot resume request: {s:?}");
            }
        }
    }
    // Later host calls (dispatches) belong to the context the host called us on.
    let _ = hostcalls::set_effective_context(current_context);
}

/// One round: adopt shared records, start due fetches, settle waiters.
fn drive(worker: &Shared, current_context: u32, now: UnixTime) {
    sync(worker);
    fetch_due(worker, now);
    resolve_waiters(worker, current_context, now);
}

/// A reply to one of our calls, on whichever context dispatched it.
fn on_reply(worker: &Shared, current_context: u32, token: u32, body_size: usize) {
    let Some(call) = worker.borrow_mut().inflight.remove(&token) else {
        return;
    };
    let Some(now) = host::now() else {
        // No answer can be dated: the waiters get their 503 once the clock is back.
        error!("host clock unavailable: a provider reply was dropped");
        return;
    };
    let (provider, sent) = match &call {
        Call::Fetch(i, _, sent) => (*i, *sent),
        Call::Lookup(asking, sent) => (asking.provider, *sent),
    };
    let name = provider_name(worker, provider);
    worker.borrow_mut().metrics.observe(&format!("call_ms.{name}"), now.millis_since(sent));
    match call {
        Call::Fetch(i, kind, _) => on_fetch_reply(worker, i, kind, body_size, now),
        Call::Lookup(asking, _) => on_lookup_reply(worker, asking, body_size, now),
    }
    drive(worker, current_context, now);
}

fn on_fetch_reply(worker: &Shared, i: usize, kind: FetchKind, body_size: usize, now: UnixTime) {
    let host::CallReply { status, body, .. } = host::call_response(body_size, MAX_JWKS_BYTES, []);
    let key = worker.borrow().record_keys[i].clone();
    let summary = RefCell::new(Ok(String::new()));
    let (record, _) = {
        let w = worker.borrow();
        let provider = &w.auth.config.providers[i];
        host::update_record(&key, |r: &KeyRecord| {
            let result = match &body {
                Some(body) => r.after_reply(kind, provider, status, body, now),
                None => r.after_reply(kind, provider, 599, b"", now),
            };
            *summary.borrow_mut() = result.summary.map_err(|e| if body.is_none() { "response too large".to_string() } else { e });
            Some(result.record)
        })
    };
    worker.borrow_mut().keys[i].adopt(record);
    let name = provider_name(worker, i);
    let what = if kind == FetchKind::Jwks { "jwks" } else { "discovery" };
    let ok = summary.borrow().is_ok();
    worker.borrow_mut().metrics.count(&format!("{what}.{}.{name}", if ok { "ok" } else { "failed" }));
    match summary.into_inner() {
        Ok(what) => info!("provider {name}: {kind:?} ok: {what}"),
        Err(why) => warn!("provider {name}: {kind:?} failed: {why}; keeping the last good keys"),
    }
}

fn on_lookup_reply(worker: &Shared, asking: Asking, body_size: usize, now: UnixTime) {
    let reply = host::call_response(body_size, MAX_ANSWER_BYTES, REPLY_HEADERS);
    let [ratelimit_remaining, retry_after] = &reply.headers;
    let head = ReplyHead { status: reply.status, ratelimit_remaining: ratelimit_remaining.as_deref(), retry_after: retry_after.as_deref() };
    let progress = {
        let w = worker.borrow();
        let Some(provider) = w.auth.config.providers.get(asking.provider) else { return };
        match &reply.body {
            Some(body) => asking.step.on_reply(provider, head, body, now),
            None => Progress::Unavailable(Outage::Unparsable),
        }
    };
    let name = provider_name(worker, asking.provider);
    match progress {
        Progress::Next(step) => {
            let out = {
                let w = worker.borrow();
                let provider = &w.auth.config.providers[asking.provider];
                step.outbound(&w.auth.config, provider, &w.keys[asking.provider].record, &asking.token)
            };
            let next = Asking { step, ..asking };
            match out {
                Some(out) => send_lookup(worker, next, &out, now),
                None => finish_lookup(worker, &next, EntryState::Unavailable, now),
            }
        }
        Progress::Unavailable(outage) => {
            // Never cached as a refusal: the next request asks again.
            if outage.needs_operator() {
                // The client_id helps the operator; the secret is never logged.
                let client_id = worker.borrow().auth.config.providers.get(asking.provider).and_then(|p| p.client_id.clone()).unwrap_or_default();
                error!("provider {name}: {:?} {outage} (client_id {client_id:?}) token={}", asking.step, worker.borrow().auth.fingerprint(asking.digest));
            } else {
                warn!("provider {name}: {:?} unavailable: {outage} token={}", asking.step, worker.borrow().auth.fingerprint(asking.digest));
            }
            finish_lookup(worker, &asking, EntryState::Unavailable, now);
        }
        Progress::Done(state) => {
            let token = worker.borrow().auth.fingerprint(asking.digest);
            match &state {
                EntryState::Refused { refusal } => debug!("provider {name}: {:?} refused token={token}: {refusal:?}", asking.step),
                _ => debug!("provider {name}: {:?} ok token={token}", asking.step),
            }
            finish_lookup(worker, &asking, state, now);
        }
    }
}

/// Logs and counts a decision, and stores a verified result for the token's next requests.
fn record_verdict(worker: &Shared, id: u32, verdict: &Verdict) {
    worker.borrow_mut().metrics.verdict(verdict);
    if let Some(entry) = &verdict.remember {
        let w = worker.borrow();
        if let Some(digest) = entry.digest_bytes() {
            let key = slot_key(&w.auth.config.fingerprint, &digest, w.auth.config.cache_entries);
            // A verified result replaces whatever the slot held: one write, no compare-and-swap.
            host::write_shared(&key, &entry.to_bytes());
        }
    }
    if verdict.denied().is_some() {
        info!("#{id} {verdict}");
    } else {
        debug!("#{id} {verdict}");
    }
}
