//! The stand-in for Jira: answers every request with the request it received, as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::json;
use tiny_http::{Header, Response, Server};

/// An HTTP server on 127.0.0.1 that replies 200 with
/// `{"method": .., "path": .., "headers": {"lowercased-name": "value", ..}}`,
/// repeated headers joined by ", ". Stops when dropped.
pub struct EchoUpstream {
    server: Arc<Server>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Starts listening on a free port at once.
    pub fn start() -> Self {
        let server = Arc::new(
            Server::http("127.0.0.1:0").unwrap_or_else(|e| panic!("echo upstream: bind: {e}")),
        );
        let port = server
            .server_addr()
            .to_ip()
            .expect("echo upstream listens on TCP")
            .port();
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name(format!("echo-{port}"))
            .spawn(move || {
                // `recv` fails only once `unblock` is called from Drop.
                while let Ok(request) = serving.recv() {
                    let body = describe(&request).to_string();
                    let content_type =
                        Header::from_bytes("content-type", "application/json").expect("ASCII");
                    // The client may be gone already; nothing to do about it.
                    let _ = request.respond(Response::from_string(body).with_header(content_type));
                }
            })
            .expect("spawn echo thread");
        EchoUpstream {
            server,
            port,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn describe(request: &tiny_http::Request) -> serde_json::Value {
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
    json!({
        "method": request.method().as_str(),
        "path": request.url(),
        "headers": headers,
    })
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
