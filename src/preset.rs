//! Provider presets (known endpoints and quirks of the big identity providers, SPEC section 2)
//! and the provider modes they name.

use serde::Deserialize;

/// How a provider checks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProviderMode {
    /// Verify signatures locally with the provider's keys.
    Jwt,
    /// Ask the provider's userinfo endpoint.
    Userinfo,
    /// Ask the provider's RFC 7662 introspection endpoint.
    Introspection,
}

/// A provider family whose behaviour differs from plain OpenID Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preset {
    Custom,
    AzureAd,
    AzureB2c,
    Keycloak,
    Okta,
    Cognito,
    Google,
    Github,
    Gitlab,
    Slack,
    Facebook,
}

/// What a preset fills in; explicit provider fields win.
///
/// `username_claims` names only claims the provider keeps unique and that the user cannot choose
/// to be someone else's (each guide in `docs/providers/` says why).
pub(crate) struct Defaults {
    pub(crate) mode: Option<ProviderMode>,
    pub(crate) discovery: bool,
    pub(crate) issuer: Option<&'static str>,
    pub(crate) userinfo_uri: Option<&'static str>,
    pub(crate) username_claims: &'static [&'static str],
    pub(crate) token_prefixes: &'static [&'static str],
    pub(crate) request_headers: &'static [(&'static str, &'static str)],
}

impl Preset {
    /// The preset named `name`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "custom" => Preset::Custom,
            "azure_ad" => Preset::AzureAd,
            "azure_b2c" => Preset::AzureB2c,
            "keycloak" => Preset::Keycloak,
            "okta" => Preset::Okta,
            "cognito" => Preset::Cognito,
            "google" => Preset::Google,
            "github" => Preset::Github,
            "gitlab" => Preset::Gitlab,
            "slack" => Preset::Slack,
            "facebook" => Preset::Facebook,
            _ => return None,
        })
    }

    /// The defaults of this preset.
    pub(crate) fn defaults(self) -> Defaults {
        let none = Defaults {
            mode: None,
            discovery: false,
            issuer: None,
            userinfo_uri: None,
            username_claims: &["preferred_username", "email", "sub"],
            token_prefixes: &[],
            request_headers: &[],
        };
        match self {
            Preset::Custom => none,
            Preset::AzureAd => Defaults {
                discovery: true,
                userinfo_uri: Some("https://graph.microsoft.com/oidc/userinfo"),
                // Not `email`: any user can set it in their profile, unverified.
                username_claims: &["preferred_username", "upn"],
                ..none
            },
            // Never `name` or `givenName`: users choose them at sign-up ("admin").
            Preset::AzureB2c => Defaults {
                discovery: true,
                username_claims: &["emails.0", "oid", "sub"],
                ..none
            },
            Preset::Keycloak => Defaults {
                discovery: true,
                username_claims: &["preferred_username"],
                ..none
            },
            Preset::Okta => Defaults {
                discovery: true,
                username_claims: &["sub", "email"],
                ..none
            },
            Preset::Cognito => Defaults {
                discovery: true,
                username_claims: &["username", "cognito:username", "email", "sub"],
                ..none
            },
            Preset::Google => Defaults {
                discovery: true,
                issuer: Some("https://accounts.google.com"),
                userinfo_uri: Some("https://openidconnect.googleapis.com/v1/userinfo"),
                username_claims: &["email"],
                // Google OAuth access tokens; anything else (an Atlassian PAT) is not Google's.
                token_prefixes: &["ya29."],
                ..none
            },
            Preset::Gitlab => Defaults {
                discovery: true,
                issuer: Some("https://gitlab.com"),
                userinfo_uri: Some("https://gitlab.com/oauth/userinfo"),
                // Not `nickname`: a user may rename themselves, and anyone may then take the old name.
                username_claims: &["email"],
                ..none
            },
            // GitHub's REST API refuses calls without a User-Agent (docs.github.com, "User agent required").
            Preset::Github => Defaults {
                mode: Some(ProviderMode::Userinfo),
                userinfo_uri: Some("https://api.github.com/user"),
                username_claims: &["login"],
                token_prefixes: &["gho_", "ghu_", "ghp_", "github_pat_"],
                request_headers: &[
                    ("accept", "application/vnd.github+json"),
                    ("x-github-api-version", "2022-11-28"),
                ],
                ..none
            },
            Preset::Slack => Defaults {
                mode: Some(ProviderMode::Userinfo),
                userinfo_uri: Some("https://slack.com/api/openid.connect.userInfo"),
                username_claims: &["email"],
                token_prefixes: &["xoxp-", "xoxb-", "xoxe."],
                ..none
            },
            Preset::Facebook => Defaults {
                mode: Some(ProviderMode::Userinfo),
                userinfo_uri: Some("https://graph.facebook.com/me?fields=id,name,email"),
                username_claims: &["email", "id"],
                token_prefixes: &["EAA"],
                ..none
            },
        }
    }
}
