//! The product's side of OAuth 1.0a two-legged impersonation: `tests/oauth1/verifier.py`, a
//! Python HTTP server that checks every request it gets with oauthlib's `SignatureOnlyEndpoint`
//! (a third-party verifier, sharing no code with the filter), in a child process on 127.0.0.1.
//! It stands where Jira would: the upstream of Envoy.
//!
//! It is given a fresh 2048-bit key pair (made by its own `--keygen` with `cryptography`), a
//! consumer key and the base URL the product rebuilds signed URLs from. The filter gets the
//! private key through the VM's environment (`vm_config.environment_variables`), as a deployment
//! does; [`start_envoy`] writes that bootstrap.
//!
//! Needs the project venv's Python with the pinned oauthlib, PyJWT and cryptography
//! (`make oauth1`, part of `make test`); a test panics, saying so, when they are missing.
//! The process exits when its stdin closes and is killed and waited for on drop.

use std::io::{BufRead as _, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::child::{ready_port, NotReady};
use super::client::try_send;
use super::envoy::{envoy_binary, wasm_filter, Bootstrap, Envoy, Launch, Route};
use super::repo_root;

/// The base URL the product is configured with, and so the filter's `base_url`.
pub const BASE_URL: &str = "https://jira.example.com";
/// The consumer key of the Application Link.
pub const CONSUMER_KEY: &str = "ara-e2e-consumer";
/// The environment variable of the VM that holds the private key PEM.
pub const KEY_ENV: &str = "ARA_OAUTH1_PRIVATE_KEY";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_LIMIT: usize = 64 * 1024;
const LOG_TAIL_LINES: usize = 40;
const HOW: &str = "run `make oauth1` (part of `make test`): it installs the pinned oauthlib, \
                   PyJWT and cryptography from tests/oauth1/requirements.txt into .venv";

/// A fresh RSA key pair, in a directory removed on drop.
pub struct KeyPair {
    dir: PathBuf,
    pub private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    /// 2048 bits, private key PKCS#8 PEM, made by `verifier.py --keygen`.
    pub fn generate() -> KeyPair {
        let dir = fresh_dir("ara-oauth1-keys");
        let output = Command::new(python())
            .arg(verifier_script())
            .arg("--keygen")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW}", python().display()));
        if !output.status.success() {
            panic!(
                "verifier.py --keygen failed ({}): {}; {HOW}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        KeyPair {
            private_pem: read("private.pem"),
            public_pem: read("public.pem"),
            dir,
        }
    }

    pub fn public_path(&self) -> PathBuf {
        self.dir.join("public.pem")
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running verifier. Killed and waited for on drop; if the test is failing, the tail of its
/// log (request lines, never header values) is printed first.
pub struct Verifier {
    child: Child,
    /// Held open: the verifier exits when it closes.
    stdin: Option<ChildStdin>,
    port: u16,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    keys: KeyPair,
}

impl Verifier {
    /// A fresh key pair, and the verifier trusting its public key for [`CONSUMER_KEY`] at
    /// [`BASE_URL`]; waits (at most 20 s) for its `READY <port>` line.
    pub fn start() -> Verifier {
        let keys = KeyPair::generate();
        let mut child = Command::new(python())
            .arg(verifier_script())
            .args(["--base-url", BASE_URL, "--consumer-key", CONSUMER_KEY])
            .arg("--public-key")
            .arg(keys.public_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW}", python().display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines, ready) = mpsc::channel();
        let readers = vec![
            read_lines(stdout, Some(lines), Arc::clone(&log)),
            read_lines(stderr, None, Arc::clone(&log)),
        ];
        let mut verifier = Verifier {
            child,
            stdin,
            port: 0,
            log,
            readers,
            keys,
        };
        verifier.port = verifier.wait_ready(&ready);
        verifier
    }

    fn wait_ready(&mut self, lines: &mpsc::Receiver<String>) -> u16 {
        match ready_port(lines, READY_TIMEOUT) {
            Ok(port) => port,
            Err(NotReady::Exited) => {
                // Give stderr a moment to arrive.
                std::thread::sleep(Duration::from_millis(200));
                self.fail("exited before it was ready");
            }
            Err(other) => self.fail(&other.to_string()),
        }
    }

    fn fail(&mut self, reason: &str) -> ! {
        self.stop();
        panic!(
            "the OAuth 1.0a verifier did not start: {reason}; {HOW}\n--- its log ---\n{}",
            self.log()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private key PEM the filter signs with (PKCS#8).
    pub fn private_pem(&self) -> &str {
        &self.keys.private_pem
    }

    /// Every check so far: `{"checks": [{valid, reason, user, method, path, oauth}], "verified":
    /// n, "refused": n}`.
    pub fn record(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/__verifier/log", self.port);
        let reply = try_send("GET", &url, &[]).unwrap_or_else(|e| panic!("verifier log: {e}"));
        assert_eq!(reply.status, 200, "verifier log: {}", reply.body);
        reply.json()
    }

    /// The checks so far.
    pub fn checks(&self) -> Vec<Value> {
        self.record()["checks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Requests whose signature verified, and requests refused, so far.
    pub fn counts(&self) -> (u64, u64) {
        let record = self.record();
        (
            record["verified"].as_u64().unwrap_or(0),
            record["refused"].as_u64().unwrap_or(0),
        )
    }

    /// Everything the verifier wrote so far (bounded).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- OAuth 1.0a verifier log (port {}), last {LOG_TAIL_LINES} lines ---\n{}",
                self.port,
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
    }
}

/// `ARA_PYTHON` if set, else the project venv's Python (`.venv/bin/python`), which `make
/// oauth1` gives the pinned packages.
pub fn python() -> PathBuf {
    std::env::var_os("ARA_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// `tests/oauth1/verifier.py`.
pub fn verifier_script() -> PathBuf {
    repo_root().join("tests/oauth1/verifier.py")
}

/// Panics, with the way to fix it, unless [`python`] imports oauthlib, PyJWT and cryptography.
pub fn require_python_packages() {
    let python = python();
    let output = Command::new(&python)
        .args(["-c", "import oauthlib, jwt, cryptography"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW}", python.display()));
    if !output.status.success() {
        panic!(
            "{} cannot import the verifier's packages: {}; {HOW}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

/// `filter_block` (a Wasm filter entry as [`wasm_filter`] writes it) with
/// `vm_config.environment_variables.key_values` holding `vars`: how secrets such as the
/// private key reach the filter's VM. Values are written as YAML double-quoted scalars (JSON
/// strings), so a multi-line PEM keeps its line breaks.
pub fn with_vm_environment(filter_block: &str, vars: &[(&str, &str)]) -> String {
    let entries: Vec<String> = vars
        .iter()
        .map(|(name, value)| format!("{name}: {}", Value::from(*value)))
        .collect();
    let mut lines: Vec<String> = filter_block.split('\n').map(str::to_string).collect();
    let code = lines
        .iter()
        .position(|line| line.trim_start().starts_with("code: "))
        .unwrap_or_else(|| panic!("no `code:` line in the filter block: {filter_block}"));
    let indent = &lines[code][..lines[code].len() - lines[code].trim_start().len()];
    let added = format!(
        "{indent}environment_variables: {{ key_values: {{ {} }} }}",
        entries.join(", ")
    );
    lines.insert(code + 1, added);
    lines.join("\n")
}

/// `filter_block` with `allow_on_headers_stop_iteration: true`: Envoy then hands the filter a
/// request's body while its headers are paused, which signing a form body needs.
pub fn with_body_while_paused(filter_block: &str) -> String {
    let mut lines: Vec<String> = filter_block.split('\n').map(str::to_string).collect();
    let root = lines
        .iter()
        .position(|line| line.trim_start().starts_with("root_id: "))
        .unwrap_or_else(|| panic!("no `root_id:` line in the filter block: {filter_block}"));
    let indent = &lines[root][..lines[root].len() - lines[root].trim_start().len()];
    let added = format!("{indent}allow_on_headers_stop_iteration: true");
    lines.insert(root + 1, added);
    lines.join("\n")
}

/// Envoy (two workers, the filter's debug log) with the filter on `filter` and the VM
/// environment `vars`, routing every request to the verifier on `verifier_port`. Panics with
/// Envoy's log if it does not become ready.
pub fn start_envoy(
    verifier_port: u16,
    filter: &Value,
    vars: &[(&str, &str)],
    body_while_paused: bool,
) -> Envoy {
    let mut filters = with_vm_environment(&wasm_filter(filter, 10), vars);
    if body_while_paused {
        filters = with_body_while_paused(&filters);
    }
    let bootstrap = Bootstrap {
        written_by: "tests/support/oauth1.rs for one test run",
        admin_port: 0,
        listener_port: 0,
        listener_stat_prefix: Some("main"),
        stat_prefix: "ingress",
        normalize_path: true,
        route: Route::Cluster("upstream"),
        http_filters: filters,
        clusters: vec![("upstream", verifier_port)],
        cluster_tls: Vec::new(),
    }
    .to_yaml();
    let launch = Launch::for_tests(fresh_dir("ara-envoy-oauth1"));
    let mut envoy = Envoy::spawn(Command::new(envoy_binary()), &launch, &bootstrap);
    if let Err(reason) = envoy.wait_ready(READY_TIMEOUT) {
        envoy.stop();
        panic!(
            "Envoy did not start: {reason}\n--- Envoy log (tail) ---\n{}",
            envoy.log_tail(80)
        );
    }
    envoy
}

/// Sends each line to `lines` (while someone listens) and appends it to `log`; reading on keeps
/// the pipe from filling up and blocking the verifier.
fn read_lines(
    from: impl Read + Send + 'static,
    lines: Option<mpsc::Sender<String>>,
    log: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("oauth1-verifier-output".into())
        .spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if log.len() + line.len() > LOG_LIMIT {
                        let mut cut = log.len() / 2;
                        while !log.is_char_boundary(cut) {
                            cut += 1;
                        }
                        log.replace_range(..cut, "[...]\n");
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(lines) = &lines {
                    let _ = lines.send(line);
                }
            }
        })
        .expect("spawn verifier output reader")
}

/// A new directory name under the temp dir, unique in this process.
fn fresh_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}
