//! The stand-in for Jira: answers every request with the request it received, as JSON.
//!
//! Plain `std::net` with a thread per connection and one request per connection: a burst of
//! concurrent requests through Envoy must never queue behind each other here (tiny_http did
//! stall under 50 simultaneous Envoy connections).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

/// An HTTP server on 127.0.0.1 that replies 200 with
/// `{"method": .., "path": .., "headers": {"lowercased-name": "value", ..}}`,
/// repeated headers joined by ", ". Stops when dropped.
pub struct EchoUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Starts listening on a free port at once.
    pub fn start() -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("echo upstream: bind: {e}"));
        let port = listener.local_addr().expect("bound address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("echo-{port}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        std::thread::spawn(move || serve(stream));
                    }
                }
            })
            .expect("spawn echo thread");
        EchoUpstream {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reads one request head (and drains a `content-length` body), answers with its echo, closes.
fn serve(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let Some(request_line) = read_line(&mut reader) else {
        return;
    };
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut content_length = 0usize;
    loop {
        let Some(line) = read_line(&mut reader) else {
            return;
        };
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            }
            headers
                .entry(name)
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    let _ = std::io::Read::read_exact(&mut reader, &mut body);
    let reply = json!({ "method": method, "path": path, "headers": headers }).to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.flush();
}

/// One line, read as bytes: header values need not be UTF-8 (attack tests send such bytes).
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut bytes = Vec::new();
    match reader.read_until(b'\n', &mut bytes) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
