//! Every Kubernetes object we ship (the `.yaml` files under `deploy/`, and any YAML block in
//! `docs/**/*.md` or README.md whose documents have an `apiVersion` and a `kind`) is checked
//! against its kind's real schema: the Istio CRDs, the Gateway API and Kubernetes OpenAPI
//! definitions, from the npm packages pinned in `tests/manifests/` (README.md there: which
//! versions, and the kinds no package covers). A field the schema does not name is refused too:
//! the API server would prune it silently. `tests/manifests/validate.mjs` does the checking
//! (`make manifests` installs its packages).
//!
//! And every reference to the filter's image pins it by digest, at Cargo.toml's version
//! (`deploy/pin-image.py` writes them; README "Guides").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files under `dir` whose names end with one of `extensions`, sorted.
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a YAML text (empty ones left out), or why it is not YAML.
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A fenced YAML block of a Markdown file.
struct YamlBlock {
    /// The line of the opening fence.
    line: usize,
    /// Marked ```` ```yaml kubernetes ```` (tests/docs.rs: how blocks are marked).
    kubernetes: bool,
    text: String,
}

/// The fenced YAML blocks of a Markdown file.
fn yaml_blocks(file: &Path) -> Vec<YamlBlock> {
    let source = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(YamlBlock, bool, usize)> = None;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None if trimmed.starts_with("```") => {
                let mut info = trimmed.trim_start_matches('`').split_whitespace();
                let yaml = matches!(info.next(), Some("yaml" | "yml"));
                let block = YamlBlock {
                    line: i + 1,
                    kubernetes: info.any(|m| m == "kubernetes"),
                    text: String::new(),
                };
                open = Some((block, yaml, indent));
            }
            None => {}
            Some((block, yaml, _))
                if trimmed.starts_with("```")
                    && trimmed.trim_start_matches('`').trim().is_empty() =>
            {
                // A closing fence: keep the block if it is YAML.
                out.extend(yaml.then_some(block));
            }
            Some((mut block, yaml, fence_indent)) => {
                block
                    .text
                    .push_str(line.get(fence_indent.min(indent)..).unwrap_or(""));
                block.text.push('\n');
                open = Some((block, yaml, fence_indent));
            }
        }
    }
    out
}

/// An object to check: where it comes from (file, document or block) and the object.
struct Object {
    at: String,
    doc: Value,
}

fn is_kubernetes_object(doc: &Value) -> bool {
    doc["apiVersion"].is_string() && doc["kind"].is_string()
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("(no name)")
    )
}

