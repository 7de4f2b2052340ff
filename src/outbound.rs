//! An outgoing call to an identity provider, described for `dispatch_http_call`.

use crate::config::{Config, Provider};
use crate::uri::HttpUri;

/// The `User-Agent` of every outgoing call unless a provider's `request_headers` says otherwise.
pub const USER_AGENT: &str = concat!("atlassian-rest-auth/", env!("CARGO_PKG_VERSION"));

/// A GET (or POST) the adapter dispatches: cluster, pseudo-headers, headers, timeout.
///
/// `Debug` hides header values and the body: they carry tokens and client secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound {
    pub cluster: String,
    /// `:method`, `:path`, `:authority`, `:scheme` first, then ordinary headers.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        write!(
            f,
            "Outbound({} headers {:?}, body {} bytes)",
            self.cluster,
            names,
            self.body.as_ref().map_or(0, Vec::len)
        )
    }
}

impl Outbound {
    /// A JSON GET of `uri` for `provider`, through the cluster `config.clusters` maps it to.
    pub fn get_json(config: &Config, provider: &Provider, uri: &HttpUri) -> Self {
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), uri.path_and_query().to_string()),
            (":authority".to_string(), uri.authority().to_string()),
            (":scheme".to_string(), uri.scheme().to_string()),
        ];
        let mut ordinary = vec![
            ("accept".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), USER_AGENT.to_string()),
        ];
        for (name, value) in &provider.request_headers {
            ordinary.retain(|(n, _)| n != name);
            ordinary.push((name.clone(), value.clone()));
        }
        headers.extend(ordinary);
        Outbound {
            cluster: config.cluster_for(uri),
            headers,
            body: None,
            timeout_ms: provider.timeout_ms,
        }
    }
}

impl Outbound {
    /// A request of `method` to `uri` with `extra` headers and an optional body, for `provider`.
    pub fn request(
        config: &Config,
        provider: &Provider,
        method: &str,
        uri: &HttpUri,
        extra: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Self {
        let mut out = Outbound::get_json(config, provider, uri);
        if let Some(m) = out.headers.iter_mut().find(|(n, _)| n == ":method") {
            m.1 = method.to_string();
        }
        for (name, value) in extra {
            out.headers.retain(|(n, _)| *n != name);
            out.headers.push((name, value));
        }
        out.body = body;
        out
    }
}

/// `application/x-www-form-urlencoded` / query encoding: unreserved characters stay, the rest is `%XX`.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            crate::uri::push_percent_escape(&mut out, b);
        }
    }
    out
}

/// RFC 6749 section 2.3.1 `client_secret_basic`: both parts form-encoded, then Basic.
pub fn client_basic(client_id: &str, client_secret: &str) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_goes_to_the_mapped_cluster_with_provider_headers() {
        let json = r#"{"providers":[{"name":"p","issuer":"https://i","audiences":["jira"],"jwks_uri":"http://127.0.0.1:9/k?x=1",
            "request_headers":{"User-Agent":"custom"}}],"clusters":{"127.0.0.1:9":"idp"}}"#;
        let config = Config::parse(json.as_bytes(), &|_| None).unwrap();
        let p = &config.providers[0];
        let out = Outbound::get_json(&config, p, p.jwks_uri.as_ref().unwrap());
        assert_eq!(out.cluster, "idp");
        assert!(out.headers.contains(&(":path".into(), "/k?x=1".into())));
        assert!(out
            .headers
            .contains(&(":authority".into(), "127.0.0.1:9".into())));
        assert!(out
            .headers
            .contains(&("user-agent".into(), "custom".into())));
        assert_eq!(
            out.headers
                .iter()
                .filter(|(n, _)| n == "user-agent")
                .count(),
            1
        );
    }

    #[test]
    fn debug_never_shows_header_values() {
        let config = Config::parse(
            br#"{"providers":[{"name":"u","userinfo_uri":"http://h/me"}]}"#,
            &|_| None,
        )
        .unwrap();
        let p = &config.providers[0];
        let out = Outbound::request(
            &config,
            p,
            "GET",
            p.userinfo_uri.as_ref().unwrap(),
            vec![("authorization".into(), "Bearer SECRET".into())],
            Some(b"SECRET".to_vec()),
        );
        assert!(!format!("{out:?}").contains("SECRET"));
    }

    #[test]
    fn form_encoding_escapes_everything_but_unreserved() {
        assert_eq!(form_encode("a b+c/d|e~f"), "a%20b%2Bc%2Fd%7Ce~f");
    }

    #[test]
    fn client_credentials_are_encoded_before_basic() {
        // base64("id%3A1:s%20t")
        assert_eq!(client_basic("id:1", "s t"), "Basic aWQlM0ExOnMlMjB0");
    }
}
