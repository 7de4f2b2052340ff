//! `make run`: the filter in a local Envoy, in front of an echo upstream standing in for Jira and
//! a demo identity provider, with a token minted for `alice` and curl commands that work.
//!
//! Envoy listens on 127.0.0.1:10000 (admin 9901). Stop with Enter or Ctrl-C: Ctrl-C reaches the
//! whole foreground process group, Envoy included; Enter stops Envoy and cleans up.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::tokens::{self, bearer, valid_claims, AUDIENCE};
use support::{jwks_of, send, EchoUpstream, Envoy, EnvoyOptions, JwksServer, Reply, SigningKey};

const LISTENER_PORT: u16 = 10000;
const ADMIN_PORT: u16 = 9901;
const USERNAME_HEADER: &str = "x-forwarded-user";
const API_PATH: &str = "/rest/api/2/myself";
const PAGE_PATH: &str = "/secure/Dashboard.jspa";

fn main() -> ExitCode {
    let key = SigningKey::rs256();

    let echo = EchoUpstream::start();
    println!(
        "upstream           http://127.0.0.1:{}  (echo server standing in for Jira)",
        echo.port()
    );
    let idp = JwksServer::start(jwks_of(&[&key]));
    println!(
        "identity provider  {}  (issuer; keys at /jwks, kid {:?})",
        idp.issuer(),
        key.kid
    );

    let mut options = EnvoyOptions::with_filter(echo.port(), idp.port(), demo_config(&idp));
    options.listener_port = LISTENER_PORT;
    options.admin_port = ADMIN_PORT;
    options.work_dir = Some(std::env::temp_dir().join("atlassian-rest-auth-demo"));
    println!("starting Envoy on 127.0.0.1:{LISTENER_PORT} with the filter...");
    let mut envoy = match Envoy::start(&options) {
        Ok(envoy) => envoy,
        Err(failure) => {
            eprintln!("Envoy did not start: {failure}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "envoy              {}  (admin {})",
        envoy.url(""),
        envoy.admin_url("")
    );
    println!("envoy log          {}", envoy.log_path().display());

    let token = tokens::mint(&key, &valid_claims(&idp.issuer(), "alice"));
    self_check(&envoy, &token);

    let api = envoy.url(API_PATH);
    let page = envoy.url(PAGE_PATH);
    println!(
        r#"
A token for alice (RS256, valid for 1 hour, aud "{AUDIENCE}"):

  export TOKEN='{token}'

With the token: 200, and the upstream saw {USERNAME_HEADER}: alice (no Authorization):

  curl -s -H "Authorization: Bearer $TOKEN" {api}

Without a token on /rest/: 401 with a Bearer challenge:

  curl -si {api}

A browser page is optional; a client-chosen username never gets through:

  curl -s -H '{USERNAME_HEADER}: admin' {page}

Press Enter (or Ctrl-C) to stop."#
    );

    wait_for_enter_or_exit(&mut envoy)
}

/// The demo filter configuration: realm jira, `/rest/` needs a token, the rest is optional.
fn demo_config(idp: &JwksServer) -> Value {
    json!({
        "realm": "jira",
        "default_auth": "optional",
        "providers": [{
            "name": "demo",
            "issuer": idp.issuer(),
            "audiences": [AUDIENCE],
            "jwks_uri": idp.jwks_uri(),
            "username_claim": ["preferred_username", "sub"],
            "clock_skew_seconds": 60,
            "timeout_ms": 2000,
        }],
        "rules": [
            { "path_prefix": "/status", "auth": "none" },
            { "path_prefix": "/rest/", "auth": "required" },
        ],
        "forward": { "username_header": USERNAME_HEADER, "authorization": "remove" },
        "clusters": { idp.authority(): IDP_CLUSTER },
    })
}

/// Tries the commands it is about to print, so a broken build shows up here, not in curl.
fn self_check(envoy: &Envoy, token: &str) {
    let with_token = send(
        "GET",
        &envoy.url(API_PATH),
        &[("authorization", &bearer(token))],
    );
    report(
        "with the token",
        &with_token,
        with_token.status == 200 && seen_username(&with_token).as_deref() == Some("alice"),
    );
    let without = send("GET", &envoy.url(API_PATH), &[]);
    report("without a token", &without, without.status == 401);
    let spoofed = send("GET", &envoy.url(PAGE_PATH), &[(USERNAME_HEADER, "admin")]);
    report(
        "spoofed username",
        &spoofed,
        spoofed.status == 200 && seen_username(&spoofed).is_none(),
    );
}

fn seen_username(reply: &Reply) -> Option<String> {
    let json: Value = serde_json::from_str(&reply.body).ok()?;
    json["headers"][USERNAME_HEADER]
        .as_str()
        .map(str::to_string)
}

fn report(what: &str, reply: &Reply, as_expected: bool) {
    let username = seen_username(reply).unwrap_or_else(|| "(none)".to_string());
    if as_expected {
        println!(
            "checked {what:<17} {} (upstream username: {username})",
            reply.status
        );
    } else {
        println!(
            "WARNING {what:<17} {} (upstream username: {username}) is not what the demo expects; body: {}",
            reply.status, reply.body
        );
    }
}

/// Returns when Enter is pressed (Envoy is stopped on drop), or fails when Envoy exits.
/// Without a terminal (stdin at EOF) only Ctrl-C or a signal ends the demo.
fn wait_for_enter_or_exit(envoy: &mut Envoy) -> ExitCode {
    let (enter, entered) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0) {
            let _ = enter.send(());
        }
    });
    loop {
        match entered.recv_timeout(Duration::from_millis(500)) {
            Ok(()) => {
                println!("stopping");
                return ExitCode::SUCCESS;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // stdin closed without a line: keep serving until a signal.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if let Some(status) = envoy.exit_status() {
            eprintln!(
                "Envoy exited ({status}); end of its log:\n{}",
                envoy.log_tail(40)
            );
            return ExitCode::FAILURE;
        }
    }
}
