//! The proxy-wasm adapter: the only code that names `proxy_wasm`. No auth or lifecycle rule
//! lives here: `crate::worker` decides, `ProxyHost` carries its host calls out.
//!
//! One `Worker` per VM (per Envoy thread) is shared by the root context and its HTTP contexts.

mod host;
mod http;
mod metrics;
mod root;
mod rsa_host;

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
    /// This VM's own shared queue: a request that queued calls posts to it, and Envoy calls the
    /// root context back (`on_queue_ready`) as soon as the request's callback has returned, so
    /// the calls go out from the root at once instead of at the next tick. `None`: the tick
    /// sends them.
    wake: Option<u32>,
    /// A wake-up is posted and not yet delivered.
    wake_posted: bool,
}

type Shared = Rc<RefCell<Vm>>;

/// Runs `f` on the worker with a host for context `current`; decisions for other requests are
/// applied after the worker is released (applying one may call back into the VM).
fn with_worker<R>(
    shared: &Shared,
    current: u32,
    f: impl FnOnce(&mut Worker, &mut ProxyHost<'_>) -> R,
) -> R {
    let (result, resumed) = {
        let mut vm = shared.borrow_mut();
        let Vm {
            worker, metrics, ..
        } = &mut *vm;
        let mut host = ProxyHost::new(metrics);
        let result = f(worker, &mut host);
        (result, host.into_resumed())
    };
    host::resume_all(resumed, current);
    result
}

/// Asks Envoy to call the root context back (`on_queue_ready`) when the worker has calls a
/// request queued, unless a wake-up is already on its way; without a queue the tick sends them.
fn wake(shared: &Shared) {
    let queue = {
        let mut vm = shared.borrow_mut();
        let Some(queue) = vm.wake else { return };
        if vm.wake_posted || vm.worker.calls_queued() == 0 {
            return;
        }
        vm.wake_posted = true;
        queue
    };
    if let Err(s) = proxy_wasm::hostcalls::enqueue_shared_queue(queue, Some(b"wake")) {
        log::warn!("cannot post to the wake queue ({s:?}): calls wait for the next tick");
        shared.borrow_mut().wake_posted = false;
    }
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
