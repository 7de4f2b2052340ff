//! Simulated providers with the real shapes of the presets' tokens and endpoints: where each
//! publishes its discovery document and keys below its issuer, and which claims its tokens and
//! userinfo answers carry. Built on `providers::FakeProvider`, so every request is recorded.

use serde_json::{json, Value};

use super::keys::{jwks_of, SigningKey};
use super::providers::{Answer, FakeProvider};
use super::tokens::{self, now};

/// A provider whose issuer is a path below the fake's base URL, serving discovery and keys there.
pub struct PresetIdp {
    pub fake: FakeProvider,
    pub key: SigningKey,
    /// The `iss` of its tokens and the `issuer` of its discovery document.
    pub issuer: String,
    /// Path of its discovery document.
    pub discovery_path: String,
    /// Path of its JWKS.
    pub keys_path: String,
    /// Path of its userinfo endpoint.
    pub userinfo_path: String,
}

impl PresetIdp {
    /// `issuer_path` below the base URL (`""` for the base URL itself), keys and userinfo at the
    /// given paths, all announced by discovery.
    fn start(issuer_path: &str, keys_path: &str, userinfo_path: &str) -> Self {
        let fake = FakeProvider::start();
        let key = SigningKey::rs256();
        let issuer = fake.url(issuer_path);
        let discovery_path = format!("{issuer_path}/.well-known/openid-configuration");
        fake.reply(
            "GET",
            &discovery_path,
            Answer::ok(json!({
                "issuer": issuer,
                "jwks_uri": fake.url(keys_path),
                "userinfo_endpoint": fake.url(userinfo_path),
                "id_token_signing_alg_values_supported": ["RS256"],
            })),
        );
        fake.reply("GET", keys_path, Answer::ok(jwks_of(&[&key])));
        PresetIdp {
            fake,
            key,
            issuer,
            discovery_path,
            keys_path: keys_path.to_string(),
            userinfo_path: userinfo_path.to_string(),
        }
    }

    /// Keycloak: realm issuer `<base>/realms/<realm>`, keys and userinfo under
    /// `/protocol/openid-connect/`.
    pub fn keycloak(realm: &str) -> Self {
        let base = format!("/realms/{realm}");
        Self::start(
            &base,
            &format!("{base}/protocol/openid-connect/certs"),
            &format!("{base}/protocol/openid-connect/userinfo"),
        )
    }

    /// An Okta custom authorization server: issuer `<base>/oauth2/<server>`, keys and userinfo
    /// under `/v1/`.
    pub fn okta(server: &str) -> Self {
        let base = format!("/oauth2/{server}");
        Self::start(
            &base,
            &format!("{base}/v1/keys"),
            &format!("{base}/v1/userinfo"),
        )
    }

    /// GitLab: the instance URL is the issuer; keys at `/oauth/discovery/keys`, userinfo at
    /// `/oauth/userinfo`.
    pub fn gitlab() -> Self {
        Self::start("", "/oauth/discovery/keys", "/oauth/userinfo")
    }

    /// Azure AD B2C with the `tfp` issuer format, which names the policy: discovery finds the keys.
    pub fn azure_b2c(tenant: &str, policy: &str) -> Self {
        let mut idp = Self::start(
            &format!("/tfp/{tenant}/{policy}/v2.0"),
            &format!("/{tenant}/{policy}/discovery/v2.0/keys"),
            &format!("/{tenant}/{policy}/openid/v2.0/userinfo"),
        );
        // B2C issuers end in a slash; the discovery document names the issuer exactly so.
        idp.issuer.push('/');
        let (keys, userinfo) = (
            idp.fake.url(&idp.keys_path),
            idp.fake.url(&idp.userinfo_path),
        );
        idp.fake.reply(
            "GET",
            &idp.discovery_path,
            Answer::ok(
                json!({ "issuer": idp.issuer, "jwks_uri": keys, "userinfo_endpoint": userinfo }),
            ),
        );
        idp
    }

    /// `claims` signed with this provider's key.
    pub fn mint(&self, claims: &Value) -> String {
        tokens::mint(&self.key, claims)
    }

