//! The request path, sans-IO: request head + keys + cache + now → a decision, or what to wait for.

use crate::api_token::is_api_token;
use crate::cache::{claims_fit, CacheEntry, Cached, EntryState, ResultCache, OVERSIZED_TTL_MS};
use crate::config::{
    AuthorizationForward, BasicMode, Config, Provider, ProviderId, ProviderMode, UnknownBearer,
};
use crate::credentials::{is_b64token, parse_authorization, Credentials};
use crate::decision::{deny, Decision};
use crate::digest::{Fingerprint, LogKey, TokenDigest};
use crate::error::AuthError;
use crate::identity::{claim_text, header_list_element, resolve_username, Identity, Username};
use crate::jwt::{Jwt, MAX_TOKEN_BYTES};
use crate::keys::ProviderKeys;
use crate::lookup::{lifetime, LookupStep};
use crate::memo::{Memo, Recalled};
use crate::outbound::Outbound;
use crate::path::canonical_path;
use crate::preset::Preset;
use crate::rules::{AuthMode, Rule};
use crate::time::UnixTime;
use crate::verify::verify;
use serde_json::Value;
use std::cell::{Cell, RefCell};

/// What the filter reads from a request; `Debug` shows neither the credential nor the query.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// `:path`, query string included.
    pub path: String,
    pub authorization: Option<String>,
    /// `Origin` and `Access-Control-Request-Method` are both present.
    pub cors_headers: bool,
    /// A body follows that the product reads as parameters (`POST`,
    /// `application/x-www-form-urlencoded`): signed over when `forward.atlassian_oauth1` is set.
    /// The adapter reads `Content-Type` only when the worker signs requests.
    pub form_body: bool,
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self
            .path
            .split_once('?')
            .map_or(self.path.as_str(), |(path, _)| path);
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &path)
            .field("authorization", &self.authorization.as_ref().map(|_| ".."))
            .field("cors_headers", &self.cors_headers)
            .field("form_body", &self.form_body)
            .finish()
    }
}

/// What the adapter does next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Decided at once, never stored: boxing would cost every request.
pub enum Step {
    /// Apply this verdict now.
    Decide(Verdict),
    /// Pause until provider `provider`'s shared record (keys, discovery) changes, then `start` again.
    WaitForKeys {
        provider: ProviderId,
        kid_refresh: bool,
    },
    /// Nobody has asked the provider about this token: claim its cache slot, send the call, pause.
    Lookup(LookupStart),
    /// Someone is asking the provider about this token: pause until its cache slot changes.
    WaitForLookup {
        provider: ProviderId,
        digest: TokenDigest,
    },
}

/// What a request's method and path decide, before its credential is read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Decided at once, never stored: boxing would cost every request.
pub enum Routed {
    /// Decided without a credential: apply this verdict.
    Decided(Verdict),
    /// The credential decides, under this rule (an index in the configured rules; `None`: no
    /// rule matched, `default_auth` applies): `Authenticator::start_routed`.
    Credential(Option<usize>),
}

/// The first call of a provider lookup; `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct LookupStart {
    pub provider: ProviderId,
    pub digest: TokenDigest,
    pub step: LookupStep,
    pub outbound: Outbound,
    /// The token's own `exp` (JWT-shaped tokens), which caps the cached answer.
    pub token_exp: Option<u64>,
    /// The token asked about (a Bearer token or a Basic password), for a second step's call:
    /// nothing re-reads the `Authorization` header.
    pub token: String,
}

impl std::fmt::Debug for LookupStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupStart")
            .field("provider", &self.provider)
            .field("step", &self.step)
            .field("outbound", &self.outbound)
            .field("token_exp", &self.token_exp)
            .finish_non_exhaustive()
    }
}

/// A decision and what led to it; its `Display` is the one-line reason the adapter logs (never
/// a secret, formatted only when logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What the adapter does to the request.
    pub decision: Decision,
    /// Why: passed, allowed or refused (in dry run, what would have happened).
    pub outcome: Outcome,
    /// `dry_run` is on: `outcome` is logged and counted, but `decision` lets the request through
    /// with no identity.
    pub dry_run: bool,
    /// A verified result the adapter stores in the shared cache, so the next request with this
    /// token skips decoding and the signature check.
    pub remember: Option<CacheEntry>,
}

