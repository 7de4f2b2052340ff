//! The request path, sans-IO: request head + keys + now → a decision, or "wait for keys".

use crate::config::{AuthorizationForward, BasicMode, Config};
use crate::credentials::{parse_authorization, Credentials};
use crate::decision::{deny, Decision};
use crate::digest::TokenDigest;
use crate::error::AuthError;
use crate::identity::{claim_text, resolve_username, Identity};
use crate::jwt::{looks_like_jwt, Jwt};
use crate::keys::ProviderKeys;
use crate::rules::{AuthMode, Rule};
use crate::time::UnixTime;
use crate::verify::verify;
use serde_json::Value;

/// What the filter reads from a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// `:path`, query string included.
    pub path: String,
    pub authorization: Option<String>,
    /// `Origin` and `Access-Control-Request-Method` are both present.
    pub cors_headers: bool,
}

/// What the adapter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply this verdict now.
    Decide(Verdict),
    /// Pause until provider `provider`'s keys change, then call `start` again.
    WaitForKeys { provider: usize, kid_refresh: bool },
}

/// A decision with the one-line reason the adapter logs (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub note: String,
    /// `Some(reason)` when the request was (or, in dry run, would have been) refused.
    pub denied: Option<AuthError>,
}

/// The authentication core for one plugin configuration.
#[derive(Debug)]
pub struct Authenticator {
    pub config: Config,
}

impl Authenticator {
    /// A core for `config`.
    pub fn new(config: Config) -> Self {
        Authenticator { config }
    }

    /// Decides `head` with the keys at hand; `may_wait` is false when a wait already happened.
    pub fn start(&self, head: &RequestHead, keys: &[ProviderKeys], now: UnixTime, may_wait: bool) -> Step {
        let c = &self.config;
        if c.bypass_cors_preflight && head.method.eq_ignore_ascii_case("OPTIONS") && head.cors_headers {
            return Step::Decide(self.pass("cors preflight"));
        }
        let rule = c.rules.iter().find(|r| r.matches(&head.method, &head.path));
        let mode = rule.map_or(c.default_auth, |r| r.auth);
        if mode == AuthMode::None {
            return Step::Decide(self.pass("auth none"));
        }
        let credentials = match parse_authorization(head.authorization.as_deref()) {
            Ok(credentials) => credentials,
            Err(e) => return Step::Decide(self.refuse(e, head.authorization.as_deref())),
        };
        match credentials {
            Credentials::None if mode == AuthMode::Required => Step::Decide(self.refuse(AuthError::Missing, None)),
            Credentials::None => Step::Decide(self.pass("anonymous")),
            Credentials::Basic { .. } => match c.basic {
                // Atlassian checks Basic itself; the header goes through untouched.
                BasicMode::Passthrough => Step::Decide(self.pass("basic passthrough")),
                BasicMode::Reject | BasicMode::ApiTokens => Step::Decide(self.refuse(AuthError::BasicRejected, head.authorization.as_deref())),
            },
            Credentials::Bearer(token) => match self.bearer(token, rule, keys, now, may_wait) {
                Ok(Some(identity)) => Step::Decide(self.allow(identity, token)),
                Ok(None) => match self.wait_target(token, keys) {
                    Some((provider, kid_refresh)) => Step::WaitForKeys { provider, kid_refresh },
                    None => Step::Decide(self.refuse(AuthError::Internal("wait without provider"), Some(token))),
                },
                Err(e) => Step::Decide(self.refuse(e, Some(token))),
            },
        }
    }

