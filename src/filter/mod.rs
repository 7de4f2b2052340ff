//! The proxy-wasm adapter: the only code that names `proxy_wasm`. No auth or lifecycle rule
//! lives here: `crate::worker` decides, `ProxyHost` carries its host calls out.
//!
//! One `Worker` per VM (per Envoy thread) is shared by the root context and its HTTP contexts.

mod host;
mod http;
mod metrics;
mod root;

use crate::worker::Worker;
use host::ProxyHost;
use proxy_wasm::types::LogLevel;
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(root::AuthRoot::new(context_id)));
}}

/// What the root context and its HTTP contexts share.
pub(crate) struct Vm {
    worker: Worker,
    metrics: metrics::Metrics,
}

type Shared = Rc<RefCell<Vm>>;

/// Runs `f` on the worker with a host for context `current`; decisions for other requests are
/// applied after the worker is released (applying one may call back into the VM).
fn with_worker<R>(shared: &Shared, current: u32, f: impl FnOnce(&mut Worker, &mut ProxyHost<'_>) -> R) -> R {
    let (result, resumed) = {
        let mut vm = shared.borrow_mut();
        let Vm { worker, metrics } = &mut *vm;
        let mut host = ProxyHost::new(metrics);
        let result = f(worker, &mut host);
        (result, host.into_resumed())
    };
    host::resume_all(resumed, current);
    result
}

/// A reply to one of our calls.
fn on_reply(shared: &Shared, current: u32, call: u32, body_size: usize) {
    with_worker(shared, current, |worker, host| {
        // A call the worker gave up on (or never made) is not read.
        if let Some(limit) = worker.reply_limit(call) {
            let reply = host::call_response(body_size, limit);
            worker.on_call_reply(host, call, reply);
        }
    });
}
