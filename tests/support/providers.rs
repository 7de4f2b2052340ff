//! A programmable identity provider for opaque tokens: the test registers what each endpoint
//! answers (userinfo, introspection, the presets' own checks, a JWKS), and every request that
//! arrives is recorded for the test to inspect.
//!
//! Each request is answered on its own thread, so a slow endpoint never holds up another one and
//! the filter may call from both Envoy workers at once. Everything stops when the value drops.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use tiny_http::{Header, Response, Server};

/// Request bodies beyond this are cut off; the filter never sends anything near it.
const MAX_BODY_BYTES: u64 = 1 << 20;
/// The longest an answer may be delayed, whatever a test asks for.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// How often a delayed answer checks whether the provider is stopping.
const DELAY_STEP: Duration = Duration::from_millis(10);

/// One request as the provider received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target: path and query, as sent (`/me?fields=id,name,email`).
    pub path: String,
    /// Header names lowercased; repeated headers joined by ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The path without its query: what routes are registered and counted by.
    pub fn route_path(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, query)| query)
    }

    /// The query's `name=value` pairs, percent-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query().map(form_decode).unwrap_or_default()
    }

    /// The decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find(self.query_pairs(), name)
    }

    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme in any case).
    pub fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.header("authorization")?.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim_start())
    }

    /// `(user, password)` of an `Authorization: Basic` header, when it decodes.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        let (scheme, encoded) = self.header("authorization")?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, `Value::Null` when it is not JSON.
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body's `application/x-www-form-urlencoded` pairs, decoded, in order.
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        form_decode(&self.body_text())
    }

    /// The decoded value of form field `name`.
    pub fn form_field(&self, name: &str) -> Option<String> {
        find(self.form_pairs(), name)
    }
}