    /// `Ok(None)` means "wait for keys" (see `wait_target`).
    fn bearer(&self, token: &str, rule: Option<&Rule>, keys: &[ProviderKeys], now: UnixTime, may_wait: bool) -> Result<Option<Identity>, AuthError> {
        if !looks_like_jwt(token) {
            return Err(AuthError::NoProvider);
        }
        let jwt = Jwt::parse(token)?;
        let index = jwt.issuer().and_then(|iss| self.config.provider_by_issuer(iss)).ok_or(AuthError::UnknownIssuer)?;
        if !rule.is_none_or(|r| r.allows_provider(index)) {
            return Err(AuthError::ProviderNotAllowed);
        }
        let provider = &self.config.providers[index];
        let state = keys.get(index).ok_or(AuthError::Internal("no key state for provider"))?;
        let Some(set) = state.usable(provider, now) else {
            if !may_wait || state.record.known_down(now) {
                return Err(AuthError::KeysUnavailable);
            }
            return Ok(None);
        };
        let claims = match verify(&jwt, provider, set, now) {
            Err(AuthError::UnknownKeyId)
                if may_wait && provider.inline_keys.is_none() && (state.record.kid_refresh_allowed(now) || state.record.fetching(now)) =>
            {
                return Ok(None)
            }
            other => other?,
        };
        let username = resolve_username(&claims, &provider.username_claims, provider.username_transform)?;
        if let Some(rule) = rule {
            if !rule.require_claims.iter().all(|need| need.is_met(&claims)) {
                return Err(AuthError::InsufficientScope);
            }
        }
        let claim_headers = self
            .config
            .forward
            .claims_to_headers
            .iter()
            .filter_map(|(path, header)| Some((header.clone(), header_value(path.lookup(&claims)?)?)))
            .collect();
        Ok(Some(Identity { username, provider: provider.name.clone(), claim_headers }))
    }

    /// Which provider a waiting bearer token waits for, and whether for an unknown `kid`.
    fn wait_target(&self, token: &str, keys: &[ProviderKeys]) -> Option<(usize, bool)> {
        let jwt = Jwt::parse(token).ok()?;
        let index = self.config.provider_by_issuer(jwt.issuer()?)?;
        let cold = keys.get(index)?.record.jwks.is_none() && self.config.providers[index].inline_keys.is_none();
        Some((index, !cold))
    }

    fn strip(&self) -> Vec<String> {
        self.config.forward.identity_headers().map(str::to_string).collect()
    }

    fn pass(&self, why: &str) -> Verdict {
        Verdict { decision: Decision::Continue { remove: self.strip(), set: vec![] }, note: format!("pass: {why}"), denied: None }
    }

    fn allow(&self, identity: Identity, token: &str) -> Verdict {
        let note = format!("allow {} via {} token={}", identity.username.as_str(), identity.provider, TokenDigest::of(token.as_bytes()));
        if self.config.dry_run {
            return Verdict { note: format!("dry run: {note}"), ..self.pass("dry run") };
        }
        let forward = &self.config.forward;
        let mut remove = self.strip();
        if forward.authorization == AuthorizationForward::Remove {
            remove.push("authorization".into());
        }
        let mut set = vec![(forward.username_header.clone(), identity.username.as_str().to_string())];
        if let Some(h) = &forward.provider_header {
            set.push((h.clone(), identity.provider));
        }
        set.extend(identity.claim_headers);
        Verdict { decision: Decision::Continue { remove, set }, note, denied: None }
    }

    fn refuse(&self, err: AuthError, credential: Option<&str>) -> Verdict {
        let decision = deny(&err, &self.config.realm, self.config.basic != BasicMode::Reject);
        let fingerprint = credential.map(|c| format!(" token={}", TokenDigest::of(c.as_bytes()))).unwrap_or_default();
        let note = format!("deny {}: {err}{fingerprint}", decision.status());
        if self.config.dry_run {
            return Verdict { note: format!("dry run: {note}"), denied: Some(err), ..self.pass("dry run") };
        }
        Verdict { decision, note, denied: Some(err) }
    }
}

/// A claim as a header value: scalars as text, arrays of scalars joined by commas; unsafe text dropped.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::Array(items) => items.iter().map(claim_text).collect::<Option<Vec<_>>>()?.join(","),
        other => claim_text(other)?,
    };
    (!text.chars().any(char::is_control) && text.len() <= 4096).then_some(text)
}
