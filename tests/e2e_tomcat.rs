//! The transport boundary of docs/atlassian.md ("Way 2"), end to end: the real Envoy with the
//! real filter in front of a real Tomcat (Debian's tomcat10) whose only connector requires a
//! client certificate, as `tests/tomcat/server.xml` sets it up. Envoy presents its certificate
//! (cluster `UpstreamTlsContext`); the echo servlet (`tests/tomcat/Echo.java`) reports the
//! headers it got and the certificate of the connection. Whoever connects without Envoy's
//! certificate gets no HTTP answer at all, so a header-trusting app behind that connector can
//! believe `x-forwarded-user`.
//!
//! Needs Envoy (`make envoy`), the filter (`make build`) and Tomcat, a JDK and openssl
//! (`make tomcat`); a missing one fails the test.
// clippy.toml exempts `#[test]` functions only; the assertion helpers here fail tests the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};

use support::envoy::IDP_CLUSTER;
use support::tokens::{bearer, mint, valid_claims, AUDIENCE};
use support::tomcat::{ClientAuth, DirectReply, Tomcat, ENVOY_SUBJECT};
use support::*;

const USERNAME_HEADER: &str = "x-forwarded-user";

/// One test's world. Fields drop in order: Envoy stops before the servers it talks to.
struct Stack {
    envoy: Envoy,
    idp: JwksServer,
    key: SigningKey,
    tomcat: Tomcat,
}

impl Stack {
    /// Tomcat as `tests/tomcat/server.xml` has it, and Envoy reaching it with its client
    /// certificate; `/rest/` needs a token, `/status` is open.
    fn start() -> Stack {
        let tomcat = Tomcat::start();
        let key = SigningKey::rs256();
        let idp = JwksServer::start(jwks_of(&[&key]));
        let config = json!({
            "realm": "jira",
            "default_auth": "required",
            "providers": [{
                "name": "test",
                "issuer": idp.issuer(),
                "audiences": [AUDIENCE],
                "jwks_uri": idp.jwks_uri(),
                "username_claim": ["preferred_username"],
                "timeout_ms": 2000,
            }],
            "rules": [
                { "path_prefix": "/status", "auth": "none" },
                { "path_prefix": "/rest/", "auth": "required" },
            ],
            "forward": { "username_header": USERNAME_HEADER },
            "clusters": { idp.authority(): IDP_CLUSTER },
        });
        let options = EnvoyOptions {
            upstream_tls: Some(tomcat.pki().envoy_upstream_tls()),
            ..EnvoyOptions::with_filter(tomcat.port(), idp.port(), config)
        };
        let envoy = Envoy::expect_start(&options);
        Stack {
            envoy,
            idp,
            key,
            tomcat,
        }
    }

    fn token(&self, username: &str) -> String {
        mint(&self.key, &valid_claims(&self.idp.issuer(), username))
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send("GET", &self.envoy.url(path), headers)
    }
}

/// What the servlet reported: a 200 from Tomcat with its JSON.
fn servlet_view(reply: &Reply) -> Value {
    assert_eq!(
        reply.status, 200,
        "expected the servlet's 200, got {reply:?}"
    );
    let view = reply.json();
    assert!(
        view["headers"].is_object(),
        "not the echo servlet's answer: {}",
        reply.body
    );
    view
}

/// Says why if anything at all came back over HTTP from a connection that must be refused.
fn assert_refused(reply: &DirectReply, who: &str) {
    assert!(
        reply.status_line().is_none() && !reply.stdout.contains("\"headers\""),
        "{who}: Tomcat answered a direct connection: {reply:?}"
    );
    // The refusal is Tomcat's: a TLS alert during the handshake (bad/unknown certificate).
    assert!(
        reply.exit_code != Some(0) && reply.stderr.contains("alert"),
        "{who}: openssl s_client saw no TLS alert: {reply:?}"
    );
}

