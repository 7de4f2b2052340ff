//! `FakeHost`: an in-memory `Host` for the CLI and for tests, which misbehaves on request.
//!
//! Shared data sits behind `Rc<RefCell<..>>` so that two workers (two hosts) can share it, as
//! Envoy's workers do. Dispatched calls wait in `calls` until the caller answers, fails or
//! drops them (or never does); a `responder` answers them as they are sent.

use super::{CallId, CallReply, Host, HostError, RequestId};
use crate::authenticator::Verdict;
use crate::decision::Decision;
use crate::outbound::Outbound;
use crate::time::UnixTime;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// Shared data: value and compare-and-swap token per key.
pub type SharedData = Rc<RefCell<HashMap<String, (Vec<u8>, u32)>>>;

/// Another worker's turn, played between two host calls of this one (given the key about to
/// be written).
pub type OtherWorker = Box<dyn FnOnce(&str)>;

/// Answers a call when it is dispatched (the CLI's HTTP client).
pub type Responder = Box<dyn FnMut(&Outbound) -> CallReply>;

/// An in-memory host with a clock the caller sets.
#[derive(Default)]
pub struct FakeHost {
    /// The clock; `None` plays a host that cannot tell the time.
    pub now: Option<UnixTime>,
    pub shared: SharedData,
    /// Calls sent and not yet answered (by `answer`, `fail`) or dropped (`forget`).
    pub calls: BTreeMap<CallId, Outbound>,
    /// Every call sent, in order.
    pub sent: Vec<Outbound>,
    /// Replies `responder` gave, for the caller to feed to `Worker::on_call_reply`.
    pub replies: Vec<(CallId, CallReply)>,
    /// When set, answers every call as it is sent.
    pub responder: Option<Responder>,
    /// Every dispatch fails (a cluster Envoy does not know).
    pub refuse_dispatch: bool,
    /// The next this many compare-and-swap writes fail with a mismatch (another worker won).
    pub cas_mismatches: u32,
    /// Runs once, just before the next shared-data write of a value (creating a key empty does
    /// not count), with the key about to be written: plays another worker that acts between
    /// this worker's read and its write.
    pub before_write: Option<OtherWorker>,
    /// The same, just before the next write that creates a key empty.
    pub before_create: Option<OtherWorker>,
    /// Requests whose client went away: resuming them fails.
    pub gone: HashSet<RequestId>,
    /// Verdicts applied to paused requests, in order.
    pub resumed: Vec<(RequestId, Verdict)>,
    /// What each request published for the access log (`Host::publish`), in order.
    pub published: Vec<(RequestId, String)>,
    /// No secure randomness: `Host::random` fails.
    pub no_randomness: bool,
    /// The current request's `Authorization` header, given to the worker when it asks
    /// (`Host::authorization`) for a `RequestHead` that came without one.
    pub authorization: Option<String>,
    /// How many times the worker read `authorization`.
    pub authorization_reads: u32,
    /// How many times the worker read the clock.
    pub clock_reads: Cell<u32>,
    pub counters: HashMap<String, u64>,
    pub gauges: HashMap<String, i64>,
    pub histograms: HashMap<String, Vec<u64>>,
    next_call: CallId,
}

impl FakeHost {
    /// A host at time `now` with shared data of its own.
    pub fn at(now: UnixTime) -> Self {
        FakeHost {
            now: Some(now),
            ..FakeHost::default()
        }
    }

    /// A second host (another Envoy worker) on the same shared data, at the same time.
    pub fn sharing(&self) -> Self {
        FakeHost {
            now: self.now,
            shared: Rc::clone(&self.shared),
            ..FakeHost::default()
        }
    }

