//! The plugin configuration: `RawConfig` mirrors the JSON, `Config` is validated and typed.
//!
//! `Config::parse` is the only constructor; every check happens once, at plugin start.
//! `raw.rs` holds the JSON mirror, `defaults.rs` the values of omitted fields, and `locate.rs`
//! turns a serde error position into the member path a message names.

mod defaults;
mod locate;
mod raw;

use crate::api_token::ApiToken;
use crate::digest::TokenDigest;
use crate::error::ConfigError;
use crate::identity::{ClaimPath, Username, UsernameTransform};
use crate::jwks::{Algorithm, KeySet};
use crate::oauth1::AtlassianOauth1;
use crate::preset::Preset;
use crate::time::parse_rfc3339;
// `ProviderMode` lives with the presets (which name a mode), so presets need nothing of config.
pub(crate) use crate::preset::ProviderMode;
use crate::rules::{AuthMode, RequiredClaim, Rule};
use crate::uri::HttpUri;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use locate::json_path_at;
use raw::{
    EnvRef, OneOrMany, RawApiToken, RawAtlassianOauth1, RawAudiences, RawConfig, RawForward,
    RawProvider, RawRule, RawSecret, RawTransform,
};

/// A secret from the configuration; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// The secret value, for building an outgoing request only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What happens to `Authorization: Basic` (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BasicMode {
    /// Atlassian checks Basic itself: the header passes untouched.
    Passthrough,
    /// The secret must be an API token of that user.
    ApiTokens,
    /// Basic is refused with 401.
    Reject,
}

/// What happens to an opaque bearer token that no provider takes (no prefix matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UnknownBearer {
    /// 401 `no provider accepts this token`.
    Reject,
    /// Atlassian checks it (its own personal access tokens): the header passes untouched.
    Passthrough,
}

/// What happens to the `Authorization` header of an authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationForward {
    Remove,
    Keep,
}

/// One identity provider, validated.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub(crate) preset: Preset,
    pub(crate) mode: ProviderMode,
    pub issuer: Option<String>,
    /// The `aud` values a token must carry one of; empty: any audience (`"audiences": "any"` in
    /// jwt mode; nothing configured in introspection mode; never given in userinfo mode).
    pub(crate) audiences: Vec<String>,
    /// Azure AD: Microsoft Graph tokens (which cannot be verified locally) go to Graph's userinfo
    /// instead of being refused.
    pub(crate) accept_graph_tokens: bool,
    pub discovery: bool,
    pub jwks_uri: Option<HttpUri>,
    pub(crate) inline_keys: Option<KeySet>,
    pub userinfo_uri: Option<HttpUri>,
    pub introspection_uri: Option<HttpUri>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) token_prefixes: Vec<String>,
    pub username_claims: Vec<ClaimPath>,
    pub(crate) username_transform: UsernameTransform,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_seconds: u64,
    pub(crate) require_expiration: bool,
    pub(crate) jwks_refresh_seconds: u64,
    pub(crate) jwks_max_stale_seconds: u64,
    pub(crate) cache_seconds: u64,
    pub(crate) timeout_ms: u64,
    /// Lookups (userinfo, introspection) this provider may have in flight per Envoy worker.
    pub(crate) max_concurrent_calls: u32,
    pub(crate) request_headers: Vec<(String, String)>,
    /// Cognito: the `token_use` claim a token must carry (`access` or `id`).
    pub(crate) token_use: Option<String>,
}

impl Provider {
    /// Whether opaque tokens may be sent to this provider.
    ///
    /// A `jwt` provider takes them only with a userinfo endpoint given in the configuration (or
    /// by its preset: Google, GitLab), never one merely discovered, and never Azure AD, whose
    /// access tokens are all JWTs: an unknown token (an Atlassian PAT) must not leak to an IdP.
    pub(crate) fn takes_opaque_tokens(&self) -> bool {
        match self.mode {
            ProviderMode::Userinfo | ProviderMode::Introspection => true,
            ProviderMode::Jwt => self.userinfo_uri.is_some() && self.preset != Preset::AzureAd,
        }
    }

    /// Whether `token` carries one of `token_prefixes` (no prefixes: any token).
    pub(crate) fn matches_prefix(&self, token: &str) -> bool {
        self.token_prefixes.is_empty()
            || self
                .token_prefixes
                .iter()
                .any(|p| token.starts_with(p.as_str()))
    }
}

/// One provider of a `Config`: made only by that configuration (`Config::provider_ids`,
/// `provider_by_issuer`, `provider_named`, its rules), so it names one of its providers.
/// `Debug` shows the index into `Config::providers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProviderId(usize);

impl ProviderId {
    /// This provider's entry in per-provider state laid out like `Config::providers`.
    pub fn of<T>(self, per_provider: &[T]) -> Option<&T> {
        per_provider.get(self.0)
    }

    /// This provider's entry in per-provider state laid out like `Config::providers`, to change.
    pub fn of_mut<T>(self, per_provider: &mut [T]) -> Option<&mut T> {
        per_provider.get_mut(self.0)
    }

    /// The `n`th provider of a configuration, for unit tests that build none.
    #[cfg(test)]
    pub(crate) fn nth(n: usize) -> Self {
        ProviderId(n)
    }
}

/// Where the resolved identity goes.
#[derive(Debug, Clone)]
pub struct Forward {
    pub username_header: String,
    pub provider_header: Option<String>,
    /// `(claim, header)` pairs.
    pub(crate) claims_to_headers: Vec<(ClaimPath, String)>,
    pub authorization: AuthorizationForward,
    /// Sign every authenticated request for the product as this OAuth 1.0a consumer (issue 13).
    pub atlassian_oauth1: Option<Arc<AtlassianOauth1>>,
}

impl Forward {
    /// Every header the filter sets: stripped from every incoming request.
    pub fn identity_headers(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.username_header.as_str())
            .chain(self.provider_header.as_deref())
            .chain(self.claims_to_headers.iter().map(|(_, h)| h.as_str()))
    }
}

/// The validated plugin configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub providers: Vec<Provider>,
    pub api_tokens: Vec<ApiToken>,
    pub basic: BasicMode,
    pub(crate) unknown_bearer: UnknownBearer,
    pub(crate) default_auth: AuthMode,
    pub rules: Vec<Rule>,
    pub forward: Forward,
    /// `host[:port]` → Envoy cluster name.
    pub(crate) clusters: BTreeMap<String, String>,
    pub(crate) bypass_cors_preflight: bool,
    pub dry_run: bool,
    /// Slots of the shared result cache (one entry each).
    pub cache_entries: u32,
    /// First 16 hex digits of the SHA-256 of the configuration text: names its shared cache.
    pub(crate) fingerprint: String,
}

