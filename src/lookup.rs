//! Asking a provider about a token: userinfo, RFC 7662 introspection, and the preset quirks.
//!
//! Sans-IO: a `LookupStep` builds the `Outbound` call, and `on_reply` reads the provider's answer
//! into the next step or a cacheable `EntryState`.

use crate::cache::{EntryState, Refusal};
use crate::config::{Config, Provider, ProviderMode};
use crate::error::AuthError;
use crate::identity::resolve_username;
use crate::jwt::parse_json;
use crate::keys::KeyRecord;
use crate::outbound::{client_basic, form_encode, Outbound};
use crate::preset::Preset;
use crate::time::UnixTime;
use crate::uri::HttpUri;
use serde_json::{Map, Value};

/// A valid answer decides for at least this long, even at the very end of its token's life.
const MIN_ANSWER_LIFE_MS: u64 = 1000;

/// Provider answers larger than this are refused as unparsable (503).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One call of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupStep {
    /// `GET userinfo` with the token as Bearer.
    Userinfo,
    /// RFC 7662 `POST introspection`, `client_secret_basic`.
    Introspection,
    /// GitHub's OAuth-app token check: `POST /applications/{client_id}/token`.
    GithubApp,
    /// Facebook's `GET /debug_token`: the token was issued to this app; then userinfo.
    FacebookDebug,
}

/// What a reply leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Make this call next.
    Next(LookupStep),
    /// The answer, to cache and decide with.
    Done(EntryState),
    /// No verdict on the token: the provider could not answer it (503, never cached as a refusal).
    Unavailable(Outage),
}

/// The reply headers the core reads besides `:status` (lowercase); the adapter fetches only these.
pub const REPLY_HEADERS: [&str; 2] = ["x-ratelimit-remaining", "retry-after"];

/// The head of a provider's reply: what the core decides with besides the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyHead<'a> {
    /// `:status`; 0 when no reply came (connection failed, reset, timeout).
    pub status: u32,
    /// `x-ratelimit-remaining` (GitHub and others).
    pub ratelimit_remaining: Option<&'a str>,
    /// `retry-after`.
    pub retry_after: Option<&'a str>,
}

impl ReplyHead<'_> {
    /// A reply with this status and none of the headers read.
    pub const fn status(status: u32) -> Self {
        ReplyHead {
            status,
            ratelimit_remaining: None,
            retry_after: None,
        }
    }

    /// Whether the provider is limiting our calls: 429, or a 403 with rate-limit signals
    /// (GitHub: `x-ratelimit-remaining: 0`, or `retry-after` for its secondary limits).
    fn rate_limited(&self) -> bool {
        let exhausted = self.ratelimit_remaining.is_some_and(|r| r.trim() == "0");
        self.status == 429 || self.status == 403 && (exhausted || self.retry_after.is_some())
    }
}

/// Why a provider could not answer; the adapter logs it (never with token or secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// No reply: the connection failed, was reset or timed out.
    NoReply,
    /// A status that says nothing about the token (5xx, unexpected codes).
    Status(u32),
    /// The provider limits our calls (429, or 403 with rate-limit signals).
    RateLimited(u32),
    /// The provider refused the filter's own client credentials (RFC 7662 section 2.3).
    ClientRefused(u32),
    /// The answer is too large or not a JSON object.
    Unparsable,
}

impl Outage {
    /// Whether only the operator can end it (wrong `client_id`/`client_secret`): an error log.
    pub fn needs_operator(self) -> bool {
        matches!(self, Outage::ClientRefused(_))
    }
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outage::NoReply => write!(f, "no response (connection failed or timed out)"),
            Outage::Status(status) => write!(f, "HTTP {status}"),
            Outage::RateLimited(status) => write!(f, "rate limited (HTTP {status})"),
            Outage::ClientRefused(status) => {
                write!(f, "refused the filter's client credentials (HTTP {status}): check client_id and client_secret")
            }
            Outage::Unparsable => write!(f, "answer too large or not a JSON object"),
        }
    }
}

