//! STUB (lead's integration branch): replaced by helper A's module at merge.
#![allow(dead_code, unused_variables, clippy::all)]

use crate::error::AuthError;

#[derive(Debug)]
pub struct AtlassianOauth1 {
    consumer_key: String,
}

pub struct Signed {
    pub path: String,
    pub authorization: String,
}

impl AtlassianOauth1 {
    pub fn signs_body(method: &str, content_type: Option<&str>) -> bool {
        method == "POST"
            && content_type.is_some_and(|c| {
                c.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            })
    }

    pub fn sign(
        &self,
        method: &str,
        path: &str,
        form_body: Option<&[u8]>,
        username: &str,
        now_secs: u64,
        random: &mut dyn FnMut(&mut [u8]) -> bool,
    ) -> Result<Signed, AuthError> {
        let mut b = [0u8; 4];
        if !random(&mut b) {
            return Err(AuthError::ProviderUnavailable);
        }
        Ok(Signed {
            path: format!("{path}?xoauth_requestor_id={username}"),
            authorization: format!("OAuth stub body={}", form_body.map_or(0, |b| b.len())),
        })
    }
}
