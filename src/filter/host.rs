//! The real host: thin wrappers over `proxy_wasm::hostcalls` that never panic on a host error.

use crate::decision::Decision;
use crate::keys::KeyRecord;
use crate::outbound::Outbound;
use crate::time::UnixTime;
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Compare-and-swap attempts before a shared-data update gives up (another worker keeps winning).
const CAS_ATTEMPTS: usize = 8;

/// The host's wall clock; `None` when the host cannot tell (or says it is before 1970): no
/// token can then be judged, and the caller answers 503 rather than decide at time 0.
pub fn now() -> Option<UnixTime> {
    let since_epoch = hostcalls::get_current_time().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(UnixTime::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)))
}

/// A request header of the current stream. Header values are bytes: a non-UTF-8 value is read
/// lossily (the SDK's `get_map_value` would panic on it), so it fails every check it meets.
pub fn request_header(name: &str) -> Option<String> {
    header_value(MapType::HttpRequestHeaders, name)
}

fn header_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Applies `decision` to the current stream; true when the request may continue upstream.
pub fn apply(decision: &Decision) -> bool {
    match decision {
        Decision::Continue { remove, set } => {
            for name in remove {
                if let Err(s) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
                    warn!("cannot remove header {name}: {s:?}");
                }
            }
            for (name, value) in set {
                if let Err(s) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)) {
                    warn!("cannot set header {name}: {s:?}");
                }
            }
            true
        }
        Decision::Respond { status, headers, body } => {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            if let Err(s) = hostcalls::send_http_response(*status, headers, Some(body.as_bytes())) {
                warn!("cannot send local reply: {s:?}");
            }
            false
        }
    }
}

/// Reads, changes and writes a shared value with compare-and-swap; `change` returning `None`
/// leaves it as it is. True when this call wrote it.
pub fn update_shared(key: &str, change: impl Fn(Option<&[u8]>) -> Option<Vec<u8>>) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match hostcalls::get_shared_data(key) {
            Ok(found) => found,
            Err(s) => {
                warn!("shared data {key}: read failed: {s:?}");
                return false;
            }
        };
        let Some(next) = change(bytes.as_deref()) else {
            return false;
        };
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(s) => {
                warn!("shared data {key}: write failed: {s:?}");
                return false;
            }
        }
    }
    false
}

/// `update_shared` for a provider record: returns the record now stored and whether we wrote it.
pub fn update_record(key: &str, change: impl Fn(&KeyRecord) -> Option<KeyRecord>) -> (KeyRecord, bool) {
    let latest = std::cell::RefCell::new(KeyRecord::default());
    let wrote = update_shared(key, |bytes| {
        let current = bytes.map(KeyRecord::parse).unwrap_or_default();
        let next = change(&current);
        *latest.borrow_mut() = next.clone().unwrap_or(current);
        next.map(|r| r.to_bytes())
    });
    (latest.into_inner(), wrote)
}

/// Stores `value` under `key` whatever is there now.
pub fn write_shared(key: &str, value: &[u8]) {
    if let Err(s) = hostcalls::set_shared_data(key, Some(value), None) {
        warn!("shared data {key}: write failed: {s:?}");
    }
}

/// The value stored under `key`, if any.
pub fn read_shared(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key).ok().and_then(|(bytes, _)| bytes)
}

/// The reply to the call being answered: `:status` (0 when none), the headers the caller names,
/// and the body (at most `max` bytes; `None` when larger).
pub struct CallReply<const N: usize> {
    pub status: u32,
    pub headers: [Option<String>; N],
    pub body: Option<Vec<u8>>,
}

/// Reads the reply to the call being answered, with the response headers `names`.
pub fn call_response<const N: usize>(body_size: usize, max: usize, names: [&str; N]) -> CallReply<N> {
    let status = header_value(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = names.map(|name| header_value(MapType::HttpCallResponseHeaders, name));
    let body = (body_size <= max)
        .then(|| hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default());
    CallReply { status, headers, body }
}

/// The timeout of an outgoing call.
pub fn timeout(out: &Outbound) -> Duration {
    Duration::from_millis(out.timeout_ms)
}
