//! The request lifecycle, sans-IO: paused requests, shared provider records and cache slots,
//! outgoing calls, their answers and deadlines. One `Worker` per VM (per Envoy thread).
//!
//! Provider records (keys, discovery) and token answers live in shared data, so one worker asks
//! a provider and every worker uses the answer. The worker reaches the world only through
//! `Host`: the proxy-wasm adapter implements it with host calls, `FakeHost` in memory.

#[cfg(not(target_arch = "wasm32"))]
pub mod fake;

use crate::authenticator::{
    Authenticator, LookupStart, Outcome, RequestHead, Routed, Step, Verdict,
};
use crate::cache::{slot_key, CacheEntry, Cached, EntryState, ResultCache};
use crate::config::ProviderId;
use crate::decision::Decision;
use crate::digest::{LogKey, TokenDigest};
use crate::error::AuthError;
use crate::jwks::MAX_JWKS_BYTES;
use crate::keys::{discovery_uri, FetchKind, KeyRecord, ProviderKeys};
use crate::lookup::{LookupStep, Outage, Progress, ReplyHead, MAX_ANSWER_BYTES};
use crate::outbound::Outbound;
use crate::time::UnixTime;
use log::{debug, error, info, warn};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

/// A paused request, as the host names it (Envoy: its HTTP context id).
pub type RequestId = u32;
/// An outgoing call, as the host names it (Envoy: the token of `dispatch_http_call`).
pub type CallId = u32;

/// Compare-and-swap attempts before a shared-data update gives up (another worker keeps winning).
const CAS_ATTEMPTS: usize = 8;
/// How long past its timeout a call may stay unanswered before the worker gives up on it: the
/// host's own timeout answers first; only a call the host dropped without a word gets here.
pub const CALL_MARGIN_MS: u64 = 1000;
/// With nothing pending, a tick does its round (shared records, due fetches) this often.
pub const IDLE_ROUND_MS: u64 = 1000;
/// Shared-data key of the log-fingerprint key: one per Envoy, whatever the configuration, so
/// fingerprints stay comparable across workers and reloads.
pub const LOG_KEY: &str = "atlassian-rest-auth/v1/log-key";
/// How long an allowed request waits for the form body its signature covers. Envoy hands a Wasm
/// filter the body of a request whose headers it paused only with the plugin's
/// `allow_on_headers_stop_iteration`; without it the body never comes, and the request gets a
/// 500 (`form body not delivered`) after this wait instead of hanging.
pub const FORM_BODY_WAIT_MS: u64 = 10_000;

/// The gauge of this worker's calls in flight (added up across workers).
pub const CALLS_IN_FLIGHT: &str = "calls_in_flight";

/// The provider a refusal names in its counter when none had been chosen (no credentials, a
/// malformed header or path, an unknown issuer...).
pub const NO_PROVIDER: &str = "none";

/// Counts `verdict`: `denied.<reason>.<provider>`, `allowed.<provider>` (both under `dry_run.`
/// in dry run, where nothing was refused or forwarded) or `passed.<why>`.
fn count_verdict(host: &mut dyn Host, verdict: &Verdict) {
    let (denied, allowed) = if verdict.dry_run {
        ("dry_run.denied", "dry_run.allowed")
    } else {
        ("denied", "allowed")
    };
    match &verdict.outcome {
        Outcome::Deny {
            error, provider, ..
        } => host.count_in_pair(
            denied,
            &error.code(),
            provider.as_deref().unwrap_or(NO_PROVIDER),
        ),
        Outcome::Allow { identity, .. } => host.count_in(allowed, &identity.provider),
        Outcome::Pass(why) => host.count_in("passed", why),
    }
}

/// Why a host operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Shared data changed since it was read: read again.
    CasMismatch,
    /// Anything else, said for the operator's log.
    Failed(String),
}

/// What the worker needs from its host. Nothing here may call back into the worker.
pub trait Host {
    /// The wall clock; `None` when the host cannot tell.
    fn now(&self) -> Option<UnixTime>;
    /// The value stored under `key` and its compare-and-swap token.
    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    /// Stores `value` under `key` if its token is still `cas` (`None`: whatever is there).
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;
    /// Sends `call` so that its answer does not depend on any request (Envoy: on the root
    /// context); the answer comes back through `Worker::on_call_reply`.
    fn dispatch(&mut self, call: &Outbound) -> Result<CallId, HostError>;
    /// Applies `verdict.decision` to paused request `request` and lets it go on (or answers
    /// it); false when the request is gone.
    fn resume(&mut self, request: RequestId, verdict: &Verdict) -> bool;
    /// Publishes `audit` (`Verdict::audit`) as request `request`'s decision for the access log
    /// (Envoy: filter state). Called once per decided request, after `resume` for a paused one.
    fn publish(&mut self, request: RequestId, audit: &str);
    /// Adds one to counter `name`.
    fn count(&mut self, name: &str);
    /// Adds one to counter `group.name`; a host may find its id without building the name (this
    /// is counted on every request).
    fn count_in(&mut self, group: &'static str, name: &str) {
        self.count(&format!("{group}.{name}"));
    }
    /// Adds one to counter `group.first.second`, like `count_in` (a refusal: reason, provider).
    fn count_in_pair(&mut self, group: &'static str, first: &str, second: &str) {
        self.count(&format!("{group}.{first}.{second}"));
    }
    /// Records `value` in histogram `name`.
    fn observe(&mut self, name: &str, value: u64);
    /// Moves gauge `name` by `delta` (a delta, not a value: every worker adds its share).
    fn gauge(&mut self, name: &str, delta: i64);
    /// Fills `buf` from a cryptographically secure source; false when there is none.
    fn random(&mut self, buf: &mut [u8]) -> bool;
    /// The `Authorization` header of the request being decided (`Worker::on_request` asks, in
    /// that request's callback, only when its rule needs a credential and the `RequestHead`
    /// came without one): a request its path alone decides never reads it.
    fn authorization(&mut self) -> Option<String>;
}

