//! The test client: one HTTP request, any status returned as a plain `Reply`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What came back: status, headers (names lowercased, in arrival order) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the echo upstream saw, parsed from its reply body.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {}", self.body))
    }

    /// The request as the echo upstream received it; panics if the reply did not come from it.
    pub fn upstream(&self) -> UpstreamView {
        assert_eq!(
            self.status, 200,
            "expected the echo upstream's 200, got {self:?}"
        );
        let json = self.json();
        let text = |key: &str| {
            json[key]
                .as_str()
                .unwrap_or_else(|| panic!("echo reply lacks {key:?}: {}", self.body))
                .to_string()
        };
        let headers = json["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("echo reply lacks headers: {}", self.body))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        UpstreamView {
            method: text("method"),
            path: text("path"),
            headers,
        }
    }

    /// The request headers the echo upstream received (names lowercased).
    pub fn upstream_headers(&self) -> BTreeMap<String, String> {
        self.upstream().headers
    }
}

/// Sends one request; a 4xx/5xx is a normal `Reply`, a transport failure an `Err`.
pub fn try_send(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    try_send_body(method, url, headers, None)
}

/// Like `try_send`, with a request body when `body` is given.
pub fn try_send_body(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    try_send_within(method, url, headers, body, TIMEOUT)
}

/// Like `try_send_body`, giving up after `timeout` instead of the usual 10 s.
pub fn try_send_within(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build();
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let sent = match body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    };
    let response = match sent {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(e)) => return Err(format!("{method} {url}: {e}")),
    };
    let status = response.status();
    let mut names: Vec<String> = Vec::new();
    for name in response.headers_names() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let headers = names
        .into_iter()
        .flat_map(|name| {
            response
                .all(&name)
                .into_iter()
                .map(|v| (name.to_ascii_lowercase(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let body = response
        .into_string()
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Sends one request; panics on a transport failure (connection refused, timeout).
pub fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    try_send(method, url, headers).unwrap_or_else(|e| panic!("request failed: {e}"))
}
