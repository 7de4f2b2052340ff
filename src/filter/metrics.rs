//! Envoy stats through proxy-wasm (SPEC section 6). Envoy shows them as `wasmcustom.<name>`.
//!
//! Defined lazily, once per name per VM; Envoy adds up the same name across workers.

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

const PREFIX: &str = "atlassian_rest_auth";

/// Metric ids by kind and name: looked up on every request without allocating.
#[derive(Default)]
pub(super) struct Metrics {
    counters: HashMap<String, Option<u32>>,
    /// Counters by group (`allowed`, `passed`) and name: counted per request.
    grouped: HashMap<&'static str, HashMap<String, Option<u32>>>,
    /// Counters by group (`denied`) and two names (reason, provider): counted per refusal.
    paired: HashMap<&'static str, HashMap<String, HashMap<String, Option<u32>>>>,
    histograms: HashMap<String, Option<u32>>,
    gauges: HashMap<String, Option<u32>>,
}

impl Metrics {
    /// The id of metric `name` of kind `kind`, defined on first use (`None` if Envoy refused it).
    pub(super) fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        let names = match kind {
            MetricType::Counter => &mut self.counters,
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

    /// The id of counter `group.name`, found without building its name once defined.
    pub(super) fn counter_in(&mut self, group: &'static str, name: &str) -> Option<u32> {
        let names = self.grouped.entry(group).or_default();
        if let Some(id) = names.get(name) {
            return *id;
        }
        let id = define(MetricType::Counter, &format!("{PREFIX}.{group}.{name}"));
        names.insert(name.to_string(), id);
        id
    }

    /// The id of counter `group.first.second`, found without building its name once defined.
    pub(super) fn counter_in_pair(
        &mut self,
        group: &'static str,
        first: &str,
        second: &str,
    ) -> Option<u32> {
        let firsts = self.paired.entry(group).or_default();
        if let Some(id) = firsts.get(first).and_then(|seconds| seconds.get(second)) {
            return *id;
        }
        let id = define(
            MetricType::Counter,
            &format!("{PREFIX}.{group}.{first}.{second}"),
        );
        firsts
            .entry(first.to_string())
            .or_default()
            .insert(second.to_string(), id);
        id
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