    /// `GET <userinfo_path>` answers `answer` for `token` and 401 for every other token.
    pub fn userinfo_for(&self, token: &str, answer: Value) {
        self.fake.reply_by_bearer(
            "GET",
            &self.userinfo_path,
            [(token, Answer::ok(answer))],
            Answer::json(401, json!({ "error": "invalid_token" })),
        );
    }

    /// A Keycloak access token of `username`, issued to the client `azp`, for audience `aud`.
    pub fn keycloak_access_token(&self, username: &str, azp: &str, aud: &str) -> Value {
        json!({
            "exp": now() + 300, "iat": now(), "auth_time": now(), "jti": "0b7c6a0e-4d2f-4c6b-9e55-1f0a2b3c4d5e",
            "iss": self.issuer, "aud": [aud, "account"], "sub": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "typ": "Bearer", "azp": azp, "session_state": "1c9e7d5a", "acr": "1",
            "realm_access": { "roles": ["default-roles-acme", "offline_access"] },
            "resource_access": { "account": { "roles": ["manage-account"] } },
            "scope": "openid email profile", "sid": "1c9e7d5a", "email_verified": true,
            "name": "Kate Example", "preferred_username": username, "given_name": "Kate",
            "family_name": "Example", "email": "kate@example.com",
        })
    }

    /// An Okta custom authorization server's access token for the user `login` (its `sub`),
    /// with the client in `cid` and the Okta user ID in `uid`.
    pub fn okta_access_token(&self, login: &str, aud: &str) -> Value {
        json!({
            "ver": 1, "jti": "AT.q1w2e3r4t5y6u7i8o9p0", "iss": self.issuer, "aud": aud,
            "iat": now(), "exp": now() + 3600, "cid": "0oa1b2c3d4e5f6g7h8i9",
            "uid": "00u1a2b3c4d5e6f7g8h9", "scp": ["openid", "profile", "email"],
            "auth_time": now(), "sub": login,
        })
    }

    /// A GitLab ID token of `nickname`: groups only as `groups_direct`, as GitLab issues them.
    pub fn gitlab_id_token(
        &self,
        nickname: &str,
        email: &str,
        aud: &str,
        groups_direct: &[&str],
    ) -> Value {
        json!({
            "iss": self.issuer, "sub": "4242", "aud": aud, "exp": now() + 120, "iat": now(),
            "auth_time": now(), "sub_legacy": "9f86d081884c7d659a2feaa0c55ad015",
            "name": "Kate Example", "nickname": nickname, "preferred_username": nickname,
            "email": email, "email_verified": true,
            "website": "", "profile": format!("{}/{nickname}", self.issuer),
            "picture": "", "groups_direct": groups_direct,
        })
    }

    /// GitLab's userinfo answer for `nickname`: groups (with inherited subgroups) as `groups`.
    pub fn gitlab_userinfo(&self, nickname: &str, email: &str, groups: &[&str]) -> Value {
        json!({
            "sub": "4242", "sub_legacy": "9f86d081884c7d659a2feaa0c55ad015", "name": "Kate Example",
            "nickname": nickname, "preferred_username": nickname, "email": email, "email_verified": true,
            "website": "", "profile": format!("{}/{nickname}", self.issuer), "picture": "",
            "groups": groups,
        })
    }

    /// A B2C access token for a user of `emails` (possibly none), with the display and given
    /// names the user typed at sign-up.
    pub fn b2c_access_token(&self, emails: &[&str], name: &str, aud: &str) -> Value {
        let mut claims = json!({
            "iss": self.issuer, "exp": now() + 3600, "nbf": now(), "aud": aud,
            "oid": "9a0b1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d", "sub": "9a0b1c2d-3e4f-5a6b-7c8d-9e0f1a2b3c4d",
            "name": name, "givenName": name, "tfp": "B2C_1A_signup_signin",
            "scp": "jira.access", "azp": "22222222-2222-2222-2222-222222222222", "ver": "1.0", "iat": now(),
        });
        if !emails.is_empty() {
            claims["emails"] = json!(emails);
        }
        claims
    }
}
