//! `credentials::parse_authorization` on any header value: no panic, only the three header
//! refusals, and a bearer token that is a non-empty RFC 6750 b64token of bounded size.
#![no_main]

use atlassian_rest_auth::credentials::{parse_authorization, Credentials};
use atlassian_rest_auth::error::AuthError;
use atlassian_rest_auth::jwt::{looks_like_jwt, Jwt, MAX_TOKEN_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // proxy-wasm hands header values over as UTF-8 strings.
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match parse_authorization(Some(value)) {
        Ok(Credentials::Bearer(token)) => {
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES + 16);
            let body = token.trim_end_matches('=');
            assert!(
                !body.is_empty()
                    && body
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)),
                "{token:?}"
            );
            // What the request path does next with it.
            if looks_like_jwt(token) {
                let _ = Jwt::parse(token);
            }
        }
        Ok(Credentials::Basic { .. }) => {}
        Ok(Credentials::None) => panic!("a present header read as absent"),
        Err(e) => assert!(
            matches!(
                e,
                AuthError::MalformedHeader
                    | AuthError::UnsupportedScheme
                    | AuthError::TokenTooLarge
            ),
            "{e:?}"
        ),
    }
});