/// Every Kubernetes object in deploy/ and in the YAML blocks of docs/ and README.md.
fn shipped_objects() -> Vec<Object> {
    let mut out = Vec::new();
    for file in files_under(&repo().join("deploy"), &["yaml", "yml"]) {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs =
            yaml_documents(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", relative(&file)));
        for (i, doc) in docs.into_iter().enumerate() {
            assert!(
                is_kubernetes_object(&doc),
                "{}: document {} has no apiVersion and kind",
                relative(&file),
                i + 1
            );
            out.push(Object {
                at: format!(
                    "{}, document {} ({})",
                    relative(&file),
                    i + 1,
                    describe(&doc)
                ),
                doc,
            });
        }
    }
    let mut markdown = files_under(&repo().join("docs"), &["md"]);
    markdown.push(repo().join("README.md"));
    for file in markdown {
        for block in yaml_blocks(&file) {
            let at = format!("{}:{}", relative(&file), block.line);
            // Envoy configurations (```yaml bootstrap / cluster) are tests/docs.rs's. Any block
            // holding Kubernetes objects is checked here, marked or not (docs.rs wants a mark).
            let docs = match yaml_documents(&block.text) {
                Ok(docs) => docs,
                Err(e) if block.kubernetes => panic!("{at}: not YAML: {e}"),
                Err(_) => continue,
            };
            for doc in docs {
                if is_kubernetes_object(&doc) {
                    out.push(Object {
                        at: format!("{at} ({})", describe(&doc)),
                        doc,
                    });
                } else {
                    assert!(
                        !block.kubernetes,
                        "{at}: ```yaml kubernetes holds a document without apiVersion and kind"
                    );
                }
            }
        }
    }
    out
}

/// One object's verdict from validate.mjs.
#[derive(Debug)]
struct Verdict {
    at: String,
    kind: String,
    schema: Option<String>,
    uncovered: Option<String>,
    errors: Vec<String>,
}

/// Runs tests/manifests/validate.mjs on `objects`.
fn validate(objects: &[Object]) -> Vec<Verdict> {
    let dir = repo().join("tests/manifests");
    assert!(
        dir.join("node_modules/@kubernetes-models/istio").is_dir(),
        "the schema packages are not installed: run `make manifests` (npm ci in tests/manifests)"
    );
    let input: Vec<Value> = objects
        .iter()
        .map(|o| json!({ "at": o.at, "doc": o.doc }))
        .collect();
    let mut child = Command::new("node")
        .arg(dir.join("validate.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node (Node.js) did not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(input).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "validate.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), objects.len());
    results
        .into_iter()
        .map(|r| Verdict {
            at: r["at"].as_str().unwrap().to_string(),
            kind: r["kind"].as_str().unwrap().to_string(),
            schema: r["schema"].as_str().map(str::to_string),
            uncovered: r["uncovered"].as_str().map(str::to_string),
            errors: r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect(),
        })
        .collect()
}

/// The kinds validate.mjs checks against no schema (its UNCOVERED table, README.md there).
const UNCOVERED: [&str; 1] = ["install.istio.io/v1alpha1 IstioOperator"];

#[test]
fn every_kubernetes_object_we_ship_matches_its_schema() {
    let objects = shipped_objects();
    let verdicts = validate(&objects);
    let failures: Vec<String> = verdicts
        .iter()
        .flat_map(|v| v.errors.iter().map(move |e| format!("{}: {e}", v.at)))
        .collect();
    assert!(
        failures.is_empty(),
        "objects their schema refuses:\n{}",
        failures.join("\n")
    );
    // Checked against a schema, not waved through: the kinds each recipe relies on.
    let checked: std::collections::BTreeSet<&str> = verdicts
        .iter()
        .filter(|v| v.schema.is_some())
        .map(|v| v.kind.as_str())
        .collect();
    for kind in [
        "extensions.istio.io/v1alpha1 WasmPlugin",
        "networking.istio.io/v1 ServiceEntry",
        "networking.istio.io/v1 DestinationRule",
        "gateway.networking.k8s.io/v1 Gateway",
        "gateway.networking.k8s.io/v1 HTTPRoute",
        "networking.k8s.io/v1 NetworkPolicy",
        "v1 Secret",
        "gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy",
        "gateway.envoyproxy.io/v1alpha1 EnvoyProxy",
        "gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy",
        "monitoring.coreos.com/v1 PrometheusRule",
        "v1 ConfigMap",
    ] {
        assert!(checked.contains(kind), "{kind} not checked: {checked:?}");
    }
    for v in verdicts.iter().filter(|v| v.schema.is_none()) {
        assert!(
            UNCOVERED.contains(&v.kind.as_str()) && v.uncovered.is_some(),
            "{}: {} has no schema",
            v.at,
            v.kind
        );
    }
}

/// The first object of `kind` in `file` (a path under the repository).
fn shipped(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    yaml_documents(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{file}: no {kind}"))
}

/// Renames the key `from` of the object at JSON pointer `at` to `to`.
fn rename(doc: &mut Value, at: &str, from: &str, to: &str) {
    let map = doc.pointer_mut(at).unwrap().as_object_mut().unwrap();
    let value = map.remove(from).unwrap();
    map.insert(to.to_string(), value);
}

fn set(doc: &mut Value, at: &str, value: Value) {
    *doc.pointer_mut(at).unwrap_or_else(|| panic!("no {at}")) = value;
}

#[test]
fn broken_manifests_are_refused_naming_the_file_and_the_path() {
    type Break = fn(&mut Value);
    // (file, kind, what breaks it, the path and the words the refusal must name)
    let cases: [(&str, &str, Break, &str, &str); 10] = [
        (
            "deploy/istio/wasmplugin.yaml",
            "WasmPlugin",
            |d| set(d, "/spec/failStrategy", json!("FAIL_CLOSED")),
            "/spec/failStrategy",
            "not one of the allowed values",
        ),
        (
            "deploy/istio/wasmplugin.yaml",
            "WasmPlugin",
            |d| rename(d, "/spec", "failStrategy", "failStratgy"),
            "/spec/failStratgy",
            "unknown field",
        ),
        (
            "deploy/istio/wasmplugin.yaml",
            "WasmPlugin",
            |d| set(d, "/spec/match/0/ports/0/number", json!("8080")),
            "/spec/match/0/ports/0/number",
            "must be integer",
        ),
        (
            "deploy/istio/wasmplugin.yaml",
            "WasmPlugin",
            |d| rename(d, "/spec/vmConfig/env/0", "valueFrom", "value_from"),
            "/spec/vmConfig/env/0/value_from",
            "unknown field",
        ),
        (
            "deploy/istio/wasmplugin.yaml",
            "DestinationRule",
            |d| {
                set(
                    d,
                    "/spec/trafficPolicy/portLevelSettings/0/tls/mode",
                    json!("TLS"),
                )
            },
            "/spec/trafficPolicy/portLevelSettings/0/tls/mode",
            "not one of the allowed values",
        ),
        (
            "deploy/network-policy/jira.yaml",
            "NetworkPolicy",
            |d| rename(d, "/spec", "ingress", "ingres"),
            "/spec/ingres",
            "unknown field",
        ),
        (
            "deploy/network-policy/jira.yaml",
            "NetworkPolicy",
            |d| rename(d, "/metadata", "name", "nmae"),
            "/metadata/nmae",
            "unknown field",
        ),
        (
            "deploy/envoy-gateway/gateway.yaml",
            "HTTPRoute",
            |d| set(d, "/spec/rules/0/matches/0/path/type", json!("Prefix")),
            "/spec/rules/0/matches/0/path/type",
            "not one of the allowed values",
        ),
        (
            "deploy/envoy-gateway/gateway.yaml",
            "Gateway",
            |d| set(d, "/spec/listeners/0/port", json!("443")),
            "/spec/listeners/0/port",
            "must be integer",
        ),
        (
            "deploy/envoy-gateway/gateway.yaml",
            "Secret",
            |d| rename(d, "", "stringData", "stringdata"),
            "/stringdata",
            "unknown field",
        ),
    ];
    let mut objects = Vec::new();
    for (file, kind, break_it, _, _) in &cases {
        let mut doc = shipped(file, kind);
        break_it(&mut doc);
        objects.push(Object {
            at: format!("{file} ({kind})"),
            doc,
        });
    }
    objects.push(Object {
        at: "docs/example.md:1 (Widget)".into(),
        doc: json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w" } }),
    });
    let verdicts = validate(&objects);
    for ((file, kind, _, path, words), verdict) in cases.iter().zip(&verdicts) {
        assert!(verdict.at.starts_with(file), "{verdict:?}");
        assert!(
            verdict
                .errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(words)),
            "{file} {kind}: broken at {path}, expected a refusal naming it with {words:?}, got {:?}",
            verdict.errors
        );
    }
    let widget = verdicts.last().unwrap();
    assert!(
        widget
            .errors
            .iter()
            .any(|e| e.contains("no schema for example.com/v1 Widget")),
        "{widget:?}"
    );
    // The same objects unbroken pass: the refusals above are the breakage's, not the file's.
    let intact: Vec<Object> = cases
        .iter()
        .map(|(file, kind, _, _, _)| Object {
            at: format!("{file} ({kind})"),
            doc: shipped(file, kind),
        })
        .collect();
    for verdict in validate(&intact) {
        assert!(verdict.errors.is_empty(), "{verdict:?}");
    }
}

#[test]
fn an_unknown_field_inside_free_form_configuration_is_left_alone() {
    // pluginConfig is x-kubernetes-preserve-unknown-fields: the API server keeps whatever is
    // there; the filter's own parser checks it (tests/docs.rs).
    let mut doc = shipped("deploy/istio/wasmplugin.yaml", "WasmPlugin");
    doc["spec"]["pluginConfig"]["anything"] = json!({ "x": 1 });
    let verdicts = validate(&[Object {
        at: "deploy/istio/wasmplugin.yaml (WasmPlugin)".into(),
        doc,
    }]);
    assert!(verdicts[0].errors.is_empty(), "{:?}", verdicts[0]);
}

// ---------------------------------------------------------------------------------------------
// Image references

const IMAGE: &str = "atlassian-rest-auth";

fn cargo_version() -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml: no version")
        .to_string()
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What is wrong with the image references of `text` (`at` names it): every
/// `atlassian-rest-auth:<tag>` must carry `version` as its tag, and a reference a puller reads
/// (the value of a `url:`) must pin a well-formed digest (`<tag>@sha256:<64 hex>`).
fn image_problems(at: &str, text: &str, version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let pulled = line
            .trim_start()
            .trim_start_matches("- ")
            .starts_with("url:");
        let mut rest = line;
        let mut found = false;
        while let Some(i) = rest.find(&format!("{IMAGE}:")) {
            let after = &rest[i + IMAGE.len() + 1..];
            rest = after;
            let reference: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "._-@:".contains(*c))
                .collect();
            if reference.is_empty() {
                continue; // prose ("atlassian-rest-auth: ..."), not a reference
            }
            found = true;
            let (tag, digest) = match reference.split_once('@') {
                Some((tag, digest)) => (tag, Some(digest)),
                None => (reference.as_str(), None),
            };
            let at = format!("{at}:{}", n + 1);
            if tag != version {
                problems.push(format!(
                    "{at}: {IMAGE}:{reference}: the tag is not Cargo.toml's version {version}"
                ));
            }
            match digest {
                Some(d) if !is_digest(d) => problems.push(format!(
                    "{at}: {IMAGE}:{reference}: {d} is not sha256:<64 lowercase hex digits>"
                )),
                None if pulled => problems.push(format!(
                    "{at}: {IMAGE}:{reference}: not pinned by digest (`:{version}@sha256:<digest>`; deploy/pin-image.py)"
                )),
                _ => {}
            }
        }
        if pulled && !found && line.contains(IMAGE) {
            problems.push(format!(
                "{at}:{}: an image url without a tag and digest",
                n + 1
            ));
        }
    }
    problems
}