impl LookupStep {
    /// The first call for `provider`; `jwt_shaped` tokens of a jwt-mode provider use userinfo.
    pub fn first(provider: &Provider) -> Self {
        let has_client = provider.client_id.is_some() && provider.client_secret.is_some();
        match (provider.mode, provider.preset) {
            (ProviderMode::Introspection, _) => LookupStep::Introspection,
            (_, Preset::Github) if has_client => LookupStep::GithubApp,
            (_, Preset::Facebook) if has_client => LookupStep::FacebookDebug,
            _ => LookupStep::Userinfo,
        }
    }

    /// The call for this step; `None` when the provider has no endpoint for it (yet).
    pub fn outbound(
        self,
        config: &Config,
        provider: &Provider,
        record: &KeyRecord,
        token: &str,
    ) -> Option<Outbound> {
        let client = || {
            Some((
                provider.client_id.as_deref()?,
                provider.client_secret.as_ref()?.expose(),
            ))
        };
        match self {
            LookupStep::Userinfo => {
                let uri = record.userinfo_uri(provider)?;
                Some(Outbound::request(
                    config,
                    provider,
                    "GET",
                    &uri,
                    vec![("authorization".into(), format!("Bearer {token}"))],
                    None,
                ))
            }
            LookupStep::Introspection => {
                let uri = record.introspection_uri(provider)?;
                let (id, secret) = client()?;
                let body = format!("token={}&token_type_hint=access_token", form_encode(token));
                let headers = vec![
                    ("authorization".into(), client_basic(id, secret)),
                    (
                        "content-type".into(),
                        "application/x-www-form-urlencoded".into(),
                    ),
                ];
                Some(Outbound::request(
                    config,
                    provider,
                    "POST",
                    &uri,
                    headers,
                    Some(body.into_bytes()),
                ))
            }
            LookupStep::GithubApp => {
                let (id, secret) = client()?;
                let uri = sibling(
                    &record.userinfo_uri(provider)?,
                    &format!("/applications/{}/token", form_encode(id)),
                )?;
                let body = serde_json::json!({ "access_token": token }).to_string();
                let headers = vec![
                    ("authorization".into(), client_basic(id, secret)),
                    ("content-type".into(), "application/json".into()),
                ];
                Some(Outbound::request(
                    config,
                    provider,
                    "POST",
                    &uri,
                    headers,
                    Some(body.into_bytes()),
                ))
            }
            LookupStep::FacebookDebug => {
                let (id, secret) = client()?;
                let query = format!(
                    "/debug_token?input_token={}&access_token={}",
                    form_encode(token),
                    form_encode(&format!("{id}|{secret}"))
                );
                let uri = sibling(&record.userinfo_uri(provider)?, &query)?;
                Some(Outbound::request(
                    config,
                    provider,
                    "GET",
                    &uri,
                    vec![],
                    None,
                ))
            }
        }
    }

    /// Reads the provider's reply. Only an answer about the token is a verdict: a rate limit
    /// or a refusal of the filter's own credentials is an outage (503), never a cached refusal.
    pub fn on_reply(
        self,
        provider: &Provider,
        head: ReplyHead<'_>,
        body: &[u8],
        now: UnixTime,
    ) -> Progress {
        let rejected = Progress::Done(EntryState::Refused {
            refusal: Refusal::Rejected,
        });
        let status = head.status;
        if head.rate_limited() {
            return Progress::Unavailable(Outage::RateLimited(status));
        }
        match status {
            200 => {}
            0 => return Progress::Unavailable(Outage::NoReply),
            // RFC 7662 section 2.3: the endpoint refuses the caller, the filter; an inactive
            // token is `200 {"active": false}`. GitHub's app check also authenticates the app.
            401 | 403 if self == LookupStep::Introspection => {
                return Progress::Unavailable(Outage::ClientRefused(status))
            }
            401 if self == LookupStep::GithubApp => {
                return Progress::Unavailable(Outage::ClientRefused(status))
            }
            // RFC 6750 section 3.1: the resource server says the token is no good.
            400 | 401 | 403 => return rejected,
            // GitHub: an unknown token or one of another app.
            404 | 422 if self == LookupStep::GithubApp => return rejected,
            _ => return Progress::Unavailable(Outage::Status(status)),
        }
        if body.len() > MAX_ANSWER_BYTES {
            return Progress::Unavailable(Outage::Unparsable);
        }
        let Ok(Value::Object(answer)) = parse_json(body) else {
            return Progress::Unavailable(Outage::Unparsable);
        };
        match self {
            LookupStep::FacebookDebug => {
                let data = answer.get("data");
                let valid = data
                    .and_then(|d| d.get("is_valid"))
                    .and_then(Value::as_bool)
                    == Some(true);
                let app = data.and_then(|d| d.get("app_id")).and_then(Value::as_str);
                if valid && app.is_some() && app == provider.client_id.as_deref() {
                    Progress::Next(LookupStep::Userinfo)
                } else {
                    rejected
                }
            }
            LookupStep::GithubApp => match answer.get("user") {
                Some(Value::Object(user)) => Progress::Done(valid_state(provider, user.clone())),
                _ => rejected,
            },
            LookupStep::Userinfo => {
                // Slack answers HTTP 200 with "ok": false for a bad token.
                if provider.preset == Preset::Slack
                    && answer.get("ok").and_then(Value::as_bool) != Some(true)
                {
                    return rejected;
                }
                Progress::Done(valid_state(provider, answer))
            }
            LookupStep::Introspection => {
                Progress::Done(match check_introspection(provider, &answer, now) {
                    Ok(()) => valid_state(provider, answer),
                    Err(refusal) => EntryState::Refused { refusal },
                })
            }
        }
    }
}

