//! What the attack and fault suites need beyond the rest of the harness: tokens with any header
//! and any payload bytes (really signed), raw HTTP for what a client library will not send, and
//! the checks that end every such test: Envoy alive and ready, no panic or trap in its log, and
//! no secret in it either.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::Value;

use super::client::{try_send, Reply};
use super::envoy::Envoy;
use super::keys::{Alg, SigningKey};

/// Log lines that mean the filter panicked or the Wasm VM trapped.
const CRASH_MARKERS: [&str; 5] = [
    "panicked",
    "wasm trap",
    "Function: proxy_on",
    "Uncaught RuntimeError",
    "Plugin configured to fail closed failed",
];
/// Shorter secrets are not searched for: they could appear in a log by chance.
const MIN_SECRET_LEN: usize = 8;

/// base64url without padding, as JOSE encodes every segment.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An Ed25519 key pair (kid `kid`) that signs JWS with any header and payload text.
pub struct RawSigner {
    pair: Ed25519KeyPair,
    pub kid: String,
}

impl RawSigner {
    /// The provider's own EdDSA fixture key (kid `eddsa`): what it signs, the filter trusts.
    pub fn provider() -> Self {
        let key = SigningKey::for_alg(Alg::EdDSA);
        let pair =
            Ed25519KeyPair::from_pem(key.pem()).unwrap_or_else(|e| panic!("EdDSA fixture: {e}"));
        RawSigner { pair, kid: key.kid }
    }

    /// A fresh key the provider never published: the attacker's.
    pub fn attacker(kid: &str) -> Self {
        RawSigner {
            pair: Ed25519KeyPair::generate(),
            kid: kid.to_string(),
        }
    }

    /// The public key as a JWK (`kid`, `alg: EdDSA`, `use: sig`).
    pub fn public_jwk(&self) -> Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64url(self.pair.public_key().to_bytes()),
            "kid": self.kid, "alg": "EdDSA", "use": "sig",
        })
    }

    /// `header` and `payload`, taken verbatim as JSON text (duplicate keys and all), signed.
    pub fn sign_text(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64url(header), b64url(payload));
        let signature = self
            .pair
            .key_pair()
            .as_ref()
            .sk
            .sign(input.as_bytes(), None);
        format!("{input}.{}", b64url(signature.as_ref()))
    }

    /// `header` and `payload` as JSON values, signed.
    pub fn sign(&self, header: &Value, payload: &Value) -> String {
        self.sign_text(&header.to_string(), &payload.to_string())
    }

    /// `payload` under the usual header `{"alg":"EdDSA","typ":"JWT","kid":<kid>}`.
    pub fn sign_claims(&self, payload: &Value) -> String {
        self.sign(
            &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}),
            payload,
        )
    }
}

/// A JSON object written member by member, so that a name may appear twice (RFC 8259 allows
/// the text; RFC 7519 section 4 tells a JWT parser to refuse it or keep the lexically last).
pub fn json_members(members: &[(&str, Value)]) -> String {
    let inner: Vec<String> = members
        .iter()
        .map(|(name, value)| format!("{}:{value}", Value::from(*name)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// `token` with its signature segment replaced by `signature` (already encoded).
pub fn with_signature(token: &str, signature: &str) -> String {
    let (signed, _) = token
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("not a compact JWS: {token}"));
    format!("{signed}.{signature}")
}

/// The signature segment of a compact JWS.
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or_default()
}

/// One HTTP/1.1 request written byte for byte (repeated headers, odd values) to
/// `127.0.0.1:port`; the reply read until the server closes. A client library would merge or
/// refuse what these tests need to send.
pub fn raw_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    raw_request_bytes(port, method, path, &headers)
}

