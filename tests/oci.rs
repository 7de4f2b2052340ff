//! `deploy/oci/package.py` (behind `make oci`) writes a Wasm OCI image that Istio and Envoy
//! Gateway can pull: these tests run it on a small stand-in module and check the layout is
//! self-consistent (every digest and size matches its blob) and has the media types they expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const WASM_LAYER_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const WASM_CONFIG_TYPE: &str = "application/vnd.module.wasm.config.v1+json";

/// A stand-in module: the Wasm header, and the ABI marker the real filter exports.
fn dummy_wasm() -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.extend_from_slice(b"\x00\x07proxy_abi_version_0_2_1");
    wasm.extend((0..4096u32).map(|i| (i * 31 % 251) as u8));
    wasm
}

/// A fresh directory under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ara-oci-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn package(wasm: &Path, out: &Path, tag: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/oci/package.py");
    Command::new("python3")
        .arg(&script)
        .arg("--wasm")
        .arg(wasm)
        .arg("--out")
        .arg(out)
        .args(["--tag", tag])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 {}: {e} (Python 3 is needed for `make oci`)",
                script.display()
            )
        })
}

/// Packages `wasm` into `scratch/out`; panics with the script's output if it fails.
fn packaged(scratch: &Scratch, wasm: &[u8], tag: &str) -> PathBuf {
    let input = scratch.0.join("plugin.wasm");
    std::fs::write(&input, wasm).unwrap();
    let out = scratch.0.join("out");
    let run = package(&input, &out, tag);
    assert!(
        run.status.success(),
        "package.py failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The blob a descriptor names, after checking its digest and size against the bytes.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"]
        .as_str()
        .expect("descriptor without digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"));
    let path = layout.join("blobs/sha256").join(hex);
    let data = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("blob {digest} missing at {}: {e}", path.display()));
    assert_eq!(
        sha256_hex(&data),
        hex,
        "blob {digest} does not hash to its name"
    );
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(data.len() as u64),
        "size of {digest} in its descriptor"
    );
    data
}

/// The image found through `index.json`: (manifest JSON, every blob read, by digest).
struct Image {
    manifest: Value,
    blobs: BTreeMap<String, Vec<u8>>,
}

fn read_layout(layout: &Path, tag: &str) -> Image {
    assert_eq!(
        json_file(&layout.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json_file(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], INDEX_TYPE);
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json without manifests");
    assert_eq!(manifests.len(), 1, "one image per layout");
    let entry = &manifests[0];
    assert_eq!(entry["mediaType"], MANIFEST_TYPE);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        tag
    );
    let mut blobs = BTreeMap::new();
    let manifest_bytes = blob(layout, entry);
    blobs.insert(
        entry["digest"].as_str().unwrap().to_string(),
        manifest_bytes.clone(),
    );
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is not JSON");
    let descriptors = std::iter::once(&manifest["config"]).chain(
        manifest["layers"]
            .as_array()
            .expect("manifest without layers"),
    );
    for d in descriptors {
        blobs.insert(d["digest"].as_str().unwrap().to_string(), blob(layout, d));
    }
    Image { manifest, blobs }
}

/// Regular files of a ustar archive, by path.
fn untar(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let field = |header: &[u8], from: usize, to: usize| {
        let raw = &header[from..to];
        String::from_utf8(raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())].to_vec())
            .unwrap()
    };
    let mut files = BTreeMap::new();
    let mut at = 0;
    while at + 512 <= archive.len() && archive[at..at + 512].iter().any(|&b| b != 0) {
        let header = &archive[at..at + 512];
        let size = usize::from_str_radix(field(header, 124, 136).trim(), 8).unwrap();
        let prefix = field(header, 345, 500);
        let name = field(header, 0, 100);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let body = at + 512;
        if matches!(header[156], b'0' | 0) {
            files.insert(path, archive[body..body + size].to_vec());
        }
        at = body + size.div_ceil(512) * 512;
    }
    files
}