/// Until when an answer may be reused: valid ones for `cache_seconds` (at least 1 s, so that
/// concurrent requests share one call) but never past the token's `exp`; refusals briefly;
/// unavailability for a second.
pub fn lifetime(
    state: &EntryState,
    provider: &Provider,
    now: UnixTime,
    token_exp: Option<u64>,
) -> UnixTime {
    let cache_ms = provider.cache_seconds.max(1).saturating_mul(1000);
    match state {
        EntryState::Valid { claims, .. } => {
            let answer_exp = claims
                .get("exp")
                .and_then(Value::as_f64)
                .map(|t| t.max(0.0) as u64);
            let exp = match (token_exp, answer_exp) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let until = now.plus_millis(cache_ms);
            // Accepted means `now <= exp + skew`; the entry ends there, and lives at least a
            // second so the requests waiting for this answer are decided by it (else a token at
            // the end of its life would be looked up again and again).
            let capped = exp.map_or(until, |exp| {
                until.min(UnixTime::from_secs(
                    exp.saturating_add(provider.clock_skew_seconds),
                ))
            });
            capped.max(now.plus_millis(MIN_ANSWER_LIFE_MS.min(cache_ms)))
        }
        EntryState::Refused { .. } => now.plus_millis(cache_ms.min(crate::cache::NEGATIVE_TTL_MS)),
        EntryState::Unavailable | EntryState::Pending { .. } => {
            now.plus_millis(crate::cache::UNAVAILABLE_TTL_MS)
        }
    }
}

/// RFC 7662 section 2.2: `active`, then the type, time and audience claims it may carry.
fn check_introspection(
    provider: &Provider,
    answer: &Map<String, Value>,
    now: UnixTime,
) -> Result<(), Refusal> {
    if answer.get("active").and_then(Value::as_bool) != Some(true) {
        return Err(Refusal::Rejected);
    }
    // A refresh or ID token the endpoint calls active is still no access token.
    if answer
        .get("token_type")
        .is_some_and(|t| !t.as_str().is_some_and(is_access_token_type))
    {
        return Err(Refusal::TokenUse);
    }
    let now = now.as_secs();
    let skew = provider.clock_skew_seconds;
    let time = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_f64)
            .map(|t| t.max(0.0) as u64)
    };
    if time("exp").is_some_and(|exp| now > exp.saturating_add(skew)) {
        return Err(Refusal::Expired);
    }
    if time("nbf").is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(Refusal::NotYetValid);
    }
    if !provider.audiences.is_empty() {
        let wanted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| provider.audiences.iter().any(|w| w == a))
        };
        let aud_ok = match answer.get("aud") {
            Some(Value::Array(items)) => items.iter().any(wanted),
            Some(v) => wanted(v),
            // `client_id` stands in for the audience only when the answer names none.
            None => answer.get("client_id").is_some_and(wanted),
        };
        if !aud_ok {
            return Err(Refusal::Audience);
        }
    }
    Ok(())
}

