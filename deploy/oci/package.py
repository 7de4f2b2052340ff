#!/usr/bin/env python3
"""Package the filter's .wasm as a Wasm OCI image, without Docker.

    python3 deploy/oci/package.py [--wasm FILE] [--out DIR] [--name NAME] [--tag TAG]

`make oci` runs it on target/atlassian_rest_auth.wasm and writes

    target/oci/atlassian-rest-auth/       an OCI image layout directory
    target/oci/atlassian-rest-auth.tar    the same layout as one tar (an "oci-archive")

The image is the "oci" variant of the Wasm image specification that Istio (WasmPlugin) and
Envoy Gateway (EnvoyExtensionPolicy, code type Image) pull:

    index.json      -> manifest  application/vnd.oci.image.manifest.v1+json
    manifest.config -> application/vnd.module.wasm.config.v1+json  (runtime-config.json)
    manifest.layers -> [ application/vnd.module.wasm.content.layer.v1+wasm  (plugin.wasm, raw),
                         application/vnd.module.wasm.config.v1+json        (runtime-config.json) ]

The .wasm is the one and only Wasm layer. The runtime config appears a second time as a layer
because both pullers insist on exactly two layers for this variant (istio/istio
pkg/wasm/imagefetcher.go and envoyproxy/gateway internal/wasm/imagefetcher.go, function
extractOCIArtifactImage: "number of layers must be 2"); a manifest with the Wasm layer alone is
refused by them. The config blob is the same bytes, so it is stored once.

Every blob sits under blobs/sha256/<hex digest>; the output is reproducible (fixed JSON
formatting, tar entries with mtime 0 and owner 0), so the same .wasm gives the same manifest
digest, which the script prints. Pin it in the image reference (`...@sha256:<digest>`, which
Istio and Envoy Gateway both accept) or in the WasmPlugin's `sha256:` field.

Pushing it to a registry (neither tool is needed to build it):

    # ORAS (https://oras.land), from the layout directory:
    oras cp --from-oci-layout target/oci/atlassian-rest-auth:0.1.0 \\
        registry.example.com/platform/atlassian-rest-auth:0.1.0

    # skopeo, from the directory or the archive; --preserve-digests keeps the manifest (and so
    # the digest you pinned) byte for byte: skopeo does not know the Wasm media types, and
    # some versions fail when they try to recompress such layers for the destination:
    skopeo copy --preserve-digests oci:target/oci/atlassian-rest-auth:0.1.0 \\
        docker://registry.example.com/platform/atlassian-rest-auth:0.1.0
    skopeo copy --preserve-digests oci-archive:target/oci/atlassian-rest-auth.tar:0.1.0 \\
        docker://registry.example.com/platform/atlassian-rest-auth:0.1.0

The registry must accept OCI manifests with custom media types (current Harbor, GHCR, ECR, ACR,
Artifact Registry, Quay and the CNCF distribution registry do).
"""

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
WASM_LAYER_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_CONFIG_TYPE = "application/vnd.module.wasm.config.v1+json"
ROOT_ID = "atlassian_rest_auth"
WASM_MAGIC = b"\0asm"


def canonical_json(value):
    """The bytes a blob is stored as: compact, key order as written, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data, annotations=None):
    d = {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def abi_versions(wasm):
    """The proxy-wasm ABI versions the module exports (`proxy_abi_version_0_2_1`, ...)."""
    return sorted({m.decode() for m in re.findall(rb"proxy_abi_version_[0-9_]*[0-9]", wasm)})


def crate_version(repo_root):
    """`version` of Cargo.toml's [package], the default tag."""
    try:
        with open(os.path.join(repo_root, "Cargo.toml"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "latest"
    package = text.split("[package]", 1)[-1].split("\n[", 1)[0]
    m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.MULTILINE)
    return m.group(1) if m else "latest"


def build_blobs(wasm, name, tag):
    """Every blob of the image by digest, and the index.json bytes."""
    runtime_config = canonical_json({
        "type": "envoy_proxy",
        "abiVersions": abi_versions(wasm),
        "config": {"root_ids": [ROOT_ID]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(WASM_CONFIG_TYPE, runtime_config),
        "layers": [
            descriptor(WASM_LAYER_TYPE, wasm, {"org.opencontainers.image.title": "plugin.wasm"}),
            descriptor(WASM_CONFIG_TYPE, runtime_config, {"org.opencontainers.image.title": "runtime-config.json"}),
        ],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.description": "proxy-wasm filter authenticating Jira, Confluence and Bitbucket REST calls with OAuth 2.0 / OIDC tokens",
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [descriptor(MANIFEST_TYPE, manifest, {"org.opencontainers.image.ref.name": tag})],
    })
    blobs = {digest_of(b): b for b in (wasm, runtime_config, manifest)}
    return blobs, index, digest_of(manifest)


def layout_files(blobs, index):
    """(path inside the layout, bytes), in the order they are written and archived."""
    files = [("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    for digest in sorted(blobs):
        files.append(("blobs/sha256/" + digest.split(":", 1)[1], blobs[digest]))
    return files


def write_layout(directory, files):
    if os.path.isdir(directory):
        if os.listdir(directory) and not os.path.isfile(os.path.join(directory, "oci-layout")):
            sys.exit(f"{directory} exists and is not an OCI layout: not replacing it")
        shutil.rmtree(directory)
    for path, data in files:
        target = os.path.join(directory, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


def write_archive(path, files):
    """A tar of the layout with fixed metadata, so the same input gives the same bytes."""
    def entry(name, size=0, is_dir=False):
        info = tarfile.TarInfo(name)
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        info.mode = 0o755 if is_dir else 0o644
        info.size = size
        return info

    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(entry(d, is_dir=True))
        for name, data in files:
            tar.addfile(entry(name, len(data)), io.BytesIO(data))
    os.replace(tmp, path)


def main(argv):
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description="Package the filter .wasm as a Wasm OCI image layout and archive.")
    parser.add_argument("--wasm", default=os.path.join(repo_root, "target/atlassian_rest_auth.wasm"))
    parser.add_argument("--out", default=os.path.join(repo_root, "target/oci"), help="output directory (default target/oci)")
    parser.add_argument("--name", default="atlassian-rest-auth", help="layout directory and archive name")
    parser.add_argument("--tag", default=None, help="ref name in index.json (default: Cargo.toml version)")
    args = parser.parse_args(argv)

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", args.name):
        parser.error("--name: lowercase letters, digits, '.', '_' and '-' only")
    tag = args.tag or crate_version(repo_root)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        parser.error(f"--tag {tag!r} is not a valid OCI tag")
    try:
        with open(args.wasm, "rb") as f:
            wasm = f.read()
    except OSError as e:
        sys.exit(f"cannot read {args.wasm}: {e.strerror} (run `make build` first)")
    if not wasm.startswith(WASM_MAGIC):
        sys.exit(f"{args.wasm} is not a WebAssembly module (no \\0asm header)")

    blobs, index, manifest_digest = build_blobs(wasm, args.name, tag)
    files = layout_files(blobs, index)
    os.makedirs(args.out, exist_ok=True)
    layout_dir = os.path.join(args.out, args.name)
    archive = os.path.join(args.out, args.name + ".tar")
    write_layout(layout_dir, files)
    write_archive(archive, files)

    print(f"layout    {layout_dir}  (tag {tag})")
    print(f"archive   {archive}")
    print(f"manifest  {manifest_digest}")
    print(f"wasm      {digest_of(wasm)} ({len(wasm)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