fn text_files() -> Vec<PathBuf> {
    let mut files = files_under(&repo().join("deploy"), &["yaml", "yml"]);
    files.extend(files_under(&repo().join("docs"), &["md"]));
    files.push(repo().join("README.md"));
    files
}

#[test]
fn every_image_reference_is_pinned_by_digest_at_the_crate_version() {
    let version = cargo_version();
    let mut problems = Vec::new();
    for file in text_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        problems.extend(image_problems(&relative(&file), &text, &version));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The fields the pullers read, in both recipes.
    let istio = shipped("deploy/istio/wasmplugin.yaml", "WasmPlugin");
    let eg = shipped(
        "deploy/envoy-gateway/extension-policy.yaml",
        "EnvoyExtensionPolicy",
    );
    for (at, url) in [
        ("WasmPlugin spec.url", &istio["spec"]["url"]),
        (
            "EnvoyExtensionPolicy spec.wasm[0].code.image.url",
            &eg["spec"]["wasm"][0]["code"]["image"]["url"],
        ),
    ] {
        let url = url.as_str().unwrap_or_else(|| panic!("{at}: missing"));
        let (name, digest) = url
            .split_once('@')
            .unwrap_or_else(|| panic!("{at}: {url} has no digest"));
        assert!(is_digest(digest), "{at}: {url}");
        assert!(
            name.ends_with(&format!("/{IMAGE}:{version}")),
            "{at}: {url}"
        );
    }
    assert!(
        istio["spec"]["url"].as_str().unwrap().starts_with("oci://"),
        "Istio needs the oci:// scheme"
    );
}

