//! Envoy stats through proxy-wasm (SPEC section 6). Envoy shows them as `wasmcustom.<name>`.
//!
//! Defined lazily, once per name per VM; Envoy adds up the same name across workers. Counters
//! are added up in module memory and sent to Envoy on the root context's tick (`flush`): a
//! request makes no host call to count, and stats lag one tick (25 ms) at most.

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Metric names come from the configuration and the filter itself, never from a client, so
/// they are hashed with FNV-1a: SipHash, which resists chosen keys, costs several times more in
/// wasm, and a request looks up two or three names.
type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<Fnv>>;

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

const PREFIX: &str = "atlassian_rest_auth";

/// A counter: its place in `Metrics::pending`.
pub(super) type Counter = usize;

/// Metric ids by kind and name: looked up on every request without allocating.
#[derive(Default)]
pub(super) struct Metrics {
    counters: HashMap<String, Option<Counter>>,
    /// Counters by group (`allowed`, `passed`) and name: counted per request.
    grouped: HashMap<&'static str, HashMap<String, Option<Counter>>>,
    /// Counters by group (`denied`) and two names (reason, provider): counted per refusal.
    paired: HashMap<&'static str, HashMap<String, HashMap<String, Option<Counter>>>>,
    histograms: HashMap<String, Option<u32>>,
    gauges: HashMap<String, Option<u32>>,
    /// Each defined counter's Envoy id and what it has counted since the last `flush`.
    pending: Vec<(u32, u64)>,
}

impl Metrics {
    /// Adds one to `counter`; Envoy sees it at the next `flush`.
    pub(super) fn add(&mut self, counter: Counter) {
        if let Some((_, n)) = self.pending.get_mut(counter) {
            *n = n.saturating_add(1);
        }
    }

    /// Sends what the counters counted since the last flush to Envoy (one host call per counter
    /// that moved).
    pub(super) fn flush(&mut self) {
        for (id, n) in &mut self.pending {
            if *n > 0 {
                let _ = hostcalls::increment_metric(*id, i64::try_from(*n).unwrap_or(i64::MAX));
                *n = 0;
            }
        }
    }

    /// Counter `name`, defined on first use (`None` if Envoy refused it).
    pub(super) fn counter(&mut self, name: &str) -> Option<Counter> {
        if let Some(counter) = self.counters.get(name) {
            return *counter;
        }
        let counter = self.define_counter(&format!("{PREFIX}.{name}"));
        self.counters.insert(name.to_string(), counter);
        counter
    }

    /// The id of histogram or gauge `name`, defined on first use (`None` if Envoy refused it).
    pub(super) fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        let names = match kind {
            MetricType::Histogram => &mut self.histograms,
            MetricType::Gauge => &mut self.gauges,
            _ => return None,
        };
        if let Some(id) = names.get(name) {
            return *id;
        }
        let id = define(kind, &format!("{PREFIX}.{name}"));
        names.insert(name.to_string(), id);
        id
    }

    /// Counter `group.name`, found without building its name once defined.
    pub(super) fn counter_in(&mut self, group: &'static str, name: &str) -> Option<Counter> {
        if let Some(counter) = self.grouped.get(group).and_then(|names| names.get(name)) {
            return *counter;
        }
        let counter = self.define_counter(&format!("{PREFIX}.{group}.{name}"));
        self.grouped
            .entry(group)
            .or_default()
            .insert(name.to_string(), counter);
        counter
    }

    /// Counter `group.first.second`, found without building its name once defined.
    pub(super) fn counter_in_pair(
        &mut self,
        group: &'static str,
        first: &str,
        second: &str,
    ) -> Option<Counter> {
        if let Some(counter) = self
            .paired
            .get(group)
            .and_then(|firsts| firsts.get(first))
            .and_then(|seconds| seconds.get(second))
        {
            return *counter;
        }
        let counter = self.define_counter(&format!("{PREFIX}.{group}.{first}.{second}"));
        self.paired
            .entry(group)
            .or_default()
            .entry(first.to_string())
            .or_default()
            .insert(second.to_string(), counter);
        counter
    }

    fn define_counter(&mut self, full: &str) -> Option<Counter> {
        let id = define(MetricType::Counter, full)?;
        self.pending.push((id, 0));
        Some(self.pending.len() - 1)
    }
}

fn define(kind: MetricType, full: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, full) {
        Ok(id) => Some(id),
        Err(s) => {
            warn!("cannot define metric {full}: {s:?}");
            None
        }
    }
}
