//! The real host: `ProxyHost` implements the worker's `Host` with `proxy_wasm::hostcalls`, and
//! never panics on a host error.

use super::metrics::Metrics;
use crate::authenticator::Verdict;
use crate::decision::Decision;
use crate::lookup::REPLY_HEADERS;
use crate::outbound::Outbound;
use crate::time::UnixTime;
use crate::worker::{CallId, CallReply, Host, HostError, RequestId};
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// The filter-state key (`set_property` path) of the decision the filter publishes for the
/// access log: Envoy stores it as `wasm.atlassian_rest_auth`, read with
/// `%FILTER_STATE(wasm.atlassian_rest_auth:PLAIN)%`.
const AUDIT_PROPERTY: &str = "atlassian_rest_auth";

/// A paused request's decision, applied by `resume_all` once the worker is released, and what
/// it publishes for the access log.
pub struct Resumed {
    request: RequestId,
    decision: Decision,
    audit: Option<String>,
}

/// The host, for one callback of the VM.
pub struct ProxyHost<'m> {
    metrics: &'m mut Metrics,
    /// Decisions for paused requests, applied by `resume_all` once the worker is released.
    resumed: Vec<Resumed>,
}

impl<'m> ProxyHost<'m> {
    pub fn new(metrics: &'m mut Metrics) -> Self {
        ProxyHost {
            metrics,
            resumed: Vec::new(),
        }
    }

    pub fn into_resumed(self) -> Vec<Resumed> {
        self.resumed
    }
}

impl Host for ProxyHost<'_> {
    fn now(&self) -> Option<UnixTime> {
        now()
    }

    fn shared_get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        hostcalls::get_shared_data(key).map_err(|s| HostError::Failed(format!("{s:?}")))
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(HostError::CasMismatch),
            Err(s) => Err(HostError::Failed(format!("{s:?}"))),
        }
    }

    /// Envoy makes every call on the root context; the SDK answers it to the context running
    /// now, which the worker makes sure is the root (a tick or a reply, never a request).
    fn dispatch(&mut self, call: &Outbound) -> Result<CallId, HostError> {
        let headers: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|s| HostError::Failed(format!("{s:?}")))
    }

    fn resume(&mut self, request: RequestId, verdict: &Verdict) -> bool {
        self.resumed.push(Resumed {
            request,
            decision: verdict.decision.clone(),
            audit: None,
        });
        true
    }

    /// A paused request's decision is published once `resume_all` has made it the effective
    /// context; any other is the request this callback runs for, published now (one host call).
    fn publish(&mut self, request: RequestId, audit: &str) {
        match self.resumed.iter_mut().rev().find(|r| r.request == request) {
            Some(resumed) => resumed.audit = Some(audit.to_string()),
            None => set_audit(audit),
        }
    }

    fn count(&mut self, name: &str) {
        if let Some(counter) = self.metrics.counter(name) {
            self.metrics.add(counter);
        }
    }

    fn count_in(&mut self, group: &'static str, name: &str) {
        if let Some(counter) = self.metrics.counter_in(group, name) {
            self.metrics.add(counter);
        }
    }

    fn count_in_pair(&mut self, group: &'static str, first: &str, second: &str) {
        if let Some(counter) = self.metrics.counter_in_pair(group, first, second) {
            self.metrics.add(counter);
        }
    }

    fn observe(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metrics.id(MetricType::Histogram, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn gauge(&mut self, name: &str, delta: i64) {
        if let Some(id) = self.metrics.id(MetricType::Gauge, name) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    /// Read in the request's own callback (`Worker::on_request`), only when its rule needs it.
    fn authorization(&mut self) -> Option<String> {
        request_header("authorization")
    }

    /// WASI `random_get`, which Envoy serves from a CSPRNG.
    fn random(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

/// Publishes `audit` on the current stream's filter state, for the access log.
fn set_audit(audit: &str) {
    if let Err(s) = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(audit.as_bytes())) {
        warn!("cannot publish the decision for the access log: {s:?}");
    }
}

/// Publishes and applies each decision on its paused request and resumes it, then returns to
/// context `current`.
pub fn resume_all(resumed: Vec<Resumed>, current: u32) {
    if resumed.is_empty() {
        return;
    }
    for Resumed {
        request: id,
        decision,
        audit,
    } in resumed
    {
        if hostcalls::set_effective_context(id).is_err() {
            continue; // The stream is gone.
        }
        if let Some(audit) = audit {
            set_audit(&audit);
        }
        if apply(&decision) {
            if let Err(s) = hostcalls::resume_http_request() {
                warn!("#{id} cannot resume request: {s:?}");
            }
        }
    }
    // Later host calls belong to the context the host called us on.
    let _ = hostcalls::set_effective_context(current);
}

/// The host's wall clock; `None` when the host cannot tell (or says it is before 1970): no
/// token can then be judged, and the caller answers 503 rather than decide at time 0.
pub fn now() -> Option<UnixTime> {
    let since_epoch = hostcalls::get_current_time()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some(UnixTime::from_millis(
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
    ))
}

/// A request header of the current stream. Header values are bytes: a non-UTF-8 value is read
/// lossily (the SDK's `get_map_value` would panic on it), so it fails every check it meets.
pub fn request_header(name: &str) -> Option<String> {
    header_value(MapType::HttpRequestHeaders, name)
}

/// The first `size` bytes of the current stream's request body (what Envoy has buffered).
pub fn request_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Whether the current stream has request header `name` (with any value, valid UTF-8 or not).
/// A host error counts as present: the caller then removes the header anyway.
fn request_header_present(name: &str) -> bool {
    !matches!(
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name),
        Ok(None)
    )
}

fn header_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Applies `decision` to the current stream; true when the request may continue upstream.
pub fn apply(decision: &Decision) -> bool {
    match decision {
        Decision::Continue { remove, set } => {
            // Setting a header replaces every value the client sent (Envoy's `setCopy`): a
            // header about to be set is not removed first (one host call fewer per allowed
            // request; `tests/e2e_jwt.rs` sends it twice to hold Envoy to this).
            for name in remove.iter().filter(|r| !set.iter().any(|(n, _)| n == *r)) {
                // Every change to the request headers makes Envoy match the route again. A
                // decision that sets nothing (a pass) looks first, which costs a V8 crossing
                // like the removal, and leaves an absent header (the usual case) alone.
                if set.is_empty() && !request_header_present(name) {
                    continue;
                }
                if let Err(s) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
                    warn!("cannot remove header {name}: {s:?}");
                }
            }
            for (name, value) in set {
                if let Err(s) =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                {
                    warn!("cannot set header {name}: {s:?}");
                }
            }
            true
        }
        Decision::Respond {
            status,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            if let Err(s) = hostcalls::send_http_response(*status, headers, Some(body.as_bytes())) {
                warn!("cannot send local reply: {s:?}");
            }
            false
        }
    }
}

/// Reads the reply to the call being answered: `:status` (0 when none), the `REPLY_HEADERS`,
/// and the body (at most `max` bytes; `None` when larger).
pub fn call_response(body_size: usize, max: usize) -> CallReply {
    let status = header_value(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = REPLY_HEADERS.map(|name| header_value(MapType::HttpCallResponseHeaders, name));
    let body = (body_size <= max).then(|| {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    });
    CallReply {
        status,
        headers,
        body,
    }
}