impl Config {
    /// Parses and validates the JSON configuration; `env` reads `{"env": NAME}` secrets.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| {
            let field = json_path_at(json, e.line(), e.column());
            ConfigError::new(
                if field.is_empty() {
                    "config".to_string()
                } else {
                    field
                },
                e.to_string(),
            )
        })?;
        let mut config = Config::from_raw(raw, env)?;
        config.fingerprint = TokenDigest::of(json).to_hex()[..16].to_string();
        Ok(config)
    }

    /// The Envoy cluster that reaches `uri`: `clusters[host[:port]]`, else the host itself.
    pub fn cluster_for(&self, uri: &HttpUri) -> String {
        self.clusters
            .get(uri.authority())
            .or_else(|| self.clusters.get(uri.host()))
            .cloned()
            .unwrap_or_else(|| uri.host().to_string())
    }

    /// The part of a provider's answer worth caching: the claims rules and claim headers read.
    pub fn kept_claims(&self, claims: &Value) -> Value {
        let paths = self
            .rules
            .iter()
            .flat_map(|r| r.require_claims.iter().map(|c| &c.path))
            .chain(self.forward.claims_to_headers.iter().map(|(p, _)| p));
        let mut kept = serde_json::Map::new();
        for root in paths.flat_map(ClaimPath::roots) {
            if let Some(v) = claims.get(&root) {
                kept.insert(root, v.clone());
            }
        }
        Value::Object(kept)
    }

    /// Every provider, in configuration order.
    pub fn provider_ids(&self) -> impl Iterator<Item = ProviderId> {
        (0..self.providers.len()).map(ProviderId)
    }

    /// Provider `id` (`None` only for an id of another configuration).
    pub fn provider(&self, id: ProviderId) -> Option<&Provider> {
        id.of(&self.providers)
    }

    /// The provider whose `issuer` is `iss`.
    pub fn provider_by_issuer(&self, iss: &str) -> Option<ProviderId> {
        self.providers
            .iter()
            .position(|p| p.issuer.as_deref() == Some(iss))
            .map(ProviderId)
    }

    /// The provider named `name` (a cache entry, the CLI's `--provider`).
    pub fn provider_named(&self, name: &str) -> Option<ProviderId> {
        self.providers
            .iter()
            .position(|p| p.name == name)
            .map(ProviderId)
    }

    fn from_raw(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        check_header_safe("realm", &raw.realm)?;
        let mut names = HashSet::new();
        let mut providers = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.into_iter().enumerate() {
            let at = format!("providers[{i}]");
            if !names.insert(p.name.clone()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate provider name {:?}", p.name),
                ));
            }
            providers.push(build_provider(&at, p, env)?);
        }
        let mut issuers = HashSet::new();
        for (i, p) in providers.iter().enumerate() {
            if let Some(iss) = &p.issuer {
                if !issuers.insert(iss.clone()) {
                    return Err(ConfigError::new(
                        format!("providers[{i}].issuer"),
                        "two providers share this issuer",
                    ));
                }
            }
        }
        if raw.unknown_bearer == UnknownBearer::Passthrough {
            // An unknown token passes to Atlassian only if no provider would take it: a provider
            // that takes any opaque token would receive every Atlassian personal access token.
            if let Some(i) = providers
                .iter()
                .position(|p| p.takes_opaque_tokens() && p.token_prefixes.is_empty())
            {
                return Err(ConfigError::new(
                    format!("providers[{i}].token_prefixes"),
                    "unknown_bearer is passthrough: a provider that takes opaque tokens needs token_prefixes",
                ));
            }
        }
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| build_rule(&format!("rules[{i}]"), r, &providers))
            .collect::<Result<Vec<_>, _>>()?;
        let forward = build_forward(raw.forward, env)?;
        for (host, cluster) in &raw.clusters {
            if host.is_empty() || cluster.is_empty() || host.contains('/') {
                return Err(ConfigError::new(
                    format!("clusters.{host}"),
                    "expects \"host[:port]\": \"cluster name\"",
                ));
            }
        }
        in_range("cache_entries", u64::from(raw.cache_entries), 16, 1_000_000)?;
        let api_tokens = raw
            .api_tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| build_api_token(&format!("api_tokens[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, t) in api_tokens.iter().enumerate() {
            if api_tokens[..i].iter().any(|other| other.sha256 == t.sha256) {
                return Err(ConfigError::new(
                    format!("api_tokens[{i}].sha256"),
                    "the same token is listed twice",
                ));
            }
        }
        Ok(Config {
            realm: raw.realm,
            providers,
            api_tokens,
            basic: raw.basic,
            unknown_bearer: raw.unknown_bearer,
            default_auth: raw.default_auth,
            rules,
            forward,
            clusters: raw
                .clusters
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            bypass_cors_preflight: raw.bypass_cors_preflight,
            dry_run: raw.dry_run,
            cache_entries: raw.cache_entries,
            fingerprint: String::new(),
        })
    }
}

fn build_transform(at: &str, t: RawTransform) -> Result<UsernameTransform, ConfigError> {
    let mut strip_domain = Vec::new();
    match t.strip_domain {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Array(domains)) if !domains.is_empty() => {
            for d in domains {
                // Domain names as DNS spells them (RFC 1123; internationalized ones in punycode).
                match d {
                    Value::String(d) if !d.is_empty() && !d.starts_with('.') && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => {
                        strip_domain.push(d.to_ascii_lowercase())
                    }
                    _ => return Err(ConfigError::new(at, "each entry is a domain such as \"example.com\", without `@`")),
                }
            }
        }
        // `true` stripped any domain, which made `kate@attacker.example` into `kate`.
        Some(_) => return Err(ConfigError::new(at, "list the domains that may be stripped, e.g. [\"example.com\"]; names in other domains are then refused")),
    }
    Ok(UsernameTransform {
        lowercase: t.lowercase,
        strip_domain,
    })
}

