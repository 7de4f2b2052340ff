//! The request path as the product serves it: what rules are matched against (issue 11).
//!
//! Jira, Confluence and Bitbucket run on Tomcat, which drops `;parameters` from every segment,
//! decodes percent-escapes, merges `//` and resolves `.` and `..` before it maps a request, and
//! answers 400 to an encoded `/` or `\`. Envoy may or may not normalise first (`normalize_path`,
//! `merge_slashes`, and builds differ), so the filter canonicalises the path itself, and refuses
//! what it cannot canonicalise unambiguously, before any rule is read.

use crate::error::AuthError;
use std::borrow::Cow;

/// The canonical form of `path` (query string dropped): `;parameters` removed from each segment,
/// escapes of characters a path may hold as they are decoded (others kept, upper-case), empty
/// segments merged, `.` and `..` resolved; a trailing `/` kept.
///
/// `MalformedPath` (400) for what Tomcat would refuse or read in more than one way: an encoded
/// `/`, `\`, `;` or NUL, a raw `\` or control character, a bad escape, non-UTF-8 text, `..`
/// above the root, or a path that does not start with `/`.
pub(crate) fn canonical_path(path: &str) -> Result<Cow<'_, str>, AuthError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    // The usual path is canonical already: only segment characters, no `//`, no dot segment.
    let mut previous = 0u8;
    let usual = path.bytes().all(|b| {
        let fine = if b == b'/' {
            previous != b'/'
        } else {
            previous != 0 && is_segment_char(b) && !(b == b'.' && previous == b'/')
        };
        previous = b;
        fine
    });
    if usual && path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let rest = path.strip_prefix('/').ok_or(AuthError::MalformedPath)?;
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = true;
    for raw in rest.split('/') {
        // Tomcat removes path parameters before it decodes: `..;x` is `..`, `%3B` is no separator.
        let segment = decode(raw.split(';').next().unwrap_or(""))?;
        trailing_slash = true;
        match segment.as_str() {
            "" => {}
            "." => {}
            ".." => {
                segments.pop().ok_or(AuthError::MalformedPath)?;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        canonical.push('/');
    }
    Ok(Cow::Owned(canonical))
}

/// One segment with its escapes decoded, then written back in one spelling: characters RFC 3986
/// allows in a segment (except `;`) as they are, every other byte as an upper-case escape.
fn decode(raw: &str) -> Result<String, AuthError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let byte = if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .ok_or(AuthError::MalformedPath)?;
            let value = hex.iter().fold(0u8, |v, &h| (v << 4) | hex_value(h));
            // Read as a separator by some servers and as text by others: refused.
            if matches!(value, b'/' | b'\\' | b';' | 0) {
                return Err(AuthError::MalformedPath);
            }
            i += 3;
            value
        } else {
            i += 1;
            b
        };
        if byte == b'\\' || byte.is_ascii_control() {
            return Err(AuthError::MalformedPath);
        }
        decoded.push(byte);
    }
    // Tomcat reads escapes as UTF-8.
    let text = String::from_utf8(decoded).map_err(|_| AuthError::MalformedPath)?;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if is_segment_char(byte) {
            out.push(char::from(byte));
        } else {
            crate::uri::push_percent_escape(&mut out, byte);
        }
    }
    Ok(out)
}

fn hex_value(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        b'a'..=b'f' => h - b'a' + 10,
        _ => h.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// RFC 3986 `pchar` without `%` and `;`: unreserved, sub-delims other than `;`, `:` and `@`.
fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> String {
        canonical_path(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_owned()
    }

    #[test]
    fn canonical_paths_are_unchanged_and_not_copied() {
        for path in [
            "/",
            "/rest/api/2/issue/X-1",
            "/rest/",
            "/a:b@c/d~e_f.g-h/x,y=z",
            "/rest/a.b/c.",
        ] {
            assert!(
                matches!(canonical_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        assert_eq!(canon("/.well-known/x"), "/.well-known/x");
    }

    #[test]
    fn query_string_is_dropped() {
        assert_eq!(
            canon("/rest/api/2/issue?x=/status/../a;b"),
            "/rest/api/2/issue"
        );
    }

    #[test]
    fn path_parameters_are_removed_from_every_segment() {
        assert_eq!(canon("/rest;jsessionid=1/api/2;x/user"), "/rest/api/2/user");
        assert_eq!(canon("/rest/api;/2/user;"), "/rest/api/2/user");
        assert_eq!(canon("/;x/rest/"), "/rest/");
    }

    #[test]
    fn dot_segments_are_resolved_after_parameters_and_escapes() {
        assert_eq!(canon("/status/..;/rest/api/2/myself"), "/rest/api/2/myself");
        assert_eq!(canon("/status/%2e%2e/rest/api"), "/rest/api");
        assert_eq!(canon("/status/%2E./rest/api"), "/rest/api");
        assert_eq!(canon("/status/.;x/../rest"), "/rest");
        assert_eq!(canon("/rest/./api/."), "/rest/api/");
        assert_eq!(canon("/rest/api/.."), "/rest/");
        assert_eq!(canon("/rest/.."), "/");
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(canon("//rest/api"), "/rest/api");
        assert_eq!(canon("/rest///api//"), "/rest/api/");
        assert_eq!(canon("//"), "/");
    }

    #[test]
    fn escapes_get_one_spelling() {
        assert_eq!(canon("/r%65st/%41pi"), "/rest/Api");
        assert_eq!(canon("/a%3ab%40c"), "/a:b@c");
        assert_eq!(canon("/a b"), "/a%20b");
        assert_eq!(canon("/a%20b/%3f/%25/%23"), "/a%20b/%3F/%25/%23");
        assert_eq!(canon("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(canon("/café"), "/caf%C3%A9");
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for path in [
            "/status/..;/rest/x",
            "//a/%2e/b/%7e",
            "/a%20b/%3F/%25x",
            "/caf%c3%a9/;p/../q/",
        ] {
            let once = canon(path);
            assert_eq!(canon(&once), once, "{path}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        for path in [
            "/rest%2Fapi",
            "/rest%2fapi",
            "/status/..%2Frest",
            "/rest%5Capi",
            "/rest\\api",
            "/status/..\\rest",
            "/rest%3Bx/api",
            "/rest%00/api",
            "/rest\u{1}/api",
            "/rest/%zz",
            "/rest/%2",
            "/rest/%+1",
            "/rest/% 1",
            "/rest/%",
            "/rest/%ff",
            "/..",
            "/rest/../../etc",
            "/%2e%2e/rest",
            "rest/api",
            "",
            "*",
        ] {
            assert_eq!(
                canonical_path(path),
                Err(AuthError::MalformedPath),
                "{path:?}"
            );
        }
    }
}
