//! Absolute http(s) URIs of identity-provider endpoints, split the way a dispatched call needs.

use std::fmt;

/// An absolute `http` or `https` URI with a host: what `dispatch_http_call` needs to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUri {
    scheme: String,
    authority: String,
    path_and_query: String,
}

impl HttpUri {
    /// Parses `http(s)://host[:port][/path][?query]`; fragments and userinfo are refused.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("not an absolute http(s) URI")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("not an absolute http(s) URI");
        }
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("contains spaces or control characters");
        }
        if text.contains('#') {
            return Err("must not contain a fragment");
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.is_empty() {
            return Err("has no host");
        }
        if authority.contains('@') {
            return Err("must not contain credentials");
        }
        let port = match authority.strip_prefix('[') {
            Some(v6) => v6
                .split_once(']')
                .ok_or("has an invalid host")?
                .1
                .strip_prefix(':'),
            None => authority.split_once(':').map(|(_, port)| port),
        };
        if let Some(port) = port {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err("has an invalid port");
            }
        }
        let path_and_query = match tail {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(HttpUri {
            scheme,
            authority: authority.to_ascii_lowercase(),
            path_and_query,
        })
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `host[:port]`, lowercased: the key of the `clusters` map and the `:authority` sent.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The path with its query, at least `/`.
    pub(crate) fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The authority without its port (the default Envoy cluster name).
    pub(crate) fn host(&self) -> &str {
        match self.authority.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                host
            }
            _ => &self.authority,
        }
    }
}

impl fmt::Display for HttpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme, self.authority, self.path_and_query
        )
    }
}

impl fmt::Debug for HttpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUri({self})")
    }
}

/// Appends `byte` as an RFC 3986 percent-escape with upper-case hex digits (`,` → `%2C`).
pub(crate) fn push_percent_escape(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
    out.push(char::from(DIGITS[usize::from(byte & 15)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_uri_is_split_into_authority_and_path() {
        let uri = HttpUri::parse("https://Login.Example.com:8443/t/keys?x=1").unwrap();
        assert_eq!(uri.authority(), "login.example.com:8443");
        assert_eq!(uri.host(), "login.example.com");
        assert_eq!(uri.path_and_query(), "/t/keys?x=1");
    }

    #[test]
    fn uri_without_path_gets_root_path() {
        assert_eq!(
            HttpUri::parse("http://127.0.0.1:9000")
                .unwrap()
                .path_and_query(),
            "/"
        );
    }

    #[test]
    fn relative_or_odd_uris_are_refused() {
        for bad in [
            "not a uri",
            "ftp://x/",
            "https:///keys",
            "https://u:p@host/",
            "https://h/a b",
            "https://h:x/",
            "https://h/#f",
        ] {
            assert!(HttpUri::parse(bad).is_err(), "{bad}");
        }
    }
}
