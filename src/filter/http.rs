//! `AuthFilter`: reads the request head, applies the worker's decision, or pauses the request.

use super::{host, on_reply, wake, with_worker, Shared};
use crate::authenticator::RequestHead;
use crate::oauth1::AtlassianOauth1;
use crate::worker::Admission;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub(super) struct AuthFilter {
    id: u32,
    vm: Shared,
    /// Bytes of request body Envoy holds for us (a form body being buffered for signing).
    body_size: usize,
}

impl AuthFilter {
    pub(super) fn new(id: u32, vm: Shared) -> Self {
        AuthFilter {
            id,
            vm,
            body_size: 0,
        }
    }

    /// The whole form body is buffered: the worker signs the request over it now, or once its
    /// credential is checked (and resumes it then).
    fn body_complete(&mut self) -> Action {
        let body = host::request_body(self.body_size);
        match with_worker(&self.vm, self.id, |worker, host| {
            worker.on_request_body(host, self.id, &body)
        }) {
            Some(verdict) if host::apply(&verdict.decision) => Action::Continue,
            Some(_) | None => Action::Pause,
        }
    }

    fn hold_while_waiting(&self) -> Action {
        if self.vm.borrow().worker.is_paused(self.id) {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for AuthFilter {
    // Calls are made on the root context; a reply that comes here anyway is handled the same.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        on_reply(&self.vm, self.id, token_id, body_size);
    }
}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let method = host::request_header(":method").unwrap_or_default();
        // Only a preflight (OPTIONS) looks at the CORS headers: other requests skip two host calls.
        let preflight = method.eq_ignore_ascii_case("OPTIONS");
        // Only a POST with a body, when requests are signed, reads its content type.
        let form_body = !end_of_stream
            && method == "POST"
            && self.vm.borrow().worker.signs_requests()
            && AtlassianOauth1::signs_body(
                &method,
                host::request_header("content-type").as_deref(),
            );
        let head = RequestHead {
            cors_headers: preflight
                && host::request_header("origin").is_some()
                && host::request_header("access-control-request-method").is_some(),
            method,
            path: host::request_header(":path").unwrap_or_default(),
            // Read by the worker (`Host::authorization`) only when the rule needs a credential.
            authorization: None,
            form_body,
        };
        match with_worker(&self.vm, self.id, |worker, host| {
            worker.on_request(host, self.id, head)
        }) {
            Admission::Decided(verdict) if host::apply(&verdict.decision) => Action::Continue,
            Admission::Decided(_) => Action::Pause,
            Admission::Paused => {
                wake(&self.vm);
                Action::Pause
            }
        }
    }

    // A body or trailers arriving while the headers wait for keys must not let the request
    // through undecided, whatever the host does with a Continue from these callbacks. A form
    // body the signature covers is buffered (Pause) until it is whole.
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.vm.borrow().worker.awaits_body(self.id) {
            return self.hold_while_waiting();
        }
        self.body_size = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        self.body_complete()
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        if self.vm.borrow().worker.awaits_body(self.id) {
            return self.body_complete();
        }
        self.hold_while_waiting()
    }

    fn on_log(&mut self) {
        self.vm.borrow_mut().worker.on_request_done(self.id);
    }
}
