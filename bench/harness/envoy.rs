//! Envoy as the bench runs it: one worker, pinned to one CPU, a `direct_response` route as the
//! "upstream" (HTTP filters still run before the router answers), and one HTTP filter under test.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{pinned, Guarded};
use crate::support::client::try_send;
use crate::support::envoy::{envoy_binary, filter_wasm};

/// Name of the cluster of the bench's identity provider (JWKS, userinfo).
pub const IDP_CLUSTER: &str = "idp";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// The HTTP filter in front of the router.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// The router alone.
    Nothing,
    /// Envoy's `envoy.filters.http.jwt_authn`, one provider with an inline JWKS.
    JwtAuthn {
        issuer: String,
        audience: String,
        jwks: Value,
        /// `jwt_cache_config`: verified tokens are cached by Envoy.
        cache: bool,
    },
    /// This filter (V8) with this JSON configuration.
    Wasm(Value),
    /// Another proxy-wasm module (V8, the same `vm_config` as [`HttpFilter::Wasm`]) with an
    /// empty configuration.
    WasmFile(PathBuf),
}

/// What one Envoy is started with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub filter: HttpFilter,
    /// Port of the identity provider behind cluster `idp` (STATIC, so it need not be up yet).
    pub idp_port: Option<u16>,
    /// Listener port; 0 lets the kernel choose.
    pub listener_port: u16,
    /// CPU that Envoy is pinned to.
    pub cpu: Option<u32>,
}

/// A running Envoy; killed (and its directory removed) on drop, or by the panic hook.
pub struct BenchEnvoy {
    process: Guarded,
    dir: PathBuf,
    port: u16,
    admin_port: u16,
    spawned_at: Instant,
}

impl BenchEnvoy {
    /// Starts Envoy without waiting for it; `name` names its directory under `root`.
    pub fn spawn(setup: &Setup, root: &std::path::Path, name: &str) -> Self {
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap_yaml(setup))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let log = File::create(dir.join("envoy.log"))
            .unwrap_or_else(|e| panic!("create the log in {}: {e}", dir.display()));
        let mut command = pinned(setup.cpu, &envoy_binary());
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", "warn"])
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate file handle"))
            .stderr(log);
        let spawned_at = Instant::now();
        let process = Guarded::spawn(command, &format!("Envoy ({name})"));
        BenchEnvoy {
            process,
            dir,
            port: setup.listener_port,
            admin_port: 0,
            spawned_at,
        }
    }

    /// Starts Envoy and waits until its admin says LIVE; panics with the log tail when not.
    pub fn start(setup: &Setup, root: &std::path::Path, name: &str) -> Self {
        let mut envoy = Self::spawn(setup, root, name);
        if let Err(why) = envoy.wait_ready() {
            panic!(
                "Envoy ({name}) did not start: {why}\n--- log tail ---\n{}",
                envoy.log_tail(40)
            );
        }
        envoy
    }

    /// Waits (at most 30 s) for admin `/ready` to say LIVE, then learns the listener port.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let address_file = self.dir.join("admin-address");
        while Instant::now() < deadline {
            if let Some(status) = self.process.exited() {
                return Err(format!("Envoy exited ({status})"));
            }
            if self.admin_port == 0 {
                self.admin_port = std::fs::read_to_string(&address_file)
                    .ok()
                    .and_then(|text| text.trim().rsplit(':').next()?.parse().ok())
                    .unwrap_or(0);
            }
            if self.admin_port != 0 {
                let ready = try_send("GET", &self.admin_url("/ready"), &[]);
                if matches!(&ready, Ok(r) if r.status == 200 && r.body.trim() == "LIVE") {
                    self.port = self.bound_listener_port()?;
                    return Ok(());
                }
            }
            std::thread::sleep(POLL);
        }
        Err(format!("not ready after {READY_TIMEOUT:?}"))
    }

    fn bound_listener_port(&self) -> Result<u16, String> {
        let reply = try_send("GET", &self.admin_url("/listeners?format=json"), &[])?;
        let json: Value = serde_json::from_str(&reply.body).map_err(|e| e.to_string())?;
        json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("admin /listeners has no port: {}", reply.body))
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// When the process was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Resident memory now, in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.process.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// CPU time Envoy has used so far, all threads, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        super::process::times(self.process.pid()).map_or(0.0, |t| t.cpu_seconds)
    }

    /// Admin counter `name`, 0 when absent.
    pub fn counter(&self, name: &str) -> u64 {
        let url = self.admin_url(&format!("/stats?format=json&filter=^{name}$"));
        let Ok(reply) = try_send("GET", &url, &[]) else {
            return 0;
        };
        let json: Value = serde_json::from_str(&reply.body).unwrap_or_default();
        json["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Some(status)` once Envoy has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }
}

impl Drop for BenchEnvoy {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `envoy --version`, e.g. `1.40.0/Clean/RELEASE/BoringSSL`.
pub fn version() -> String {
    let output = std::process::Command::new(envoy_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    output
        .split_whitespace()
        .skip_while(|word| *word != "version:")
        .nth(1)
        .unwrap_or("unknown")
        .to_string()
}

/// A YAML single-quoted scalar: the only escape is `'` → `''`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn filter_yaml(filter: &HttpFilter) -> String {
    match filter {
        HttpFilter::Nothing => String::new(),
        HttpFilter::JwtAuthn {
            issuer,
            audience,
            jwks,
            cache,
        } => {
            let cache = if *cache {
                "\n                  jwt_cache_config: { jwt_cache_size: 1000 }"
            } else {
                ""
            };
            format!(
                r#"
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: {issuer}
                  audiences: [{audience}]
                  local_jwks: {{ inline_string: {jwks} }}{cache}
              rules:
              - match: {{ prefix: "/" }}
                requires: {{ provider_name: bench }}"#,
                issuer = quoted(issuer),
                audience = quoted(audience),
                jwks = quoted(&jwks.to_string()),
            )
        }
        HttpFilter::Wasm(configuration) => wasm_yaml(
            "atlassian_rest_auth",
            &filter_wasm(),
            &configuration.to_string(),
        ),
        HttpFilter::WasmFile(path) => {
            if !path.is_file() {
                panic!("no {}: `make bench` builds it", path.display());
            }
            let name = path.file_stem().map_or_else(
                || "wasm".to_string(),
                |stem| stem.to_string_lossy().into_owned(),
            );
            wasm_yaml(&name, path, "")
        }
    }
}

/// `envoy.filters.http.wasm` running `filename` in V8; `name` is also its root and VM id.
fn wasm_yaml(name: &str, filename: &std::path::Path, configuration: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {filename} }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {configuration}
                fail_open: false"#,
        name = quoted(name),
        filename = quoted(&filename.display().to_string()),
        configuration = quoted(configuration),
    )
}

fn bootstrap_yaml(setup: &Setup) -> String {
    let clusters = match setup.idp_port {
        Some(port) => format!(
            r#"
  - name: {IDP_CLUSTER}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {IDP_CLUSTER}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}"#
        ),
        None => " []".to_string(),
    };
    format!(
        r#"# Written by examples/bench.rs for one bench configuration.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listener_port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          normalize_path: true
          merge_slashes: true
          route_config:
            name: all
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok\n" }} }}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:{clusters}
"#,
        listener_port = setup.listener_port,
        filter = filter_yaml(&setup.filter),
    )
}