/// What a verdict concluded about the caller: exactly one of passed, allowed, refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed without authentication, and why (`anonymous`, `auth_none`, ...).
    Pass(&'static str),
    /// Authenticated: who, and the keyed fingerprint of the credential.
    Allow {
        identity: Identity,
        token: Fingerprint,
    },
    /// Refused with `status`; the keyed fingerprint of the credential (none for what may be a
    /// password: a Basic header no token format matched); the provider the credential went to
    /// (by issuer, prefix or cached answer; `api_tokens` for an API token), none before one was chosen.
    Deny {
        error: AuthError,
        status: u32,
        token: Option<Fingerprint>,
        provider: Option<String>,
    },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            write!(f, "dry run: ")?;
        }
        match &self.outcome {
            Outcome::Pass(why) => write!(f, "pass: {why}"),
            Outcome::Allow { identity, token } => write!(
                f,
                "allow {} via {} token={token}",
                identity.username.as_str(),
                identity.provider
            ),
            Outcome::Deny {
                error,
                status,
                token,
                ..
            } => {
                write!(f, "deny {status}: {error}")?;
                match token {
                    Some(token) => write!(f, " token={token}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Verdict {
    /// The reason the request was (or, in dry run, would have been) refused.
    pub fn denied(&self) -> Option<&AuthError> {
        match &self.outcome {
            Outcome::Deny { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Who the caller is, when authenticated (also in dry run).
    pub fn identity(&self) -> Option<&Identity> {
        match &self.outcome {
            Outcome::Allow { identity, .. } => Some(identity),
            _ => None,
        }
    }

    /// Why the request passed without authentication, if it did.
    pub fn passed(&self) -> Option<&'static str> {
        match self.outcome {
            Outcome::Pass(why) => Some(why),
            _ => None,
        }
    }

    /// The provider that refused the request, if one had been chosen for its credential.
    pub fn refused_by(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Deny { provider, .. } => provider.as_deref(),
            _ => None,
        }
    }

    /// This verdict, a refusal naming `provider` as the one that refused (other verdicts unchanged).
    pub fn by(mut self, provider: Option<&str>) -> Verdict {
        if let Outcome::Deny { provider: by, .. } = &mut self.outcome {
            *by = provider.map(str::to_string);
        }
        self
    }

    /// The decision as the access log records it: space-separated `key=value` fields, in this
    /// order: `outcome` (`allow`, `deny`, `pass`), then `user` and `provider` (allowed; refused, once a provider was chosen), `status`
    /// (refused), `reason` (the denial code or why it passed), `token` (the keyed fingerprint the
    /// log lines show, when there is one) and `dry_run=true` in dry run. A value never holds a
    /// space, `"`, `=`, `\` or `%`: those are `%XX`, so no user name can pose as another field.
    pub fn audit(&self) -> String {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(96);
        // Writing to a String cannot fail.
        let _ = match &self.outcome {
            Outcome::Allow { identity, token } => write!(
                line,
                "outcome=allow user={} provider={} token={token}",
                AuditValue(identity.username.as_str()),
                AuditValue(&identity.provider)
            ),
            Outcome::Deny {
                error,
                status,
                token,
                provider,
            } => {
                let _ = write!(line, "outcome=deny status={status} reason={}", error.code());
                if let Some(provider) = provider {
                    let _ = write!(line, " provider={}", AuditValue(provider));
                }
                match token {
                    Some(token) => write!(line, " token={token}"),
                    None => Ok(()),
                }
            }
            Outcome::Pass(why) => write!(line, "outcome=pass reason={why}"),
        };
        if self.dry_run {
            line.push_str(" dry_run=true");
        }
        line
    }
}

/// A value of an audit field: what could end the field or fake another (a space, `"`, `=`,
/// `\`, `%`, a control) is written `%XX`; everything else as it is.
struct AuditValue<'a>(&'a str);

impl std::fmt::Display for AuditValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A value with nothing to escape (the usual user name) is written whole.
        if self
            .0
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\' | b'%'))
        {
            return f.write_str(self.0);
        }
        let mut run = 0;
        for (at, c) in self.0.char_indices() {
            if !(matches!(c, ' ' | '"' | '=' | '\\' | '%') || c.is_control()) {
                continue;
            }
            f.write_str(self.0.get(run..at).unwrap_or_default())?;
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                write!(f, "%{b:02X}")?;
            }
            run = at + c.len_utf8();
        }
        f.write_str(self.0.get(run..).unwrap_or_default())
    }
}

/// How a bearer token is checked.
enum Route<'t> {
    /// Verify the JWT locally with this provider's keys.
    Verify(ProviderId, Jwt<'t>),
    /// Ask this provider, starting with `LookupStep`.
    Ask(ProviderId, LookupStep, Option<u64>),
}

/// A route, or the wait for the provider metadata (discovery) a route needs.
enum Routing<'t> {
    Go(Route<'t>),
    /// Wait until this provider's metadata is complete.
    WaitForMetadata(ProviderId),
}

/// A bearer token's outcome short of a refusal.
enum Next {
    Allow(Identity),
    /// Allowed after a signature check: remember the result for the token's next requests.
    AllowAndRemember(Identity, CacheEntry),
    Then(Step),
}

/// The inputs of one decision.
struct Ctx<'a> {
    keys: &'a [ProviderKeys],
    cache: &'a dyn ResultCache,
    now: UnixTime,
    may_wait: bool,
    rule: Option<&'a Rule>,
    /// The token is the password of a Basic header: only providers with prefixes may see it.
    from_basic: bool,
    /// SHA-256 of the token (or Basic password).
    digest: TokenDigest,
    /// The `Authorization` value of a bearer token, which the worker's memo keeps once the
    /// token is accepted (`None` for Basic).
    header: Option<&'a str>,
    /// The provider chosen for the token (by issuer, prefix or cached answer), once chosen:
    /// a refusal names it.
    provider: Cell<Option<ProviderId>>,
    /// The token's fingerprint once computed for the memo, so the verdict does not compute it
    /// again (an HMAC each).
    shown: Cell<Option<Fingerprint>>,
}

/// The provider name an API-token identity carries (provider header, logs).
pub const API_TOKEN_PROVIDER: &str = "api_tokens";