    /// A copy of this host as it stands, with a copy of its shared data of its own (no
    /// responder): one world, set up once, for many runs that must not see each other.
    pub fn snapshot(&self) -> Self {
        FakeHost {
            now: self.now,
            shared: Rc::new(RefCell::new(self.shared.borrow().clone())),
            calls: self.calls.clone(),
            sent: self.sent.clone(),
            replies: self.replies.clone(),
            responder: None,
            refuse_dispatch: self.refuse_dispatch,
            cas_mismatches: self.cas_mismatches,
            before_write: None,
            before_create: None,
            gone: self.gone.clone(),
            resumed: self.resumed.clone(),
            published: self.published.clone(),
            no_randomness: self.no_randomness,
            authorization: self.authorization.clone(),
            authorization_reads: self.authorization_reads,
            clock_reads: self.clock_reads.clone(),
            counters: self.counters.clone(),
            gauges: self.gauges.clone(),
            histograms: self.histograms.clone(),
            next_call: self.next_call,
        }
    }

    /// Moves the clock by `ms` (either way).
    pub fn advance(&mut self, ms: i64) {
        self.now = self
            .now
            .map(|t| UnixTime::from_millis(t.as_millis().saturating_add_signed(ms)));
    }

    /// The oldest call not yet answered.
    pub fn next_call(&self) -> Option<(CallId, Outbound)> {
        self.calls.iter().next().map(|(id, out)| (*id, out.clone()))
    }

    /// Takes call `id` off the pending list, for the caller to answer it.
    pub fn take(&mut self, id: CallId) -> Option<Outbound> {
        self.calls.remove(&id)
    }

    /// Drops call `id` without an answer (Envoy cancelled it).
    pub fn forget(&mut self, id: CallId) {
        self.calls.remove(&id);
    }

    /// The decision request `id` was resumed with, if it was.
    pub fn decision_for(&self, id: RequestId) -> Option<&Decision> {
        self.verdict_for(id).map(|v| &v.decision)
    }

    /// The verdict request `id` was resumed with, if it was.
    pub fn verdict_for(&self, id: RequestId) -> Option<&Verdict> {
        self.resumed.iter().find(|(r, _)| *r == id).map(|(_, v)| v)
    }

    /// What request `id` published for the access log, if it did.
    pub fn published_for(&self, id: RequestId) -> Option<&str> {
        self.published
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, a)| a.as_str())
    }

    /// Counter `name`'s value.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

impl Host for FakeHost {
    fn now(&self) -> Option<UnixTime> {
        self.clock_reads.set(self.clock_reads.get() + 1);
        self.now
    }

    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let hook = if value.is_empty() {
            self.before_create.take()
        } else {
            self.before_write.take()
        };
        if let Some(other_worker) = hook {
            other_worker(key);
        }
        if cas.is_some() && self.cas_mismatches > 0 {
            self.cas_mismatches -= 1;
            return Err(HostError::CasMismatch);
        }
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map(|(_, c)| *c);
        if cas.is_some_and(|cas| Some(cas) != current) {
            return Err(HostError::CasMismatch);
        }
        shared.insert(
            key.to_string(),
            (value.to_vec(), current.unwrap_or(0).wrapping_add(1)),
        );
        Ok(())
    }

    fn dispatch(&mut self, call: &Outbound) -> Result<CallId, HostError> {
        if self.refuse_dispatch {
            return Err(HostError::Failed(format!("no cluster {}", call.cluster)));
        }
        self.next_call = self.next_call.wrapping_add(1);
        let id = self.next_call;
        self.sent.push(call.clone());
        match self.responder.as_mut() {
            Some(respond) => {
                let reply = respond(call);
                self.replies.push((id, reply));
            }
            None => {
                self.calls.insert(id, call.clone());
            }
        }
        Ok(id)
    }

    fn resume(&mut self, request: RequestId, verdict: &Verdict) -> bool {
        if self.gone.contains(&request) {
            return false;
        }
        self.resumed.push((request, verdict.clone()));
        true
    }

    fn publish(&mut self, request: RequestId, audit: &str) {
        self.published.push((request, audit.to_string()));
    }

    fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_default() += 1;
    }

    fn observe(&mut self, name: &str, value: u64) {
        self.histograms
            .entry(name.to_string())
            .or_default()
            .push(value);
    }

    fn gauge(&mut self, name: &str, delta: i64) {
        *self.gauges.entry(name.to_string()).or_default() += delta;
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        !self.no_randomness && getrandom::getrandom(buf).is_ok()
    }

    fn authorization(&mut self) -> Option<String> {
        self.authorization_reads += 1;
        self.authorization.clone()
    }
}