/// The answer to a call: `:status` (0 when none came), the `REPLY_HEADERS`, and the body
/// (`None` when it was larger than `Worker::reply_limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallReply {
    pub status: u32,
    pub headers: [Option<String>; 2],
    pub body: Option<Vec<u8>>,
}

/// What becomes of a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Applied at once, never stored: boxing would cost every request.
pub enum Admission {
    /// Apply this verdict's decision to the request now (it is already logged and counted).
    Decided(Verdict),
    /// The request waits: `Host::resume` will be called for it.
    Paused,
}

/// What a call in flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPurpose {
    /// Provider `provider`'s keys or discovery document.
    Fetch {
        provider: ProviderId,
        kind: FetchKind,
    },
    /// A step of a token lookup at provider `provider`.
    Lookup {
        provider: ProviderId,
        step: LookupStep,
    },
}

/// What a paused request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitOn {
    /// The provider's record to move past this serial (keys, discovery).
    Record(ProviderId, u64),
    /// The cache slot of this token to hold an answer from this provider.
    Lookup(ProviderId, TokenDigest),
}

/// A request paused until what it waits on changes or its deadline passes.
#[derive(Clone)]
struct Waiter {
    head: RequestHead,
    on: WaitOn,
    since: UnixTime,
    deadline: UnixTime,
}

/// A request the worker signs for the product (`forward.atlassian_oauth1`): what the
/// signature covers, and its allowed verdict while the form body it also covers is on its way.
#[derive(Clone)]
struct ToSign {
    method: String,
    path: String,
    body: FormBody,
    held: Option<Verdict>,
    /// When the request started: a form body not whole by `FORM_BODY_WAIT_MS` later is given up.
    since: UnixTime,
}

#[derive(Clone)]
enum FormBody {
    /// The request has no body the product reads as parameters.
    None,
    /// A form body is still arriving.
    Awaited,
    Arrived(Vec<u8>),
}

/// What an outgoing call is for.
#[derive(Clone)]
enum CallKind {
    Fetch(ProviderId, FetchKind),
    Lookup(Asking),
}

impl CallKind {
    fn provider(&self) -> ProviderId {
        match self {
            CallKind::Fetch(id, _) => *id,
            CallKind::Lookup(asking) => asking.provider,
        }
    }
}

/// An outgoing call in flight: sent at `sent`, given up at `expires` if never answered.
#[derive(Clone)]
struct Call {
    kind: CallKind,
    sent: UnixTime,
    expires: UnixTime,
}

/// A provider lookup in flight; holds the token for a second step (never logged).
#[derive(Clone)]
struct Asking {
    provider: ProviderId,
    digest: TokenDigest,
    step: LookupStep,
    token: String,
    token_exp: Option<u64>,
}

/// Per-VM state: the authentication core, the keys this worker has seen, paused requests and
/// calls in flight.
#[derive(Clone)]
pub struct Worker {
    auth: Authenticator,
    keys: Vec<ProviderKeys>,
    /// Shared-data key of each provider's record.
    record_keys: Vec<String>,
    waiters: BTreeMap<RequestId, Waiter>,
    /// Requests to sign once allowed (only with `forward.atlassian_oauth1`).
    to_sign: BTreeMap<RequestId, ToSign>,
    inflight: HashMap<CallId, Call>,
    /// Calls a request asked for, sent by `on_wake` or the next tick: a call sent while a request's
    /// callback runs is answered to that request only (the proxy-wasm SDK routes a reply to the
    /// context that was running when its call was sent), and lost if the client goes away.
    outbox: Vec<(CallKind, Outbound)>,
    /// Whether this callback may send calls (a tick or a reply), or must queue them (a request).
    may_send: bool,
    kid_wanted: Vec<bool>,
    last_round: UnixTime,
    /// This worker's name on the cache slots it claims (random).
    claimant: u64,
}

/// The result cache in shared data; remembers whether a read found a live answer.
struct SharedCache<'h> {
    host: &'h dyn Host,
    namespace: &'h str,
    slots: u32,
    now: UnixTime,
    hit: Cell<bool>,
}

impl ResultCache for SharedCache<'_> {
    fn get(&self, digest: &TokenDigest) -> Option<CacheEntry> {
        let entry = read_shared(self.host, &slot_key(self.namespace, digest, self.slots))
            .and_then(|bytes| CacheEntry::parse_for(&bytes, digest));
        let live = entry.as_ref().is_some_and(|e| {
            matches!(
                CacheEntry::view(Some(e), digest, self.now),
                Cached::Hit(EntryState::Valid { .. } | EntryState::Refused { .. })
            )
        });
        self.hit.set(self.hit.get() || live);
        entry
    }

    fn count_hit(&self) {
        self.hit.set(true);
    }
}

/// The value stored under `key`, if any.
fn read_shared(host: &dyn Host, key: &str) -> Option<Vec<u8>> {
    match host.shared_get(key) {
        Ok((bytes, _)) => bytes,
        Err(e) => {
            warn!("shared data {key}: read failed: {e:?}");
            None
        }
    }
}

/// Stores `value` under `key` whatever is there now.
fn write_shared(host: &mut dyn Host, key: &str, value: &[u8]) {
    if let Err(e) = host.shared_set(key, value, None) {
        warn!("shared data {key}: write failed: {e:?}");
    }
}

