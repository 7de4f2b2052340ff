//! The configuration as JSON spells it: serde structs that mirror the text; `Config::parse`
//! checks them.

use super::defaults::{
    default_auth, default_authorization, default_basic, default_cache_entries,
    default_cache_seconds, default_clock_skew_seconds, default_jwks_max_stale_seconds,
    default_jwks_refresh_seconds, default_max_concurrent_calls, default_realm, default_timeout_ms,
    default_unknown_bearer, default_username_header, yes,
};
use super::{AuthorizationForward, BasicMode, ProviderMode, UnknownBearer};
use crate::rules::AuthMode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_realm")]
    pub(super) realm: String,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) api_tokens: Vec<RawApiToken>,
    #[serde(default = "default_basic")]
    pub(super) basic: BasicMode,
    #[serde(default = "default_unknown_bearer")]
    pub(super) unknown_bearer: UnknownBearer,
    #[serde(default = "default_auth")]
    pub(super) default_auth: AuthMode,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
    #[serde(default)]
    pub(super) forward: RawForward,
    #[serde(default)]
    pub(super) clusters: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub(super) bypass_cors_preflight: bool,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default = "default_cache_entries")]
    pub(super) cache_entries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) preset: Option<String>,
    pub(super) mode: Option<ProviderMode>,
    pub(super) issuer: Option<String>,
    pub(super) audiences: Option<RawAudiences>,
    #[serde(default)]
    pub(super) accept_graph_tokens: bool,
    pub(super) discovery: Option<bool>,
    pub(super) jwks_uri: Option<String>,
    pub(super) jwks: Option<Value>,
    pub(super) userinfo_uri: Option<String>,
    pub(super) introspection_uri: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<RawSecret>,
    pub(super) token_prefixes: Option<Vec<String>>,
    pub(super) username_claim: Option<OneOrMany>,
    #[serde(default)]
    pub(super) username_transform: RawTransform,
    pub(super) algorithms: Option<Vec<String>>,
    #[serde(default = "default_clock_skew_seconds")]
    pub(super) clock_skew_seconds: u64,
    #[serde(default = "yes")]
    pub(super) require_expiration: bool,
    #[serde(default = "default_jwks_refresh_seconds")]
    pub(super) jwks_refresh_seconds: u64,
    #[serde(default = "default_jwks_max_stale_seconds")]
    pub(super) jwks_max_stale_seconds: u64,
    #[serde(default = "default_cache_seconds")]
    pub(super) cache_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_max_concurrent_calls")]
    pub(super) max_concurrent_calls: u32,
    #[serde(default)]
    pub(super) request_headers: BTreeMap<String, String>,
    pub(super) token_use: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiToken {
    pub(super) user: String,
    pub(super) sha256: String,
    pub(super) expires_at: Option<String>,
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `audiences`: a list, or the word `"any"` (said explicitly, never by omission).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawAudiences {
    Any(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSecret {
    Plain(String),
    Env(EnvRef),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnvRef {
    pub(super) env: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransform {
    #[serde(default)]
    pub(super) lowercase: bool,
    /// The domains it may strip; `true`, the old form that stripped any domain, is refused.
    /// A `Value` rather than an untagged enum: smaller in the wasm.
    pub(super) strip_domain: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) path_prefix: String,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    pub(super) auth: AuthMode,
    pub(super) providers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) require_claims: BTreeMap<String, OneOrMany>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    #[serde(default = "default_username_header")]
    pub(super) username_header: String,
    pub(super) provider_header: Option<String>,
    #[serde(default)]
    pub(super) claims_to_headers: BTreeMap<String, String>,
    #[serde(default = "default_authorization")]
    pub(super) authorization: AuthorizationForward,
    pub(super) atlassian_oauth1: Option<RawAtlassianOauth1>,
}

/// `forward.atlassian_oauth1`: sign every authenticated request as a trusted OAuth 1.0a consumer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAtlassianOauth1 {
    pub(super) consumer_key: String,
    /// Only `{"env": NAME}`: a PEM written into the configuration is refused.
    pub(super) private_key: RawSecret,
    pub(super) base_url: String,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            username_header: default_username_header(),
            provider_header: None,
            claims_to_headers: BTreeMap::new(),
            authorization: default_authorization(),
            atlassian_oauth1: None,
        }
    }
}
