//! The real Envoy with its listener delivered from a watched file (LDS over the filesystem), so
//! a test can change the filter configuration while Envoy runs: write the new listener to a
//! temporary file in the same directory and rename it over `lds.yaml`. Clusters stay static:
//! `upstream` (the echo upstream) and `idp` (the identity provider).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::attacks::assert_log_has_no_crash;
use super::client::try_send;
use super::envoy::{
    envoy_binary, static_cluster, wasm_filter, yaml_quoted, Envoy, Launch, IDP_CLUSTER,
};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The listener's name, the same in every version of `lds.yaml`.
pub const LISTENER: &str = "main";

/// A running Envoy whose listener comes from `<dir>/lds.yaml`. Killed, waited for and its
/// directory removed on drop; if the test is failing, the tail of its log is printed first.
pub struct ReloadableEnvoy {
    envoy: Envoy,
    dir: PathBuf,
    port: u16,
    upstream_port: u16,
    versions: usize,
}

impl ReloadableEnvoy {
    /// Starts Envoy with the listener running `filter`, on a fixed free port, and waits (at most
    /// 20 s) until admin `/ready` says LIVE and the listener is bound.
    pub fn start(upstream_port: u16, idp_port: u16, filter: &Value) -> ReloadableEnvoy {
        let dir = fresh_dir();
        let port = free_port();
        let mut launch = Launch::for_tests(dir.clone());
        launch
            .files
            .push(("lds.yaml".to_string(), lds_yaml(port, 1, filter)));
        let mut envoy = Envoy::spawn(
            Command::new(envoy_binary()),
            &launch,
            &bootstrap_yaml(&dir, upstream_port, idp_port),
        );
        if let Err(reason) = envoy.wait_ready(READY_TIMEOUT) {
            panic!("Envoy did not start: {reason}");
        }
        ReloadableEnvoy {
            envoy,
            dir,
            port,
            upstream_port,
            versions: 1,
        }
    }

    /// Replaces the listener with one running `filter`, on the same port, the way a
    /// configuration tool must: a temporary file in the watched directory renamed over
    /// `lds.yaml` (a rename is atomic, and it is what Envoy's directory watch reacts to).
    pub fn replace_filter(&mut self, filter: &Value) {
        self.versions += 1;
        let temporary = self.dir.join(format!(".lds.yaml.{}.tmp", self.versions));
        std::fs::write(&temporary, lds_yaml(self.port, self.versions, filter))
            .unwrap_or_else(|e| panic!("write {}: {e}", temporary.display()));
        let lds = self.dir.join("lds.yaml");
        std::fs::rename(&temporary, &lds)
            .unwrap_or_else(|e| panic!("rename over {}: {e}", lds.display()));
    }

    /// `http://127.0.0.1:<listener port><path>`; the port never changes.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        self.envoy.admin_url(path)
    }

    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        self.envoy.log()
    }

    /// Admin counter or gauge `name`, 0 when absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.envoy.counter(name)
    }

    /// Panics unless Envoy still runs, admin `/ready` says LIVE, and the log shows no panic
    /// or Wasm trap.
    pub fn assert_unharmed(&mut self) {
        let exited = self.envoy.exit_status();
        assert!(exited.is_none(), "Envoy exited: {exited:?}");
        let ready = try_send("GET", &self.admin_url("/ready"), &[])
            .unwrap_or_else(|e| panic!("admin /ready: {e}"));
        assert_eq!(
            (ready.status, ready.body.trim()),
            (200, "LIVE"),
            "Envoy not ready"
        );
        assert_log_has_no_crash(&self.log());
    }
}

/// A port free a moment ago (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("reserve a port: {e}"))
        .port()
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ara-reload-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

fn bootstrap_yaml(dir: &std::path::Path, upstream_port: u16, idp_port: u16) -> String {
    let dir_text = dir.display().to_string();
    let lds = yaml_quoted(&dir.join("lds.yaml").display().to_string());
    let watched = yaml_quoted(&dir_text);
    let clusters = format!(
        "{}{}",
        static_cluster("upstream", upstream_port),
        static_cluster(IDP_CLUSTER, idp_port)
    );
    format!(
        r#"# Written by tests/support/reload.rs for one test run.
node: {{ id: reload-test, cluster: reload-test }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source:
      path: {lds}
      watched_directory: {{ path: {watched} }}
static_resources:
  clusters:{clusters}
"#
    )
}

/// The LDS discovery response: one listener `main` on `port` running the filter with
/// `filter` as its configuration, then the router to `upstream`.
fn lds_yaml(port: u16, version: usize, filter: &Value) -> String {
    let wasm = wasm_filter(filter, 8);
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {LISTENER}
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {port} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        normalize_path: true
        merge_slashes: true
        route_config:
          name: all
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{ prefix: "/" }}
              route: {{ cluster: upstream }}
        http_filters:{wasm}
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}
