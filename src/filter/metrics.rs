//! Envoy stats through proxy-wasm (SPEC section 6). Envoy shows them as `wasmcustom.<name>`.
//!
//! Defined lazily, once per name per VM; Envoy adds up the same name across workers.

use crate::authenticator::{Outcome, Verdict};
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

const PREFIX: &str = "atlassian_rest_auth";

/// Metric ids by group (`allowed`, `denied`, ...) and name: looked up on every request without
/// allocating.
#[derive(Default)]
pub(super) struct Metrics {
    ids: HashMap<&'static str, HashMap<String, Option<u32>>>,
}

impl Metrics {
    fn id(&mut self, kind: MetricType, group: &'static str, name: &str) -> Option<u32> {
        let names = self.ids.entry(group).or_default();
        if let Some(id) = names.get(name) {
            return *id;
        }
        let full = if group.is_empty() { format!("{PREFIX}.{name}") } else { format!("{PREFIX}.{group}.{name}") };
        let id = match hostcalls::define_metric(kind, &full) {
            Ok(id) => Some(id),
            Err(s) => {
                warn!("cannot define metric {full}: {s:?}");
                None
            }
        };
        names.insert(name.to_string(), id);
        id
    }

    /// Adds one to counter `name`.
    pub(super) fn count(&mut self, name: &str) {
        self.count_in("", name);
    }

    /// Adds one to counter `group.name`.
    fn count_in(&mut self, group: &'static str, name: &str) {
        if let Some(id) = self.id(MetricType::Counter, group, name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    /// Records `value` in histogram `name`.
    pub(super) fn observe(&mut self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, "", name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Counts a decision: allowed per provider, denied per reason, passed per why.
    pub(super) fn verdict(&mut self, verdict: &Verdict) {
        match &verdict.outcome {
            Outcome::Deny { error, .. } => self.count_in("denied", &error.code()),
            Outcome::Allow { identity, .. } => self.count_in("allowed", &identity.provider),
            Outcome::Pass(why) => self.count_in("passed", why),
        }
    }
}
