//! `AuthRoot`: configuration at start, key fetching and waiter deadlines on ticks.

use super::{drive, host, on_reply, Shared, Worker};
use crate::authenticator::Authenticator;
use crate::config::Config;
use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Tick while requests wait or keys are missing: bounds how late a waiter learns of an answer
/// another worker got.
const FAST_TICK: Duration = Duration::from_millis(20);
/// Tick otherwise: background refresh has second resolution.
const SLOW_TICK: Duration = Duration::from_millis(1000);

pub(super) struct AuthRoot {
    id: u32,
    worker: Option<Shared>,
    tick: Duration,
}

impl AuthRoot {
    pub(super) fn new(id: u32) -> Self {
        AuthRoot { id, worker: None, tick: Duration::ZERO }
    }

    fn set_tick(&mut self, tick: Duration) {
        if tick != self.tick && proxy_wasm::hostcalls::set_tick_period(tick).is_ok() {
            self.tick = tick;
        }
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
        let config = match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                error!("atlassian-rest-auth: configuration rejected: {e}");
                return false;
            }
        };
        info!("atlassian-rest-auth: configured: realm {:?}, {} provider(s), {} rule(s)", config.realm, config.providers.len(), config.rules.len());
        self.worker = Some(Rc::new(RefCell::new(Worker::new(Authenticator::new(config)))));
        // The first tick starts the key fetches; dispatching from on_configure is not reliable.
        self.set_tick(Duration::from_millis(1));
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else { return };
        let now = host::now();
        drive(&worker, self.id, now);
        let busy = worker.borrow().busy(now);
        self.set_tick(if busy { FAST_TICK } else { SLOW_TICK });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(super::http::AuthFilter::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