fn build_provider(
    at: &str,
    p: RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    if p.name.is_empty()
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ConfigError::new(
            field("name"),
            "letters, digits, '-', '_' and '.' only, not empty",
        ));
    }
    let preset_name = p.preset.as_deref().unwrap_or("custom");
    let preset = Preset::parse(preset_name).ok_or_else(|| {
        ConfigError::new(field("preset"), format!("unknown preset {preset_name:?}"))
    })?;
    let defaults = preset.defaults();
    let uri = |name: &str, value: Option<&str>| -> Result<Option<HttpUri>, ConfigError> {
        value
            .map(|v| HttpUri::parse(v).map_err(|m| ConfigError::new(field(name), m)))
            .transpose()
    };
    let jwks_uri = uri("jwks_uri", p.jwks_uri.as_deref())?;
    let userinfo_uri = uri(
        "userinfo_uri",
        p.userinfo_uri.as_deref().or(defaults.userinfo_uri),
    )?;
    let introspection_uri = uri("introspection_uri", p.introspection_uri.as_deref())?;
    let issuer = p.issuer.or(defaults.issuer.map(str::to_string));
    if issuer.as_deref().is_some_and(str::is_empty) {
        return Err(ConfigError::new(field("issuer"), "must not be empty"));
    }
    if jwks_uri.is_some() && p.jwks.is_some() {
        return Err(ConfigError::new(
            field("jwks"),
            "give jwks_uri or jwks, not both",
        ));
    }
    let inline_keys = p
        .jwks
        .as_ref()
        .map(|doc| {
            KeySet::from_value(doc).map_err(|e| ConfigError::new(field("jwks"), e.to_string()))
        })
        .transpose()?;
    let explicit_keys = jwks_uri.is_some() || inline_keys.is_some();
    let mode = match p.mode.or(defaults.mode) {
        Some(mode) => mode,
        None if explicit_keys || p.discovery.unwrap_or(defaults.discovery) => ProviderMode::Jwt,
        None if userinfo_uri.is_some() => ProviderMode::Userinfo,
        None if introspection_uri.is_some() => ProviderMode::Introspection,
        None => {
            return Err(ConfigError::new(
                at,
                "needs jwks_uri, jwks, discovery, userinfo_uri or introspection_uri",
            ))
        }
    };
    let endpoint_known = match mode {
        ProviderMode::Jwt => explicit_keys,
        ProviderMode::Userinfo => userinfo_uri.is_some(),
        ProviderMode::Introspection => introspection_uri.is_some(),
    };
    let discovery = p.discovery.unwrap_or(defaults.discovery && !endpoint_known);
    if discovery {
        match issuer.as_deref() {
            None => {
                return Err(ConfigError::new(
                    field("issuer"),
                    "discovery needs the issuer",
                ))
            }
            Some(iss) => {
                HttpUri::parse(iss).map_err(|m| {
                    ConfigError::new(
                        field("issuer"),
                        format!("discovery needs an http(s) issuer: {m}"),
                    )
                })?;
            }
        }
    }
    match mode {
        ProviderMode::Jwt if issuer.is_none() => {
            return Err(ConfigError::new(
                field("issuer"),
                "jwt mode needs the issuer (tokens are matched by iss)",
            ))
        }
        ProviderMode::Jwt if !explicit_keys && !discovery => {
            return Err(ConfigError::new(
                field("jwks_uri"),
                "jwt mode needs jwks_uri, jwks or discovery",
            ))
        }
        ProviderMode::Userinfo if userinfo_uri.is_none() && !discovery => {
            return Err(ConfigError::new(
                field("userinfo_uri"),
                "userinfo mode needs userinfo_uri or discovery",
            ))
        }
        ProviderMode::Introspection if introspection_uri.is_none() && !discovery => {
            return Err(ConfigError::new(
                field("introspection_uri"),
                "introspection mode needs introspection_uri or discovery",
            ))
        }
        ProviderMode::Introspection if p.client_id.is_none() || p.client_secret.is_none() => {
            return Err(ConfigError::new(
                field("client_id"),
                "introspection needs client_id and client_secret (client_secret_basic)",
            ))
        }
        _ => {}
    }
    if p.client_secret.is_some() != p.client_id.is_some() {
        return Err(ConfigError::new(
            field("client_secret"),
            "client_id and client_secret go together",
        ));
    }
    let algorithms = match p.algorithms {
        None => Algorithm::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(ConfigError::new(field("algorithms"), "must not be empty"))
        }
        Some(names) => names
            .iter()
            .map(|n| {
                Algorithm::parse(n).ok_or_else(|| {
                    let why = if n == "none" || n.starts_with("HS") {
                        "is never accepted"
                    } else {
                        "is not supported"
                    };
                    ConfigError::new(field("algorithms"), format!("{n:?} {why}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let claim_names = match p.username_claim {
        None if mode == ProviderMode::Introspection && preset == Preset::Custom => {
            ["username", "preferred_username", "email", "sub"]
                .map(str::to_string)
                .to_vec()
        }
        None => defaults
            .username_claims
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
    };
    if claim_names.is_empty() {
        return Err(ConfigError::new(
            field("username_claim"),
            "must name at least one claim",
        ));
    }
    let username_claims = claim_names
        .iter()
        .map(|c| ClaimPath::parse(c).map_err(|m| ConfigError::new(field("username_claim"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let username_transform = build_transform(
        &field("username_transform.strip_domain"),
        p.username_transform,
    )?;
    in_range(&field("clock_skew_seconds"), p.clock_skew_seconds, 0, 600)?;
    in_range(
        &field("jwks_refresh_seconds"),
        p.jwks_refresh_seconds,
        10,
        7 * 86_400,
    )?;
    in_range(
        &field("jwks_max_stale_seconds"),
        p.jwks_max_stale_seconds,
        0,
        30 * 86_400,
    )?;
    in_range(&field("cache_seconds"), p.cache_seconds, 0, 86_400)?;
    in_range(&field("timeout_ms"), p.timeout_ms, 100, 60_000)?;
    in_range(
        &field("max_concurrent_calls"),
        u64::from(p.max_concurrent_calls),
        1,
        4096,
    )?;
    let audiences = match (p.audiences, mode) {
        (Some(RawAudiences::Any(word)), _) if word != "any" => {
            return Err(ConfigError::new(field("audiences"), "expects a list of audiences or \"any\""))
        }
        // A userinfo answer names no audience: a list there would be silently ignored.
        (Some(_), ProviderMode::Userinfo) => {
            return Err(ConfigError::new(field("audiences"), "cannot be checked in userinfo mode (a userinfo answer names no audience)"))
        }
        (Some(RawAudiences::Any(_)), _) => vec![],
        (Some(RawAudiences::List(list)), _) if list.is_empty() => {
            return Err(ConfigError::new(field("audiences"), "must not be empty: list the audiences, or say \"any\""))
        }
        (Some(RawAudiences::List(list)), _) if list.iter().any(String::is_empty) => {
            return Err(ConfigError::new(field("audiences"), "must not contain an empty string"))
        }
        (Some(RawAudiences::List(list)), _) => list,
        (None, ProviderMode::Jwt) => {
            return Err(ConfigError::new(
                field("audiences"),
                "jwt mode needs audiences (the aud values of tokens issued for this application), or \"any\" to accept any audience",
            ))
        }
        (None, _) => vec![],
    };
    if p.accept_graph_tokens && preset != Preset::AzureAd {
        return Err(ConfigError::new(
            field("accept_graph_tokens"),
            "applies to the azure_ad preset only",
        ));
    }
    let client_secret = match p.client_secret {
        None => None,
        Some(RawSecret::Plain(s)) => Some(Secret(s)),
        Some(RawSecret::Env(EnvRef { env: name })) => {
            Some(Secret(env(&name).ok_or_else(|| {
                ConfigError::new(
                    field("client_secret"),
                    format!("environment variable {name} is not set"),
                )
            })?))
        }
    };
    let mut request_headers: Vec<(String, String)> = defaults
        .request_headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (name, value) in p.request_headers {
        check_header_name(&field("request_headers"), &name)?;
        check_header_safe(&field("request_headers"), &value)?;
        let name = name.to_ascii_lowercase();
        request_headers.retain(|(n, _)| *n != name);
        request_headers.push((name, value));
    }
    let token_prefixes = p.token_prefixes.unwrap_or_else(|| {
        defaults
            .token_prefixes
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    if token_prefixes.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            field("token_prefixes"),
            "must not contain an empty prefix",
        ));
    }
    let token_use = match (p.token_use, preset) {
        (Some(t), _) if t == "access" || t == "id" => Some(t),
        (Some(t), _) => {
            return Err(ConfigError::new(
                field("token_use"),
                format!("{t:?} is neither \"access\" nor \"id\""),
            ))
        }
        (None, Preset::Cognito) => Some("access".to_string()),
        (None, _) => None,
    };
    Ok(Provider {
        name: p.name,
        preset,
        mode,
        issuer,
        audiences,
        accept_graph_tokens: p.accept_graph_tokens,
        discovery,
        jwks_uri,
        inline_keys,
        userinfo_uri,
        introspection_uri,
        client_id: p.client_id,
        client_secret,
        token_prefixes,
        username_claims,
        username_transform,
        algorithms,
        clock_skew_seconds: p.clock_skew_seconds,
        require_expiration: p.require_expiration,
        jwks_refresh_seconds: p.jwks_refresh_seconds,
        jwks_max_stale_seconds: p.jwks_max_stale_seconds,
        cache_seconds: p.cache_seconds,
        timeout_ms: p.timeout_ms,
        max_concurrent_calls: p.max_concurrent_calls,
        request_headers,
        token_use,
    })
}

fn build_api_token(at: &str, t: RawApiToken) -> Result<ApiToken, ConfigError> {
    Username::parse(t.user.clone()).map_err(|_| {
        ConfigError::new(
            format!("{at}.user"),
            "must be 1-255 bytes of printable ASCII or letters, without a space at either end",
        )
    })?;
    let sha256 = TokenDigest::from_hex(&t.sha256.to_ascii_lowercase())
        .map(TokenDigest::to_bytes)
        .ok_or_else(|| {
            ConfigError::new(
                format!("{at}.sha256"),
                "must be 64 hex digits (the SHA-256 of the token)",
            )
        })?;
    let expires_at = t
        .expires_at
        .map(|text| {
            parse_rfc3339(&text).ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.expires_at"),
                    format!("{text:?} is not an RFC 3339 date-time"),
                )
            })
        })
        .transpose()?;
    Ok(ApiToken {
        user: t.user,
        sha256,
        expires_at,
        name: t.name,
    })
}

fn build_rule(at: &str, r: RawRule, providers: &[Provider]) -> Result<Rule, ConfigError> {
    if !r.path_prefix.starts_with('/') {
        return Err(ConfigError::new(
            format!("{at}.path_prefix"),
            "must start with '/'",
        ));
    }
    // Requests are matched on their canonical path: a prefix in another spelling would never match.
    match crate::path::canonical_path(&r.path_prefix) {
        Ok(canonical) if canonical == r.path_prefix => {}
        Ok(canonical) => return Err(ConfigError::new(format!("{at}.path_prefix"), format!("not in canonical form: write {:?}", &*canonical))),
        Err(_) => return Err(ConfigError::new(format!("{at}.path_prefix"), "not a path the filter can match (encoded '/', '\\' or ';', '..' above the root, or a bad escape)")),
    }
    let mut methods = Vec::with_capacity(r.methods.len());
    for m in r.methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::new(
                format!("{at}.methods"),
                format!("{m:?} is not an HTTP method"),
            ));
        }
        methods.push(m.to_ascii_uppercase());
    }
    let allowed = r
        .providers
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    providers
                        .iter()
                        .position(|p| &p.name == n)
                        .map(ProviderId)
                        .ok_or_else(|| {
                            ConfigError::new(
                                format!("{at}.providers"),
                                format!("unknown provider {n:?}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let mut require_claims = Vec::new();
    for (claim, wanted) in r.require_claims {
        let path = ClaimPath::parse(&claim)
            .map_err(|m| ConfigError::new(format!("{at}.require_claims"), m))?;
        let any_of = match wanted {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) if v.is_empty() => {
                return Err(ConfigError::new(
                    format!("{at}.require_claims.{claim}"),
                    "must list at least one value",
                ))
            }
            OneOrMany::Many(v) => v,
        };
        require_claims.push(RequiredClaim { path, any_of });
    }
    Ok(Rule {
        path_prefix: r.path_prefix,
        methods,
        auth: r.auth,
        providers: allowed,
        require_claims,
    })
}

fn build_forward(
    f: RawForward,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Forward, ConfigError> {
    check_identity_header("forward.username_header", &f.username_header)?;
    if let Some(h) = &f.provider_header {
        check_identity_header("forward.provider_header", h)?;
    }
    let mut claims_to_headers = Vec::new();
    for (claim, header) in f.claims_to_headers {
        let at = format!("forward.claims_to_headers.{claim}");
        check_identity_header(&at, &header)?;
        claims_to_headers.push((
            ClaimPath::parse(&claim).map_err(|m| ConfigError::new(&at, m))?,
            header.to_ascii_lowercase(),
        ));
    }
    let forward = Forward {
        username_header: f.username_header.to_ascii_lowercase(),
        provider_header: f.provider_header.map(|h| h.to_ascii_lowercase()),
        claims_to_headers,
        authorization: f.authorization,
        atlassian_oauth1: match f.atlassian_oauth1 {
            Some(o) => Some(Arc::new(build_atlassian_oauth1(o, env)?)),
            None => None,
        },
    };
    if forward.atlassian_oauth1.is_some() && forward.authorization == AuthorizationForward::Keep {
        return Err(ConfigError::new(
            "forward.authorization",
            "\"keep\" cannot go with atlassian_oauth1: the OAuth header replaces the client's",
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = forward.identity_headers().find(|h| !seen.insert(*h)) {
        return Err(ConfigError::new(
            "forward",
            format!("header {dup:?} is used twice"),
        ));
    }
    Ok(forward)
}

/// Smallest RSA key accepted for signing (NIST SP 800-131A: 2048 bits since 2014).
const MIN_OAUTH1_KEY_BITS: usize = 2048;

fn build_atlassian_oauth1(
    o: RawAtlassianOauth1,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AtlassianOauth1, ConfigError> {
    let field = |name: &str| format!("forward.atlassian_oauth1.{name}");
    if o.consumer_key.is_empty() || !o.consumer_key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(ConfigError::new(
            field("consumer_key"),
            "must be non-empty printable ASCII",
        ));
    }
    let origin = oauth1_origin(&o.base_url).map_err(|m| ConfigError::new(field("base_url"), m))?;
    let pem = match o.private_key {
        RawSecret::Plain(_) => {
            return Err(ConfigError::new(
                field("private_key"),
                "give the key through the VM environment: {\"env\": \"NAME\"}",
            ))
        }
        RawSecret::Env(EnvRef { env: name }) => {
            zeroize::Zeroizing::new(env(&name).ok_or_else(|| {
                ConfigError::new(
                    field("private_key"),
                    format!("environment variable {name} is not set"),
                )
            })?)
        }
    };
    let consumer = AtlassianOauth1::new(&o.consumer_key, &origin, &pem)
        .map_err(|m| ConfigError::new(field("private_key"), m))?;
    let bits = consumer.key_bits();
    if bits < MIN_OAUTH1_KEY_BITS {
        return Err(ConfigError::new(
            field("private_key"),
            format!("a {bits}-bit RSA key: at least {MIN_OAUTH1_KEY_BITS} bits are needed"),
        ));
    }
    Ok(consumer)
}

/// `scheme://host[:port]` of `base_url`, lowercase, without a default port: the origin of the
/// URL the product signs over (its base URL; the context path is part of the request path).
fn oauth1_origin(base_url: &str) -> Result<String, String> {
    let uri = HttpUri::parse(base_url)?;
    if base_url.contains('?') {
        return Err("must not have a query".into());
    }
    if uri.path_and_query() != "/" {
        return Err(
            "give scheme://host[:port] only: the context path comes from the request path".into(),
        );
    }
    let default_port = if uri.scheme() == "https" {
        ":443"
    } else {
        ":80"
    };
    let authority = uri.authority();
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Ok(format!("{}://{authority}", uri.scheme()))
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            field,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

fn check_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    // RFC 9110 token characters.
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid header name"),
        ));
    }
    Ok(())
}

fn check_identity_header(field: &str, name: &str) -> Result<(), ConfigError> {
    check_header_name(field, name)?;
    const RESERVED: [&str; 7] = [
        "authorization",
        "host",
        "cookie",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
    ];
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(ConfigError::new(
            field,
            format!("{name:?} cannot carry the identity"),
        ));
    }
    Ok(())
}

fn check_header_safe(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(ConfigError::new(
            field,
            "must be non-empty, without quotes, backslashes or control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(v: Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes(), &no_env)
    }

    fn provider() -> Value {
        json!({"name": "idp", "issuer": "https://idp.example", "audiences": ["jira"], "jwks_uri": "https://idp.example/keys"})
    }

    fn field_of(v: Value) -> String {
        parse(v).unwrap_err().field
    }

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = parse(json!({"providers": [provider()]})).unwrap();
        let p = &c.providers[0];
        assert_eq!(
            (
                p.mode,
                p.clock_skew_seconds,
                p.jwks_refresh_seconds,
                p.timeout_ms
            ),
            (ProviderMode::Jwt, 60, 600, 5000)
        );
        assert_eq!(p.algorithms.len(), 9);
        assert_eq!(c.forward.username_header, "x-forwarded-user");
        assert_eq!(
            (c.default_auth, c.basic, c.bypass_cors_preflight),
            (AuthMode::Optional, BasicMode::Passthrough, true)
        );
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let err = parse(json!({"bogus": 1})).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn unknown_provider_field_names_its_path() {
        let mut p = provider();
        p["jwks_url"] = json!("https://x/");
        let err = parse(json!({"providers": [p]})).unwrap_err();
        assert!(
            err.field.starts_with("providers[0]") && err.message.contains("jwks_url"),
            "{err}"
        );
    }

    #[test]
    fn bad_uri_is_named() {
        let mut p = provider();
        p["jwks_uri"] = json!("not a uri");
        assert_eq!(field_of(json!({"providers": [p]})), "providers[0].jwks_uri");
    }

    #[test]
    fn duplicate_provider_names_are_refused() {
        let mut second = provider();
        second["issuer"] = json!("https://other");
        assert_eq!(
            field_of(json!({"providers": [provider(), second]})),
            "providers[1].name"
        );
    }

    #[test]
    fn rule_naming_unknown_provider_is_refused() {
        let rules = json!([{"path_prefix": "/rest/", "auth": "required", "providers": ["nope"]}]);
        assert_eq!(
            field_of(json!({"providers": [provider()], "rules": rules})),
            "rules[0].providers"
        );
    }

    #[test]
    fn provider_ids_name_the_same_provider_by_issuer_name_and_rule() {
        let second = json!({"name": "other", "issuer": "https://other.example", "audiences": ["jira"], "jwks_uri": "https://other.example/keys"});
        let rules = json!([{"path_prefix": "/admin", "auth": "required", "providers": ["other"]}]);
        let c = parse(json!({"providers": [provider(), second], "rules": rules})).unwrap();
        let ids: Vec<ProviderId> = c.provider_ids().collect();
        assert_eq!(
            ids.iter()
                .map(|&id| c.provider(id).unwrap().name.as_str())
                .collect::<Vec<_>>(),
            ["idp", "other"]
        );
        assert_eq!(c.provider_by_issuer("https://other.example"), Some(ids[1]));
        assert_eq!(c.provider_named("other"), Some(ids[1]));
        assert_eq!(
            (
                c.provider_by_issuer("https://nobody.example"),
                c.provider_named("nobody")
            ),
            (None, None)
        );
        assert!(c.rules[0].allows_provider(ids[1]) && !c.rules[0].allows_provider(ids[0]));
        // An id of a larger configuration finds nothing here, and panics nowhere.
        let one = parse(json!({"providers": [provider()]})).unwrap();
        assert!(one.provider(ids[1]).is_none() && ids[1].of(&one.providers).is_none());
    }

    #[test]
    fn rule_prefix_must_be_a_canonical_path() {
        for prefix in [
            "/rest//api",
            "/rest/./api",
            "/status/../rest",
            "/rest;x/",
            "/r%65st/",
        ] {
            let err = parse(json!({"providers": [provider()], "rules": [{"path_prefix": prefix, "auth": "required"}]})).unwrap_err();
            assert_eq!(err.field, "rules[0].path_prefix", "{prefix}");
            assert!(err.message.contains("canonical form"), "{prefix}: {err}");
        }
        for prefix in ["/rest%2Fapi", "/.."] {
            let err = parse(json!({"providers": [provider()], "rules": [{"path_prefix": prefix, "auth": "required"}]})).unwrap_err();
            assert_eq!(err.field, "rules[0].path_prefix", "{prefix}");
        }
        for prefix in ["/", "/rest/", "/rest/api/2/user", "/status"] {
            assert!(parse(json!({"providers": [provider()], "rules": [{"path_prefix": prefix, "auth": "required"}]})).is_ok(), "{prefix}");
        }
    }

    #[test]
    fn hmac_and_none_are_never_allowed() {
        for alg in ["HS256", "none"] {
            let mut p = provider();
            p["algorithms"] = json!(["RS256", alg]);
            let err = parse(json!({"providers": [p]})).unwrap_err();
            assert_eq!(err.field, "providers[0].algorithms");
            assert!(err.message.contains("never"), "{err}");
        }
    }

    #[test]
    fn strip_domain_lists_its_domains_and_true_is_refused() {
        let mut p = provider();
        p["username_transform"] =
            json!({"lowercase": true, "strip_domain": ["Example.COM", "corp.example.com"]});
        let c = parse(json!({"providers": [p]})).unwrap();
        assert_eq!(
            c.providers[0].username_transform.strip_domain,
            vec!["example.com".to_string(), "corp.example.com".to_string()]
        );
        for (bad, why) in [
            (json!(true), "list the domains"),
            (json!([]), "list the domains"),
            (json!("example.com"), "list the domains"),
            (json!(["@example.com"]), "without `@`"),
            (json!([""]), "without `@`"),
        ] {
            let mut p = provider();
            p["username_transform"] = json!({"strip_domain": bad});
            let err = parse(json!({"providers": [p]})).unwrap_err();
            assert_eq!(err.field, "providers[0].username_transform.strip_domain");
            assert!(err.message.contains(why), "{err}");
        }
        let mut p = provider();
        p["username_transform"] = json!({"strip_domain": false});
        assert!(parse(json!({"providers": [p]})).unwrap().providers[0]
            .username_transform
            .strip_domain
            .is_empty());
    }

    #[test]
    fn presets_never_take_the_username_from_a_user_chosen_claim() {
        for name in [
            "custom",
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
        ] {
            let claims = Preset::parse(name).unwrap().defaults().username_claims;
            for chosen in [
                "name",
                "givenName",
                "given_name",
                "family_name",
                "nickname",
                "displayName",
            ] {
                assert!(!claims.contains(&chosen), "{name} uses {chosen}");
            }
        }
        let b2c = Preset::AzureB2c.defaults().username_claims;
        assert_eq!(b2c, ["emails.0", "oid", "sub"]);
    }

    #[test]
    fn missing_field_names_its_object() {
        let err = parse(json!({"rules": [{"auth": "required"}]})).unwrap_err();
        assert!(
            err.field.starts_with("rules[0]") && err.message.contains("path_prefix"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let mut p = provider();
        p["timeout_ms"] = json!("fast");
        assert_eq!(
            field_of(json!({"providers": [p]})),
            "providers[0].timeout_ms"
        );
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let mut p = provider();
        p["clock_skew_seconds"] = json!(7200);
        assert_eq!(
            field_of(json!({"providers": [p]})),
            "providers[0].clock_skew_seconds"
        );
    }

    #[test]
    fn max_concurrent_calls_defaults_to_64_within_1_to_4096() {
        assert_eq!(
            parse(json!({"providers": [provider()]})).unwrap().providers[0].max_concurrent_calls,
            64
        );
        for bad in [0, 4097] {
            let mut p = provider();
            p["max_concurrent_calls"] = json!(bad);
            assert_eq!(
                field_of(json!({"providers": [p]})),
                "providers[0].max_concurrent_calls",
                "{bad}"
            );
        }
        let mut p = provider();
        p["max_concurrent_calls"] = json!(1);
        assert_eq!(
            parse(json!({"providers": [p]})).unwrap().providers[0].max_concurrent_calls,
            1
        );
    }

    #[test]
    fn jwt_provider_needs_keys() {
        assert_eq!(
            field_of(json!({"providers": [{"name": "a", "issuer": "https://a"}]})),
            "providers[0]"
        );
    }

    #[test]
    fn preset_fills_discovery_and_username_claims() {
        let c = parse(json!({"providers": [{"name": "kc", "preset": "keycloak", "issuer": "https://kc/realms/x", "audiences": "any"}]})).unwrap();
        assert!(c.providers[0].discovery);
        assert_eq!(
            c.providers[0].username_claims,
            vec![ClaimPath::parse("preferred_username").unwrap()]
        );
    }

    #[test]
    fn secret_from_environment_is_read_and_hidden() {
        let mut p = provider();
        p["client_id"] = json!("jira");
        p["client_secret"] = json!({"env": "IDP_SECRET"});
        let env = |name: &str| (name == "IDP_SECRET").then(|| "s3cr3t".to_string());
        let c = Config::parse(json!({"providers": [p]}).to_string().as_bytes(), &env).unwrap();
        assert_eq!(
            c.providers[0].client_secret.as_ref().unwrap().expose(),
            "s3cr3t"
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    const OAUTH1_PEM: &str = include_str!("../../tests/fixtures/keys/oauth1-consumer-2048.pem");

    /// `forward.atlassian_oauth1` with its key in `$CONSUMER_KEY` and `base_url`.
    fn oauth1(base_url: &str) -> Value {
        json!({"consumer_key": "jira-proxy", "private_key": {"env": "CONSUMER_KEY"}, "base_url": base_url})
    }

    fn parse_oauth1(forward: Value, pem: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "CONSUMER_KEY").then(|| pem.to_string());
        Config::parse(json!({"forward": forward}).to_string().as_bytes(), &env)
    }

    #[test]
    fn atlassian_oauth1_takes_its_key_from_the_environment_and_keeps_only_the_origin() {
        for (base_url, origin) in [
            ("HTTPS://Jira.Example.COM:443/", "https://jira.example.com"),
            ("http://jira.example.com:80", "http://jira.example.com"),
            ("https://10.0.0.5:8443", "https://10.0.0.5:8443"),
        ] {
            let c =
                parse_oauth1(json!({"atlassian_oauth1": oauth1(base_url)}), OAUTH1_PEM).unwrap();
            let shown = format!("{c:?}");
            assert!(
                shown.contains(&format!(
                    "AtlassianOauth1 {{ consumer_key: \"jira-proxy\", origin: \"{origin}\", .. }}"
                )),
                "{shown}"
            );
            assert!(!shown.contains("MII"));
        }
        let c = parse(json!({})).unwrap();
        assert!(c.forward.atlassian_oauth1.is_none());
    }

    #[test]
    fn atlassian_oauth1_errors_name_the_field_and_never_the_key() {
        let wiki_1024 = include_str!("../../tests/fixtures/keys/oauth-wiki-rsa-sha1-1024.pem");
        let ec = include_str!("../../tests/fixtures/keys/ec-p256-signing.pem");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHD\n-----END ENCRYPTED PRIVATE KEY-----";
        let with = |field: &str, value: Value| {
            let mut o = oauth1("https://jira.example.com");
            o[field] = value;
            o
        };
        let literal = json!(OAUTH1_PEM);
        let f = "forward.atlassian_oauth1";
        for (settings, pem, field, says) in [
            (
                with("private_key", literal),
                OAUTH1_PEM,
                "private_key",
                "VM environment",
            ),
            (
                with("private_key", json!({"env": "NOPE"})),
                OAUTH1_PEM,
                "private_key",
                "NOPE is not set",
            ),
            (
                oauth1("https://j.example"),
                wiki_1024,
                "private_key",
                "a 1024-bit RSA key: at least 2048",
            ),
            (
                oauth1("https://j.example"),
                encrypted,
                "private_key",
                "encrypted keys are not supported",
            ),
            (
                oauth1("https://j.example"),
                ec,
                "private_key",
                "not a valid RSA private key",
            ),
            (
                oauth1("https://j.example"),
                "",
                "private_key",
                "not a PEM private key",
            ),
            (
                oauth1("https://j.example/jira"),
                OAUTH1_PEM,
                "base_url",
                "the context path comes from the request path",
            ),
            (
                oauth1("https://j.example/?a=1"),
                OAUTH1_PEM,
                "base_url",
                "query",
            ),
            (
                oauth1("https://j.example/#top"),
                OAUTH1_PEM,
                "base_url",
                "fragment",
            ),
            (
                oauth1("ftp://j.example"),
                OAUTH1_PEM,
                "base_url",
                "not an absolute http(s) URI",
            ),
            (oauth1("https://"), OAUTH1_PEM, "base_url", "has no host"),
            (
                with("consumer_key", json!("")),
                OAUTH1_PEM,
                "consumer_key",
                "printable ASCII",
            ),
            (
                with("consumer_key", json!("clé")),
                OAUTH1_PEM,
                "consumer_key",
                "printable ASCII",
            ),
            (
                with("consumer_key", json!("a\nb")),
                OAUTH1_PEM,
                "consumer_key",
                "printable ASCII",
            ),
        ] {
            let err = parse_oauth1(json!({ "atlassian_oauth1": settings }), pem).unwrap_err();
            assert_eq!(err.field, format!("{f}.{field}"), "{err}");
            assert!(err.message.contains(says), "{err}");
            assert!(!err.to_string().contains("MII"), "{err}");
        }
    }

    #[test]
    fn atlassian_oauth1_refuses_unknown_fields_and_a_kept_authorization() {
        let mut o = oauth1("https://jira.example.com");
        o["privat_key"] = json!("x");
        let err = parse_oauth1(json!({"atlassian_oauth1": o}), OAUTH1_PEM).unwrap_err();
        assert!(
            err.field.starts_with("forward.atlassian_oauth1") && err.message.contains("privat_key"),
            "{err}"
        );
        let forward =
            json!({"authorization": "keep", "atlassian_oauth1": oauth1("https://j.example")});
        let err = parse_oauth1(forward, OAUTH1_PEM).unwrap_err();
        assert_eq!(err.field, "forward.authorization");
    }

    #[test]
    fn missing_environment_secret_is_named() {
        let mut p = provider();
        p["client_id"] = json!("jira");
        p["client_secret"] = json!({"env": "NOPE"});
        assert_eq!(
            field_of(json!({"providers": [p]})),
            "providers[0].client_secret"
        );
    }

    #[test]
    fn identity_header_cannot_be_authorization() {
        assert_eq!(
            field_of(json!({"forward": {"username_header": "Authorization"}})),
            "forward.username_header"
        );
    }

    #[test]
    fn realm_with_quote_is_refused() {
        assert_eq!(field_of(json!({"realm": "ji\"ra"})), "realm");
    }

    #[test]
    fn cluster_lookup_prefers_authority_then_host() {
        let c = parse(json!({"clusters": {"127.0.0.1:9000": "idp", "login.example": "azure"}}))
            .unwrap();
        assert_eq!(
            c.cluster_for(&HttpUri::parse("http://127.0.0.1:9000/k").unwrap()),
            "idp"
        );
        assert_eq!(
            c.cluster_for(&HttpUri::parse("https://login.example/k").unwrap()),
            "azure"
        );
        assert_eq!(
            c.cluster_for(&HttpUri::parse("https://other.example/k").unwrap()),
            "other.example"
        );
    }

    #[test]
    fn userinfo_mode_is_inferred_from_userinfo_uri() {
        let c =
            parse(json!({"providers": [{"name": "u", "userinfo_uri": "https://idp/userinfo"}]}))
                .unwrap();
        assert_eq!(c.providers[0].mode, ProviderMode::Userinfo);
        assert!(c.providers[0].takes_opaque_tokens());
    }

    #[test]
    fn introspection_needs_client_credentials() {
        let p = json!({"name": "i", "mode": "introspection", "introspection_uri": "https://idp/introspect"});
        assert_eq!(
            field_of(json!({"providers": [p]})),
            "providers[0].client_id"
        );
    }

    #[test]
    fn github_preset_fills_endpoint_prefixes_and_headers() {
        let c = parse(json!({"providers": [{"name": "gh", "preset": "github"}]})).unwrap();
        let p = &c.providers[0];
        assert_eq!(p.mode, ProviderMode::Userinfo);
        assert_eq!(
            p.userinfo_uri.as_ref().unwrap().to_string(),
            "https://api.github.com/user"
        );
        assert!(p.matches_prefix("gho_abc") && !p.matches_prefix("xoxp-1"));
        assert!(p
            .request_headers
            .contains(&("accept".into(), "application/vnd.github+json".into())));
    }

    #[test]
    fn explicit_request_header_replaces_the_preset_one() {
        let c = parse(json!({"providers": [{"name": "gh", "preset": "github", "request_headers": {"Accept": "application/json"}}]})).unwrap();
        let accepts: Vec<_> = c.providers[0]
            .request_headers
            .iter()
            .filter(|(n, _)| n == "accept")
            .collect();
        assert_eq!(
            accepts,
            [&("accept".to_string(), "application/json".to_string())]
        );
    }

    #[test]
    fn cognito_defaults_to_access_tokens_and_checks_token_use() {
        let c = parse(json!({"providers": [{"name": "c", "preset": "cognito", "issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_x", "audiences": ["app"]}]})).unwrap();
        assert_eq!(c.providers[0].token_use.as_deref(), Some("access"));
        let bad = json!({"name": "c", "preset": "cognito", "issuer": "https://c", "audiences": ["app"], "token_use": "refresh"});
        assert_eq!(
            field_of(json!({"providers": [bad]})),
            "providers[0].token_use"
        );
    }

    #[test]
    fn unknown_preset_is_named() {
        assert_eq!(
            field_of(json!({"providers": [{"name": "x", "preset": "myspace"}]})),
            "providers[0].preset"
        );
    }

    #[test]
    fn jwt_provider_without_audiences_is_refused() {
        let mut p = provider();
        p.as_object_mut().unwrap().remove("audiences");
        let err = parse(json!({"providers": [p]})).unwrap_err();
        assert_eq!(err.field, "providers[0].audiences");
        assert!(err.message.contains("\"any\""), "{err}");
    }

    #[test]
    fn audiences_any_must_be_said_exactly_and_a_list_must_not_be_empty() {
        let with = |audiences: Value| {
            let mut p = provider();
            p["audiences"] = audiences;
            parse(json!({"providers": [p]}))
        };
        assert!(with(json!("any")).unwrap().providers[0]
            .audiences
            .is_empty());
        assert_eq!(
            with(json!(["jira", "api://jira"])).unwrap().providers[0].audiences,
            ["jira", "api://jira"]
        );
        for bad in [
            json!([]),
            json!("Any"),
            json!("all"),
            json!(""),
            json!([""]),
            json!(true),
        ] {
            assert_eq!(
                with(bad.clone()).unwrap_err().field,
                "providers[0].audiences",
                "{bad}"
            );
        }
    }

    #[test]
    fn audiences_on_a_userinfo_provider_are_refused_not_ignored() {
        for audiences in [json!(["jira"]), json!("any")] {
            let p = json!({"name": "u", "userinfo_uri": "https://idp/userinfo", "audiences": audiences});
            let err = parse(json!({"providers": [p]})).unwrap_err();
            assert_eq!(err.field, "providers[0].audiences");
            assert!(err.message.contains("userinfo"), "{err}");
        }
    }

    #[test]
    fn introspection_keeps_optional_audiences() {
        let p = json!({"name": "i", "mode": "introspection", "introspection_uri": "https://idp/i", "client_id": "rs", "client_secret": "pw"});
        assert!(
            parse(json!({"providers": [p.clone()]})).unwrap().providers[0]
                .audiences
                .is_empty()
        );
        let mut with = p;
        with["audiences"] = json!(["jira"]);
        assert_eq!(
            parse(json!({"providers": [with]})).unwrap().providers[0].audiences,
            ["jira"]
        );
    }

    #[test]
    fn graph_tokens_are_refused_unless_an_azure_ad_provider_opts_in() {
        let azure = json!({"name": "aad", "preset": "azure_ad", "issuer": "https://login.microsoftonline.com/t/v2.0", "audiences": ["api://jira"]});
        assert!(
            !parse(json!({"providers": [azure.clone()]}))
                .unwrap()
                .providers[0]
                .accept_graph_tokens
        );
        let mut opted = azure;
        opted["accept_graph_tokens"] = json!(true);
        assert!(parse(json!({"providers": [opted]})).unwrap().providers[0].accept_graph_tokens);
        let mut other = provider();
        other["accept_graph_tokens"] = json!(true);
        assert_eq!(
            field_of(json!({"providers": [other]})),
            "providers[0].accept_graph_tokens"
        );
    }

    #[test]
    fn google_preset_takes_only_google_access_tokens() {
        let c = parse(json!({"providers": [{"name": "g", "preset": "google", "audiences": ["client.apps.googleusercontent.com"]}]})).unwrap();
        let p = &c.providers[0];
        assert_eq!(p.token_prefixes, ["ya29."]);
        assert!(
            p.takes_opaque_tokens()
                && p.matches_prefix("ya29.a0Af")
                && !p.matches_prefix("NjQ4MjE2ODk5OTQ3")
        );
    }

    #[test]
    fn unknown_bearer_passthrough_needs_prefixes_on_every_opaque_provider() {
        let open = json!({"name": "u", "userinfo_uri": "https://idp/userinfo"});
        let err = parse(
            json!({"unknown_bearer": "passthrough", "providers": [provider(), open.clone()]}),
        )
        .unwrap_err();
        assert_eq!(err.field, "providers[1].token_prefixes");
        assert!(err.message.contains("unknown_bearer"), "{err}");
        assert!(parse(json!({"providers": [open.clone()]})).is_ok());
        let mut prefixed = open;
        prefixed["token_prefixes"] = json!(["idp_"]);
        let google = json!({"name": "g", "preset": "google", "audiences": "any"});
        let gitlab_prefixed = json!({"name": "gl", "preset": "gitlab", "audiences": "any", "token_prefixes": ["gloas-"]});
        let providers = json!([provider(), prefixed, google, gitlab_prefixed, {"name": "gh", "preset": "github"}]);
        assert!(parse(json!({"unknown_bearer": "passthrough", "providers": providers})).is_ok());
        let gitlab = json!({"name": "gl", "preset": "gitlab", "audiences": "any"});
        assert_eq!(
            field_of(json!({"unknown_bearer": "passthrough", "providers": [gitlab]})),
            "providers[0].token_prefixes"
        );
    }

    #[test]
    fn api_tokens_are_validated_and_named_by_field() {
        let good = json!({"user": "ci-bot", "sha256": "ab".repeat(32), "expires_at": "2027-06-01T00:00:00Z", "name": "CI"});
        let c = parse(json!({"api_tokens": [good.clone()], "basic": "api_tokens"})).unwrap();
        assert_eq!(
            (c.api_tokens[0].user.as_str(), c.api_tokens[0].expires_at),
            ("ci-bot", Some(1_811_808_000))
        );
        let mut bad_date = good.clone();
        bad_date["expires_at"] = json!("next year");
        assert_eq!(
            field_of(json!({"api_tokens": [bad_date]})),
            "api_tokens[0].expires_at"
        );
        let mut bad_hash = good.clone();
        bad_hash["sha256"] = json!("not hex");
        assert_eq!(
            field_of(json!({"api_tokens": [bad_hash]})),
            "api_tokens[0].sha256"
        );
        assert_eq!(
            field_of(json!({"api_tokens": [good.clone(), good]})),
            "api_tokens[1].sha256"
        );
    }
}
