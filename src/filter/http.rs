//! `AuthFilter`: reads the request head, applies the core's decision, or pauses the request.

use super::{begin_lookup, fetch_due, host, on_reply, record_verdict, sync, Shared, WaitOn};
use crate::authenticator::{RequestHead, Step, Verdict};
use log::error;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub(super) struct AuthFilter {
    id: u32,
    worker: Shared,
}

impl AuthFilter {
    pub(super) fn new(id: u32, worker: Shared) -> Self {
        AuthFilter { id, worker }
    }
}

impl AuthFilter {
    /// Logs and applies a verdict on this request now.
    fn settle(&self, verdict: &Verdict) -> Action {
        record_verdict(&self.worker, self.id, verdict);
        if host::apply(&verdict.decision) {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn hold_while_waiting(&self) -> Action {
        if self.worker.borrow().waiters.contains_key(&self.id) {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for AuthFilter {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        on_reply(&self.worker, self.id, token_id, body_size);
    }
}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let method = host::request_header(":method").unwrap_or_default();
        // Only a preflight (OPTIONS) looks at the CORS headers: other requests skip two host calls.
        let preflight = method.eq_ignore_ascii_case("OPTIONS");
        let head = RequestHead {
            cors_headers: preflight && host::request_header("origin").is_some() && host::request_header("access-control-request-method").is_some(),
            method,
            path: host::request_header(":path").unwrap_or_default(),
            authorization: host::request_header("authorization"),
        };
        let Some(now) = host::now() else {
            error!("#{} host clock unavailable: no token can be judged", self.id);
            let verdict = self.worker.borrow().auth.without_clock(&head);
            return self.settle(&verdict);
        };
        let mut step = self.worker.borrow_mut().decide(&head, now);
        if matches!(step, Step::WaitForKeys { .. }) {
            // Another worker may have fetched the keys already: look before waiting.
            sync(&self.worker);
            step = self.worker.borrow_mut().decide(&head, now);
        }
        match step {
            Step::Decide(verdict) => self.settle(&verdict),
            Step::WaitForKeys { provider, kid_refresh } => {
                {
                    let mut w = self.worker.borrow_mut();
                    let on = WaitOn::Record(provider, w.keys[provider].record.serial);
                    let deadline = w.deadline(on, provider, now);
                    w.park(self.id, head, on, deadline);
                    w.kid_wanted[provider] |= kid_refresh;
                }
                log::debug!("#{} waiting for provider {provider}", self.id);
                fetch_due(&self.worker, now);
                Action::Pause
            }
            Step::WaitForLookup { provider, digest } => {
                let mut w = self.worker.borrow_mut();
                let deadline = w.deadline(WaitOn::Lookup(digest), provider, now);
                w.park(self.id, head, WaitOn::Lookup(digest), deadline);
                Action::Pause
            }
            Step::Lookup(start) => match begin_lookup(&self.worker, self.id, head, start, None, now) {
                Some(verdict) => self.settle(&verdict),
                None => Action::Pause,
            },
        }
    }

    // A body or trailers arriving while the headers wait for keys must not let the request
    // through undecided, whatever the host does with a Continue from these callbacks.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.hold_while_waiting()
    }

    fn on_log(&mut self) {
        self.worker.borrow_mut().waiters.remove(&self.id);
    }
}
