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

impl ClaimPath {
    /// Whether this path ends in `email` and its sibling `email_verified` says `false` (a boolean,
    /// or the string `"false"` some userinfo endpoints send).
    pub fn is_unverified_email(&self, claims: &Value) -> bool {
        let Some((last, parent)) = self.0.split_last() else {
            return false;
        };
        if last != "email" {
            return false;
        }
        let parent = parent
            .iter()
            .try_fold(claims, |node, segment| node.get(segment.as_str()));
        match parent.and_then(|node| node.get("email_verified")) {
            Some(Value::Bool(verified)) => !verified,
            Some(Value::String(verified)) => verified == "false",
            _ => false,
        }
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// How a claim value becomes the Atlassian username.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernameTransform {
    /// Lowercase letters (Atlassian matches user names case-insensitively).
    pub lowercase: bool,
    /// Domains (lowercase) whose `@domain` suffix is dropped (`alice@example.com` → `alice`); when
    /// not empty, a name in any other domain is refused, so `kate@attacker.example` never becomes `kate`.
    pub strip_domain: Vec<String>,
}

impl UsernameTransform {
    /// Applies the transform; `InvalidUsername` for an address outside the `strip_domain` domains.
    pub fn apply(&self, name: &str) -> Result<String, AuthError> {
        let name = match name.rsplit_once('@') {
            Some((local, domain)) if !self.strip_domain.is_empty() => {
                // RFC 5321 domains are case-insensitive; a second `@` would leave an address behind.
                if local.contains('@')
                    || !self
                        .strip_domain
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(domain))
                {
                    return Err(AuthError::InvalidUsername);
                }
                local
            }
            _ => name,
        };
        Ok(if self.lowercase {
            name.to_lowercase()
        } else {
            name.to_string()
        })
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

/// Whether `c` may be part of a username: printable ASCII and the letters of common scripts.
///
/// Every other character is refused, so no Unicode tables are needed in the filter: a string of
/// these never changes under NFKC, and no non-ASCII one case-maps onto ASCII (`\u{212A}` Kelvin
/// sign → `k`, `ı` → `I`, `ß` → `SS`) or outside the list; the unit tests prove both.
pub fn is_name_char(c: char) -> bool {
    matches!(c,
        ' '..='~'
        // Latin-1 letters without × and ÷; ß upper-cases to ASCII `SS`.
        | '\u{00C0}'..='\u{00D6}' | '\u{00D8}'..='\u{00DE}' | '\u{00E0}'..='\u{00F6}' | '\u{00F8}'..='\u{00FF}'
        // Latin Extended-A without İ ı (case-map to ASCII I i), IJ ij Ŀ ŀ ŉ ſ (NFKC changes them).
        | '\u{0100}'..='\u{012F}' | '\u{0134}'..='\u{013E}' | '\u{0141}'..='\u{0148}' | '\u{014A}'..='\u{017E}'
        // Greek letters with and without tonos (not the ano teleia U+0387, which NFC changes).
        | '\u{0386}' | '\u{0388}'..='\u{038A}' | '\u{038C}' | '\u{038E}'..='\u{03A1}' | '\u{03A3}'..='\u{03CE}'
        // Cyrillic basic letters, with Ѐ–Џ and ѐ–џ.
        | '\u{0400}'..='\u{045F}'
        // Hiragana and Katakana letters and the prolonged sound mark, without the combining
        // voiced sound marks U+3099/309A and the iteration marks.
        | '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}' | '\u{30FC}'
        // CJK Unified Ideographs and Hangul syllables.
        | '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7A3}')
}

/// A username that is safe to put in a request header and names one account only: 1–255 bytes
/// of `is_name_char` characters, not starting or ending with a space.
///
/// A trailing space would be trimmed by Tomcat (`"admin "` becomes `admin`), and look-alikes that
/// Unicode folds onto another name (`\u{212A}ate` → `kate`) are outside `is_name_char`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates `name`; refusal is `InvalidUsername` (it must never reach a header).
    #[inline(never)] // Called from several places: one copy keeps the wasm small.
    pub fn parse(name: String) -> Result<Self, AuthError> {
        if name.is_empty()
            || name.len() > MAX_USERNAME_BYTES
            // The only whitespace `is_name_char` lets through is the ASCII space.
            || name.starts_with(' ')
            || name.ends_with(' ')
            || !name.chars().all(is_name_char)
        {
            return Err(AuthError::InvalidUsername);
        }
        Ok(Username(name))
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `text` as one element of a comma-separated header value: `%`, `,`, `"`, a backslash and a
/// space at either end become `%XX` (RFC 3986), so no element can pose as two or hide in a quoted
/// string; everything else is kept as it is.
pub fn header_list_element(text: &str) -> String {
    let last = text.len().saturating_sub(1);
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if matches!(c, '%' | ',' | '"' | '\\') || (c == ' ' && (i == 0 || i == last)) {
            // ASCII only: one byte.
            crate::uri::push_percent_escape(&mut out, c as u8);
        } else {
            out.push(c);
        }
    }
    out
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
///
/// An `email` whose `email_verified` beside it is `false` counts as absent: anyone can type an
/// address they do not own (OIDC Core 5.1). The claim is checked before and after the transform.
pub fn resolve_username(
    claims: &Value,
    paths: &[ClaimPath],
    transform: &UsernameTransform,
) -> Result<Username, AuthError> {
    let raw = paths
        .iter()
        .filter(|path| !path.is_unverified_email(claims))
        .find_map(|path| path.lookup(claims).and_then(claim_text))
        .ok_or(AuthError::NoUsername)?;
    let raw = Username::parse(raw)?;
    Username::parse(transform.apply(raw.as_str())?)
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
        let name = resolve_username(
            &claims,
            &paths(&["preferred_username", "email", "sub"]),
            &UsernameTransform::default(),
        );
        assert_eq!(name.unwrap().as_str(), "bob@example.com");
    }

    #[test]
    fn dotted_path_reaches_into_arrays() {
        let claims = json!({"emails": ["first@example.com", "second@example.com"]});
        let name = resolve_username(
            &claims,
            &paths(&["emails.0"]),
            &UsernameTransform::default(),
        );
        assert_eq!(name.unwrap().as_str(), "first@example.com");
    }

    #[test]
    fn claim_named_with_dots_is_found_whole() {
        let claims = json!({"https://example.com/user": "carol"});
        assert_eq!(
            ClaimPath::parse("https://example.com/user")
                .unwrap()
                .lookup(&claims),
            Some(&json!("carol"))
        );
    }

    fn strip(domains: &[&str], lowercase: bool) -> UsernameTransform {
        UsernameTransform {
            lowercase,
            strip_domain: domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn transform_lowercases_and_strips_a_listed_domain_case_insensitively() {
        let t = strip(&["example.com"], true);
        assert_eq!(t.apply("Alice.Smith@Example.COM").unwrap(), "alice.smith");
        assert_eq!(t.apply("bob").unwrap(), "bob");
        assert_eq!(t.apply("@example.com").unwrap(), "");
    }

    #[test]
    fn strip_domain_refuses_names_in_other_domains() {
        let t = strip(&["example.com", "corp.example.com"], false);
        assert_eq!(t.apply("kate@corp.example.com").unwrap(), "kate");
        for bad in [
            "kate@attacker.example",
            "kate@example.com.attacker.example",
            "kate@attacker.example@example.com",
        ] {
            assert_eq!(t.apply(bad), Err(AuthError::InvalidUsername), "{bad}");
        }
        assert_eq!(
            UsernameTransform::default()
                .apply("kate@attacker.example")
                .unwrap(),
            "kate@attacker.example"
        );
    }

    #[test]
    fn resolution_refuses_an_address_outside_the_stripped_domains() {
        let claims = json!({"email": "kate@attacker.example"});
        let name = resolve_username(&claims, &paths(&["email"]), &strip(&["example.com"], false));
        assert_eq!(name, Err(AuthError::InvalidUsername));
    }

    #[test]
    fn unverified_email_is_skipped_for_the_next_claim() {
        let p = paths(&["email", "sub"]);
        let t = UsernameTransform::default();
        for unverified in [json!(false), json!("false")] {
            let claims =
                json!({"email": "admin@example.com", "email_verified": unverified, "sub": "u-1"});
            assert_eq!(resolve_username(&claims, &p, &t).unwrap().as_str(), "u-1");
        }
        for verified in [
            json!({"email_verified": true}),
            json!({"email_verified": "true"}),
            json!({}),
        ] {
            let mut claims = verified;
            claims["email"] = json!("kate@example.com");
            assert_eq!(
                resolve_username(&claims, &p, &t).unwrap().as_str(),
                "kate@example.com"
            );
        }
        let nested = json!({"profile": {"email": "a@b.c", "email_verified": false}});
        assert_eq!(
            resolve_username(&nested, &paths(&["profile.email"]), &t),
            Err(AuthError::NoUsername)
        );
    }

    #[test]
    fn names_with_space_at_either_end_are_refused() {
        for bad in ["admin ", " admin", "admin\u{3000}", "\u{A0}admin"] {
            assert_eq!(
                Username::parse(bad.to_string()),
                Err(AuthError::InvalidUsername),
                "{bad:?}"
            );
        }
        assert!(Username::parse("Kate Smith".to_string()).is_ok());
    }

    #[test]
    fn look_alikes_that_fold_onto_ascii_are_refused_before_and_after_lowercase() {
        let lower = strip(&[], true);
        // Kelvin sign, long s, dotless i, dotted capital I, fullwidth, ligature, superscript.
        for bad in [
            "\u{212A}ate",
            "ro\u{17F}e",
            "adm\u{131}n",
            "\u{130}van",
            "\u{FF41}dmin",
            "\u{FB01}le",
            "x\u{B2}",
            "stra\u{DF}e",
        ] {
            let claims = json!({"u": bad});
            assert_eq!(
                resolve_username(&claims, &paths(&["u"]), &lower),
                Err(AuthError::InvalidUsername),
                "{bad:?}"
            );
        }
        for good in [
            "\u{C9}lodie",
            "\u{17D}ofie",
            "\u{41C}\u{430}\u{448}\u{430}",
            "\u{3055}\u{304F}\u{3089}",
            "\u{5F20}\u{4F1F}",
            "\u{AE40}\u{BBFC}\u{C900}",
        ] {
            let claims = json!({"u": good});
            assert_eq!(
                resolve_username(&claims, &paths(&["u"]), &lower)
                    .unwrap()
                    .as_str(),
                good.to_lowercase()
            );
        }
    }

    /// The proof behind `is_name_char`: a string of name characters is its own NFKC, because each
    /// is its own NFKC, is a starter (combining class 0), and never follows the first character of
    /// any canonical decomposition (so two of them never compose). And no non-ASCII one has a case
    /// mapping with ASCII in it or outside the list.
    #[test]
    fn name_characters_are_nfkc_stable_and_never_case_map_onto_ascii() {
        use unicode_normalization::char::{canonical_combining_class, decompose_canonical};
        use unicode_normalization::UnicodeNormalization;
        let allowed: Vec<char> = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| is_name_char(c))
            .collect();
        let mut followers = std::collections::BTreeSet::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let mut parts = Vec::new();
            decompose_canonical(c, |d| parts.push(d));
            followers.extend(parts.into_iter().skip(1));
        }
        let mut bad = Vec::new();
        for &c in &allowed {
            let nfkc: String = c.to_string().nfkc().collect();
            let ascii_fold = !c.is_ascii()
                && c.to_lowercase()
                    .chain(c.to_uppercase())
                    .any(|m| m.is_ascii());
            let leaves_list = c.to_lowercase().any(|m| !is_name_char(m));
            if nfkc != c.to_string()
                || canonical_combining_class(c) != 0
                || followers.contains(&c)
                || ascii_fold
                || leaves_list
            {
                bad.push(format!("U+{:04X}", c as u32));
            }
        }
        assert!(bad.is_empty(), "not safe in names: {bad:?}");
    }

    #[test]
    fn strings_of_name_characters_are_their_own_nfkc() {
        use unicode_normalization::UnicodeNormalization;
        let allowed: Vec<char> = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| is_name_char(c))
            .collect();
        // A fixed linear congruential sequence: reproducible, no dependency.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let name: String = (0..4)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    allowed[(x >> 33) as usize % allowed.len()]
                })
                .collect();
            assert_eq!(name.nfkc().collect::<String>(), name);
        }
    }

    #[test]
    fn list_elements_cannot_forge_or_hide_entries() {
        assert_eq!(header_list_element("jira-users"), "jira-users");
        assert_eq!(header_list_element("Jira Admins"), "Jira Admins");
        assert_eq!(header_list_element("users,admins"), "users%2Cadmins");
        assert_eq!(header_list_element(" admins "), "%20admins%20");
        assert_eq!(header_list_element("100%"), "100%25");
        assert_eq!(header_list_element("\"a\\b\""), "%22a%5Cb%22");
        assert_eq!(header_list_element("\u{C9}quipe"), "\u{C9}quipe");
    }

    #[test]
    fn missing_username_is_reported_as_such() {
        let err = resolve_username(
            &json!({"sub": ["x"]}),
            &paths(&["sub"]),
            &UsernameTransform::default(),
        );
        assert_eq!(err, Err(AuthError::NoUsername));
    }

    #[test]
    fn empty_long_or_control_character_usernames_are_refused() {
        for bad in [
            String::new(),
            "a".repeat(256),
            "alice\r\nx-admin: 1".to_string(),
            "bob\u{0}".to_string(),
            "adm\u{202E}nimda".to_string(),
            "a\u{2028}b".to_string(),
            "ad\u{200B}min".to_string(),
        ] {
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