/// `raw_request` with header values as bytes, which need not be UTF-8 (HTTP allows obs-text).
pub fn raw_request_bytes(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n")
            .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: ").as_bytes());
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).expect("send request");
    let mut raw = Vec::new();
    // Envoy closes after the reply (connection: close); a reset after it is not an error here.
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// Panics, naming the secret (by its start) and the log line, if any of `secrets` — or the
/// signature segment of one that is a compact JWS — appears in `envoy_log`.
pub fn assert_log_has_no_secrets(envoy_log: &str, secrets: &[&str]) {
    let mut needles: Vec<&str> = Vec::new();
    for secret in secrets {
        needles.push(secret);
        if secret.matches('.').count() >= 2 {
            needles.push(signature_of(secret));
        }
    }
    for needle in needles.into_iter().filter(|n| n.len() >= MIN_SECRET_LEN) {
        if let Some(line) = envoy_log.lines().find(|line| line.contains(needle)) {
            let start: String = needle.chars().take(12).collect();
            panic!(
                "a secret ({start}..., {} bytes) is in Envoy's log: {line}",
                needle.len()
            );
        }
    }
}

/// Panics with the offending lines if Envoy's log shows a panic or a Wasm trap.
pub fn assert_log_has_no_crash(envoy_log: &str) {
    let crashes: Vec<&str> = envoy_log
        .lines()
        .filter(|line| CRASH_MARKERS.iter().any(|m| line.contains(m)))
        .collect();
    assert!(
        crashes.is_empty(),
        "the filter crashed:\n{}",
        crashes.join("\n")
    );
}

/// Panics unless Envoy is still running and its admin `/ready` says LIVE.
pub fn assert_envoy_alive(envoy: &mut Envoy) {
    assert!(
        envoy.exit_status().is_none(),
        "Envoy exited: {:?}",
        envoy.exit_status()
    );
    let ready = try_send("GET", &envoy.admin_url("/ready"), &[])
        .unwrap_or_else(|e| panic!("admin /ready: {e}"));
    assert_eq!(
        (ready.status, ready.body.trim()),
        (200, "LIVE"),
        "Envoy not ready"
    );
}

/// What ends every attack and fault test: Envoy alive and ready, no crash and none of
/// `secrets` in its log.
pub fn assert_envoy_unharmed(envoy: &mut Envoy, secrets: &[&str]) {
    assert_envoy_alive(envoy);
    let log = envoy.log();
    assert_log_has_no_crash(&log);
    assert_log_has_no_secrets(&log, secrets);
}

/// The RFC 6750 challenge of a reply: its `WWW-Authenticate` value for the Bearer scheme.
pub fn bearer_challenge(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.clone())
        .find(|value| value.starts_with("Bearer "))
        .unwrap_or_else(|| panic!("no Bearer challenge in {reply:?}"))
}

/// The `error_description` of a 401/403 reply's JSON body ("" when there is none).
pub fn reason(reply: &Reply) -> String {
    serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|b| b["error_description"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// 401 `invalid_token` in realm `realm`, challenge and JSON body agreeing; `why` when given.
pub fn assert_invalid_token(reply: &Reply, realm: &str, why: Option<&str>) {
    assert_eq!(
        reply.status, 401,
        "expected 401 invalid_token, got {reply:?}"
    );
    let challenge = bearer_challenge(reply);
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{realm}\"")),
        "challenge names the realm: {challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge says invalid_token: {challenge}"
    );
    let body: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("401 body is not JSON ({e}): {}", reply.body));
    assert_eq!(body["error"], "invalid_token", "body: {}", reply.body);
    let described = body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_description: {}", reply.body));
    assert!(
        challenge.contains(&format!("error_description=\"{described}\"")),
        "challenge and body agree: {challenge}"
    );
    if let Some(why) = why {
        assert_eq!(described, why, "reply: {reply:?}");
    }
}

/// 503 with `Retry-After`: the provider could not decide, the filter failed closed.
pub fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "expected 503, got {reply:?}");
    assert!(
        reply.header("retry-after").is_some(),
        "503 says when to retry: {reply:?}"
    );
}