/// A random name for a worker's claims on cache slots (0 where the host gives no randomness:
/// every worker then has the same name, and a lost claim goes unnoticed, as before names).
fn claimant_id() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// Reads, changes and writes a shared value with compare-and-swap; `change` returning `None`
/// leaves it as it is. True when this call wrote it.
///
/// Shared data cannot compare-and-swap a key that does not exist yet: a write without a
/// compare-and-swap token creates it whatever another worker wrote meanwhile, so two workers that
/// both found a cache slot missing would both claim it and both call the provider. A missing key
/// is therefore first created empty (which `change` reads as absent), and the change is then made
/// by compare-and-swap like any other: of two workers, one wins. What is left is a worker whose
/// empty write lands after the other's whole claim, between two of its own consecutive host
/// calls: one extra provider call at worst, never a wrong answer.
fn update_shared(
    host: &mut dyn Host,
    key: &str,
    mut change: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match host.shared_get(key) {
            Ok(found) => found,
            Err(e) => {
                warn!("shared data {key}: read failed: {e:?}");
                return false;
            }
        };
        if bytes.is_none() && cas.is_none() {
            if let Err(e) = host.shared_set(key, &[], None) {
                warn!("shared data {key}: create failed: {e:?}");
                return false;
            }
            continue;
        }
        let current = bytes.as_deref().filter(|b| !b.is_empty());
        let Some(next) = change(current) else {
            return false;
        };
        match host.shared_set(key, &next, cas) {
            Ok(()) => return true,
            Err(HostError::CasMismatch) => continue,
            Err(e) => {
                warn!("shared data {key}: write failed: {e:?}");
                return false;
            }
        }
    }
    false
}

/// `update_shared` for a provider record: returns the record now stored and whether we wrote it.
fn update_record(
    host: &mut dyn Host,
    key: &str,
    mut change: impl FnMut(&KeyRecord) -> Option<KeyRecord>,
) -> (KeyRecord, bool) {
    let mut latest = KeyRecord::default();
    let wrote = update_shared(host, key, |bytes| {
        let current = bytes.map(KeyRecord::parse).unwrap_or_default();
        let next = change(&current);
        latest = next.clone().unwrap_or(current);
        next.map(|r| r.to_bytes())
    });
    (latest, wrote)
}

fn stored_log_key(host: &dyn Host) -> Option<LogKey> {
    read_shared(host, LOG_KEY).and_then(|bytes| LogKey::from_bytes(&bytes))
}

/// The Envoy's log key: the stored one, else a fresh one stored for every worker (the first
/// write wins where compare-and-swap can tell). Shared data cannot compare-and-swap a missing
/// value, so two workers starting at once may both store theirs: every round re-reads the stored
/// key, and the workers agree again within a round.
pub fn shared_log_key(host: &mut dyn Host) -> Option<LogKey> {
    if let Some(key) = stored_log_key(host) {
        return Some(key);
    }
    let fresh = LogKey::generate()?;
    update_shared(host, LOG_KEY, |current| {
        current
            .and_then(LogKey::from_bytes)
            .is_none()
            .then(|| fresh.to_bytes().to_vec())
    });
    stored_log_key(host).or(Some(fresh))
}

impl Worker {
    /// A worker for `auth`'s configuration, with no keys seen yet (inline keys excepted).
    pub fn new(auth: Authenticator) -> Self {
        let providers = &auth.config.providers;
        let record_keys = providers
            .iter()
            .map(|p| {
                let identity = format!(
                    "{}|{:?}|{:?}|{}|{:?}",
                    p.name, p.issuer, p.jwks_uri, p.discovery, p.mode
                );
                format!(
                    "atlassian-rest-auth/v1/keys/{}/{}",
                    p.name,
                    &TokenDigest::of(identity.as_bytes()).to_hex()[..16]
                )
            })
            .collect();
        Worker {
            keys: providers.iter().map(ProviderKeys::new).collect(),
            kid_wanted: vec![false; providers.len()],
            record_keys,
            waiters: BTreeMap::new(),
            to_sign: BTreeMap::new(),
            inflight: HashMap::new(),
            outbox: Vec::new(),
            may_send: false,
            last_round: UnixTime::default(),
            claimant: claimant_id(),
            auth,
        }
    }

    /// The authentication core this worker drives.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Whether anything is pending: the host then ticks the worker often.
    pub fn busy(&self, now: UnixTime) -> bool {
        !self.waiters.is_empty()
            || self.to_sign.values().any(|t| t.held.is_some())
            || !self.inflight.is_empty()
            || !self.outbox.is_empty()
            || self
                .auth
                .config
                .providers
                .iter()
                .zip(&self.keys)
                .any(|(p, k)| k.record.due(p, now, false).is_some() || !k.record.ready(p))
    }

    /// Calls this worker has in flight (sent, not yet answered or given up).
    pub fn calls_in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Calls a request queued, waiting for `on_wake` or the next tick to send them.
    pub fn calls_queued(&self) -> usize {
        self.outbox.len()
    }

    /// Requests paused on this worker.
    pub fn paused(&self) -> usize {
        self.waiters.len()
    }

    /// Whether request `id` is paused (a body arriving meanwhile must wait too).
    pub fn is_paused(&self, id: RequestId) -> bool {
        self.waiters.contains_key(&id) || self.awaits_body(id)
    }

    /// Whether allowed requests are signed for the product (`forward.atlassian_oauth1`): the
    /// adapter then tells `RequestHead::form_body`, and hands over such a body when it is whole.
    pub fn signs_requests(&self) -> bool {
        self.auth.config.forward.atlassian_oauth1.is_some()
    }

    /// Whether request `id`'s form body is awaited (`on_request_body`).
    pub fn awaits_body(&self, id: RequestId) -> bool {
        self.to_sign
            .get(&id)
            .is_some_and(|t| matches!(t.body, FormBody::Awaited))
    }

