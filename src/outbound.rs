//! An outgoing call to an identity provider, described for `dispatch_http_call`.

use crate::config::{Config, Provider};
use crate::uri::HttpUri;

/// The `User-Agent` of every outgoing call unless a provider's `request_headers` says otherwise.
pub const USER_AGENT: &str = concat!("atlassian-rest-auth/", env!("CARGO_PKG_VERSION"));

/// A GET (or POST) the adapter dispatches: cluster, pseudo-headers, headers, timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub cluster: String,
    /// `:method`, `:path`, `:authority`, `:scheme` first, then ordinary headers.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
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
        let mut ordinary = vec![("accept".to_string(), "application/json".to_string()), ("user-agent".to_string(), USER_AGENT.to_string())];
        for (name, value) in &provider.request_headers {
            ordinary.retain(|(n, _)| n != name);
            ordinary.push((name.clone(), value.clone()));
        }
        headers.extend(ordinary);
        Outbound { cluster: config.cluster_for(uri), headers, body: None, timeout_ms: provider.timeout_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_goes_to_the_mapped_cluster_with_provider_headers() {
        let json = r#"{"providers":[{"name":"p","issuer":"https://i","jwks_uri":"http://127.0.0.1:9/k?x=1",
            "request_headers":{"User-Agent":"custom"}}],"clusters":{"127.0.0.1:9":"idp"}}"#;
        let config = Config::parse(json.as_bytes(), &|_| None).unwrap();
        let p = &config.providers[0];
        let out = Outbound::get_json(&config, p, p.jwks_uri.as_ref().unwrap());
        assert_eq!(out.cluster, "idp");
        assert!(out.headers.contains(&(":path".into(), "/k?x=1".into())));
        assert!(out.headers.contains(&(":authority".into(), "127.0.0.1:9".into())));
        assert!(out.headers.contains(&("user-agent".into(), "custom".into())));
        assert_eq!(out.headers.iter().filter(|(n, _)| n == "user-agent").count(), 1);
    }
}
