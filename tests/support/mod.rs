//! End-to-end harness: the real Envoy with the real filter, between a test client, an echo
//! upstream and a simulated identity provider, all on 127.0.0.1.
//!
//! Every server and process here stops when its value is dropped, so a failing test cleans up
//! after itself. Included by `tests/*.rs` with `mod support;` and by `examples/demo.rs` and
//! `examples/bench.rs` with `#[path]` (the bench starts Envoy through `envoy`), each of which
//! uses only part of it.
#![allow(dead_code, unused_imports)]
// Panicking is how a harness reports a broken test environment; the examples that reuse this
// module are developer tools, not code on a request path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod attacks;
pub mod child;
pub mod client;
pub mod echo;
pub mod envoy;
pub mod idp;
pub mod keys;
pub mod oauth1;
pub mod oidc;
pub mod presets;
pub mod prometheus;
pub mod providers;
pub mod reload;
pub mod tokens;
pub mod tomcat;

use std::path::PathBuf;

pub use client::{send, try_send, Reply};
pub use echo::EchoUpstream;
pub use envoy::{Envoy, EnvoyOptions};
pub use idp::{IdpMode, JwksServer};
pub use keys::{jwks_of, Alg, SigningKey};
pub use oidc::OidcProvider;

/// The repository root, where the Makefile, `.venv` and `target/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