    /// The whole form body of request `id` has arrived: the signed verdict to apply now, or
    /// `None` while its credential is still being checked (`Host::resume` follows).
    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        id: RequestId,
        body: &[u8],
    ) -> Option<Verdict> {
        let waiting = self.to_sign.get_mut(&id)?;
        if !matches!(waiting.body, FormBody::Awaited) {
            return None;
        }
        waiting.body = FormBody::Arrived(body.to_vec());
        let verdict = waiting.held.take()?;
        let verdict = self.signed(host, id, verdict)?;
        self.record_verdict(host, id, &verdict);
        Some(verdict)
    }

    /// How much of call `call`'s reply body to read; `None` for a call this worker is not waiting
    /// for (given up, or never sent): its reply is not read at all.
    pub fn reply_limit(&self, call: CallId) -> Option<usize> {
        self.inflight.get(&call).map(|c| match c.kind {
            CallKind::Fetch(..) => MAX_JWKS_BYTES,
            CallKind::Lookup(_) => MAX_ANSWER_BYTES,
        })
    }

    /// What call `call` is for, while it is in flight.
    pub fn call_purpose(&self, call: CallId) -> Option<CallPurpose> {
        self.inflight.get(&call).map(|c| match &c.kind {
            CallKind::Fetch(provider, kind) => CallPurpose::Fetch {
                provider: *provider,
                kind: *kind,
            },
            CallKind::Lookup(asking) => CallPurpose::Lookup {
                provider: asking.provider,
                step: asking.step,
            },
        })
    }

    /// A new request: decided now, or paused until `Host::resume` is called for it.
    /// Calls it needs are queued, never sent from the request's callback: `on_wake` (right
    /// after the callback) or the next `on_tick` sends them.
    pub fn on_request(
        &mut self,
        host: &mut dyn Host,
        id: RequestId,
        head: RequestHead,
    ) -> Admission {
        self.may_send = false;
        // What the method and path alone decide (an auth-none rule, a CORS preflight, a path
        // refused) reads neither the credential nor the clock.
        let rule = match self.auth.route_head(&head) {
            Routed::Decided(verdict) => return self.decided(host, id, verdict),
            Routed::Credential(rule) => rule,
        };
        let mut head = head;
        if head.authorization.is_none() {
            head.authorization = host.authorization();
        }
        let Some(now) = host.now() else {
            error!("#{id} host clock unavailable: no token can be judged");
            let verdict = self.auth.without_clock(&head);
            return self.decided(host, id, verdict);
        };
        if self.signs_requests() {
            let body = if head.form_body {
                FormBody::Awaited
            } else {
                FormBody::None
            };
            self.to_sign.insert(
                id,
                ToSign {
                    method: head.method.clone(),
                    path: head.path.clone(),
                    body,
                    held: None,
                    since: now,
                },
            );
        }
        let mut step = self.decide(host, &head, rule, now);
        if matches!(step, Step::WaitForKeys { .. }) {
            // Another worker may have fetched the keys already: look before waiting.
            self.sync(host);
            step = self.decide(host, &head, rule, now);
        }
        match step {
            Step::Decide(verdict) => self.decided(host, id, verdict),
            Step::WaitForKeys {
                provider,
                kid_refresh,
            } => {
                let on = WaitOn::Record(provider, self.serial(provider));
                let deadline = self.deadline(on, provider, now);
                self.park(id, head, on, now, deadline);
                self.want_kid(provider, kid_refresh);
                debug!(
                    "#{id} waiting for provider {}",
                    self.provider_name(provider)
                );
                self.fetch_due(host, now);
                Admission::Paused
            }
            Step::WaitForLookup { provider, digest } => {
                let on = WaitOn::Lookup(provider, digest);
                let deadline = self.deadline(on, provider, now);
                self.park(id, head, on, now, deadline);
                Admission::Paused
            }
            Step::Lookup(start) => match self.begin_lookup(host, id, head, start, None, now) {
                Some(verdict) => self.decided(host, id, verdict),
                None => Admission::Paused,
            },
        }
    }

    /// Request `id` ended (answered, reset by its client): forget its wait. Its calls go on:
    /// other requests may be waiting for their answers.
    pub fn on_request_done(&mut self, id: RequestId) {
        self.waiters.remove(&id);
        self.to_sign.remove(&id);
    }

    /// The host's timer: every `IDLE_ROUND_MS` when idle, on every tick when busy, a round of
    /// shared records, due fetches, expired calls and paused requests. True when it ran one.
    pub fn on_tick(&mut self, host: &mut dyn Host) -> bool {
        // Without a clock no fetch or deadline can be judged: wait for the next tick.
        let Some(now) = host.now() else { return false };
        // A clock that went back makes the last round look recent: run one now.
        let idle = !self.busy(now)
            && now >= self.last_round
            && now.millis_since(self.last_round) < IDLE_ROUND_MS;
        if idle {
            return false;
        }
        self.last_round = now;
        self.may_send = true;
        self.drive(host, now);
        true
    }

    /// The host woke the worker outside any request (the adapter asks for this right after a
    /// request queued calls): the queued calls go out now, not at the next tick.
    pub fn on_wake(&mut self, host: &mut dyn Host) {
        if self.outbox.is_empty() {
            return;
        }
        // Without a clock no call can be dated: the next tick sends them.
        let Some(now) = host.now() else { return };
        self.may_send = true;
        self.flush_outbox(host, now);
    }

    /// The VM is shutting down: its calls will never be answered; their share of the gauge goes.
    pub fn on_shutdown(&mut self, host: &mut dyn Host) {
        let lost = i64::try_from(self.inflight.len()).unwrap_or(i64::MAX);
        if lost > 0 {
            host.gauge(CALLS_IN_FLIGHT, -lost);
        }
        self.inflight.clear();
        self.outbox.clear();
    }

    /// The answer to call `call` (status 0 when the host got none: reset, timeout).
    pub fn on_call_reply(&mut self, host: &mut dyn Host, call: CallId, reply: CallReply) {
        let Some(sent) = self.inflight.remove(&call) else {
            return;
        };
        self.may_send = true;
        host.gauge(CALLS_IN_FLIGHT, -1);
        let Some(now) = host.now() else {
            // No answer can be dated: the slot or record is failed, so nobody waits on it.
            error!("host clock unavailable: a provider reply was dropped");
            self.give_up(host, sent.kind, sent.sent);
            return;
        };
        let name = self.provider_name(sent.kind.provider());
        host.observe(&format!("call_ms.{name}"), now.millis_since(sent.sent));
        match sent.kind {
            CallKind::Fetch(provider, kind) => {
                self.on_fetch_reply(host, provider, kind, reply, now)
            }
            CallKind::Lookup(asking) => self.on_lookup_reply(host, asking, reply, now),
        }
        self.drive(host, now);
    }

    fn cache<'h>(&'h self, host: &'h dyn Host, now: UnixTime) -> SharedCache<'h> {
        SharedCache {
            host,
            namespace: &self.auth.config.fingerprint,
            slots: self.auth.config.cache_entries,
            now,
            hit: Cell::new(false),
        }
    }

    fn slot(&self, digest: &TokenDigest) -> String {
        slot_key(
            &self.auth.config.fingerprint,
            digest,
            self.auth.config.cache_entries,
        )
    }

    /// Decides a new request now under rule `rule` (`Authenticator::route_head`); counts a cache
    /// hit or miss when the answer cache was involved.
    fn decide(
        &self,
        host: &mut dyn Host,
        head: &RequestHead,
        rule: Option<usize>,
        now: UnixTime,
    ) -> Step {
        let (step, hit) = {
            let cache = self.cache(host, now);
            let step = self
                .auth
                .start_routed(head, rule, &self.keys, &cache, now, true);
            (step, cache.hit.get())
        };
        if hit {
            host.count("cache.hit");
        } else if matches!(step, Step::Lookup(_) | Step::WaitForLookup { .. }) {
            host.count("cache.miss");
        }
        step
    }

    fn decided(&mut self, host: &mut dyn Host, id: RequestId, verdict: Verdict) -> Admission {
        let Some(verdict) = self.signed(host, id, verdict) else {
            return Admission::Paused;
        };
        self.record_verdict(host, id, &verdict);
        Admission::Decided(verdict)
    }

    /// `verdict` as it leaves for request `id`: an allowed request signed for the product when
    /// the configuration says so; `None` while the form body the signature covers is arriving
    /// (the verdict is held, and `on_request_body` finishes it).
    fn signed(&mut self, host: &mut dyn Host, id: RequestId, verdict: Verdict) -> Option<Verdict> {
        let Some(oauth) = self.auth.config.forward.atlassian_oauth1.clone() else {
            return Some(verdict);
        };
        let Some(mut request) = self.to_sign.remove(&id) else {
            return Some(verdict);
        };
        let Outcome::Allow { identity, token } = &verdict.outcome else {
            return Some(verdict); // Passed, refused or dry run: nothing is signed.
        };
        if verdict.dry_run {
            return Some(verdict);
        }
        let body = match &request.body {
            FormBody::Awaited => {
                request.held = Some(verdict);
                self.to_sign.insert(id, request);
                return None;
            }
            FormBody::None => None,
            FormBody::Arrived(body) => Some(body.as_slice()),
        };
        let now = host.now().map_or(0, UnixTime::as_secs);
        let mut random = |buf: &mut [u8]| host.random(buf);
        let signed = oauth.sign(
            &request.method,
            &request.path,
            body,
            identity.username.as_str(),
            now,
            &mut random,
        );
        let token = *token;
        Some(match signed {
            Ok(signed) => {
                let mut verdict = verdict;
                if let Decision::Continue { remove, set } = &mut verdict.decision {
                    // Set replaces: the client's `Authorization` goes with it.
                    remove.retain(|h| h != "authorization");
                    set.push((":path".into(), signed.path));
                    set.push(("authorization".into(), signed.authorization));
                }
                verdict
            }
            Err(err) => self
                .auth
                .refuse_fingerprint(err, Some(token))
                .by(Some(&identity.provider)),
        })
    }

    fn provider_name(&self, id: ProviderId) -> String {
        self.auth
            .config
            .provider(id)
            .map_or_else(String::new, |p| p.name.clone())
    }

    fn timeout_ms(&self, provider: ProviderId) -> u64 {
        self.auth
            .config
            .provider(provider)
            .map_or(5000, |p| p.timeout_ms)
    }

    /// The serial of provider `id`'s record as this worker last adopted it.
    fn serial(&self, id: ProviderId) -> u64 {
        id.of(&self.keys).map_or(0, |k| k.record.serial)
    }

    /// Asks for a refresh of provider `id`'s keys for an unknown kid (when `wanted`).
    fn want_kid(&mut self, id: ProviderId, wanted: bool) {
        if let Some(kid) = id.of_mut(&mut self.kid_wanted) {
            *kid |= wanted;
        }
    }

    /// Provider `provider`'s lookup calls in flight or queued on this worker (key fetches not counted).
    fn lookups_in_flight(&self, provider: ProviderId) -> usize {
        let is_lookup = |kind: &CallKind| matches!(kind, CallKind::Lookup(asking) if asking.provider == provider);
        self.inflight
            .values()
            .filter(|c| is_lookup(&c.kind))
            .count()
            + self
                .outbox
                .iter()
                .filter(|(kind, _)| is_lookup(kind))
                .count()
    }

    /// The latest a request that starts waiting now on `on` may wait.
    fn deadline(&self, on: WaitOn, provider: ProviderId, now: UnixTime) -> UnixTime {
        let timeout = self.timeout_ms(provider);
        // A lookup may take two calls (Facebook); a key wait one.
        now.plus_millis(if matches!(on, WaitOn::Lookup(..)) {
            2 * timeout + 1000
        } else {
            timeout
        })
    }

    /// Pauses request `id` until `on` changes or `deadline` passes; a request that waits again
    /// keeps its first deadline, so no sequence of retries can hold it forever.
    fn park(
        &mut self,
        id: RequestId,
        head: RequestHead,
        on: WaitOn,
        since: UnixTime,
        deadline: UnixTime,
    ) {
        self.waiters.insert(
            id,
            Waiter {
                head,
                on,
                since,
                deadline,
            },
        );
    }

    /// Adopts the shared records other workers wrote, and the Envoy's log key.
    fn sync(&mut self, host: &dyn Host) {
        if let Some(key) = stored_log_key(host) {
            self.auth.set_log_key(key);
        }
        for (key, keys) in self.record_keys.iter().zip(self.keys.iter_mut()) {
            let record = read_shared(host, key)
                .map(|b| KeyRecord::parse(&b))
                .unwrap_or_default();
            if record != keys.record {
                keys.adopt(record);
            }
        }
    }

    /// Sends `out` (or queues it for the next tick, in a request's callback) and remembers what
    /// it is for; a call that cannot be sent is given up at once.
    fn send(&mut self, host: &mut dyn Host, kind: CallKind, out: Outbound, now: UnixTime) {
        if !self.may_send {
            self.outbox.push((kind, out));
            return;
        }
        let name = self.provider_name(kind.provider());
        match host.dispatch(&out) {
            Ok(id) => {
                if let CallKind::Fetch(_, what) = &kind {
                    debug!("provider {name}: fetching {what:?}");
                }
                let expires = now.plus_millis(out.timeout_ms.saturating_add(CALL_MARGIN_MS));
                self.inflight.insert(
                    id,
                    Call {
                        kind,
                        sent: now,
                        expires,
                    },
                );
                host.gauge(CALLS_IN_FLIGHT, 1);
                host.count(&format!("calls.{name}"));
            }
            Err(e) => {
                warn!(
                    "provider {name}: cannot call cluster {:?} ({e:?}): is it defined in Envoy?",
                    out.cluster
                );
                self.give_up(host, kind, now);
            }
        }
    }

    /// Sends the calls requests queued since the last tick.
    /// A lookup whose slot another worker holds by now is not sent: its requests wait for that
    /// worker's answer (see `holds_claim`).
    fn flush_outbox(&mut self, host: &mut dyn Host, now: UnixTime) {
        for (kind, out) in std::mem::take(&mut self.outbox) {
            if let CallKind::Lookup(asking) = &kind {
                if !self.holds_claim(host, asking, now) {
                    debug!(
                        "provider {}: another worker is asking about token={}; not sent",
                        self.provider_name(asking.provider),
                        self.auth.fingerprint(asking.digest)
                    );
                    continue;
                }
            }
            self.send(host, kind, out, now);
        }
    }

    /// Whether this worker still holds the claim on `asking`'s slot, as its call is about to
    /// leave (claiming it again if it is free). A claim on a slot nobody had used can be lost to
    /// a worker that created the same slot a moment later (`update_shared`); checked here, once
    /// the request's callback has returned, the loser sees the winner's claim and sends nothing.
    fn holds_claim(&mut self, host: &mut dyn Host, asking: &Asking, now: UnixTime) -> bool {
        let (digest, me) = (asking.digest, self.claimant);
        let name = self.provider_name(asking.provider);
        let lease = self.lease(asking.provider, now);
        let mine = std::cell::Cell::new(false);
        let claimed = update_shared(host, &self.slot(&digest), |current| {
            let current = current.and_then(CacheEntry::parse);
            if current
                .as_ref()
                .is_some_and(|e| e.claimed_by(&digest, me, now))
            {
                mine.set(true);
                return None;
            }
            CacheEntry::claimable_by(current.as_ref(), &digest, &name, now)
                .then(|| CacheEntry::pending(digest, lease, me).to_bytes())
        });
        claimed || mine.get()
    }

    /// Starts every key or discovery fetch that is due and not leased by another worker.
    fn fetch_due(&mut self, host: &mut dyn Host, now: UnixTime) {
        for id in self.auth.config.provider_ids() {
            let (Some(provider), Some(&kid), Some(key)) = (
                self.auth.config.provider(id),
                id.of(&self.kid_wanted),
                id.of(&self.record_keys),
            ) else {
                continue;
            };
            let Some(kind) = id
                .of(&self.keys)
                .and_then(|k| k.record.due(provider, now, kid))
            else {
                continue;
            };
            let key = key.clone();
            let (record, won) = update_record(host, &key, |r| {
                (r.due(provider, now, kid) == Some(kind)).then(|| r.leased(provider, now, kid))
            });
            if let Some(keys) = id.of_mut(&mut self.keys) {
                keys.adopt(record.clone());
            }
            if !won {
                continue;
            }
            if let Some(kid) = id.of_mut(&mut self.kid_wanted) {
                *kid = false;
            }
            let uri = match kind {
                FetchKind::Discovery => provider.issuer.as_deref().and_then(discovery_uri),
                FetchKind::Jwks => record.jwks_uri(provider),
            };
            match uri {
                Some(uri) => {
                    let out = Outbound::get_json(&self.auth.config, provider, &uri);
                    self.send(host, CallKind::Fetch(id, kind), out, now);
                }
                None => {
                    warn!("provider {}: no URI to fetch {kind:?} from", provider.name);
                    let (record, _) = update_record(host, &key, |r| Some(r.with_failure(now)));
                    self.adopt(id, record);
                }
            }
        }
    }

    /// Adopts `record`, the shared record of provider `id` as stored now.
    fn adopt(&mut self, id: ProviderId, record: KeyRecord) {
        if let Some(keys) = id.of_mut(&mut self.keys) {
            keys.adopt(record);
        }
    }

    /// Claims the cache slot for a lookup and sends its first call; request `id` waits on the slot.
    /// Past the provider's `max_concurrent_calls` (on this worker) nothing is sent: the verdict
    /// (503) is returned for the caller to apply.
    fn begin_lookup(
        &mut self,
        host: &mut dyn Host,
        id: RequestId,
        head: RequestHead,
        start: LookupStart,
        deadline: Option<UnixTime>,
        now: UnixTime,
    ) -> Option<Verdict> {
        let name = self.provider_name(start.provider);
        if let Some(refused) = self
            .auth
            .over_capacity(&start, self.lookups_in_flight(start.provider))
        {
            debug!("#{id} provider {name}: max_concurrent_calls reached, no new lookup");
            host.count(&format!("calls_capped.{name}"));
            return Some(refused);
        }
        let digest = start.digest;
        let lease = self.lease(start.provider, now);
        let slot = self.slot(&digest);
        let claimed = update_shared(host, &slot, |current| {
            let current = current.and_then(CacheEntry::parse);
            CacheEntry::claimable_by(current.as_ref(), &digest, &name, now)
                .then(|| CacheEntry::pending(digest, lease, self.claimant).to_bytes())
        });
        let on = WaitOn::Lookup(start.provider, digest);
        let deadline = deadline.unwrap_or_else(|| self.deadline(on, start.provider, now));
        self.park(id, head, on, now, deadline);
        if !claimed {
            return None; // Another request, here or on another worker, is asking already.
        }
        let asking = Asking {
            provider: start.provider,
            digest,
            step: start.step,
            token: start.token,
            token_exp: start.token_exp,
        };
        self.send(host, CallKind::Lookup(asking), start.outbound, now);
        None
    }

    /// How long a claimed cache slot stays pending: one call's timeout and margin. The worker
    /// that claimed it writes an answer (or a failure) by then; only a worker that died leaves
    /// it, and the requests waiting on it then ask again with time left for their own call.
    fn lease(&self, provider: ProviderId, now: UnixTime) -> UnixTime {
        now.plus_millis(self.timeout_ms(provider).saturating_add(CALL_MARGIN_MS))
    }

    /// Stores a lookup's answer in its cache slot, where every waiting request finds it.
    fn finish_lookup(
        &self,
        host: &mut dyn Host,
        asking: &Asking,
        state: EntryState,
        now: UnixTime,
    ) {
        let entry =
            self.auth
                .cache_entry(asking.provider, asking.digest, state, now, asking.token_exp);
        write_shared(host, &self.slot(&asking.digest), &entry.to_bytes());
    }

    /// A call that will never be answered: its lookup failed (the slot says so, and the token is
    /// forgotten with the call), or its fetch failed (the record says so).
    fn give_up(&mut self, host: &mut dyn Host, kind: CallKind, now: UnixTime) {
        match kind {
            CallKind::Lookup(asking) => {
                self.finish_lookup(host, &asking, EntryState::Unavailable, now)
            }
            CallKind::Fetch(id, _) => {
                let Some(key) = id.of(&self.record_keys).cloned() else {
                    return;
                };
                let (record, _) = update_record(host, &key, |r| Some(r.with_failure(now)));
                self.adopt(id, record);
            }
        }
    }

    /// Gives up on calls past their expiry. A clock that went back re-dates them from now, so a
    /// jump can neither keep a call forever nor end one early by more than the jump.
    fn expire_calls(&mut self, host: &mut dyn Host, now: UnixTime) {
        let mut expired = Vec::new();
        for (&id, call) in &mut self.inflight {
            if now < call.sent {
                call.expires = now.plus_millis(call.expires.millis_since(call.sent));
                call.sent = now;
            }
            if now >= call.expires {
                expired.push(id);
            }
        }
        for id in expired {
            let Some(call) = self.inflight.remove(&id) else {
                continue;
            };
            host.gauge(CALLS_IN_FLIGHT, -1);
            let name = self.provider_name(call.kind.provider());
            warn!(
                "provider {name}: a call got no answer in {} ms; given up",
                now.millis_since(call.sent)
            );
            host.count(&format!("calls_expired.{name}"));
            self.give_up(host, call.kind, now);
        }
    }

    /// One round: send queued calls, adopt shared records, start due fetches, give up on lost
    /// calls, settle waiters.
    fn drive(&mut self, host: &mut dyn Host, now: UnixTime) {
        self.flush_outbox(host, now);
        self.sync(host);
        self.fetch_due(host, now);
        self.expire_calls(host, now);
        self.resolve_waiters(host, now);
        self.expire_form_bodies(host, now);
    }

    /// Gives up allowed requests whose form body has not come within `FORM_BODY_WAIT_MS`.
    fn expire_form_bodies(&mut self, host: &mut dyn Host, now: UnixTime) {
        let late: Vec<RequestId> = self
            .to_sign
            .iter()
            .filter(|(_, t)| t.held.is_some() && now.millis_since(t.since) >= FORM_BODY_WAIT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(request) = self.to_sign.remove(&id) else {
                continue;
            };
            let (token, provider) = match request.held.as_ref().map(|v| &v.outcome) {
                Some(Outcome::Allow { token, identity }) => {
                    (Some(*token), Some(identity.provider.as_str()))
                }
                _ => (None, None),
            };
            error!(
                "#{id} the form body to sign never came: Envoy passes request bodies to this \
                 filter only with allow_on_headers_stop_iteration: true in its plugin config"
            );
            let verdict = self
                .auth
                .refuse_fingerprint(AuthError::FormBodyNotDelivered, token)
                .by(provider);
            if host.resume(id, &verdict) {
                self.record_verdict(host, id, &verdict);
            }
        }
    }

    /// Re-decides waiters whose record or cache slot changed, or whose deadline passed.
    fn resolve_waiters(&mut self, host: &mut dyn Host, now: UnixTime) {
        let mut ready = Vec::new();
        let mut lookups = Vec::new();
        let ids: Vec<RequestId> = self.waiters.keys().copied().collect();
        for id in ids {
            let Some(waiter) = self.waiters.get_mut(&id) else {
                continue;
            };
            if now < waiter.since {
                // The clock went back: the wait keeps its length, counted from now.
                waiter.deadline = now.plus_millis(waiter.deadline.millis_since(waiter.since));
                waiter.since = now;
            }
            let (on, expired) = (waiter.on, now >= waiter.deadline);
            let (changed, failed) = match on {
                WaitOn::Record(provider, serial) => (self.serial(provider) != serial, false),
                WaitOn::Lookup(_, digest) => {
                    let entry = self.cache(host, now).get(&digest);
                    let failed = entry.as_ref().is_some_and(|e| {
                        e.is_failure_for(&digest)
                            && CacheEntry::view(Some(e), &digest, now) != Cached::Miss
                    });
                    (
                        CacheEntry::view(entry.as_ref(), &digest, now) != Cached::Pending,
                        failed,
                    )
                }
            };
            if !changed && !expired {
                continue;
            }
            if let (true, WaitOn::Lookup(provider, digest)) = (failed, on) {
                // The lookup this request waited for failed: 503 now, not another attempt.
                self.waiters.remove(&id);
                ready.push((
                    id,
                    self.auth
                        .refuse_digest(AuthError::ProviderUnavailable, Some(digest))
                        .by(self.auth.provider_name(provider)),
                ));
                continue;
            }
            let step = {
                let Some(waiter) = self.waiters.get(&id) else {
                    continue;
                };
                let cache = self.cache(host, now);
                self.auth
                    .start(&waiter.head, &self.keys, &cache, now, !expired)
            };
            match step {
                Step::Decide(verdict) => {
                    self.waiters.remove(&id);
                    ready.push((id, verdict));
                }
                Step::WaitForKeys {
                    provider,
                    kid_refresh,
                } => {
                    let serial = self.serial(provider);
                    if let Some(waiter) = self.waiters.get_mut(&id) {
                        waiter.on = WaitOn::Record(provider, serial);
                    }
                    self.want_kid(provider, kid_refresh);
                }
                Step::WaitForLookup { provider, digest } => {
                    if let Some(waiter) = self.waiters.get_mut(&id) {
                        waiter.on = WaitOn::Lookup(provider, digest);
                    }
                }
                Step::Lookup(start) => {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        lookups.push((id, waiter.head, start, waiter.deadline));
                    }
                }
            }
        }
        for (id, head, start, deadline) in lookups {
            if let Some(verdict) = self.begin_lookup(host, id, head, start, Some(deadline), now) {
                self.waiters.remove(&id);
                ready.push((id, verdict));
            }
        }
        // A kid refresh asked for while settling starts now, not a round later.
        if self.kid_wanted.iter().any(|&k| k) {
            self.fetch_due(host, now);
        }
        for (id, verdict) in ready {
            let Some(verdict) = self.signed(host, id, verdict) else {
                continue; // Held for its form body.
            };
            if host.resume(id, &verdict) {
                self.record_verdict(host, id, &verdict);
            }
        }
    }

    fn on_fetch_reply(
        &mut self,
        host: &mut dyn Host,
        id: ProviderId,
        kind: FetchKind,
        reply: CallReply,
        now: UnixTime,
    ) {
        let (Some(key), Some(provider)) = (
            id.of(&self.record_keys).cloned(),
            self.auth.config.provider(id),
        ) else {
            return;
        };
        let mut summary = Ok(String::new());
        let (record, _) = update_record(host, &key, |r| {
            let result = match &reply.body {
                Some(body) => r.after_reply(kind, provider, reply.status, body, now),
                None => r.after_reply(kind, provider, 599, b"", now),
            };
            summary = result.summary.map_err(|e| {
                if reply.body.is_none() {
                    "response too large".to_string()
                } else {
                    e
                }
            });
            Some(result.record)
        });
        let name = provider.name.clone();
        self.adopt(id, record);
        let what = if kind == FetchKind::Jwks {
            "jwks"
        } else {
            "discovery"
        };
        host.count(&format!(
            "{what}.{}.{name}",
            if summary.is_ok() { "ok" } else { "failed" }
        ));
        match summary {
            Ok(what) => info!("provider {name}: {kind:?} ok: {what}"),
            Err(why) => {
                warn!("provider {name}: {kind:?} failed: {why}; keeping the last good keys")
            }
        }
    }

    fn on_lookup_reply(
        &mut self,
        host: &mut dyn Host,
        asking: Asking,
        reply: CallReply,
        now: UnixTime,
    ) {
        let [ratelimit_remaining, retry_after] = &reply.headers;
        let head = ReplyHead {
            status: reply.status,
            ratelimit_remaining: ratelimit_remaining.as_deref(),
            retry_after: retry_after.as_deref(),
        };
        let Some(provider) = self.auth.config.provider(asking.provider) else {
            return;
        };
        let progress = match &reply.body {
            Some(body) => asking.step.on_reply(provider, head, body, now),
            None => Progress::Unavailable(Outage::Unparsable),
        };
        let name = provider.name.clone();
        match progress {
            Progress::Next(step) => {
                let out = asking.provider.of(&self.keys).and_then(|k| {
                    step.outbound(&self.auth.config, provider, &k.record, &asking.token)
                });
                let next = Asking { step, ..asking };
                match out {
                    Some(out) => {
                        // The slot stays this worker's for the second call too.
                        let pending = CacheEntry::pending(
                            next.digest,
                            self.lease(next.provider, now),
                            self.claimant,
                        );
                        write_shared(host, &self.slot(&next.digest), &pending.to_bytes());
                        self.send(host, CallKind::Lookup(next), out, now);
                    }
                    None => self.finish_lookup(host, &next, EntryState::Unavailable, now),
                }
            }
            Progress::Unavailable(outage) => {
                // Never cached as a refusal: the next request asks again.
                let token = self.auth.fingerprint(asking.digest);
                if outage.needs_operator() {
                    // The client_id helps the operator; the secret is never logged.
                    let client_id = provider.client_id.clone().unwrap_or_default();
                    error!(
                        "provider {name}: {:?} {outage} (client_id {client_id:?}) token={token}",
                        asking.step
                    );
                } else {
                    warn!(
                        "provider {name}: {:?} unavailable: {outage} token={token}",
                        asking.step
                    );
                }
                self.finish_lookup(host, &asking, EntryState::Unavailable, now);
            }
            Progress::Done(state) => {
                let token = self.auth.fingerprint(asking.digest);
                match &state {
                    EntryState::Refused { refusal } => debug!(
                        "provider {name}: {:?} refused token={token}: {refusal:?}",
                        asking.step
                    ),
                    _ => debug!("provider {name}: {:?} ok token={token}", asking.step),
                }
                self.finish_lookup(host, &asking, state, now);
            }
        }
    }

    /// Logs, counts and publishes a decision (for the access log), and stores a verified result
    /// for the token's next requests.
    fn record_verdict(&self, host: &mut dyn Host, id: RequestId, verdict: &Verdict) {
        host.publish(id, &verdict.audit());
        count_verdict(host, verdict);
        if let Some(entry) = &verdict.remember {
            if let Some(digest) = entry.digest_bytes() {
                // A verified result replaces whatever the slot held: one write, no compare-and-swap.
                write_shared(host, &self.slot(&digest), &entry.to_bytes());
            }
        }
        if verdict.denied().is_some() {
            info!("#{id} {verdict}");
        } else {
            debug!("#{id} {verdict}");
        }
    }
}
