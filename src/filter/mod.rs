//! The proxy-wasm adapter: the only code that names `proxy_wasm`. No auth rule lives here.
//!
//! One `Worker` per VM (per Envoy thread) is shared by the root context and its HTTP contexts.
//! Key records live in shared data, so one worker fetches and every worker uses the result.

mod host;
mod http;
mod root;

use crate::authenticator::{Authenticator, RequestHead, Step, Verdict};
use crate::digest::TokenDigest;
use crate::jwks::MAX_JWKS_BYTES;
use crate::keys::{discovery_uri, FetchKind, KeyRecord, ProviderKeys};
use crate::outbound::Outbound;
use crate::time::UnixTime;
use log::{debug, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(root::AuthRoot::new(context_id)));
}}

/// A request paused until its provider's keys change or its deadline passes.
struct Waiter {
    head: RequestHead,
    provider: usize,
    /// The record serial the request was decided against.
    serial: u64,
    deadline: UnixTime,
}

/// Per-VM state shared by the root context and the HTTP contexts it creates.
pub(crate) struct Worker {
    auth: Authenticator,
    keys: Vec<ProviderKeys>,
    /// Shared-data key of each provider's record.
    record_keys: Vec<String>,
    waiters: BTreeMap<u32, Waiter>,
    inflight: HashMap<u32, (usize, FetchKind)>,
    kid_wanted: Vec<bool>,
}

type Shared = Rc<RefCell<Worker>>;

impl Worker {
    fn new(auth: Authenticator) -> Self {
        let providers = &auth.config.providers;
        let record_keys = providers
            .iter()
            .map(|p| {
                let identity = format!("{}|{:?}|{:?}|{}", p.name, p.issuer, p.jwks_uri, p.discovery);
                format!("atlassian-rest-auth/v1/keys/{}/{}", p.name, &TokenDigest::of(identity.as_bytes()).to_hex()[..16])
            })
            .collect();
        Worker {
            keys: providers.iter().map(ProviderKeys::new).collect(),
            kid_wanted: vec![false; providers.len()],
            record_keys,
            waiters: BTreeMap::new(),
            inflight: HashMap::new(),
            auth,
        }
    }

    /// Whether anything is pending: the root then ticks fast.
    fn busy(&self, now: UnixTime) -> bool {
        !self.waiters.is_empty()
            || !self.inflight.is_empty()
            || self.auth.config.providers.iter().zip(&self.keys).any(|(p, k)| k.usable(p, now).is_none())
    }
}

/// Adopts the shared records other workers wrote.
fn sync(worker: &Shared) {
    let keys: Vec<(usize, String)> = {
        let w = worker.borrow();
        w.record_keys.iter().enumerate().filter(|(i, _)| w.auth.config.providers[*i].inline_keys.is_none()).map(|(i, k)| (i, k.clone())).collect()
    };
    for (i, key) in keys {
        let record = host::read_record(&key);
        let mut w = worker.borrow_mut();
        if record != w.keys[i].record {
            w.keys[i].adopt(record);
        }
    }
}

/// Starts every fetch that is due and not leased by another worker.
fn fetch_due(worker: &Shared, now: UnixTime) {
    let count = worker.borrow().keys.len();
    for i in 0..count {
        let (key, due, kid) = {
            let w = worker.borrow();
            let provider = &w.auth.config.providers[i];
            let kid = w.kid_wanted[i];
            (w.record_keys[i].clone(), w.keys[i].record.due(provider, now, kid), kid)
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
        let dispatched = outbound.ok_or(None).and_then(|out| {
            let headers: Vec<(&str, &str)> = out.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            hostcalls::dispatch_http_call(&out.cluster, headers, out.body.as_deref(), vec![], host::timeout(&out)).map_err(|s| Some((out.cluster.clone(), s)))
        });
        let mut w = worker.borrow_mut();
        let name = w.auth.config.providers[i].name.clone();
        match dispatched {
            Ok(token) => {
                debug!("provider {name}: fetching {kind:?}");
                w.inflight.insert(token, (i, kind));
            }
            Err(why) => {
                match why {
                    Some((cluster, s)) => warn!("provider {name}: cannot call cluster {cluster:?} ({s:?}): is it defined in Envoy?"),
                    None => warn!("provider {name}: no URI to fetch {kind:?} from"),
                }
                drop(w);
                let (record, _) = host::update_record(&key, |r| Some(r.with_failure(now)));
                worker.borrow_mut().keys[i].adopt(record);
            }
        }
    }
}

/// Re-decides waiters whose keys changed or whose deadline passed; resumes or answers them.
fn resolve_waiters(worker: &Shared, current_context: u32, now: UnixTime) {
    let ready: Vec<(u32, Verdict)> = {
        let mut guard = worker.borrow_mut();
        let w = &mut *guard;
        let mut ready = Vec::new();
        let mut wanted = Vec::new();
        for (&id, waiter) in w.waiters.iter_mut() {
            let serial = w.keys[waiter.provider].record.serial;
            let expired = now >= waiter.deadline;
            if serial == waiter.serial && !expired {
                continue;
            }
            match w.auth.start(&waiter.head, &w.keys, now, !expired) {
                Step::Decide(verdict) => ready.push((id, verdict)),
                Step::WaitForKeys { provider, kid_refresh } => {
                    waiter.provider = provider;
                    waiter.serial = w.keys[provider].record.serial;
                    if kid_refresh {
                        wanted.push(provider);
                    }
                }
            }
        }
        for (id, _) in &ready {
            w.waiters.remove(id);
        }
        for p in wanted {
            w.kid_wanted[p] = true;
        }
        ready
    };
    for (id, verdict) in ready {
        if hostcalls::set_effective_context(id).is_err() {
            continue; // The stream is gone.
        }
        log_verdict(id, &verdict);
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

/// A reply to one of our fetches, on whichever context dispatched it.
fn on_fetch_reply(worker: &Shared, current_context: u32, token: u32, body_size: usize) {
    let now = host::now();
    let Some((i, kind)) = worker.borrow_mut().inflight.remove(&token) else {
        return;
    };
    let (status, body) = host::call_response(body_size, MAX_JWKS_BYTES);
    let (key, name) = {
        let w = worker.borrow();
        (w.record_keys[i].clone(), w.auth.config.providers[i].name.clone())
    };
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
    match summary.into_inner() {
        Ok(what) => info!("provider {name}: {kind:?} ok: {what}"),
        Err(why) => warn!("provider {name}: {kind:?} failed: {why}; keeping the last good keys"),
    }
    drive(worker, current_context, now);
}

fn log_verdict(id: u32, verdict: &Verdict) {
    if verdict.denied.is_some() {
        info!("#{id} {}", verdict.note);
    } else {
        debug!("#{id} {}", verdict.note);
    }
}
