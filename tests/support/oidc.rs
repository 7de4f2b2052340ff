//! A real, third-party OpenID provider: the npm package `oidc-provider` (tests/oidc/server.mjs)
//! in a Node.js child process on 127.0.0.1, for interoperability tests.
//!
//! What it serves (all from the provider's own code, except the `/test/` minting routes):
//! discovery, a JWKS with one fresh RSA key, userinfo (`/me`), introspection and revocation
//! (`/token/...`, `client_secret_basic`). Two clients: `atlassian-cli`, which the tokens are
//! issued to, and `jira-filter`, which the filter introspects as. Two accounts, `alice` and
//! `bob`, known to the provider by their `sub` (`alice-sub`, `bob-sub`).
//!
//! The process reads nothing from stdin but exits when it closes, so it never outlives the test
//! binary; it is also killed and waited for on drop.

use std::io::{BufRead as _, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::child::{ready_port, NotReady};
use super::repo_root;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the provider's stderr is kept for a failing test's report.
const LOG_LIMIT: usize = 64 * 1024;
const LOG_TAIL_LINES: usize = 40;
const HOW: &str = "run `make test` (it runs `npm ci` in tests/oidc)";

/// The resource (RFC 8707) the provider issues JWT access tokens for; their `aud`.
pub const RESOURCE: &str = "urn:atlassian:jira";
/// The scope of those JWT access tokens.
pub const RESOURCE_SCOPE: &str = "jira:read jira:write";
/// The scope of the opaque access tokens (what the userinfo endpoint requires and releases).
pub const OPAQUE_SCOPE: &str = "openid email profile";
/// The client the tokens are issued to; it also revokes them.
pub const APP_CLIENT_ID: &str = "atlassian-cli";
const APP_CLIENT_SECRET: &str = "cli-secret";
/// The client the filter authenticates as at the introspection endpoint.
pub const FILTER_CLIENT_ID: &str = "jira-filter";
const FILTER_CLIENT_SECRET: &str = "filter-secret";

/// A running `oidc-provider`. Killed and waited for on drop; if the test is failing, the tail of
/// its log is printed first.
pub struct OidcProvider {
    child: Child,
    /// Held open: the provider exits when it closes.
    stdin: Option<ChildStdin>,
    port: u16,
    discovery: Value,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl OidcProvider {
    /// Starts `node tests/oidc/server.mjs` on a free port, waits (at most 20 s) for its
    /// `READY <port>` line, and reads its discovery document. Panics, with a way to fix it, when
    /// Node.js or the npm packages are missing, and with the provider's log when it fails.
    pub fn start() -> OidcProvider {
        let dir = repo_root().join("tests/oidc");
        let installed = dir.join("node_modules/oidc-provider/package.json");
        if !installed.is_file() {
            panic!(
                "oidc-provider is not installed (no {}): {HOW}",
                installed.display()
            );
        }
        let node = node_binary();
        let mut child = Command::new(&node)
            .arg(dir.join("server.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run Node.js ({}): {e}; install Node.js 20 and {HOW}",
                    node.display()
                )
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines, ready) = mpsc::channel();
        let readers = vec![
            spawn_stdout_reader(stdout, lines, Arc::clone(&log)),
            spawn_log_reader(stderr, Arc::clone(&log)),
        ];
        let mut provider = OidcProvider {
            child,
            stdin,
            port: 0,
            discovery: Value::Null,
            log,
            readers,
        };
        provider.port = provider.wait_ready(&ready);
        provider.discovery = provider.fetch_discovery();
        provider
    }

    /// The port of the `READY <port>` line; panics with the log if it does not come in time.
    fn wait_ready(&mut self, lines: &mpsc::Receiver<String>) -> u16 {
        match ready_port(lines, READY_TIMEOUT) {
            Ok(port) => port,
            Err(NotReady::Exited) => {
                // stdout closed: the process is exiting; give stderr a moment to arrive.
                let status = self.wait_exit(Duration::from_secs(2));
                self.fail(&format!("exited ({status}) before it was ready"));
            }
            Err(other) => self.fail(&other.to_string()),
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        "still running".to_string()
    }

    /// Panics; the drop that follows stops the process and prints its log.
    fn fail(&mut self, reason: &str) -> ! {
        self.stop();
        panic!("oidc-provider did not start: {reason} (its log follows)");
    }

    fn fetch_discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let discovery = self.json("GET", &url, None, None);
        assert_eq!(
            discovery["issuer"],
            self.issuer(),
            "discovery names this issuer"
        );
        discovery
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the `iss` of its tokens and the base of its endpoints.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, the key of the filter's `clusters` map for this provider.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The discovery document (`/.well-known/openid-configuration`), as read at start.
    pub fn discovery(&self) -> &Value {
        &self.discovery
    }

    pub fn jwks_uri(&self) -> String {
        self.endpoint("jwks_uri")
    }

    pub fn userinfo_uri(&self) -> String {
        self.endpoint("userinfo_endpoint")
    }

    pub fn introspection_uri(&self) -> String {
        self.endpoint("introspection_endpoint")
    }

    pub fn revocation_uri(&self) -> String {
        self.endpoint("revocation_endpoint")
    }

    /// The resource the JWT access tokens are for: their `aud`.
    pub fn resource(&self) -> &'static str {
        RESOURCE
    }

    /// The introspection client (`client_secret_basic`): what the filter's `client_id` is.
    pub fn client_id(&self) -> &'static str {
        FILTER_CLIENT_ID
    }

    /// The secret of `client_id()`.
    pub fn client_secret(&self) -> &'static str {
        FILTER_CLIENT_SECRET
    }

    /// The `sub` the provider knows `account` by (`alice` → `alice-sub`).
    pub fn subject(&self, account: &str) -> String {
        format!("{account}-sub")
    }

    /// A new opaque access token of `account` (`alice` or `bob`) issued to `atlassian-cli`, with
    /// scope `openid email profile`: accepted by userinfo, introspection and revocation.
    pub fn opaque_token(&self, account: &str) -> String {
        self.mint("opaque", account)
    }

    /// A new JWT access token (RFC 9068, `typ: at+jwt`, RS256, `kid` of the JWKS) of `account`
    /// for the resource `urn:atlassian:jira`. Self-contained: oidc-provider does not store it,
    /// so its introspection says `active: false` and it cannot be revoked.
    pub fn jwt_access_token(&self, account: &str) -> String {
        self.mint("jwt", account)
    }

    fn mint(&self, format: &str, account: &str) -> String {
        let url = format!(
            "{}/test/{format}?account={}",
            self.issuer(),
            form_encode(account)
        );
        let reply = self.json("POST", &url, None, Some(""));
        reply["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: no access_token in {reply}"))
            .to_string()
    }

    /// Revokes `token` at the revocation endpoint (RFC 7009), as the client it was issued to.
    pub fn revoke(&self, token: &str) {
        let body = form(&[("token", token), ("token_type_hint", "access_token")]);
        let auth = basic(APP_CLIENT_ID, APP_CLIENT_SECRET);
        let (status, text) = self.call("POST", &self.revocation_uri(), Some(&auth), Some(&body));
        assert_eq!(status, 200, "revocation: {text}");
    }

    /// The introspection response (RFC 7662) for `token`, asked as the filter's client.
    pub fn introspect(&self, token: &str) -> Value {
        let body = form(&[("token", token)]);
        let auth = basic(FILTER_CLIENT_ID, FILTER_CLIENT_SECRET);
        self.json("POST", &self.introspection_uri(), Some(&auth), Some(&body))
    }

    /// Status and body of the userinfo endpoint for `token`.
    pub fn userinfo(&self, token: &str) -> (u16, String) {
        let auth = format!("Bearer {token}");
        self.call("GET", &self.userinfo_uri(), Some(&auth), None)
    }

    /// How many requests the provider received at the path of `uri` (a URI or a path) since it
    /// started, the harness's own calls included (discovery is read once at start).
    pub fn requests(&self, uri: &str) -> u64 {
        let path = uri.strip_prefix(&self.issuer()).unwrap_or(uri);
        let counts = self.json(
            "GET",
            &format!("{}/test/requests", self.issuer()),
            None,
            None,
        );
        counts[path].as_u64().unwrap_or(0)
    }

    /// Requests to the userinfo endpoint so far.
    pub fn userinfo_requests(&self) -> u64 {
        self.requests(&self.userinfo_uri())
    }

    /// Requests to the introspection endpoint so far.
    pub fn introspection_requests(&self) -> u64 {
        self.requests(&self.introspection_uri())
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        self.json("GET", &self.jwks_uri(), None, None)
    }

    /// Everything the provider wrote to stdout (after READY) and stderr so far (bounded).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn endpoint(&self, name: &str) -> String {
        self.discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no {name}: {}", self.discovery))
            .to_string()
    }

    /// One HTTP call; any status is returned, a transport failure panics with the log.
    /// A `Some` body is sent form-encoded.
    fn call(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(HTTP_TIMEOUT)
            .redirects(0)
            .build();
        let mut request = agent.request(method, url);
        if let Some(authorization) = authorization {
            request = request.set("authorization", authorization);
        }
        let sent = match body {
            Some(body) => request
                .set("content-type", "application/x-www-form-urlencoded")
                .send_string(body),
            None => request.call(),
        };
        let response = match sent {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(e)) => panic!(
                "oidc-provider: {method} {url}: {e}\n--- its log ---\n{}",
                self.log()
            ),
        };
        let status = response.status();
        let text = response
            .into_string()
            .unwrap_or_else(|e| panic!("oidc-provider: {method} {url}: reading body: {e}"));
        (status, text)
    }

    /// One HTTP call that must answer 200 with JSON.
    fn json(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Value {
        let (status, text) = self.call(method, url, authorization, body);
        assert_eq!(status, 200, "oidc-provider: {method} {url}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("oidc-provider: {method} {url}: not JSON ({e}): {text}"))
    }

    fn stop(&mut self) {
        // Closing stdin alone makes it exit; the kill makes sure, and the wait reaps it.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Both pipes are at EOF once the process is gone.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- oidc-provider log (port {}), last {LOG_TAIL_LINES} lines ---\n{}",
                self.port,
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
    }
}

/// `NODE` if set, else `node` (looked up on PATH when spawned).
fn node_binary() -> PathBuf {
    std::env::var_os("NODE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}

/// Sends each stdout line to `lines` while the receiver listens (the READY line), then appends
/// the rest to `log`; reading on keeps the pipe from filling up and blocking the provider.
fn spawn_stdout_reader(
    stdout: impl Read + Send + 'static,
    lines: mpsc::Sender<String>,
    log: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("oidc-provider-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                append(&log, &line);
                // The receiver is gone once READY has been read; the rest only goes to the log.
                let _ = lines.send(line);
            }
        })
        .expect("spawn stdout reader")
}

fn spawn_log_reader(stderr: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("oidc-provider-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                append(&log, &line);
            }
        })
        .expect("spawn stderr reader")
}

/// Appends `line` to `log`, keeping it under `LOG_LIMIT` by dropping its oldest half.
fn append(log: &Mutex<String>, line: &str) {
    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if log.len() + line.len() > LOG_LIMIT {
        let mut cut = log.len() / 2;
        while !log.is_char_boundary(cut) {
            cut += 1;
        }
        log.replace_range(..cut, "[...]\n");
    }
    log.push_str(line);
    log.push('\n');
}

/// `Basic base64(id:secret)`; the ids and secrets here need no form-encoding (RFC 6749 2.3.1).
fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// An `application/x-www-form-urlencoded` body.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
