//! Who the caller is: the username resolved from claims, and the headers that carry it.

use crate::error::AuthError;
use serde_json::Value;

/// Usernames longer than this are refused: Atlassian user names are at most 255 characters.
pub const MAX_USERNAME_BYTES: usize = 255;

/// A claim name, or a dotted path into nested objects and arrays (`realm_access.roles`, `emails.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses a dotted path; empty segments are refused.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("empty claim name");
        }
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err("empty segment in claim path");
        }
        Ok(ClaimPath(parts))
    }

    /// The top-level claim this path starts in, and the whole dotted name (a claim may hold dots).
    pub fn roots(&self) -> [String; 2] {
        [self.0[0].clone(), self.0.join(".")]
    }

    /// The value at this path in `claims`, if any: a numeric segment indexes arrays.
    ///
    /// A claim whose own name contains dots (`https://example.com/roles`) is found too.
    pub fn lookup<'v>(&self, claims: &'v Value) -> Option<&'v Value> {
        if let Some(whole) = claims.get(self.0.join(".")) {
            return Some(whole);
        }
        self.0.iter().try_fold(claims, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// How a claim value becomes the Atlassian username.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsernameTransform {
    /// Lowercase ASCII letters (Atlassian matches user names case-insensitively).
    pub lowercase: bool,
    /// Drop an `@domain` suffix (`alice@example.com` → `alice`).
    pub strip_domain: bool,
}

impl UsernameTransform {
    /// Applies the transform.
    pub fn apply(&self, name: &str) -> String {
        let name = match (self.strip_domain, name.rfind('@')) {
            (true, Some(at)) if at > 0 => &name[..at],
            _ => name,
        };
        if self.lowercase {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }
}

/// Whether `c` must never reach a header: controls, and the invisible format characters and
/// separators that make a name display as another (bidi overrides, zero-width joiners, U+2028).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// A username that is safe to put in a request header: 1–255 bytes, no control or invisible
/// format characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates `name`; refusal is `InvalidUsername` (it must never reach a header).
    pub fn parse(name: String) -> Result<Self, AuthError> {
        if name.is_empty() || name.len() > MAX_USERNAME_BYTES || name.chars().any(is_unsafe_char) {
            return Err(AuthError::InvalidUsername);
        }
        Ok(Username(name))
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A scalar claim as text (strings as they are, numbers and booleans printed); else `None`.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The username from the first present path, transformed and validated.
///
/// `NoUsername` when no path holds a scalar value: the caller may then ask userinfo.
pub fn resolve_username(claims: &Value, paths: &[ClaimPath], transform: UsernameTransform) -> Result<Username, AuthError> {
    let raw = paths
        .iter()
        .find_map(|path| path.lookup(claims).and_then(claim_text))
        .ok_or(AuthError::NoUsername)?;
    Username::parse(transform.apply(&raw))
}

/// An authenticated caller: what the request is rewritten with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: Username,
    pub provider: String,
    /// `(header, value)` pairs from `forward.claims_to_headers`.
    pub claim_headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(names: &[&str]) -> Vec<ClaimPath> {
        names.iter().map(|n| ClaimPath::parse(n).unwrap()).collect()
    }

    #[test]
    fn first_present_claim_wins() {
        let claims = json!({"sub": "123", "email": "bob@example.com"});
        let name = resolve_username(&claims, &paths(&["preferred_username", "email", "sub"]), UsernameTransform::default());
        assert_eq!(name.unwrap().as_str(), "bob@example.com");
    }

    #[test]
    fn dotted_path_reaches_into_arrays() {
        let claims = json!({"emails": ["first@example.com", "second@example.com"]});
        let name = resolve_username(&claims, &paths(&["emails.0"]), UsernameTransform::default());
        assert_eq!(name.unwrap().as_str(), "first@example.com");
    }

    #[test]
    fn claim_named_with_dots_is_found_whole() {
        let claims = json!({"https://example.com/user": "carol"});
        assert_eq!(ClaimPath::parse("https://example.com/user").unwrap().lookup(&claims), Some(&json!("carol")));
    }

    #[test]
    fn transform_lowercases_and_strips_domain() {
        let t = UsernameTransform { lowercase: true, strip_domain: true };
        assert_eq!(t.apply("Alice.Smith@Example.COM"), "alice.smith");
        assert_eq!(t.apply("@odd"), "@odd");
    }

    #[test]
    fn missing_username_is_reported_as_such() {
        let err = resolve_username(&json!({"sub": ["x"]}), &paths(&["sub"]), UsernameTransform::default());
        assert_eq!(err, Err(AuthError::NoUsername));
    }

    #[test]
    fn empty_long_or_control_character_usernames_are_refused() {
        for bad in [String::new(), "a".repeat(256), "alice\r\nx-admin: 1".to_string(), "bob\u{0}".to_string(), "adm\u{202E}nimda".to_string(), "a\u{2028}b".to_string(), "ad\u{200B}min".to_string()] {
            assert_eq!(Username::parse(bad), Err(AuthError::InvalidUsername));
        }
        assert!(Username::parse("a".repeat(255)).is_ok());
    }

    #[test]
    fn empty_path_segment_is_refused() {
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("").is_err());
    }
}
