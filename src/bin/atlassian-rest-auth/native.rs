//! The CLI itself (native only: it makes HTTP calls with `ureq`).

use atlassian_rest_auth::authenticator::{Authenticator, Outcome, RequestHead};
use atlassian_rest_auth::config::{Config, ProviderId};
use atlassian_rest_auth::digest::TokenDigest;
use atlassian_rest_auth::jwt::{looks_like_jwt, Jwt};
use atlassian_rest_auth::lookup::REPLY_HEADERS;
use atlassian_rest_auth::outbound::Outbound;
use atlassian_rest_auth::time::{format_rfc3339, parse_rfc3339, UnixTime};
use atlassian_rest_auth::worker::fake::FakeHost;
use atlassian_rest_auth::worker::{Admission, CallPurpose, CallReply, RequestId, Worker};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage:
  atlassian-rest-auth check-config FILE
  atlassian-rest-auth check-token --config FILE [--provider NAME] [--path PATH] TOKEN
  atlassian-rest-auth new-token --user NAME [--expires 90d|12h|RFC3339] [--name LABEL]";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check-config") => check_config(&args[1..]),
        Some("check-token") => check_token(&args[1..]),
        Some("new-token") => new_token(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` options and positional arguments.
struct Args {
    options: HashMap<String, String>,
    positional: Vec<String>,
}

fn parse_args(args: &[String], known: &[&str]) -> Result<Args, String> {
    let mut options = HashMap::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(name) = arg.strip_prefix("--") {
            if !known.contains(&name) {
                return Err(format!("unknown option --{name}\n{USAGE}"));
            }
            let value = iter
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            options.insert(name.to_string(), value.clone());
        } else {
            positional.push(arg.clone());
        }
    }
    Ok(Args {
        options,
        positional,
    })
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn now() -> UnixTime {
    UnixTime::from_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

// ---------------------------------------------------------------------------------------------
// check-config

/// Reports every error: after each one, the offending entry is set aside and the rest re-checked.
fn check_config(args: &[String]) -> Result<bool, String> {
    let a = parse_args(args, &[])?;
    let [file] = a.positional.as_slice() else {
        return Err(USAGE.into());
    };
    let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let mut doc: Value = match serde_json::from_slice(&text) {
        Ok(doc) => doc,
        Err(e) => {
            println!("{file}: not JSON: {e}");
            return Ok(false);
        }
    };
    let mut errors = Vec::new();
    for _ in 0..100 {
        match Config::parse(doc.to_string().as_bytes(), &env_lookup) {
            Ok(config) => {
                if errors.is_empty() {
                    println!(
                        "{file}: OK ({} provider(s), {} rule(s), {} API token(s), realm {:?})",
                        config.providers.len(),
                        config.rules.len(),
                        config.api_tokens.len(),
                        config.realm
                    );
                }
                break;
            }
            Err(e) => {
                let line = e.to_string();
                if errors.contains(&line) || !set_aside(&mut doc, &e.field, &e.message) {
                    errors.push(line);
                    break;
                }
                errors.push(line);
            }
        }
    }
    for e in &errors {
        println!("{file}: {e}");
    }
    Ok(errors.is_empty())
}

/// Removes what `field` names so the next pass can find the next error; false if it cannot.
fn set_aside(doc: &mut Value, field: &str, message: &str) -> bool {
    let Some(map) = doc.as_object_mut() else {
        return false;
    };
    // "unknown field `x`" errors name the containing object.
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        return match field.split_once('[') {
            None => map.remove(unknown).is_some(),
            Some((list, rest)) => {
                let index = rest.split(']').next().and_then(|i| i.parse::<usize>().ok());
                let item = index
                    .and_then(|i| map.get_mut(list).and_then(|l| l.get_mut(i)))
                    .and_then(Value::as_object_mut);
                item.is_some_and(|item| item.remove(unknown).is_some())
            }
        };
    }
    let top = field.split(['.', '[']).next().unwrap_or(field);
    match field
        .split_once('[')
        .and_then(|(_, rest)| rest.split(']').next())
        .and_then(|i| i.parse::<usize>().ok())
    {
        Some(index) if top == "providers" => {
            let name = map
                .get("providers")
                .and_then(|p| p.get(index))
                .and_then(|p| p.get("name"))
                .cloned()
                .unwrap_or(json!("unnamed"));
            let placeholder = json!({"name": name, "issuer": format!("urn:set-aside:{index}"), "audiences": "any",
                "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}});
            replace_item(map, top, index, placeholder)
        }
        Some(index) if top == "rules" => {
            replace_item(map, top, index, json!({"path_prefix": "/", "auth": "none"}))
        }
        Some(index) if top == "api_tokens" => replace_item(
            map,
            top,
            index,
            json!({"user": "set-aside", "sha256": format!("{:064x}", index + 1)}),
        ),
        _ => map.remove(top).is_some(),
    }
}

fn replace_item(
    map: &mut serde_json::Map<String, Value>,
    list: &str,
    index: usize,
    placeholder: Value,
) -> bool {
    match map.get_mut(list).and_then(|l| l.get_mut(index)) {
        Some(item) if *item != placeholder => {
            *item = placeholder;
            true
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// check-token

fn check_token(args: &[String]) -> Result<bool, String> {
    let a = parse_args(args, &["config", "provider", "path"])?;
    let file = a
        .options
        .get("config")
        .ok_or_else(|| format!("--config FILE is required\n{USAGE}"))?;
    let [token] = a.positional.as_slice() else {
        return Err(USAGE.into());
    };
    let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let mut doc: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
    if let Some(name) = a.options.get("provider") {
        // Only this provider may take the token: a rule in front of the others says so.
        let rules = doc
            .as_object_mut()
            .ok_or("configuration is not a JSON object")?
            .entry("rules")
            .or_insert(json!([]));
        if let Some(list) = rules.as_array_mut() {
            list.insert(
                0,
                json!({"path_prefix": "/", "auth": "required", "providers": [name]}),
            );
        }
    }
    let config = Config::parse(doc.to_string().as_bytes(), &env_lookup)
        .map_err(|e| format!("{file}: {e}"))?;
    // The filter's own worker, on a host whose calls are made at once over real HTTP.
    let mut worker = Worker::new(Authenticator::new(config));
    let mut host = FakeHost::at(now());
    host.responder = Some(Box::new(|out: &Outbound| {
        let (status, headers, body) = call(out);
        CallReply {
            status,
            headers,
            body: Some(body),
        }
    }));
    let path = a
        .options
        .get("path")
        .cloned()
        .unwrap_or_else(|| "/rest/api/2/myself".into());
    let head = RequestHead {
        method: "GET".into(),
        path,
        authorization: Some(format!("Bearer {token}")),
        cors_headers: false,
        form_body: false,
    };
    const REQUEST: RequestId = 1;
    let mut answer: Option<Value> = None;
    let mut provider_used: Option<ProviderId> = None;
    let mut verdict = match worker.on_request(&mut host, REQUEST, head) {
        Admission::Decided(verdict) => Some(verdict),
        Admission::Paused => None,
    };
    for _ in 0..12 {
        if verdict.is_some() {
            break;
        }
        host.now = Some(now());
        worker.on_tick(&mut host);
        // Each reply may send the next call (a second lookup step), answered at once too.
        while !host.replies.is_empty() {
            let (id, mut reply) = host.replies.remove(0);
            let config = &worker.authenticator().config;
            let name = |provider| config.provider(provider).map_or("?", |p| p.name.as_str());
            match worker.call_purpose(id) {
                Some(CallPurpose::Fetch { provider, kind }) => {
                    provider_used = Some(provider);
                    println!("fetching {kind:?} of provider {}", name(provider));
                }
                Some(CallPurpose::Lookup { provider, step }) => {
                    provider_used = Some(provider);
                    println!("asking provider {} ({step:?})", name(provider));
                    if let Some(json) = reply
                        .body
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    {
                        answer = Some(json);
                    }
                }
                None => {}
            }
            println!(
                "  HTTP {}",
                if reply.status == 0 {
                    "no response".to_string()
                } else {
                    reply.status.to_string()
                }
            );
            // As in Envoy: a body over the worker's limit is not read.
            if reply.body.as_ref().map_or(0, Vec::len) > worker.reply_limit(id).unwrap_or(0) {
                reply.body = None;
            }
            host.now = Some(now());
            worker.on_call_reply(&mut host, id, reply);
        }
        verdict = host.verdict_for(REQUEST).cloned();
    }
    let verdict = verdict.ok_or("gave up after 12 rounds")?;
    report(
        worker.authenticator(),
        token,
        provider_used,
        answer.as_ref(),
        &verdict,
    );
    Ok(verdict.denied().is_none())
}

fn report(
    auth: &Authenticator,
    token: &str,
    provider: Option<ProviderId>,
    answer: Option<&Value>,
    verdict: &atlassian_rest_auth::authenticator::Verdict,
) {
    let provider = verdict
        .identity()
        .map(|i| i.provider.clone())
        .or_else(|| {
            provider
                .and_then(|id| auth.config.provider(id))
                .map(|p| p.name.clone())
        })
        .or_else(|| {
            let by_issuer = looks_like_jwt(token)
                .then(|| {
                    Jwt::parse(token)
                        .ok()?
                        .issuer()
                        .and_then(|iss| auth.config.provider_by_issuer(iss))
                })
                .flatten();
            by_issuer
                .and_then(|id| auth.config.provider(id))
                .map(|p| p.name.clone())
        });
    println!("provider: {}", provider.as_deref().unwrap_or("(none)"));
    let claims = match answer {
        Some(answer) => {
            println!("provider answer:\n{}", pretty(answer));
            Some(answer.clone())
        }
        None => {
            let claims = Jwt::parse(token).ok().map(|jwt| jwt.claims);
            if let Some(claims) = &claims {
                let label = if verdict.denied().is_none() {
                    "verified claims"
                } else {
                    "claims (NOT verified)"
                };
                println!("{label}:\n{}", pretty(claims));
            }
            claims
        }
    };
    if let Some(claims) = claims {
        let configured: Vec<String> = provider
            .as_deref()
            .and_then(|name| auth.config.provider_named(name))
            .and_then(|id| auth.config.provider(id))
            .map(|p| p.username_claims.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        println!("candidate username attributes (* = in username_claim, in order):");
        let mut leaves = Vec::new();
        collect_leaves(&claims, String::new(), 0, &mut leaves);
        for (path, value) in leaves {
            let mark = if configured.contains(&path) { "*" } else { " " };
            println!("  {mark} {path} = {value}");
        }
        if !configured.is_empty() {
            println!("  username_claim: {}", configured.join(", "));
        }
    }
    match &verdict.outcome {
        Outcome::Allow { identity, .. } => {
            println!("username forwarded: {}", identity.username.as_str())
        }
        Outcome::Deny { error, status, .. } => println!("refused ({status}): {error}"),
        Outcome::Pass(_) => println!("passed without identity: {verdict}"),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Every scalar in `value` with its dotted path (arrays by index), three levels deep.
fn collect_leaves(value: &Value, path: String, depth: usize, out: &mut Vec<(String, String)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) if depth < 3 => map
            .iter()
            .for_each(|(k, v)| collect_leaves(v, join(k), depth + 1, out)),
        Value::Array(items) if depth < 3 => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| collect_leaves(v, join(&i.to_string()), depth + 1, out)),
        Value::String(s) => out.push((path, format!("{s:?}"))),
        Value::Number(_) | Value::Bool(_) => out.push((path, value.to_string())),
        _ => {}
    }
}

/// Performs `out` over real HTTP: status (0 when nothing came back), the `REPLY_HEADERS`, body.
fn call(out: &Outbound) -> (u32, [Option<String>; 2], Vec<u8>) {
    let header = |name: &str| {
        out.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let url = format!(
        "{}://{}{}",
        header(":scheme"),
        header(":authority"),
        header(":path")
    );
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(out.timeout_ms))
        .redirects(0)
        .build();
    let mut request = agent.request(header(":method"), &url);
    for (name, value) in out.headers.iter().filter(|(n, _)| !n.starts_with(':')) {
        request = request.set(name, value);
    }
    let response = match &out.body {
        Some(body) => request.send_bytes(body),
        None => request.call(),
    };
    let response = match response {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(e)) => {
            println!("  {url}: {e}");
            return (0, [None, None], Vec::new());
        }
    };
    let status = u32::from(response.status());
    let headers = REPLY_HEADERS.map(|name| response.header(name).map(str::to_string));
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(
        &mut std::io::Read::take(response.into_reader(), 1 << 20),
        &mut body,
    );
    (status, headers, body)
}

// ---------------------------------------------------------------------------------------------
// new-token

fn new_token(args: &[String]) -> Result<bool, String> {
    let a = parse_args(args, &["user", "expires", "name"])?;
    if !a.positional.is_empty() {
        return Err(USAGE.into());
    }
    let user = a
        .options
        .get("user")
        .ok_or_else(|| format!("--user NAME is required\n{USAGE}"))?;
    atlassian_rest_auth::identity::Username::parse(user.clone()).map_err(|_| {
        "--user: 1-255 bytes of printable ASCII or letters, without a space at either end"
            .to_string()
    })?;
    let expires_at = a
        .options
        .get("expires")
        .map(|e| parse_expiry(e, now().as_secs()))
        .transpose()?;
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random)
        .map_err(|e| format!("no randomness from the operating system: {e}"))?;
    let token = atlassian_rest_auth::api_token::mint(&random);
    let mut entry = json!({"user": user, "sha256": TokenDigest::of(token.as_bytes()).to_hex()});
    if let Some(exp) = expires_at {
        entry["expires_at"] = json!(format_rfc3339(exp));
    }
    if let Some(name) = a.options.get("name") {
        entry["name"] = json!(name);
    }
    println!("API token for {user} (shown once; store it now):\n\n  {token}\n");
    println!("Add this entry to \"api_tokens\" in the filter configuration:\n\n  {entry}");
    Ok(true)
}

/// `90d`, `12h`, `30m` from now, or an RFC 3339 date-time.
fn parse_expiry(text: &str, now_secs: u64) -> Result<u64, String> {
    if let Some(at) = parse_rfc3339(text) {
        return Ok(at);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--expires {text:?}: use 90d, 12h, 30m or an RFC 3339 date-time"))?;
    let secs = match unit {
        "d" => n.saturating_mul(86_400),
        "h" => n.saturating_mul(3600),
        "m" => n.saturating_mul(60),
        _ => {
            return Err(format!(
                "--expires {text:?}: use 90d, 12h, 30m or an RFC 3339 date-time"
            ))
        }
    };
    Ok(now_secs.saturating_add(secs))
}
