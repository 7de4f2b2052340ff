//! Envoy as the bench runs it: one worker, pinned to one CPU, a `direct_response` route as the
//! "upstream" (HTTP filters still run before the router answers), and one HTTP filter under test.
//! The bootstrap and the process are `tests/support/envoy.rs`'s, as the tests use them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{self, pinned};
use crate::support::envoy::{
    envoy_binary, filter_wasm, wasm_module_filter, yaml_quoted, Bootstrap, Envoy, Launch, Route,
};
use crate::support::oauth1::with_vm_environment;

/// Name of the cluster of the bench's identity provider (JWKS, userinfo).
pub use crate::support::envoy::IDP_CLUSTER;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// This filter with this JSON configuration and these `(name, value)` pairs in its VM's
    /// environment (`vm_config.environment_variables`), where `{"env": NAME}` secrets come from.
    WasmWithEnv(Value, Vec<(String, String)>),
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
    envoy: Envoy,
}

impl BenchEnvoy {
    /// Starts Envoy without waiting for it; `name` names its directory under `root`.
    pub fn spawn(setup: &Setup, root: &Path, name: &str) -> Self {
        let launch = Launch {
            dir: root.join(name),
            concurrency: 1,
            log_flags: vec!["--log-level".to_string(), "warn".to_string()],
            files: Vec::new(),
        };
        let envoy = Envoy::spawn(
            pinned(setup.cpu, &envoy_binary()),
            &launch,
            &bootstrap_yaml(setup),
        );
        process::watch(envoy.pid());
        BenchEnvoy { envoy }
    }

    /// Starts Envoy and waits until its admin says LIVE; panics with the log tail when not.
    pub fn start(setup: &Setup, root: &Path, name: &str) -> Self {
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
        self.envoy.wait_ready(READY_TIMEOUT)
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.envoy.url(path)
    }

    /// When the process was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.envoy.spawned_at()
    }

    /// Resident memory now, in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.envoy.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }

    /// CPU time Envoy has used so far, all threads, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        process::times(self.envoy.pid()).map_or(0.0, |t| t.cpu_seconds)
    }

    /// Admin counter `name`, 0 when absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.envoy.counter(name)
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.envoy.log_tail(lines)
    }

    /// `Some(status)` once Envoy has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.envoy.exit_status()
    }
}

impl Drop for BenchEnvoy {
    fn drop(&mut self) {
        // Killed here; `Envoy`'s own drop then removes its directory.
        self.envoy.stop();
        process::unwatch(self.envoy.pid());
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
                issuer = yaml_quoted(issuer),
                audience = yaml_quoted(audience),
                jwks = yaml_quoted(&jwks.to_string()),
            )
        }
        HttpFilter::Wasm(configuration) => wasm_module_filter(
            "atlassian_rest_auth",
            &filter_wasm(),
            &configuration.to_string(),
            10,
        ),
        HttpFilter::WasmWithEnv(configuration, environment) => {
            let vars: Vec<(&str, &str)> = environment
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            with_vm_environment(
                &wasm_module_filter(
                    "atlassian_rest_auth",
                    &filter_wasm(),
                    &configuration.to_string(),
                    10,
                ),
                &vars,
            )
        }
        HttpFilter::WasmFile(path) => {
            if !path.is_file() {
                panic!("no {}: `make bench` builds it", path.display());
            }
            let name = path.file_stem().map_or_else(
                || "wasm".to_string(),
                |stem| stem.to_string_lossy().into_owned(),
            );
            wasm_module_filter(&name, path, "", 10)
        }
    }
}

/// The bootstrap of one bench configuration.
pub fn bootstrap_yaml(setup: &Setup) -> String {
    Bootstrap {
        written_by: "examples/bench.rs for one bench configuration",
        admin_port: 0,
        listener_port: setup.listener_port,
        listener_stat_prefix: None,
        stat_prefix: "bench",
        normalize_path: true,
        route: Route::DirectOk,
        http_filters: filter_yaml(&setup.filter),
        clusters: setup
            .idp_port
            .map(|port| (IDP_CLUSTER, port))
            .into_iter()
            .collect(),
        cluster_tls: Vec::new(),
    }
    .to_yaml()
}
