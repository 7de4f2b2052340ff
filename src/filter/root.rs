//! `AuthRoot`: configuration at start, key fetching and waiter deadlines on ticks.

use super::{drive, host, on_reply, Shared, Worker};
use crate::authenticator::Authenticator;
use crate::config::Config;
use crate::time::UnixTime;
use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The tick: bounds how late a waiter learns of an answer another worker got. Set once: Envoy
/// 1.40 stops ticking when the period changes inside `on_tick`.
const TICK: Duration = Duration::from_millis(25);
/// With nothing pending, a tick does its round (shared records, due fetches) this often.
const IDLE_ROUND_MS: u64 = 1000;

pub(super) struct AuthRoot {
    id: u32,
    worker: Option<Shared>,
    last_round: UnixTime,
}

impl AuthRoot {
    pub(super) fn new(id: u32) -> Self {
        AuthRoot { id, worker: None, last_round: UnixTime::default() }
    }
}

impl Context for AuthRoot {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(worker) = &self.worker {
            on_reply(worker, self.id, token_id, body_size);
        }
    }
}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        follow_host_log_level();
        let config = match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                error!("atlassian-rest-auth: configuration rejected: {e}");
                return false;
            }
        };
        info!("atlassian-rest-auth: configured: realm {:?}, {} provider(s), {} rule(s)", config.realm, config.providers.len(), config.rules.len());
        self.worker = Some(Rc::new(RefCell::new(Worker::new(Authenticator::with_log_key(config, super::shared_log_key())))));
        // The first tick starts the key fetches; dispatching from on_configure is not reliable.
        if let Err(s) = proxy_wasm::hostcalls::set_tick_period(TICK) {
            error!("atlassian-rest-auth: cannot set a tick period ({s:?}): keys would never be fetched");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else { return };
        // Without a clock no fetch or deadline can be judged: wait for the next tick.
        let Some(now) = host::now() else { return };
        let idle = !worker.borrow().busy(now) && now.millis_since(self.last_round) < IDLE_ROUND_MS;
        if !idle {
            self.last_round = now;
            follow_host_log_level();
            drive(&worker, self.id, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(super::http::AuthFilter::new(context_id, worker)))
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