/// Regular files under `dir`, by path relative to it.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn every_digest_and_size_matches_its_blob() {
    let scratch = Scratch::new();
    let out = packaged(&scratch, &dummy_wasm(), "1.2.3");
    let layout = out.join("atlassian-rest-auth");
    let image = read_layout(&layout, "1.2.3");
    // No blob is left over that nothing refers to.
    let stored: Vec<String> = files_under(&layout.join("blobs/sha256"))
        .into_keys()
        .map(|hex| format!("sha256:{hex}"))
        .collect();
    assert_eq!(stored, image.blobs.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn manifest_has_the_media_types_istio_and_envoy_gateway_pull() {
    let scratch = Scratch::new();
    let wasm = dummy_wasm();
    let out = packaged(&scratch, &wasm, "1.2.3");
    let image = read_layout(&out.join("atlassian-rest-auth"), "1.2.3");
    let m = &image.manifest;
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], MANIFEST_TYPE);
    assert_eq!(m["config"]["mediaType"], WASM_CONFIG_TYPE);
    let layers = m["layers"].as_array().unwrap();
    // Both pullers' "oci" variant wants exactly two layers, one of them the raw module.
    assert_eq!(layers.len(), 2, "{m:#}");
    let wasm_layers: Vec<&Value> = layers
        .iter()
        .filter(|l| l["mediaType"] == WASM_LAYER_TYPE)
        .collect();
    assert_eq!(wasm_layers.len(), 1, "exactly one Wasm layer: {m:#}");
    assert_eq!(
        image.blobs[wasm_layers[0]["digest"].as_str().unwrap()],
        wasm,
        "the Wasm layer is the module, uncompressed"
    );
    assert_eq!(
        wasm_layers[0]["annotations"]["org.opencontainers.image.title"],
        "plugin.wasm"
    );
    let other = layers
        .iter()
        .find(|l| l["mediaType"] != WASM_LAYER_TYPE)
        .unwrap();
    assert_eq!(other["mediaType"], WASM_CONFIG_TYPE);
    assert_eq!(
        other["digest"], m["config"]["digest"],
        "the second layer is the runtime config"
    );
}

#[test]
fn runtime_config_names_envoy_the_abi_and_the_root_id() {
    let scratch = Scratch::new();
    let out = packaged(&scratch, &dummy_wasm(), "1.2.3");
    let image = read_layout(&out.join("atlassian-rest-auth"), "1.2.3");
    let config: Value =
        serde_json::from_slice(&image.blobs[image.manifest["config"]["digest"].as_str().unwrap()])
            .unwrap();
    assert_eq!(config["type"], "envoy_proxy");
    assert_eq!(
        config["abiVersions"],
        serde_json::json!(["proxy_abi_version_0_2_1"])
    );
    assert_eq!(
        config["config"]["root_ids"],
        serde_json::json!(["atlassian_rest_auth"])
    );
}

#[test]
fn archive_holds_the_same_layout() {
    let scratch = Scratch::new();
    let out = packaged(&scratch, &dummy_wasm(), "1.2.3");
    let archived = untar(&std::fs::read(out.join("atlassian-rest-auth.tar")).unwrap());
    assert_eq!(archived, files_under(&out.join("atlassian-rest-auth")));
    assert!(archived.contains_key("oci-layout") && archived.contains_key("index.json"));
}

#[test]
fn packaging_is_reproducible() {
    let (a, b) = (Scratch::new(), Scratch::new());
    let first = std::fs::read(packaged(&a, &dummy_wasm(), "1.2.3").join("atlassian-rest-auth.tar"))
        .unwrap();
    let second =
        std::fs::read(packaged(&b, &dummy_wasm(), "1.2.3").join("atlassian-rest-auth.tar"))
            .unwrap();
    assert!(
        first == second,
        "two runs on the same module gave different archives"
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let scratch = Scratch::new();
    let input = scratch.0.join("not.wasm");
    std::fs::write(&input, b"<html>not a module</html>").unwrap();
    let run = package(&input, &scratch.0.join("out"), "1.2.3");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not a WebAssembly module"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!scratch.0.join("out/atlassian-rest-auth").exists());
}
