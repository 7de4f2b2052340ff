//! Which auth mode applies to a request: the first matching rule, else `default_auth`.

use crate::config::ProviderId;
use crate::error::AuthError;
use crate::identity::ClaimPath;
use serde::Deserialize;
use serde_json::Value;

/// How strictly a path is protected (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    /// Pass untouched (identity headers are still stripped).
    None,
    /// No credential passes anonymously; a bad credential is refused.
    Optional,
    /// A valid credential is required.
    Required,
}

/// A claim the caller must hold: the claim equals, or (array or space-separated) contains, one of `any_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequiredClaim {
    pub(crate) path: ClaimPath,
    pub(crate) any_of: Vec<String>,
}

impl RequiredClaim {
    /// Whether `claims` satisfy this requirement.
    pub(crate) fn is_met(&self, claims: &Value) -> bool {
        let Some(value) = self.path.lookup(claims) else {
            return false;
        };
        self.any_of.iter().any(|wanted| holds(value, wanted))
    }
}

fn holds(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted || s.split_ascii_whitespace().any(|part| part == wanted),
        Value::Array(items) => items
            .iter()
            .any(|item| matches!(item, Value::String(s) if s == wanted)),
        Value::Number(n) => n.to_string() == wanted,
        Value::Bool(b) => b.to_string() == wanted,
        _ => false,
    }
}

/// One entry of `rules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub(crate) path_prefix: String,
    /// Upper-case methods; empty means any.
    pub(crate) methods: Vec<String>,
    pub(crate) auth: AuthMode,
    /// The providers that may vouch here; `None` means every provider.
    pub(crate) providers: Option<Vec<ProviderId>>,
    pub(crate) require_claims: Vec<RequiredClaim>,
}

impl Rule {
    /// Whether this rule applies to `method` and `path`, the canonical path (`path::canonical_path`).
    /// A rule for `GET` also covers `HEAD`, which the product answers as a `GET`.
    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        let method =
            if method.eq_ignore_ascii_case("HEAD") && !self.methods.iter().any(|m| m == "HEAD") {
                "GET"
            } else {
                method
            };
        path.starts_with(&self.path_prefix)
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }

    /// Whether provider `id` may authenticate requests under this rule.
    pub(crate) fn allows_provider(&self, id: ProviderId) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&id))
    }

    /// Whether a caller vouched for by provider `provider` (`None`: by no provider, as an API
    /// token or a credential only Atlassian can check) with `claims` may pass this rule.
    ///
    /// The one admission check of every path a credential takes: a rule that names `providers`
    /// admits only those, and `require_claims` needs claims (none: refused).
    pub(crate) fn admit(
        &self,
        provider: Option<ProviderId>,
        claims: &Value,
    ) -> Result<(), AuthError> {
        if self.providers.is_some() && !provider.is_some_and(|id| self.allows_provider(id)) {
            return Err(AuthError::ProviderNotAllowed);
        }
        if !self.require_claims.iter().all(|need| need.is_met(claims)) {
            return Err(AuthError::InsufficientScope);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(prefix: &str, methods: &[&str]) -> Rule {
        Rule {
            path_prefix: prefix.to_string(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            auth: AuthMode::Required,
            providers: None,
            require_claims: vec![],
        }
    }

    fn matches(r: &Rule, method: &str, path: &str) -> bool {
        r.matches(method, &crate::path::canonical_path(path).unwrap())
    }

    #[test]
    fn prefix_match_ignores_query_string() {
        assert!(matches(
            &rule("/rest/", &[]),
            "GET",
            "/rest/api/2/issue?x=/status"
        ));
        assert!(!matches(&rule("/status", &[]), "GET", "/rest?/status"));
    }

    #[test]
    fn path_parameters_cannot_dodge_a_rule() {
        let r = rule("/rest/api/2/user", &["DELETE"]);
        for path in [
            "/rest/api/2;x/user",
            "/rest/api;/2/user",
            "/rest;jsessionid=1/api/2/user?x=;y",
        ] {
            assert!(matches(&r, "DELETE", path), "{path}");
        }
    }

    #[test]
    fn dot_segments_slashes_and_escapes_cannot_dodge_a_rule() {
        let r = rule("/rest/", &[]);
        for path in [
            "/status/..;/rest/api/2/myself",
            "//rest/api/2/myself",
            "/status/%2e%2e/rest/api/2/myself",
            "/%72est/api",
        ] {
            assert!(matches(&r, "GET", path), "{path}");
        }
        assert!(!matches(
            &rule("/status", &[]),
            "GET",
            "/status/../rest/api"
        ));
    }

    #[test]
    fn a_get_rule_covers_head() {
        let r = rule("/rest/api/2/user", &["GET"]);
        assert!(r.matches("HEAD", "/rest/api/2/user"));
        assert!(r.matches("head", "/rest/api/2/user"));
        assert!(!r.matches("POST", "/rest/api/2/user"));
        assert!(!rule("/rest/", &["POST"]).matches("HEAD", "/rest/"));
    }

    #[test]
    fn method_list_restricts_the_rule() {
        let r = rule("/rest/api/2/user", &["DELETE"]);
        assert!(r.matches("DELETE", "/rest/api/2/user"));
        assert!(!r.matches("GET", "/rest/api/2/user"));
    }

    #[test]
    fn admission_checks_the_provider_then_the_claims() {
        let mut r = rule("/rest/", &[]);
        r.providers = Some(vec![ProviderId::nth(1)]);
        r.require_claims = vec![RequiredClaim {
            path: ClaimPath::parse("groups").unwrap(),
            any_of: vec!["admins".into()],
        }];
        let admin = json!({"groups": ["admins"]});
        assert_eq!(r.admit(Some(ProviderId::nth(1)), &admin), Ok(()));
        assert_eq!(
            r.admit(Some(ProviderId::nth(0)), &admin),
            Err(AuthError::ProviderNotAllowed)
        );
        assert_eq!(r.admit(None, &admin), Err(AuthError::ProviderNotAllowed));
        assert_eq!(
            r.admit(Some(ProviderId::nth(1)), &json!({"groups": ["users"]})),
            Err(AuthError::InsufficientScope)
        );
    }

    #[test]
    fn rule_without_providers_or_claims_admits_everyone_and_claims_need_claims() {
        let mut r = rule("/rest/", &[]);
        assert_eq!(r.admit(None, &Value::Null), Ok(()));
        assert_eq!(r.admit(Some(ProviderId::nth(3)), &json!({})), Ok(()));
        r.require_claims = vec![RequiredClaim {
            path: ClaimPath::parse("scp").unwrap(),
            any_of: vec!["write".into()],
        }];
        assert_eq!(
            r.admit(None, &Value::Null),
            Err(AuthError::InsufficientScope)
        );
    }

    #[test]
    fn required_claim_matches_string_array_and_scope_list() {
        let need = |any: &[&str]| RequiredClaim {
            path: ClaimPath::parse("groups").unwrap(),
            any_of: any.iter().map(|s| s.to_string()).collect(),
        };
        assert!(need(&["jira-administrators"])
            .is_met(&json!({"groups": ["users", "jira-administrators"]})));
        assert!(need(&["write"]).is_met(&json!({"groups": "read write"})));
        assert!(!need(&["admin"]).is_met(&json!({"groups": ["administrators"]})));
        assert!(!need(&["admin"]).is_met(&json!({})));
    }
}
