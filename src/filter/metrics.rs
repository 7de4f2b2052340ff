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
        let full = format!("{PREFIX}.{name}");
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
}
