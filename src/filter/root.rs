//! `AuthRoot`: configuration at start, ticks, and the replies to every outgoing call.

use super::{host, on_reply, with_worker, Shared, Vm};
use crate::authenticator::Authenticator;
use crate::config::Config;
use crate::worker::{shared_log_key, Worker};
use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The tick: bounds how late a waiter learns of an answer another worker got. Set once: Envoy
/// 1.40 stops ticking when the period changes inside `on_tick`.
const TICK: Duration = Duration::from_millis(25);

/// Posts read from the wake queue per wake-up at most.
const MAX_WAKE_DRAIN: usize = 64;

pub(super) struct AuthRoot {
    id: u32,
    vm: Option<Shared>,
}

impl AuthRoot {
    pub(super) fn new(id: u32) -> Self {
        AuthRoot { id, vm: None }
    }
}

impl Context for AuthRoot {
    fn on_done(&mut self) -> bool {
        if let Some(vm) = self.vm.clone() {
            with_worker(&vm, self.id, |worker, host| worker.on_shutdown(host));
            vm.borrow_mut().metrics.flush();
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(vm) = &self.vm {
            on_reply(vm, self.id, token_id, body_size);
        }
    }
}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        follow_host_log_level();
        super::rsa_host::register();
        let config = match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                error!("atlassian-rest-auth: configuration rejected: {e}");
                return false;
            }
        };
        info!(
            "atlassian-rest-auth {}: configured: realm {:?}, {} provider(s), {} rule(s){}",
            env!("CARGO_PKG_VERSION"),
            config.realm,
            config.providers.len(),
            config.rules.len(),
            if config.forward.atlassian_oauth1.is_some() {
                ", signing for the product (OAuth 1.0a)"
            } else {
                ""
            }
        );
        let mut metrics = super::metrics::Metrics::default();
        let log_key = shared_log_key(&mut host::ProxyHost::new(&mut metrics));
        let worker = Worker::new(Authenticator::with_log_key(config, log_key));
        let wake = register_wake_queue();
        self.vm = Some(Rc::new(RefCell::new(Vm {
            worker,
            metrics,
            wake,
            wake_posted: false,
        })));
        // The first tick starts the key fetches; dispatching from on_configure is not reliable.
        if let Err(s) = proxy_wasm::hostcalls::set_tick_period(TICK) {
            error!("atlassian-rest-auth: cannot set a tick period ({s:?}): keys would never be fetched");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = self.vm.clone() else { return };
        if with_worker(&vm, self.id, |worker, host| worker.on_tick(host)) {
            follow_host_log_level();
        }
        // Every tick, busy or idle: what requests counted reaches Envoy's stats within one tick.
        vm.borrow_mut().metrics.flush();
    }

    /// A request queued calls (`super::wake`): they go out now, from the root context.
    fn on_queue_ready(&mut self, queue_id: u32) {
        let Some(vm) = self.vm.clone() else { return };
        // One wake-up stands for every post before it; bounded, whoever else posts here.
        for _ in 0..MAX_WAKE_DRAIN {
            if !matches!(
                proxy_wasm::hostcalls::dequeue_shared_queue(queue_id),
                Ok(Some(_))
            ) {
                break;
            }
        }
        vm.borrow_mut().wake_posted = false;
        with_worker(&vm, self.id, |worker, host| worker.on_wake(host));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(super::http::AuthFilter::new(context_id, vm)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Logs only at the level Envoy shows (its `wasm` logger, changeable at run time through the
/// admin `/logging` endpoint; followed within a second): a debug line Envoy would drop is then
/// never formatted, on the request path above all.
fn follow_host_log_level() {
    if let Ok(level) = proxy_wasm::hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// A shared queue only this VM listens to: Envoy calls back the context that registered a name,
/// so each VM takes a random one. `None` (no randomness, or the host refused): the tick sends
/// queued calls instead, up to one tick later.
fn register_wake_queue() -> Option<u32> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).ok()?;
    let name = format!(
        "atlassian-rest-auth/v1/wake/{:016x}",
        u64::from_le_bytes(nonce)
    );
    match proxy_wasm::hostcalls::register_shared_queue(&name) {
        Ok(queue) => Some(queue),
        Err(s) => {
            error!("atlassian-rest-auth: cannot register a wake queue ({s:?}): outgoing calls wait for the next tick");
            None
        }
    }
}
