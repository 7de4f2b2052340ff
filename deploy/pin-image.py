#!/usr/bin/env python3
"""Pin the filter's image in the recipes to a manifest digest and to Cargo.toml's version.

    python3 deploy/pin-image.py [sha256:<64 hex digits>] [--root DIR]

Without a digest, the one `make release` wrote for this version is used (the `manifest` line of
target/dist/<version>/oci.txt). `make oci` prints the digest of a build of your own; pass that
one to pin your build instead.

In every deploy/**/*.yaml, docs/**/*.md and README.md under the root (the repository by default),
each image reference `atlassian-rest-auth:<tag>@sha256:<digest>` becomes
`atlassian-rest-auth:<version>@<digest>`, and each `atlassian-rest-auth:<tag>` without a digest
(the push commands in the comments, which push by tag) gets `<version>` as its tag. Prints what it
changed; tests/manifests.rs checks the result (every reference pinned, every tag the version).
"""

import argparse
import pathlib
import re
import sys

NAME = "atlassian-rest-auth"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# A tag (OCI: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}), optionally followed by a digest.
REFERENCE = re.compile(NAME + r":([A-Za-z0-9_][A-Za-z0-9._-]{0,127})(@sha256:[0-9a-f]{64})?")


def cargo_version(root):
    text = (root / "Cargo.toml").read_text(encoding="utf-8")
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not found:
        sys.exit(f"pin-image: no version in {root / 'Cargo.toml'}")
    return found.group(1)


def released_digest(root, version):
    oci = root / "target" / "dist" / version / "oci.txt"
    try:
        text = oci.read_text(encoding="utf-8")
    except OSError:
        sys.exit(f"pin-image: no digest given and no {oci}: run `make release` or pass sha256:<digest>")
    found = re.search(r"^manifest\s+(sha256:[0-9a-f]{64})\s*$", text, re.MULTILINE)
    if not found:
        sys.exit(f"pin-image: {oci} has no `manifest sha256:<digest>` line")
    return found.group(1)


def files(root):
    out = sorted((root / "deploy").rglob("*.yaml")) + sorted((root / "docs").rglob("*.md"))
    readme = root / "README.md"
    if readme.is_file():
        out.append(readme)
    return out


def pin(text, version, digest):
    def replace(m):
        return f"{NAME}:{version}@{digest}" if m.group(2) else f"{NAME}:{version}"

    return REFERENCE.sub(replace, text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("digest", nargs="?", help="sha256:<64 hex digits> (default: the release's)")
    parser.add_argument("--root", default=pathlib.Path(__file__).resolve().parent.parent, type=pathlib.Path)
    args = parser.parse_args()
    root = args.root.resolve()
    version = cargo_version(root)
    digest = args.digest or released_digest(root, version)
    if not DIGEST.fullmatch(digest):
        sys.exit(f"pin-image: {digest!r} is not sha256:<64 lowercase hex digits>")
    changed = 0
    for path in files(root):
        text = path.read_text(encoding="utf-8")
        pinned = pin(text, version, digest)
        if pinned != text:
            path.write_text(pinned, encoding="utf-8")
            changed += 1
            print(f"pinned    {path.relative_to(root)}")
    print(f"image     {NAME}:{version}@{digest} ({changed} files changed)")


if __name__ == "__main__":
    main()