#[test]
fn unpinned_or_malformed_image_references_are_caught() {
    let v = "0.1.0";
    let zeros = format!("sha256:{}", "0".repeat(64));
    let ok = format!("  url: oci://r.example/p/{IMAGE}:{v}@{zeros}\n");
    assert!(image_problems("f", &ok, v).is_empty());
    // A push command names a tag, not a digest: fine as long as the tag is the version.
    let push = format!("#   oras cp x/{IMAGE}:{v} r.example/p/{IMAGE}:{v}\n");
    assert!(image_problems("f", &push, v).is_empty());
    for (text, expected) in [
        (
            format!("  url: oci://r.example/p/{IMAGE}:{v}\n"),
            "f:1: atlassian-rest-auth:0.1.0: not pinned by digest",
        ),
        (
            format!("        url: r.example/p/{IMAGE}:0.0.9@{zeros}\n"),
            "the tag is not Cargo.toml's version 0.1.0",
        ),
        (
            format!("  url: oci://r.example/p/{IMAGE}:{v}@sha256:abc\n"),
            "sha256:abc is not sha256:<64",
        ),
        (
            format!(
                "  url: oci://r.example/p/{IMAGE}:{v}@sha256:{}\n",
                "A".repeat(64)
            ),
            "is not sha256:<64",
        ),
        (
            format!("\n#   oras cp x/{IMAGE}:0.2.0 r/{IMAGE}:0.2.0\n"),
            "f:2: atlassian-rest-auth:0.2.0: the tag",
        ),
        (
            format!("  url: oci://r.example/p/{IMAGE}\n"),
            "f:1: an image url without a tag and digest",
        ),
    ] {
        let problems = image_problems("f", &text, v);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{text:?}: expected {expected:?}, got {problems:?}"
        );
    }
}