/// What an endpoint answers: status, body and its content type, optionally after a delay.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    pub delay: Duration,
    /// More response headers (`x-ratelimit-remaining`, `retry-after`, ...).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// `status` with `body` as `application/json`.
    pub fn json(status: u16, body: Value) -> Self {
        Answer {
            status,
            body: body.to_string(),
            content_type: "application/json".into(),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// 200 with `body` as `application/json`.
    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    /// `status` with `body` as `text/plain`.
    pub fn text(status: u16, body: &str) -> Self {
        Answer {
            status,
            body: body.to_string(),
            content_type: "text/plain".into(),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// `status` with a JSON error body, as providers send when they refuse.
    pub fn status(status: u16) -> Self {
        Self::json(
            status,
            json!({ "error": format!("simulated status {status}") }),
        )
    }

    /// The same answer, sent only after `delay` (at most 30 s; cut short when the provider stops).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay.min(MAX_DELAY);
        self
    }

    /// The same answer with the response header `name: value` added.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

struct Shared {
    /// `(METHOD, path without query)` → responder.
    routes: Mutex<HashMap<(String, String), Responder>>,
    log: Mutex<Vec<Recorded>>,
    stopping: AtomicBool,
    /// Threads answering requests, joined on drop.
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

/// The simulated provider on `127.0.0.1:<free port>`. Paths without a route get 404 (and are
/// recorded like every other request).
pub struct FakeProvider {
    port: u16,
    server: Arc<Server>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FakeProvider {
    /// Listening at once, with no routes.
    pub fn start() -> Self {
        let server = Arc::new(
            Server::http("127.0.0.1:0").unwrap_or_else(|e| panic!("fake provider: bind: {e}")),
        );
        let port = server
            .server_addr()
            .to_ip()
            .expect("fake provider listens on TCP")
            .port();
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            handlers: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&server);
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("provider-{port}"))
            .spawn(move || {
                // `recv` fails only once `unblock` is called from Drop.
                while let Ok(request) = serving.recv() {
                    let for_handler = Arc::clone(&state);
                    let handler = std::thread::Builder::new()
                        .name(format!("provider-{port}-request"))
                        .spawn(move || answer(request, &for_handler))
                        .expect("spawn fake provider request thread");
                    let mut handlers = lock(&state.handlers);
                    handlers.retain(|h| !h.is_finished());
                    handlers.push(handler);
                }
            })
            .expect("spawn fake provider thread");
        FakeProvider {
            port,
            server,
            shared,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the key of the filter's `clusters` map for this provider.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`; also the issuer of tokens this provider "issues".
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>`; `path` may carry a query.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The `iss` of JWTs this provider issues: its base URL.
    pub fn issuer(&self) -> String {
        self.base_url()
    }

    /// Where `serve_jwks` publishes keys.
    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    /// Answers `method path` (path without query) with whatever `responder` returns for the
    /// request. Replaces an earlier route for the same method and path, also while running.
    pub fn route(
        &self,
        method: &str,
        path: &str,
        responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    ) {
        assert!(
            !path.contains('?'),
            "routes match the path without query: {path}"
        );
        lock(&self.shared.routes).insert(
            (method.to_ascii_uppercase(), path.to_string()),
            Arc::new(responder),
        );
    }

    /// Answers `method path` always with `answer`.
    pub fn reply(&self, method: &str, path: &str, answer: Answer) {
        self.route(method, path, move |_| answer.clone());
    }

    /// Answers `method path` by the request's `Authorization: Bearer` token: `replies[token]`,
    /// else `otherwise` (also when there is no bearer token).
    pub fn reply_by_bearer<'a>(
        &self,
        method: &str,
        path: &str,
        replies: impl IntoIterator<Item = (&'a str, Answer)>,
        otherwise: Answer,
    ) {
        self.keyed(
            method,
            path,
            |r| r.bearer_token().map(str::to_string),
            replies,
            otherwise,
        );
    }

    /// Answers `method path` by the `token` field of a form body (RFC 7662 introspection).
    pub fn reply_by_form_token<'a>(
        &self,
        method: &str,
        path: &str,
        replies: impl IntoIterator<Item = (&'a str, Answer)>,
        otherwise: Answer,
    ) {
        self.keyed(method, path, |r| r.form_field("token"), replies, otherwise);
    }

    fn keyed<'a>(
        &self,
        method: &str,
        path: &str,
        key: fn(&Recorded) -> Option<String>,
        replies: impl IntoIterator<Item = (&'a str, Answer)>,
        otherwise: Answer,
    ) {
        let replies: HashMap<String, Answer> = replies
            .into_iter()
            .map(|(token, answer)| (token.to_string(), answer))
            .collect();
        self.route(method, path, move |request| {
            key(request)
                .and_then(|k| replies.get(&k).cloned())
                .unwrap_or_else(|| otherwise.clone())
        });
    }

    /// Publishes `jwks` at `GET /jwks`.
    pub fn serve_jwks(&self, jwks: Value) {
        self.reply("GET", "/jwks", Answer::ok(jwks));
    }

    /// How many requests reached `path` (without query; any method), answered or not.
    pub fn calls(&self, path: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.route_path() == path)
            .count()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    /// The requests that reached `path` (without query), in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.route_path() == path)
            .cloned()
            .collect()
    }

    /// The only request that reached `path`; panics, listing all requests, unless there was
    /// exactly one.
    pub fn only_request_to(&self, path: &str) -> Recorded {
        let mut matching = self.requests_to(path);
        if matching.len() != 1 {
            panic!(
                "expected exactly one request to {path}, got {}; all requests: {:#?}",
                matching.len(),
                self.requests()
            );
        }
        matching.remove(0)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let handlers = std::mem::take(&mut *lock(&self.shared.handlers));
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

fn answer(mut request: tiny_http::Request, shared: &Shared) {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for header in request.headers() {
        let name = header.field.as_str().as_str().to_ascii_lowercase();
        let value = header.value.as_str();
        headers
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    let mut body = Vec::new();
    // A body that cannot be read is recorded as far as it came.
    let _ = request
        .as_reader()
        .take(MAX_BODY_BYTES)
        .read_to_end(&mut body);
    let recorded = Recorded {
        method: request.method().as_str().to_ascii_uppercase(),
        path: request.url().to_string(),
        headers,
        body,
    };
    lock(&shared.log).push(recorded.clone());

    let responder = lock(&shared.routes)
        .get(&(recorded.method.clone(), recorded.route_path().to_string()))
        .cloned();
    let answer = match responder {
        Some(responder) => responder(&recorded),
        None => Answer::json(404, json!({ "error": "no route", "path": recorded.path })),
    };
    pause(answer.delay, &shared.stopping);
    let content_type =
        Header::from_bytes("content-type", answer.content_type.as_bytes()).expect("ASCII");
    let mut response = Response::from_string(answer.body)
        .with_status_code(answer.status)
        .with_header(content_type);
    for (name, value) in &answer.headers {
        response.add_header(
            Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header"),
        );
    }
    // The caller may have given up already (a timeout under test); nothing to do about it.
    let _ = request.respond(response);
}

/// Sleeps for `delay`, in short steps so that a stopping provider is not held up.
fn pause(delay: Duration, stopping: &AtomicBool) {
    let until = Instant::now() + delay.min(MAX_DELAY);
    while Instant::now() < until && !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(DELAY_STEP.min(until.saturating_duration_since(Instant::now())));
    }
}

/// A poisoned lock only means another handler panicked; the data is still what it recorded.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find(pairs: Vec<(String, String)>, name: &str) -> Option<String> {
    pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// `a=1&b=x%7Cy` → `[("a", "1"), ("b", "x|y")]`, `+` read as a space.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `token` with `name: value` added to its JOSE header; payload and signature kept. The
/// signature no longer matches, exactly like a Microsoft Graph access token, whose header
/// `nonce` is replaced after signing so that nobody but Graph can verify it.
pub fn with_header_field(token: &str, name: &str, value: &str) -> String {
    let (header, rest) = token
        .split_once('.')
        .unwrap_or_else(|| panic!("not a compact JWS: {token}"));
    let decoded = URL_SAFE_NO_PAD
        .decode(header)
        .unwrap_or_else(|e| panic!("JWS header is not base64url: {e}"));
    let mut json: Value =
        serde_json::from_slice(&decoded).unwrap_or_else(|e| panic!("JWS header is not JSON: {e}"));
    json[name] = json!(value);
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(json.to_string()))
}

/// The decoded JOSE header of a compact JWS.
pub fn jws_header(token: &str) -> Value {
    let header = token.split('.').next().unwrap_or_default();
    let decoded = URL_SAFE_NO_PAD
        .decode(header)
        .unwrap_or_else(|e| panic!("JWS header is not base64url: {e}"));
    serde_json::from_slice(&decoded).unwrap_or_else(|e| panic!("JWS header is not JSON: {e}"))
}