#[test]
fn the_servlet_sees_the_token_owner_from_envoy_over_mutual_tls() {
    let stack = Stack::start();
    let token = stack.token("alice");
    let reply = stack.get(
        "/rest/api/2/myself?expand=groups",
        &[("authorization", &bearer(&token))],
    );
    let view = servlet_view(&reply);
    assert_eq!(view["headers"][USERNAME_HEADER], "alice", "{view}");
    assert_eq!(view["method"], "GET");
    assert_eq!(view["path"], "/rest/api/2/myself");
    assert_eq!(view["query"], "expand=groups");
    // The request came over the client-certificate connector, with Envoy's certificate.
    assert_eq!(view["client_certificate"], ENVOY_SUBJECT, "{view}");
    assert_eq!(view["local_port"], stack.tomcat.port());
    assert_eq!(view["remote_addr"], "127.0.0.1");
}

#[test]
fn a_client_supplied_username_header_never_reaches_the_servlet() {
    let stack = Stack::start();
    // No token, on a path that needs none: the request gets through, the header does not.
    let anonymous = servlet_view(&stack.get("/status", &[(USERNAME_HEADER, "admin")]));
    assert!(
        anonymous["headers"].get(USERNAME_HEADER).is_none(),
        "a forged {USERNAME_HEADER} reached Tomcat: {anonymous}"
    );
    // With a token: the servlet sees the token's owner, once, not the forged name beside it.
    let token = stack.token("alice");
    let signed_in = servlet_view(&stack.get(
        "/rest/api/2/myself",
        &[
            ("authorization", &bearer(&token)),
            (USERNAME_HEADER, "admin"),
        ],
    ));
    assert_eq!(
        signed_in["headers"][USERNAME_HEADER], "alice",
        "{signed_in}"
    );
    // Without a token where one is needed: Envoy answers, Tomcat sees nothing.
    let refused = stack.get("/rest/api/2/myself", &[(USERNAME_HEADER, "admin")]);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(!refused.body.contains("\"headers\""), "{refused:?}");
}

#[test]
fn tomcat_refuses_every_connection_without_envoys_certificate() {
    let stack = Stack::start();
    let tomcat = &stack.tomcat;
    // The probe works: with Envoy's certificate it gets the servlet's answer (and so would an
    // attacker who had it: the key is a secret of Envoy's).
    let envoy = tomcat.direct_request(Some(&tomcat.pki().envoy()), "/rest/api/2/myself");
    assert_eq!(
        envoy.status_line(),
        Some("HTTP/1.1 200 "),
        "the direct probe with Envoy's certificate got no answer: {envoy:?}"
    );
    assert!(envoy.stdout.contains("\"headers\""), "{envoy:?}");

    let anonymous = tomcat.direct_request(None, "/rest/api/2/myself");
    assert_refused(&anonymous, "no client certificate");
    let stranger = tomcat.direct_request(Some(&tomcat.pki().stranger()), "/rest/api/2/myself");
    assert_refused(&stranger, "a certificate from another CA");

    let plain = tomcat.plain_http_request("/rest/api/2/myself");
    assert!(
        !plain.contains("\"headers\"") && !plain.starts_with("HTTP/1.1 200"),
        "plain HTTP on the TLS port reached the servlet: {plain}"
    );
}

/// The check above notices a connector that only asks for a certificate: with
/// `certificateVerification="optional"` a client without one is served (and could name any user).
#[test]
fn an_optional_client_certificate_lets_anyone_in_and_the_check_notices() {
    let tomcat = Tomcat::start_with(ClientAuth::Optional);
    let anonymous = tomcat.direct_request(None, "/rest/api/2/myself");
    assert_eq!(
        anonymous.status_line(),
        Some("HTTP/1.1 200 "),
        "{anonymous:?}"
    );
    assert!(
        anonymous.stdout.contains("\"x-forwarded-user\":\"admin\""),
        "{anonymous:?}"
    );
}
