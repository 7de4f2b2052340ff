//! Envoy stats through proxy-wasm (SPEC section 6). Envoy shows them as `wasmcustom.<name>`.
//!
//! Defined lazily, once per name per VM; Envoy adds up the same name across workers.

use crate::authenticator::Verdict;
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

const PREFIX: &str = "atlassian_rest_auth";

#[derive(Default)]
pub(super) struct Metrics {
    ids: HashMap<String, Option<u32>>,
}

impl Metrics {
    fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        *self.ids.entry(name.to_string()).or_insert_with(|| match hostcalls::define_metric(kind, &format!("{PREFIX}.{name}")) {
            Ok(id) => Some(id),
            Err(s) => {
                warn!("cannot define metric {name}: {s:?}");
                None
            }
        })
    }

    /// Adds one to counter `name`.
    pub(super) fn count(&mut self, name: &str) {
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    /// Records `value` in histogram `name`.
    pub(super) fn observe(&mut self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Counts a decision: allowed per provider, denied per reason, passed per why.
    pub(super) fn verdict(&mut self, verdict: &Verdict) {
        match (&verdict.denied, &verdict.identity, verdict.passed) {
            (Some(reason), _, _) => self.count(&format!("denied.{}", reason.code())),
            (None, Some(identity), _) => self.count(&format!("allowed.{}", identity.provider)),
            (None, None, Some(why)) => self.count(&format!("passed.{why}")),
            (None, None, None) => self.count("passed.other"),
        }
    }
}