/// The authentication core for one plugin configuration.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub config: Config,
    /// The tokens this worker accepted lately (the request path is single-threaded per worker).
    memo: RefCell<Memo>,
    /// The key of the fingerprints log lines show (`None`: no randomness, no fingerprints).
    log_key: Option<LogKey>,
}

impl Authenticator {
    /// A core for `config`, with a log key of its own.
    pub fn new(config: Config) -> Self {
        Self::with_log_key(config, LogKey::generate())
    }

    /// A core for `config` whose log fingerprints use `log_key` (the adapter shares one per Envoy).
    pub fn with_log_key(config: Config, log_key: Option<LogKey>) -> Self {
        Authenticator {
            config,
            memo: RefCell::new(Memo::default()),
            log_key,
        }
    }

    /// Uses `log_key` for log fingerprints from now on.
    pub fn set_log_key(&mut self, log_key: LogKey) {
        self.log_key = Some(log_key);
    }

    /// What a log line shows of the token whose digest is `digest`.
    pub fn fingerprint(&self, digest: TokenDigest) -> Fingerprint {
        Fingerprint::new(digest, self.log_key)
    }

    /// Decides `head`; `may_wait` is false once the request's deadline has passed.
    pub fn start(
        &self,
        head: &RequestHead,
        keys: &[ProviderKeys],
        cache: &dyn ResultCache,
        now: UnixTime,
        may_wait: bool,
    ) -> Step {
        match self.route_head(head) {
            Routed::Decided(verdict) => Step::Decide(verdict),
            Routed::Credential(rule) => self.start_routed(head, rule, keys, cache, now, may_wait),
        }
    }

