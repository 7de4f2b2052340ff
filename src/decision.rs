//! What happens to a request: continue with header changes, or a local reply (SPEC section 5).
//!
//! The only place that turns an `AuthError` into a status, a challenge and a body.

use crate::error::{AuthError, ErrorClass};

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The filter's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward upstream after removing `remove` and setting `set` (lowercase header names).
    Continue {
        remove: Vec<String>,
        set: Vec<(String, String)>,
    },
    /// Answer locally; the request never reaches Atlassian.
    Respond {
        status: u32,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Decision {
    /// The HTTP status a client sees (200 stands for "forwarded").
    pub fn status(&self) -> u32 {
        match self {
            Decision::Continue { .. } => 200,
            Decision::Respond { status, .. } => *status,
        }
    }
}

/// The reply for `err`: 400 / 401 / 403 / 503 / 500 with RFC 6750 challenge and a JSON body.
///
/// `offer_basic` adds a `Basic realm=...` challenge where Basic credentials are accepted.
pub fn deny(err: &AuthError, realm: &str, offer_basic: bool) -> Decision {
    let why = err.to_string();
    let (status, code) = match err.class() {
        ErrorClass::NoCredentials => (401, "unauthorized"),
        ErrorClass::InvalidToken => (401, "invalid_token"),
        ErrorClass::Forbidden => (403, "insufficient_scope"),
        ErrorClass::Unavailable => (503, "temporarily_unavailable"),
        ErrorClass::Internal => (500, "server_error"),
        ErrorClass::BadRequest => (400, "invalid_request"),
    };
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    match err.class() {
        // RFC 6750 section 3.1: no error code when the request carried no credentials.
        ErrorClass::NoCredentials => headers.push((
            "www-authenticate".into(),
            format!("Bearer realm=\"{realm}\""),
        )),
        ErrorClass::InvalidToken | ErrorClass::Forbidden => headers.push((
            "www-authenticate".into(),
            format!("Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{why}\""),
        )),
        ErrorClass::Unavailable => {
            headers.push(("retry-after".into(), RETRY_AFTER_SECONDS.to_string()))
        }
        // A path, not a credential, is wrong: no challenge.
        ErrorClass::Internal | ErrorClass::BadRequest => {}
    }
    if offer_basic && status == 401 {
        headers.push((
            "www-authenticate".into(),
            format!("Basic realm=\"{realm}\""),
        ));
    }
    let body = serde_json::json!({ "error": code, "error_description": why }).to_string();
    Decision::Respond {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'d>(d: &'d Decision, name: &str) -> Vec<&'d str> {
        match d {
            Decision::Respond { headers, .. } => headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect(),
            Decision::Continue { .. } => vec![],
        }
    }

    #[test]
    fn invalid_token_gets_rfc6750_challenge_and_json_body() {
        let d = deny(&AuthError::Expired, "jira", false);
        assert_eq!(d.status(), 401);
        assert_eq!(header(&d, "www-authenticate"), ["Bearer realm=\"jira\", error=\"invalid_token\", error_description=\"token expired\""]);
        assert_eq!(header(&d, "content-type"), ["application/json"]);
        let Decision::Respond { body, .. } = d else {
            unreachable!()
        };
        assert_eq!(
            body,
            r#"{"error":"invalid_token","error_description":"token expired"}"#
        );
    }

    #[test]
    fn missing_credentials_challenge_has_no_error_code() {
        let d = deny(&AuthError::Missing, "jira", true);
        assert_eq!(
            header(&d, "www-authenticate"),
            ["Bearer realm=\"jira\"", "Basic realm=\"jira\""]
        );
    }

    #[test]
    fn unmet_claim_is_403_insufficient_scope() {
        let d = deny(&AuthError::InsufficientScope, "jira", false);
        assert_eq!(d.status(), 403);
        assert!(header(&d, "www-authenticate")[0].contains("error=\"insufficient_scope\""));
    }

    #[test]
    fn malformed_path_is_400_without_a_challenge() {
        let d = deny(&AuthError::MalformedPath, "jira", true);
        assert_eq!(d.status(), 400);
        assert!(header(&d, "www-authenticate").is_empty());
        let Decision::Respond { body, .. } = d else {
            unreachable!()
        };
        assert_eq!(
            body,
            r#"{"error":"invalid_request","error_description":"malformed request path"}"#
        );
    }

    #[test]
    fn signing_refusals_are_400_or_500_with_their_codes_and_no_challenge() {
        for (err, status, code) in [
            (
                AuthError::MalformedParameters,
                400,
                "malformed_request_parameters",
            ),
            (
                AuthError::ReservedFormParameter,
                400,
                "reserved_parameter_in_form_body",
            ),
            (AuthError::NoRandomness, 500, "randomness_unavailable"),
            (AuthError::SigningFailed, 500, "request_signing_failed"),
            (
                AuthError::FormBodyNotDelivered,
                500,
                "form_body_not_delivered",
            ),
        ] {
            let d = deny(&err, "jira", true);
            assert_eq!(d.status(), status, "{err}");
            assert!(header(&d, "www-authenticate").is_empty(), "{err}");
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn unavailable_keys_are_503_with_retry_after() {
        let d = deny(&AuthError::KeysUnavailable, "jira", false);
        assert_eq!(d.status(), 503);
        assert_eq!(header(&d, "retry-after"), ["5"]);
        assert!(header(&d, "www-authenticate").is_empty());
    }
}