#[test]
fn pin_image_writes_the_digest_and_the_version_into_every_reference() {
    let root = std::env::temp_dir().join(format!("ara-pin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for file in text_files() {
        let to = root.join(file.strip_prefix(repo()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    // A copy at another version, references still at the old one: as on release day.
    let version = "9.8.7";
    std::fs::write(
        root.join("Cargo.toml"),
        format!("[package]\nname = \"x\"\nversion = \"{version}\"\n"),
    )
    .unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let dist = root.join("target/dist").join(version);
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("oci.txt"),
        format!("layout    x\nmanifest  {digest}\nwasm      y\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new("python3")
            .arg(repo().join("deploy/pin-image.py"))
            .args(args)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    let bad = run(&["sha256:1234"]);
    assert!(!bad.status.success(), "a malformed digest is refused");
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems = Vec::new();
    let mut pinned = 0;
    for file in text_files() {
        let copy = root.join(file.strip_prefix(repo()).unwrap());
        let text = std::fs::read_to_string(&copy).unwrap();
        problems.extend(image_problems(&relative(&file), &text, version));
        pinned += text.matches(&format!("{IMAGE}:{version}@{digest}")).count();
    }
    std::fs::remove_dir_all(&root).unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        pinned >= 2,
        "both recipes pinned to the release's digest ({pinned})"
    );
}