/// RFC 7662 `token_type` values accepted (case-insensitive): `Bearer` (RFC 6749 section 7.1,
/// what most servers send), `access_token` and its RFC 8693 URI. Others (`refresh_token`,
/// `id_token`, `DPoP`, which needs a proof this filter does not check) are refused.
fn is_access_token_type(token_type: &str) -> bool {
    [
        "bearer",
        "access_token",
        "urn:ietf:params:oauth:token-type:access_token",
    ]
    .iter()
    .any(|t| token_type.eq_ignore_ascii_case(t))
}

/// A provider's answer as a cache state: the username resolved now, the answer kept as claims.
fn valid_state(provider: &Provider, answer: Map<String, Value>) -> EntryState {
    let claims = Value::Object(answer);
    match resolve_username(
        &claims,
        &provider.username_claims,
        &provider.username_transform,
    ) {
        Ok(name) => EntryState::Valid {
            username: name.as_str().to_string(),
            provider: provider.name.clone(),
            claims,
        },
        Err(AuthError::NoUsername) => EntryState::Refused {
            refusal: Refusal::NoUsername,
        },
        Err(_) => EntryState::Refused {
            refusal: Refusal::InvalidUsername,
        },
    }
}

/// Another path (with query) on the same scheme and authority as `uri`.
fn sibling(uri: &HttpUri, path_and_query: &str) -> Option<HttpUri> {
    HttpUri::parse(&format!(
        "{}://{}{}",
        uri.scheme(),
        uri.authority(),
        path_and_query
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn config(provider: Value) -> Config {
        let json = json!({"providers": [provider], "clusters": {"127.0.0.1:9": "idp"}}).to_string();
        Config::parse(json.as_bytes(), &|_| None).unwrap()
    }

    fn header<'o>(out: &'o Outbound, name: &str) -> Option<&'o str> {
        out.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn userinfo_call_sends_the_token_as_bearer() {
        let c = config(json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me"}));
        let out = LookupStep::Userinfo
            .outbound(&c, &c.providers[0], &KeyRecord::default(), "tok")
            .unwrap();
        assert_eq!(
            (
                out.cluster.as_str(),
                header(&out, ":method"),
                header(&out, "authorization")
            ),
            ("idp", Some("GET"), Some("Bearer tok"))
        );
    }

    #[test]
    fn introspection_posts_the_token_with_client_basic() {
        let c = config(
            json!({"name": "i", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9/introspect", "client_id": "rs", "client_secret": "pw"}),
        );
        let p = &c.providers[0];
        assert_eq!(LookupStep::first(p), LookupStep::Introspection);
        let out = LookupStep::Introspection
            .outbound(&c, p, &KeyRecord::default(), "a+b")
            .unwrap();
        assert_eq!(header(&out, ":method"), Some("POST"));
        assert_eq!(header(&out, "authorization"), Some("Basic cnM6cHc="));
        assert_eq!(
            out.body.as_deref(),
            Some(&b"token=a%2Bb&token_type_hint=access_token"[..])
        );
    }

    #[test]
    fn github_with_client_checks_the_token_belongs_to_the_app() {
        let c = config(
            json!({"name": "gh", "preset": "github", "userinfo_uri": "http://127.0.0.1:9/user", "client_id": "Iv1.abc", "client_secret": "s"}),
        );
        let p = &c.providers[0];
        assert_eq!(LookupStep::first(p), LookupStep::GithubApp);
        let out = LookupStep::GithubApp
            .outbound(&c, p, &KeyRecord::default(), "gho_x")
            .unwrap();
        assert_eq!(header(&out, ":path"), Some("/applications/Iv1.abc/token"));
        assert_eq!(
            out.body.as_deref(),
            Some(&br#"{"access_token":"gho_x"}"#[..])
        );
        let ok = LookupStep::GithubApp.on_reply(
            p,
            ReplyHead::status(200),
            br#"{"user": {"login": "octocat"}}"#,
            NOW,
        );
        assert!(
            matches!(ok, Progress::Done(EntryState::Valid { ref username, .. }) if username == "octocat")
        );
        assert_eq!(
            LookupStep::GithubApp.on_reply(p, ReplyHead::status(404), b"{}", NOW),
            Progress::Done(EntryState::Refused {
                refusal: Refusal::Rejected
            })
        );
    }

    #[test]
    fn facebook_debug_token_must_name_this_app() {
        let c = config(
            json!({"name": "fb", "preset": "facebook", "userinfo_uri": "http://127.0.0.1:9/me?fields=id,name,email", "client_id": "123", "client_secret": "s"}),
        );
        let p = &c.providers[0];
        let out = LookupStep::FacebookDebug
            .outbound(&c, p, &KeyRecord::default(), "EAAx")
            .unwrap();
        assert_eq!(
            header(&out, ":path"),
            Some("/debug_token?input_token=EAAx&access_token=123%7Cs")
        );
        let mine = br#"{"data": {"is_valid": true, "app_id": "123"}}"#;
        let other = br#"{"data": {"is_valid": true, "app_id": "999"}}"#;
        assert_eq!(
            LookupStep::FacebookDebug.on_reply(p, ReplyHead::status(200), mine, NOW),
            Progress::Next(LookupStep::Userinfo)
        );
        assert!(matches!(
            LookupStep::FacebookDebug.on_reply(p, ReplyHead::status(200), other, NOW),
            Progress::Done(EntryState::Refused { .. })
        ));
    }

    #[test]
    fn slack_ok_false_is_a_rejection() {
        let c =
            config(json!({"name": "s", "preset": "slack", "userinfo_uri": "http://127.0.0.1:9/u"}));
        let p = &c.providers[0];
        assert!(matches!(
            LookupStep::Userinfo.on_reply(
                p,
                ReplyHead::status(200),
                br#"{"ok": false, "error": "invalid_auth"}"#,
                NOW
            ),
            Progress::Done(EntryState::Refused { .. })
        ));
        let ok = LookupStep::Userinfo.on_reply(
            p,
            ReplyHead::status(200),
            br#"{"ok": true, "email": "a@b.c"}"#,
            NOW,
        );
        assert!(
            matches!(ok, Progress::Done(EntryState::Valid { ref username, .. }) if username == "a@b.c")
        );
    }

    #[test]
    fn provider_status_maps_to_rejection_or_unavailability() {
        let c = config(json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me"}));
        let p = &c.providers[0];
        for status in [401, 403] {
            assert!(matches!(
                LookupStep::Userinfo.on_reply(p, ReplyHead::status(status), b"", NOW),
                Progress::Done(EntryState::Refused { .. })
            ));
        }
        for (status, body) in [(500, &b"{}"[..]), (0, b""), (200, b"<html>"), (200, b"[1]")] {
            assert!(
                matches!(
                    LookupStep::Userinfo.on_reply(p, ReplyHead::status(status), body, NOW),
                    Progress::Unavailable(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn introspection_checks_active_expiry_and_audience() {
        let c = config(
            json!({"name": "i", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9/i", "client_id": "rs", "client_secret": "pw", "audiences": ["jira"]}),
        );
        let p = &c.providers[0];
        let reply = |v: Value| {
            LookupStep::Introspection.on_reply(
                p,
                ReplyHead::status(200),
                v.to_string().as_bytes(),
                NOW,
            )
        };
        let refused = |r| Progress::Done(EntryState::Refused { refusal: r });
        assert_eq!(reply(json!({"active": false})), refused(Refusal::Rejected));
        assert_eq!(
            reply(
                json!({"active": true, "username": "a", "aud": "jira", "exp": NOW.as_secs() - 120})
            ),
            refused(Refusal::Expired)
        );
        assert_eq!(
            reply(json!({"active": true, "username": "a", "aud": "confluence"})),
            refused(Refusal::Audience)
        );
        assert!(matches!(
            reply(json!({"active": true, "username": "a", "client_id": "jira"})),
            Progress::Done(EntryState::Valid { .. })
        ));
    }

    #[test]
    fn introspected_aud_decides_when_present_and_client_id_only_without_it() {
        let c = config(
            json!({"name": "i", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9/i", "client_id": "rs", "client_secret": "pw", "audiences": ["jira"]}),
        );
        let reply = |v: Value| {
            LookupStep::Introspection.on_reply(
                &c.providers[0],
                ReplyHead::status(200),
                v.to_string().as_bytes(),
                NOW,
            )
        };
        let refused = Progress::Done(EntryState::Refused {
            refusal: Refusal::Audience,
        });
        assert_eq!(
            reply(
                json!({"active": true, "username": "a", "aud": "confluence", "client_id": "jira"})
            ),
            refused
        );
        assert_eq!(
            reply(json!({"active": true, "username": "a", "aud": [], "client_id": "jira"})),
            refused
        );
        assert_eq!(
            reply(json!({"active": true, "username": "a", "aud": null, "client_id": "jira"})),
            refused
        );
        assert!(matches!(
            reply(
                json!({"active": true, "username": "a", "aud": ["x", "jira"], "client_id": "other"})
            ),
            Progress::Done(EntryState::Valid { .. })
        ));
    }

    #[test]
    fn introspected_token_type_must_name_an_access_token() {
        let c = config(
            json!({"name": "i", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9/i", "client_id": "rs", "client_secret": "pw"}),
        );
        let reply = |t: Value| {
            LookupStep::Introspection.on_reply(
                &c.providers[0],
                ReplyHead::status(200),
                json!({"active": true, "username": "a", "token_type": t})
                    .to_string()
                    .as_bytes(),
                NOW,
            )
        };
        for accepted in [
            "Bearer",
            "bearer",
            "access_token",
            "urn:ietf:params:oauth:token-type:access_token",
        ] {
            assert!(
                matches!(
                    reply(json!(accepted)),
                    Progress::Done(EntryState::Valid { .. })
                ),
                "{accepted}"
            );
        }
        for refused in [
            json!("refresh_token"),
            json!("id_token"),
            json!("DPoP"),
            json!("urn:ietf:params:oauth:token-type:refresh_token"),
            json!(""),
            json!(1),
            json!(null),
        ] {
            assert_eq!(
                reply(refused.clone()),
                Progress::Done(EntryState::Refused {
                    refusal: Refusal::TokenUse
                }),
                "{refused}"
            );
        }
        let untyped = LookupStep::Introspection.on_reply(
            &c.providers[0],
            ReplyHead::status(200),
            br#"{"active": true, "username": "a"}"#,
            NOW,
        );
        assert!(
            matches!(untyped, Progress::Done(EntryState::Valid { .. })),
            "token_type is optional"
        );
    }

    #[test]
    fn introspection_refusing_the_client_credentials_is_an_outage_not_a_refusal() {
        let c = config(
            json!({"name": "i", "mode": "introspection", "introspection_uri": "http://127.0.0.1:9/i", "client_id": "rs", "client_secret": "pw"}),
        );
        for status in [401, 403] {
            let got = LookupStep::Introspection.on_reply(
                &c.providers[0],
                ReplyHead::status(status),
                br#"{"error":"invalid_client"}"#,
                NOW,
            );
            assert_eq!(got, Progress::Unavailable(Outage::ClientRefused(status)));
            assert!(Outage::ClientRefused(status).needs_operator());
        }
        let gh = config(
            json!({"name": "gh", "preset": "github", "userinfo_uri": "http://127.0.0.1:9/user", "client_id": "Iv1.abc", "client_secret": "s"}),
        );
        assert_eq!(
            LookupStep::GithubApp.on_reply(&gh.providers[0], ReplyHead::status(401), b"{}", NOW),
            Progress::Unavailable(Outage::ClientRefused(401))
        );
        // Userinfo authenticates with the user's token: there 401/403 is a verdict (RFC 6750).
        let u = config(json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me"}));
        assert_eq!(
            LookupStep::Userinfo.on_reply(&u.providers[0], ReplyHead::status(401), b"", NOW),
            Progress::Done(EntryState::Refused {
                refusal: Refusal::Rejected
            })
        );
    }

    #[test]
    fn rate_limits_are_outages_whatever_the_step() {
        let c = config(
            json!({"name": "gh", "preset": "github", "userinfo_uri": "http://127.0.0.1:9/user", "client_id": "Iv1.abc", "client_secret": "s"}),
        );
        let p = &c.providers[0];
        let exhausted = ReplyHead {
            status: 403,
            ratelimit_remaining: Some("0"),
            retry_after: None,
        };
        let secondary = ReplyHead {
            status: 403,
            ratelimit_remaining: None,
            retry_after: Some("60"),
        };
        for step in [
            LookupStep::Userinfo,
            LookupStep::GithubApp,
            LookupStep::Introspection,
        ] {
            for head in [exhausted, secondary, ReplyHead::status(429)] {
                assert_eq!(
                    step.on_reply(p, head, b"{}", NOW),
                    Progress::Unavailable(Outage::RateLimited(head.status)),
                    "{step:?} {head:?}"
                );
            }
        }
        // Calls left: a plain 403 is the provider's verdict on the token.
        let left = ReplyHead {
            status: 403,
            ratelimit_remaining: Some("4999"),
            retry_after: None,
        };
        assert_eq!(
            LookupStep::Userinfo.on_reply(p, left, b"{}", NOW),
            Progress::Done(EntryState::Refused {
                refusal: Refusal::Rejected
            })
        );
    }

    #[test]
    fn valid_answers_live_until_cache_seconds_or_exp_whichever_is_first() {
        let c = config(
            json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me", "cache_seconds": 300}),
        );
        let p = &c.providers[0];
        let valid = |claims: Value| EntryState::Valid {
            username: "a".into(),
            provider: "u".into(),
            claims,
        };
        assert_eq!(
            lifetime(&valid(json!({})), p, NOW, None),
            NOW.plus_secs(300)
        );
        assert_eq!(
            lifetime(&valid(json!({"exp": NOW.as_secs() + 60})), p, NOW, None),
            NOW.plus_secs(120)
        );
        assert_eq!(
            lifetime(&valid(json!({})), p, NOW, Some(NOW.as_secs() + 30)),
            NOW.plus_secs(90),
            "exp + clock_skew_seconds (60)"
        );
        assert_eq!(
            lifetime(&valid(json!({"exp": NOW.as_secs() - 60})), p, NOW, None),
            NOW.plus_secs(1),
            "accepted within skew: lives a second"
        );
        assert_eq!(
            lifetime(
                &EntryState::Refused {
                    refusal: Refusal::Rejected
                },
                p,
                NOW,
                None
            ),
            NOW.plus_secs(10)
        );
        assert_eq!(
            lifetime(&EntryState::Unavailable, p, NOW, None),
            NOW.plus_secs(1)
        );
    }

    #[test]
    fn answer_without_username_is_refused() {
        let c = config(
            json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me", "username_claim": ["email"]}),
        );
        assert_eq!(
            LookupStep::Userinfo.on_reply(
                &c.providers[0],
                ReplyHead::status(200),
                br#"{"sub": "1"}"#,
                NOW
            ),
            Progress::Done(EntryState::Refused {
                refusal: Refusal::NoUsername
            })
        );
    }

    #[test]
    fn answer_with_an_unverified_email_or_a_forged_name_is_refused() {
        let c = config(
            json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me", "username_claim": ["email"],
                              "username_transform": {"strip_domain": ["example.com"]}}),
        );
        let reply = |body: &[u8]| {
            LookupStep::Userinfo.on_reply(&c.providers[0], ReplyHead::status(200), body, NOW)
        };
        assert_eq!(
            reply(br#"{"email": "admin@example.com", "email_verified": "false"}"#),
            Progress::Done(EntryState::Refused {
                refusal: Refusal::NoUsername
            })
        );
        for forged in [
            &br#"{"email": "admin@attacker.example"}"#[..],
            br#"{"email": "admin @example.com"}"#,
            br#"{"email": "\u212Aate@example.com"}"#,
        ] {
            assert_eq!(
                reply(forged),
                Progress::Done(EntryState::Refused {
                    refusal: Refusal::InvalidUsername
                })
            );
        }
        assert!(
            matches!(reply(br#"{"email": "kate@Example.com", "email_verified": true}"#), Progress::Done(EntryState::Valid { ref username, .. }) if username == "kate")
        );
    }

    #[test]
    fn oversized_or_deeply_nested_answers_are_unavailable() {
        let c = config(json!({"name": "u", "userinfo_uri": "http://127.0.0.1:9/me"}));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            LookupStep::Userinfo.on_reply(
                &c.providers[0],
                ReplyHead::status(200),
                deep.as_bytes(),
                NOW
            ),
            Progress::Unavailable(Outage::Unparsable)
        );
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_ANSWER_BYTES));
        assert_eq!(
            LookupStep::Userinfo.on_reply(
                &c.providers[0],
                ReplyHead::status(200),
                big.as_bytes(),
                NOW
            ),
            Progress::Unavailable(Outage::Unparsable)
        );
    }
}
