//! atlassian-rest-auth: a proxy-wasm filter that authenticates Jira, Confluence and Bitbucket
//! REST calls with OAuth 2.0 / OpenID Connect tokens and hands Atlassian a username header.
//!
//! The core (everything but `filter`) is sans-IO: it takes headers, replies and the time as
//! inputs and returns what should happen next, so it is tested natively with `cargo test`.
//! `filter` is the thin proxy-wasm adapter and only builds for wasm32.
//! The modules are public for the CLI, the integration tests and the fuzz targets; what only
//! the crate itself uses is `pub(crate)`.
#![forbid(unsafe_code)]

pub mod api_token;
pub mod authenticator;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod digest;
pub mod error;
pub mod github;
pub mod host_verify;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod lookup;
pub mod memo;
pub mod oauth1;
pub mod outbound;
pub mod path;
pub mod preset;
pub mod rules;
/// The signature arithmetic (its own crate, built for speed: `crates/sig`).
pub use atlassian_rest_auth_sig as sig;
pub mod time;
pub mod uri;
pub mod verify;
pub mod worker;

#[cfg(target_arch = "wasm32")]
mod filter;