    /// What `head`'s method and path decide before its credential is read (which needs neither
    /// `authorization` nor a clock): a path with no single reading is refused, a CORS preflight
    /// or a rule with `auth: none` passes; otherwise the rule the credential is judged under.
    pub fn route_head(&self, head: &RequestHead) -> Routed {
        let c = &self.config;
        // Rules are read on the path the product serves, whatever Envoy normalised; a path with
        // no single reading is refused before anything else.
        let path = match canonical_path(&head.path) {
            Ok(path) => path,
            Err(e) => return Routed::Decided(self.refuse(e, None)),
        };
        if c.bypass_cors_preflight
            && head.method.eq_ignore_ascii_case("OPTIONS")
            && head.cors_headers
        {
            return Routed::Decided(self.pass_preflight());
        }
        let rule = c
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(&head.method, &path));
        if rule.map_or(c.default_auth, |(_, r)| r.auth) == AuthMode::None {
            return Routed::Decided(self.pass("auth_none"));
        }
        Routed::Credential(rule.map(|(i, _)| i))
    }

    /// Decides `head` under rule `rule` (an index in the configured rules, `None`: no rule
    /// matched), as `route_head` chose it for this head.
    pub fn start_routed(
        &self,
        head: &RequestHead,
        rule: Option<usize>,
        keys: &[ProviderKeys],
        cache: &dyn ResultCache,
        now: UnixTime,
        may_wait: bool,
    ) -> Step {
        let c = &self.config;
        let rule = rule.and_then(|i| c.rules.get(i));
        let mode = rule.map_or(c.default_auth, |r| r.auth);
        if mode == AuthMode::None {
            return Step::Decide(self.pass("auth_none"));
        }
        // A header this worker accepted lately: no parsing, no hashing, no shared-data read.
        if let Some(recalled) = head
            .authorization
            .as_deref()
            .and_then(|h| self.memo.borrow_mut().recall(h, now))
        {
            // Only a provider this rule lets vouch answers here; else the token is routed afresh.
            if rule.is_none_or(|r| r.allows_provider(recalled.provider)) {
                cache.count_hit();
                let provider = self.provider_name(recalled.provider);
                return self.conclude(self.recalled(&recalled, rule), recalled.token, provider);
            }
        }
        let credentials = match parse_authorization(head.authorization.as_deref()) {
            Ok(credentials) => credentials,
            // A malformed header may hold a password: no fingerprint.
            Err(e) => return Step::Decide(self.refuse(e, None)),
        };
        match credentials {
            Credentials::None if mode == AuthMode::Required => {
                Step::Decide(self.refuse(AuthError::Missing, None))
            }
            Credentials::None => Step::Decide(self.pass("anonymous")),
            Credentials::Basic { user, secret } => match c.basic {
                // Atlassian checks Basic itself; the header goes through untouched, except where a
                // rule names providers or claims: nobody here can check those of a password.
                // A password gets no fingerprint in the log, not even a keyed one.
                BasicMode::Passthrough => match admit(rule, None, &Value::Null) {
                    Ok(()) => Step::Decide(self.pass("basic_passthrough")),
                    Err(_) => Step::Decide(self.refuse(AuthError::BasicRejected, None)),
                },
                BasicMode::Reject => Step::Decide(self.refuse(AuthError::BasicRejected, None)),
                BasicMode::ApiTokens => {
                    let ctx = Ctx {
                        keys,
                        cache,
                        now,
                        may_wait,
                        rule,
                        from_basic: true,
                        digest: TokenDigest::of(secret.as_bytes()),
                        header: None,
                        provider: Cell::new(None),
                        shown: Cell::new(None),
                    };
                    let api_token = is_api_token(&secret);
                    let outcome = if api_token {
                        self.api_token(&secret, Some(&user), &ctx)
                    } else {
                        self.bearer(&secret, &ctx)
                    };
                    match outcome {
                        // No token format matched: the password is a person's, and even a keyed
                        // hash of it is left out of the logs.
                        Err(AuthError::BasicRejected) => {
                            Step::Decide(self.refuse(AuthError::BasicRejected, None))
                        }
                        outcome => self.conclude(
                            outcome,
                            self.fingerprint_in(&ctx),
                            self.chosen(&ctx, api_token),
                        ),
                    }
                }
            },
            Credentials::Bearer(token) => {
                // The token is hashed once: cache key, cache entry and log fingerprint.
                let ctx = Ctx {
                    keys,
                    cache,
                    now,
                    may_wait,
                    rule,
                    from_basic: false,
                    digest: TokenDigest::of(token.as_bytes()),
                    header: head.authorization.as_deref(),
                    provider: Cell::new(None),
                    shown: Cell::new(None),
                };
                let api_token = is_api_token(token);
                let outcome = if api_token {
                    self.api_token(token, None, &ctx)
                } else {
                    // A token seen before is decided from the cache: no decoding, no signature check.
                    self.remembered(&ctx)
                        .unwrap_or_else(|| self.bearer(token, &ctx))
                };
                if c.unknown_bearer == UnknownBearer::Passthrough
                    && outcome.as_ref().err() == Some(&AuthError::NoProvider)
                    && admit(rule, None, &Value::Null).is_ok()
                {
                    // An opaque token no provider takes (an Atlassian personal access token): the
                    // product checks it itself, as with Basic passthrough, where no rule names
                    // providers or claims (there it stays `no provider accepts this token`).
                    return Step::Decide(self.pass("unknown_bearer"));
                }
                self.conclude(
                    outcome,
                    self.fingerprint_in(&ctx),
                    self.chosen(&ctx, api_token),
                )
            }
        }
    }

    /// The verdict when the host cannot tell the time: without `now` no token can be judged
    /// (at time 0 every expired token looks fresh), so only what needs no credential passes.
    pub fn without_clock(&self, head: &RequestHead) -> Verdict {
        let c = &self.config;
        if c.bypass_cors_preflight
            && head.method.eq_ignore_ascii_case("OPTIONS")
            && head.cors_headers
        {
            return self.pass("cors_preflight");
        }
        let rule = c.rules.iter().find(|r| r.matches(&head.method, &head.path));
        match rule.map_or(c.default_auth, |r| r.auth) {
            AuthMode::None => self.pass("auth_none"),
            AuthMode::Optional if head.authorization.is_none() => self.pass("anonymous"),
            _ => self.refuse(AuthError::NoClock, head.authorization.as_deref()),
        }
    }

    /// The 503 for a new lookup when the provider already has `max_concurrent_calls` lookups
    /// in flight (`in_flight`, counted by the adapter); `None` when `start` may be sent.
    pub fn over_capacity(&self, start: &LookupStart, in_flight: usize) -> Option<Verdict> {
        let cap = self
            .config
            .provider(start.provider)
            .map_or(0, |p| p.max_concurrent_calls);
        (in_flight >= cap as usize).then(|| {
            self.refuse_digest(AuthError::ProviderUnavailable, Some(start.digest))
                .by(self.provider_name(start.provider))
        })
    }

    /// The name of provider `id` (what metrics and logs call it).
    pub fn provider_name(&self, id: ProviderId) -> Option<&str> {
        self.config.provider(id).map(|p| p.name.as_str())
    }

    /// The provider the credential of `ctx` went to, if one was chosen.
    fn chosen(&self, ctx: &Ctx<'_>, api_token: bool) -> Option<&str> {
        if api_token {
            return Some(API_TOKEN_PROVIDER);
        }
        ctx.provider.get().and_then(|id| self.provider_name(id))
    }

    /// The fingerprint of the credential of `ctx`, computed once per request.
    fn fingerprint_in(&self, ctx: &Ctx<'_>) -> Fingerprint {
        ctx.shown
            .get()
            .unwrap_or_else(|| self.fingerprint(ctx.digest))
    }

    /// The step for `outcome`; a refusal names `provider`, the one the credential went to.
    fn conclude(
        &self,
        outcome: Result<Next, AuthError>,
        token: Fingerprint,
        provider: Option<&str>,
    ) -> Step {
        match outcome {
            Ok(Next::Allow(identity)) => Step::Decide(self.allow(identity, token)),
            Ok(Next::AllowAndRemember(identity, entry)) => {
                let verdict = self.allow(identity, token);
                Step::Decide(Verdict {
                    remember: verdict.denied().is_none().then_some(entry),
                    ..verdict
                })
            }
            Ok(Next::Then(step)) => step,
            Err(e) => Step::Decide(self.refuse_fingerprint(e, Some(token)).by(provider)),
        }
    }

    /// The cached answer about `token`, when a live one names a provider this rule lets vouch
    /// (another provider's answer is no answer here: the token is routed as if uncached).
    fn remembered(&self, ctx: &Ctx<'_>) -> Option<Result<Next, AuthError>> {
        let digest = ctx.digest;
        let entry = ctx.cache.get(&digest)?;
        let Cached::Hit(EntryState::Valid {
            username,
            provider,
            claims,
        }) = CacheEntry::view(Some(&entry), &digest, ctx.now)
        else {
            return None;
        };
        let id = self.config.provider_named(&provider)?;
        if !ctx.rule.is_none_or(|r| r.allows_provider(id)) {
            return None;
        }
        ctx.provider.set(Some(id));
        Some((|| {
            let username = Username::parse(username)?;
            let identity = self.identity(id, username, &claims, ctx.rule)?;
            self.keep(ctx, id, &identity, claims, entry.until_ms);
            Ok(Next::Allow(identity))
        })())
    }

    /// The decision about a token the memo holds: the rule is checked again, as on a cache hit.
    fn recalled(&self, recalled: &Recalled, rule: Option<&Rule>) -> Result<Next, AuthError> {
        admit(rule, Some(recalled.provider), &recalled.claims)?;
        Ok(Next::Allow(recalled.identity.clone()))
    }

    /// Lets this worker's memo answer for the bearer token of `ctx` until `until_ms`.
    fn keep(
        &self,
        ctx: &Ctx<'_>,
        provider: ProviderId,
        identity: &Identity,
        claims: Value,
        until_ms: u64,
    ) {
        if let Some(header) = ctx.header {
            let token = self.fingerprint(ctx.digest).shown();
            ctx.shown.set(Some(token));
            let recalled = Recalled {
                token,
                until_ms,
                provider,
                identity: identity.clone(),
                claims,
            };
            self.memo.borrow_mut().keep(header, recalled);
        }
    }

    /// An API token of the filter's own (SPEC section 3): never sent to any provider.
    fn api_token(&self, token: &str, user: Option<&str>, ctx: &Ctx<'_>) -> Result<Next, AuthError> {
        let entry = crate::api_token::authenticate(token, user, &self.config.api_tokens, ctx.now)?;
        // No provider vouches for an API token, and it carries no claims to require.
        admit(ctx.rule, None, &Value::Null)?;
        let username = Username::parse(entry.user.clone())?;
        Ok(Next::Allow(Identity {
            username,
            provider: API_TOKEN_PROVIDER.to_string(),
            claim_headers: vec![],
        }))
    }

    /// The cache entry for a provider's answer about a token: claims trimmed to what the
    /// configuration reads, lifetime set; claims still over `MAX_CLAIMS_BYTES` keep the entry
    /// only `OVERSIZED_TTL_MS` (for the requests waiting for it), never an entry without them.
    pub fn cache_entry(
        &self,
        provider: ProviderId,
        digest: TokenDigest,
        state: EntryState,
        now: UnixTime,
        token_exp: Option<u64>,
    ) -> CacheEntry {
        let mut until = self
            .config
            .provider(provider)
            .map_or(now, |p| lifetime(&state, p, now, token_exp));
        let state = match state {
            EntryState::Valid {
                username,
                provider,
                claims,
            } => {
                let claims = self.config.kept_claims(&claims);
                if !claims_fit(&claims) {
                    until = until.min(now.plus_millis(OVERSIZED_TTL_MS));
                }
                EntryState::Valid {
                    username,
                    provider,
                    claims,
                }
            }
            other => other,
        };
        CacheEntry::answer(digest, state, until)
    }

    fn bearer(&self, token: &str, ctx: &Ctx<'_>) -> Result<Next, AuthError> {
        let route = match self.route(token, ctx)? {
            Routing::Go(route) => route,
            Routing::WaitForMetadata(id) => {
                let (provider, state) = self.provider_and_keys(id, ctx.keys)?;
                if !ctx.may_wait || state.record.known_down(provider, ctx.now) {
                    return Err(AuthError::ProviderUnavailable);
                }
                return Ok(Next::Then(Step::WaitForKeys {
                    provider: id,
                    kid_refresh: false,
                }));
            }
        };
        match route {
            Route::Ask(id, step, exp) => self.ask(id, step, token, exp, ctx),
            Route::Verify(id, jwt) => {
                let (provider, state) = self.provider_and_keys(id, ctx.keys)?;
                let Some(set) = state.usable(provider, ctx.now) else {
                    if !ctx.may_wait || state.record.known_down(provider, ctx.now) {
                        return Err(AuthError::KeysUnavailable);
                    }
                    return Ok(Next::Then(Step::WaitForKeys {
                        provider: id,
                        kid_refresh: false,
                    }));
                };
                let claims = match verify(&jwt, provider, set, ctx.now) {
                    Err(AuthError::UnknownKeyId) if provider.inline_keys.is_none() => {
                        let record = &state.record;
                        if ctx.may_wait
                            && (record.fetching(ctx.now)
                                || record.kid_refresh_allowed(ctx.now)
                                    && !record.backing_off(ctx.now))
                        {
                            return Ok(Next::Then(Step::WaitForKeys {
                                provider: id,
                                kid_refresh: true,
                            }));
                        }
                        // The last fetch failed or has not ended in time: the kid may be a key the
                        // provider rotated to, which the filter cannot know. Only a good refresh
                        // lacking it says no.
                        let undecided = record.failures > 0 || record.fetching(ctx.now);
                        return Err(if undecided {
                            AuthError::KeysUnavailable
                        } else {
                            AuthError::UnknownKeyId
                        });
                    }
                    other => other?,
                };
                match resolve_username(
                    &claims,
                    &provider.username_claims,
                    &provider.username_transform,
                ) {
                    Ok(username) => {
                        let identity = self.identity(id, username.clone(), &claims, ctx.rule)?;
                        let state = EntryState::Valid {
                            username: username.as_str().to_string(),
                            provider: provider.name.clone(),
                            claims,
                        };
                        let entry =
                            self.cache_entry(id, ctx.digest, state, ctx.now, jwt.expires_at());
                        if matches!(&entry.state, EntryState::Valid { claims, .. } if !claims_fit(claims))
                        {
                            // Too large to share: decided from the full claims, verified again next time.
                            return Ok(Next::Allow(identity));
                        }
                        if let EntryState::Valid { claims, .. } = &entry.state {
                            self.keep(ctx, id, &identity, claims.clone(), entry.until_ms);
                        }
                        Ok(Next::AllowAndRemember(identity, entry))
                    }
                    // A verified token without a username claim: the provider's userinfo knows it.
                    Err(AuthError::NoUsername) if state.record.userinfo_uri(provider).is_some() => {
                        self.ask(id, LookupStep::Userinfo, token, jwt.expires_at(), ctx)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Which provider checks `token`, and how, or the wait for its metadata.
    fn route<'t>(&self, token: &'t str, ctx: &Ctx<'_>) -> Result<Routing<'t>, AuthError> {
        let allowed = |id: ProviderId| ctx.rule.is_none_or(|r| r.allows_provider(id));
        if let Some(jwt) = Jwt::parse_if_jwt(token) {
            let jwt = jwt?;
            let id = jwt
                .issuer()
                .and_then(|iss| self.config.provider_by_issuer(iss))
                .ok_or(AuthError::UnknownIssuer)?;
            ctx.provider.set(Some(id));
            if !allowed(id) {
                return Err(AuthError::ProviderNotAllowed);
            }
            let provider = self
                .config
                .provider(id)
                .ok_or(AuthError::Internal("provider id"))?;
            // Azure AD Graph tokens carry a header nonce and cannot be verified locally. Any user
            // of any app that asks for Graph scopes holds one, issued for Graph, not for this
            // application: refused unless the provider opts in.
            let graph_token = provider.preset == Preset::AzureAd && jwt.has_header_nonce;
            if graph_token && !provider.accept_graph_tokens {
                return Err(AuthError::AudienceMismatch);
            }
            if provider.mode == ProviderMode::Jwt && !graph_token {
                return Ok(Routing::Go(Route::Verify(id, jwt)));
            }
            let exp = jwt.expires_at();
            let step = if graph_token {
                LookupStep::Userinfo
            } else {
                LookupStep::first(provider)
            };
            return Ok(if self.ready(id, ctx) {
                Routing::Go(Route::Ask(id, step, exp))
            } else {
                Routing::WaitForMetadata(id)
            });
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        // SPEC section 1 step 5: the first opaque-capable provider allowed here whose prefixes match.
        let (id, provider) = self
            .config
            .provider_ids()
            .zip(&self.config.providers)
            // A Basic password goes only to providers whose prefixes it carries: an ordinary
            // password must never reach an identity provider.
            .find(|&(id, p)| {
                p.takes_opaque_tokens()
                    && allowed(id)
                    && p.matches_prefix(token)
                    && !(ctx.from_basic && p.token_prefixes.is_empty())
            })
            .ok_or(if ctx.from_basic {
                AuthError::BasicRejected
            } else {
                AuthError::NoProvider
            })?;
        ctx.provider.set(Some(id));
        // A password goes out as `Authorization: Bearer <password>`: one a bearer token cannot
        // be (RFC 6750 b64token) is the client's error, not a call for Envoy to refuse.
        if ctx.from_basic && !is_b64token(token) {
            return Err(AuthError::MalformedToken);
        }
        // GitHub tokens carry a checksum: a mistyped or made-up one never costs a call.
        if provider.preset == Preset::Github && !crate::github::well_formed(token) {
            return Err(AuthError::MalformedToken);
        }
        if !self.ready(id, ctx) {
            return Ok(Routing::WaitForMetadata(id));
        }
        Ok(Routing::Go(Route::Ask(
            id,
            LookupStep::first(provider),
            None,
        )))
    }

    /// Whether provider `id`'s metadata (discovery) is complete.
    fn ready(&self, id: ProviderId, ctx: &Ctx<'_>) -> bool {
        self.provider_and_keys(id, ctx.keys)
            .is_ok_and(|(provider, keys)| keys.record.ready(provider))
    }

    /// Provider `id` and this worker's keys of it (`keys` is laid out like `Config::providers`).
    fn provider_and_keys<'k>(
        &self,
        id: ProviderId,
        keys: &'k [ProviderKeys],
    ) -> Result<(&Provider, &'k ProviderKeys), AuthError> {
        self.config
            .provider(id)
            .zip(id.of(keys))
            .ok_or(AuthError::Internal("provider id"))
    }

    /// The cached answer about `token`, or the call that gets it.
    fn ask(
        &self,
        id: ProviderId,
        step: LookupStep,
        token: &str,
        token_exp: Option<u64>,
        ctx: &Ctx<'_>,
    ) -> Result<Next, AuthError> {
        let (provider, keys) = self.provider_and_keys(id, ctx.keys)?;
        let digest = ctx.digest;
        let entry = ctx.cache.get(&digest);
        let cached = match CacheEntry::view(entry.as_ref(), &digest, ctx.now) {
            // An answer counts only for the provider that gave it: this one has not been asked.
            Cached::Hit(EntryState::Valid { provider: by, .. }) if by != provider.name => {
                Cached::Miss
            }
            cached => cached,
        };
        match cached {
            Cached::Hit(EntryState::Valid {
                username, claims, ..
            }) => {
                let username = Username::parse(username)?;
                let identity = self.identity(id, username, &claims, ctx.rule)?;
                let until_ms = entry.map_or(0, |e| e.until_ms);
                self.keep(ctx, id, &identity, claims, until_ms);
                Ok(Next::Allow(identity))
            }
            Cached::Hit(EntryState::Refused { refusal }) => Err(refusal.to_error()),
            Cached::Pending if ctx.may_wait => Ok(Next::Then(Step::WaitForLookup {
                provider: id,
                digest,
            })),
            // A failed lookup is not an answer: a new request asks again (the requests that were
            // waiting for it got their 503).
            Cached::Miss | Cached::Hit(EntryState::Unavailable) if ctx.may_wait => {
                let outbound = step
                    .outbound(&self.config, provider, &keys.record, token)
                    .ok_or(AuthError::ProviderUnavailable)?;
                Ok(Next::Then(Step::Lookup(LookupStart {
                    provider: id,
                    digest,
                    step,
                    outbound,
                    token_exp,
                    token: token.to_string(),
                })))
            }
            Cached::Pending
            | Cached::Miss
            | Cached::Hit(EntryState::Unavailable | EntryState::Pending { .. }) => {
                Err(AuthError::ProviderUnavailable)
            }
        }
    }

    /// The identity of a caller provider `id` vouched for with `claims`, if `rule` admits it.
    fn identity(
        &self,
        id: ProviderId,
        username: Username,
        claims: &Value,
        rule: Option<&Rule>,
    ) -> Result<Identity, AuthError> {
        admit(rule, Some(id), claims)?;
        let provider = self
            .config
            .provider(id)
            .ok_or(AuthError::Internal("provider id"))?;
        let claim_headers = self
            .config
            .forward
            .claims_to_headers
            .iter()
            .filter_map(|(path, header)| {
                Some((header.clone(), header_value(path.lookup(claims)?)?))
            })
            .collect();
        Ok(Identity {
            username,
            provider: provider.name.clone(),
            claim_headers,
        })
    }

    fn strip(&self) -> Vec<String> {
        self.config
            .forward
            .identity_headers()
            .map(str::to_string)
            .collect()
    }

    /// A CORS preflight passes without credentials: browsers never send them on one, so an
    /// `Authorization` or `Cookie` there was put by hand and nobody checked it.
    fn pass_preflight(&self) -> Verdict {
        let mut verdict = self.pass("cors_preflight");
        if let Decision::Continue { remove, .. } = &mut verdict.decision {
            remove.extend(["authorization".to_string(), "cookie".to_string()]);
        }
        verdict
    }

    fn pass(&self, why: &'static str) -> Verdict {
        let decision = Decision::Continue {
            remove: self.strip(),
            set: vec![],
        };
        Verdict {
            decision,
            outcome: Outcome::Pass(why),
            dry_run: false,
            remember: None,
        }
    }

    /// In dry run, `outcome` is only logged and counted: the request goes on with no identity.
    fn dry_run(&self, outcome: Outcome) -> Verdict {
        let decision = Decision::Continue {
            remove: self.strip(),
            set: vec![],
        };
        Verdict {
            decision,
            outcome,
            dry_run: true,
            remember: None,
        }
    }

    fn allow(&self, identity: Identity, token: Fingerprint) -> Verdict {
        if self.config.dry_run {
            return self.dry_run(Outcome::Allow { identity, token });
        }
        let forward = &self.config.forward;
        let mut remove = self.strip();
        if forward.authorization == AuthorizationForward::Remove {
            remove.push("authorization".into());
        }
        let mut set = vec![(
            forward.username_header.clone(),
            identity.username.as_str().to_string(),
        )];
        if let Some(h) = &forward.provider_header {
            set.push((h.clone(), identity.provider.clone()));
        }
        set.extend(identity.claim_headers.iter().cloned());
        Verdict {
            decision: Decision::Continue { remove, set },
            outcome: Outcome::Allow { identity, token },
            dry_run: false,
            remember: None,
        }
    }

    /// The verdict for `err`; also used by the adapter when a wait ends without an answer.
    /// `token` (never a password) is shown in the log by its keyed fingerprint.
    pub fn refuse(&self, err: AuthError, token: Option<&str>) -> Verdict {
        self.refuse_digest(err, token.map(|t| TokenDigest::of(t.as_bytes())))
    }

    /// The verdict for `err` about the token whose digest is `digest` (shown by its keyed fingerprint).
    pub fn refuse_digest(&self, err: AuthError, digest: Option<TokenDigest>) -> Verdict {
        self.refuse_fingerprint(err, digest.map(|d| self.fingerprint(d)))
    }

    /// The verdict for `err` about the token shown in the log as `token`.
    pub fn refuse_fingerprint(&self, err: AuthError, token: Option<Fingerprint>) -> Verdict {
        let decision = deny(
            &err,
            &self.config.realm,
            self.config.basic != BasicMode::Reject,
        );
        let outcome = Outcome::Deny {
            status: decision.status(),
            error: err,
            token,
            provider: None,
        };
        if self.config.dry_run {
            return self.dry_run(outcome);
        }
        Verdict {
            decision,
            outcome,
            dry_run: false,
            remember: None,
        }
    }
}

/// Rule admission (`Rule::admit`); where no rule matched, everyone is admitted.
fn admit(
    rule: Option<&Rule>,
    provider: Option<ProviderId>,
    claims: &Value,
) -> Result<(), AuthError> {
    rule.map_or(Ok(()), |r| r.admit(provider, claims))
}

/// A claim as a header value: array elements joined by `,`, each encoded so that it stays one
/// element (`header_list_element`); `None` for objects, unsafe text and beyond 4096 bytes.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(|i| claim_text(i).map(|t| header_list_element(&t)))
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => header_list_element(&claim_text(other)?),
    };
    (!text.chars().any(crate::identity::is_unsafe_char) && text.len() <= 4096).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_debug_shows_neither_the_credential_nor_the_query() {
        let head = RequestHead {
            method: "GET".into(),
            path: "/rest/api/2/search?access_token=q5ecret".into(),
            authorization: Some("Bearer s3cret-token".into()),
            cors_headers: false,
            form_body: false,
        };
        let shown = format!("{head:?}");
        assert!(
            !shown.contains("s3cret-token") && !shown.contains("q5ecret"),
            "{shown}"
        );
        assert!(shown.contains("/rest/api/2/search"), "{shown}");
    }

    fn verdict(outcome: Outcome, dry_run: bool) -> Verdict {
        Verdict {
            decision: Decision::Continue {
                remove: vec![],
                set: vec![],
            },
            outcome,
            dry_run,
            remember: None,
        }
    }

    fn fingerprint_of(token: &str) -> Fingerprint {
        LogKey::from_bytes(&[9u8; 32])
            .unwrap()
            .fingerprint(TokenDigest::of(token.as_bytes()))
    }

    #[test]
    fn audit_names_the_user_the_provider_and_the_logged_fingerprint() {
        let token = fingerprint_of("s3cret-token");
        let allowed = verdict(
            Outcome::Allow {
                identity: Identity {
                    username: Username::parse("alice".into()).unwrap(),
                    provider: "corp".into(),
                    claim_headers: vec![],
                },
                token,
            },
            false,
        );
        assert_eq!(
            allowed.audit(),
            format!("outcome=allow user=alice provider=corp token={token}")
        );
        assert!(allowed.to_string().contains(&format!("token={token}")));
        assert!(!allowed.audit().contains("s3cret-token"));
    }

    #[test]
    fn audit_gives_the_reason_of_a_refusal_or_a_pass_and_marks_dry_run() {
        let token = fingerprint_of("t");
        let expired = Outcome::Deny {
            error: AuthError::Expired,
            status: 401,
            token: Some(token),
            provider: Some("corp idp".into()),
        };
        assert_eq!(
            verdict(expired.clone(), false).audit(),
            format!(
                "outcome=deny status=401 reason=token_expired provider=corp%20idp token={token}"
            )
        );
        assert_eq!(
            verdict(expired, true).audit(),
            format!("outcome=deny status=401 reason=token_expired provider=corp%20idp token={token} dry_run=true")
        );
        let password = Outcome::Deny {
            error: AuthError::Missing,
            status: 401,
            token: None,
            provider: None,
        };
        assert_eq!(
            verdict(password, false).audit(),
            "outcome=deny status=401 reason=no_credentials"
        );
        assert_eq!(
            verdict(Outcome::Pass("auth_none"), false).audit(),
            "outcome=pass reason=auth_none"
        );
    }

    #[test]
    fn a_user_name_cannot_pose_as_another_audit_field() {
        let tricky = Username::parse("kate provider=x user=%41\\\"".into()).unwrap();
        let audit = verdict(
            Outcome::Allow {
                identity: Identity {
                    username: tricky,
                    provider: "corp".into(),
                    claim_headers: vec![],
                },
                token: fingerprint_of("t"),
            },
            false,
        )
        .audit();
        let fields: Vec<&str> = audit.split(' ').collect();
        assert_eq!(fields.len(), 4, "{audit}");
        assert_eq!(fields[1], "user=kate%20provider%3Dx%20user%3D%2541%5C%22");
        assert_eq!(fields[2], "provider=corp");
    }

    #[test]
    fn an_audit_value_keeps_letters_and_escapes_controls_of_any_script() {
        for (value, shown) in [
            ("jürgen.müller", "jürgen.müller"),
            ("plain.name", "plain.name"),
            ("a\u{85}b", "a%C2%85b"),
            ("tab\there", "tab%09here"),
            ("end ", "end%20"),
            ("", ""),
        ] {
            assert_eq!(AuditValue(value).to_string(), shown, "{value:?}");
        }
    }
}
