//! The simulated identity provider: OIDC discovery and a JWKS, with faults on demand.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tiny_http::{Header, Response, Server};

/// How the provider answers; changeable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpMode {
    /// 200 with the current document.
    Normal,
    /// This status, with a short text body, on every path.
    Status(u16),
    /// The normal answer after this delay.
    Slow(Duration),
}

struct State {
    jwks: Value,
    mode: IdpMode,
}

#[derive(Default)]
struct Counters {
    jwks: AtomicUsize,
    discovery: AtomicUsize,
    other: AtomicUsize,
}

/// A JWKS endpoint (`GET /jwks`) and OIDC discovery (`GET /.well-known/openid-configuration`)
/// on 127.0.0.1. Its issuer is its own base URL, `http://127.0.0.1:<port>`, as for a real IdP.
/// It can be created down (port chosen, nothing listening) and brought up later on that port.
/// Stops when dropped.
pub struct JwksServer {
    port: u16,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    running: Option<Running>,
}

struct Running {
    server: Arc<Server>,
    thread: JoinHandle<()>,
}

impl JwksServer {
    /// Listening at once, serving `jwks`.
    pub fn start(jwks: Value) -> Self {
        let server =
            Server::http("127.0.0.1:0").unwrap_or_else(|e| panic!("identity provider: bind: {e}"));
        let port = server
            .server_addr()
            .to_ip()
            .expect("identity provider listens on TCP")
            .port();
        let mut idp = Self::with_port(port, jwks);
        idp.serve(server);
        idp
    }

    /// Not listening yet: a port is chosen (bound, then released) so Envoy can be configured
    /// with it; connections to it are refused until `come_up`.
    pub fn down(jwks: Value) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("identity provider: reserve a port: {e}"))
            .port();
        Self::with_port(port, jwks)
    }

    /// Starts listening on the port chosen by `down`. Retries the bind for a few seconds in
    /// case the port is briefly held by a socket in another test.
    pub fn come_up(&mut self) {
        if self.running.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let server = loop {
            match Server::http(("127.0.0.1", self.port)) {
                Ok(server) => break server,
                Err(e) if Instant::now() > deadline => {
                    panic!("identity provider: bind 127.0.0.1:{}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        self.serve(server);
    }

    fn with_port(port: u16, jwks: Value) -> Self {
        JwksServer {
            port,
            state: Arc::new(Mutex::new(State {
                jwks,
                mode: IdpMode::Normal,
            })),
            counters: Arc::new(Counters::default()),
            running: None,
        }
    }

    fn serve(&mut self, server: Server) {
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let state = Arc::clone(&self.state);
        let counters = Arc::clone(&self.counters);
        let base = self.base_url();
        let thread = std::thread::Builder::new()
            .name(format!("idp-{}", self.port))
            .spawn(move || {
                // `recv` fails only once `unblock` is called from Drop.
                while let Ok(request) = serving.recv() {
                    let state = Arc::clone(&state);
                    let counters = Arc::clone(&counters);
                    let base = base.clone();
                    // One thread per request, so a slow answer does not hold up the next one.
                    std::thread::spawn(move || answer(request, &state, &counters, &base));
                }
            })
            .expect("spawn identity provider thread");
        self.running = Some(Running { server, thread });
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the key of the filter's `clusters` map for this provider.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `iss` of the tokens this provider issues.
    pub fn issuer(&self) -> String {
        self.base_url()
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.base_url())
    }

    /// Replaces the key set served from now on (key rotation).
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    pub fn set_mode(&self, mode: IdpMode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// How many requests reached `/jwks` (answered or not).
    pub fn jwks_requests(&self) -> usize {
        self.counters.jwks.load(Ordering::SeqCst)
    }

    /// How many requests reached `/.well-known/openid-configuration`.
    pub fn discovery_requests(&self) -> usize {
        self.counters.discovery.load(Ordering::SeqCst)
    }

    /// How many requests reached any other path (answered 404).
    pub fn other_requests(&self) -> usize {
        self.counters.other.load(Ordering::SeqCst)
    }
}

fn answer(request: tiny_http::Request, state: &Mutex<State>, counters: &Counters, base: &str) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let counter = match path.as_str() {
        "/jwks" => &counters.jwks,
        "/.well-known/openid-configuration" => &counters.discovery,
        _ => &counters.other,
    };
    counter.fetch_add(1, Ordering::SeqCst);

    let (mode, jwks) = {
        let state = state.lock().unwrap();
        (state.mode, state.jwks.clone())
    };
    if let IdpMode::Slow(delay) = mode {
        std::thread::sleep(delay);
    }
    let json_type = Header::from_bytes("content-type", "application/json").expect("ASCII");
    let response = match (mode, path.as_str()) {
        (IdpMode::Status(status), _) => {
            Response::from_string(format!("simulated status {status}")).with_status_code(status)
        }
        (_, "/jwks") => Response::from_string(jwks.to_string()).with_header(json_type),
        (_, "/.well-known/openid-configuration") => Response::from_string(
            json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") }).to_string(),
        )
        .with_header(json_type),
        _ => Response::from_string("not found").with_status_code(404),
    };
    // The caller may have timed out already; nothing to do about it.
    let _ = request.respond(response);
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.unblock();
            let _ = running.thread.join();
        }
    }
}
