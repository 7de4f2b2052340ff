//! The top-level `envoy.yaml` runs as shipped, with loopback stand-ins for Jira and Azure AD:
//! same listener options, same filter configuration shape, same clusters (addresses swapped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::envoy::{envoy_binary, filter_wasm};
use support::providers::{Answer, FakeProvider};
use support::tokens::{bearer, mint, valid_claims};
use support::{send, try_send, EchoUpstream, SigningKey};

struct Running(Child, std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("{}", std::fs::read_to_string(&self.1).unwrap_or_default());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Points a cluster at 127.0.0.1:`port`, without TLS.
fn to_loopback(bootstrap: &mut Value, cluster: &str, port: u16) {
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap();
    let c = clusters
        .iter_mut()
        .find(|c| c["name"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster}"));
    c["type"] = json!("STATIC");
    c.as_object_mut().unwrap().remove("transport_socket");
    c.as_object_mut().unwrap().remove("dns_lookup_family");
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"] = json!({"address": "127.0.0.1", "port_value": port});
}

#[test]
fn shipped_envoy_yaml_authenticates_through_loopback_stand_ins() {
    let key = SigningKey::rs256();
    let idp = FakeProvider::start();
    idp.serve_jwks(support::jwks_of(&[&key]));
    idp.reply(
        "GET",
        "/.well-known/openid-configuration",
        Answer::ok(json!({"issuer": idp.issuer(), "jwks_uri": idp.jwks_uri()})),
    );
    let jira = EchoUpstream::start();

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy.yaml")).unwrap();
    let mut bootstrap: Value = serde_norway::from_str(&text).unwrap();
    let (listen, admin) = (free_port(), free_port());
    bootstrap["admin"]["address"]["socket_address"] =
        json!({"address": "127.0.0.1", "port_value": admin});
    let listener = &mut bootstrap["static_resources"]["listeners"][0];
    listener["address"]["socket_address"] = json!({"address": "127.0.0.1", "port_value": listen});
    let wasm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
        ["typed_config"]["config"];
    wasm["vm_config"]["code"]["local"]["filename"] = json!(filter_wasm().to_string_lossy());
    let mut filter: Value =
        serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
    // The shipped configuration, with the tenant's issuer replaced by the stand-in's.
    let audience = filter["providers"][0]["audiences"][0].clone();
    filter["providers"][0]["issuer"] = json!(idp.issuer());
    filter["clusters"] = json!({ idp.authority(): "entra_login" });
    wasm["configuration"]["value"] = json!(filter.to_string());
    to_loopback(&mut bootstrap, "entra_login", idp.port());
    to_loopback(&mut bootstrap, "jira", jira.port());

    let dir = std::env::temp_dir().join(format!("ara-envoy-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("envoy.json");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let log = dir.join("envoy.log");
    let child = Command::new(envoy_binary())
        .args([
            "-c",
            config.to_str().unwrap(),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--base-id",
        ])
        .arg((std::process::id() % 1000 + 3000).to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _running = Running(child, log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_send("GET", &format!("http://127.0.0.1:{admin}/ready"), &[]).map(|r| r.status)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "envoy.yaml did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut claims = valid_claims(&idp.issuer(), "alice@contoso.com");
    claims["aud"] = audience;
    let token = mint(&key, &claims);
    let url = format!("http://127.0.0.1:{listen}/rest/api/2/myself");
    let reply = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            send("GET", &url, &[("authorization", &bearer(&token))])
        })
        .find(|r| r.status == 200)
        .expect("a valid token gets through once discovery and keys are in");
    assert_eq!(
        reply
            .upstream_headers()
            .get("x-forwarded-user")
            .map(String::as_str),
        Some("alice@contoso.com")
    );
    assert_eq!(
        send(
            "GET",
            &format!("http://127.0.0.1:{listen}//rest//api/2/myself"),
            &[]
        )
        .status,
        200,
        "optional path"
    );
    assert_eq!(
        send("GET", &url, &[("authorization", "Bearer not.a.token")]).status,
        401
    );
    assert_eq!(
        idp.calls("/.well-known/openid-configuration"),
        1,
        "discovery happened"
    );
}
