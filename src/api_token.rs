//! API tokens the filter issues itself: recognisable format, checksum, stored only as SHA-256.
//!
//! Format: `arat_` + 43 base62 characters (256 random bits) + 6 base62 characters of checksum
//! (the first 32 bits of SHA-256 of the random part). The prefix lets secret scanners and
//! `token_prefixes` tell these tokens apart; the checksum catches a typo without any lookup.

use crate::digest::TokenDigest;
use crate::error::AuthError;
use crate::time::UnixTime;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API token starts with this.
pub(crate) const PREFIX: &str = "arat_";
const BODY_LEN: usize = 43;
const CHECK_LEN: usize = 6;
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A configured API token: whose it is and the SHA-256 of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub(crate) user: String,
    pub(crate) sha256: [u8; 32],
    /// Seconds since the epoch; `None` never expires.
    pub(crate) expires_at: Option<u64>,
    pub(crate) name: Option<String>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken({}, {:?})", self.user, self.name)
    }
}

/// Whether `token` is meant as an API token (by its prefix), well-formed or not.
pub(crate) fn is_api_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Mints a token from 32 random bytes (the caller brings the CSPRNG).
pub fn mint(random: &[u8; 32]) -> String {
    let body = base62(random, BODY_LEN);
    let check = checksum(&body);
    format!("{PREFIX}{body}{check}")
}

/// Checks the format and checksum: a typo is reported as such, without any lookup.
pub(crate) fn check_format(token: &str) -> Result<(), AuthError> {
    let rest = token
        .strip_prefix(PREFIX)
        .ok_or(AuthError::ApiTokenMalformed)?;
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AuthError::ApiTokenMalformed);
    }
    let (body, check) = rest.split_at(BODY_LEN);
    if checksum(body).as_bytes().ct_eq(check.as_bytes()).into() {
        Ok(())
    } else {
        Err(AuthError::ApiTokenMalformed)
    }
}

/// The configured token matching `token`, compared in constant time against every entry.
///
/// `user` (from Basic) must name the token's owner. Expired tokens are refused.
pub(crate) fn authenticate<'a>(
    token: &str,
    user: Option<&str>,
    tokens: &'a [ApiToken],
    now: UnixTime,
) -> Result<&'a ApiToken, AuthError> {
    check_format(token)?;
    let digest = TokenDigest::of(token.as_bytes()).to_bytes();
    // No early exit: every entry is compared, so timing does not tell which one matched.
    let mut found = None;
    for entry in tokens {
        if bool::from(entry.sha256.ct_eq(&digest)) {
            found = Some(entry);
        }
    }
    let entry = found.ok_or(AuthError::ApiTokenUnknown)?;
    if entry.expires_at.is_some_and(|exp| now.as_secs() >= exp) {
        return Err(AuthError::ApiTokenExpired);
    }
    if user.is_some_and(|u| !u.eq_ignore_ascii_case(&entry.user)) {
        return Err(AuthError::ApiTokenWrongUser);
    }
    Ok(entry)
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    base62(&digest[..4], CHECK_LEN)
}

/// Big-endian bytes in base62, left-padded with `0` to `width` characters.
fn base62(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        digits.push(BASE62[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn entry(token: &str, user: &str, expires_at: Option<u64>) -> ApiToken {
        ApiToken {
            user: user.into(),
            sha256: TokenDigest::of(token.as_bytes()).to_bytes(),
            expires_at,
            name: None,
        }
    }

    #[test]
    fn minted_token_has_prefix_fixed_length_and_valid_checksum() {
        let token = mint(&[0xab; 32]);
        assert!(token.starts_with(PREFIX));
        assert_eq!(token.len(), PREFIX.len() + BODY_LEN + CHECK_LEN);
        assert_eq!(check_format(&token), Ok(()));
        assert_eq!(mint(&[0; 32]).len(), token.len(), "zero bytes are padded");
    }

    #[test]
    fn a_typo_fails_the_checksum() {
        let token = mint(&[7; 32]);
        let mut chars: Vec<char> = token.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(check_format(&typo), Err(AuthError::ApiTokenMalformed));
        assert_eq!(
            check_format("arat_short"),
            Err(AuthError::ApiTokenMalformed)
        );
    }

    #[test]
    fn known_token_authenticates_its_user() {
        let token = mint(&[1; 32]);
        let tokens = [
            entry(&mint(&[2; 32]), "other", None),
            entry(&token, "ci-bot", None),
        ];
        assert_eq!(
            authenticate(&token, None, &tokens, NOW).map(|e| e.user.as_str()),
            Ok("ci-bot")
        );
        assert_eq!(
            authenticate(&token, Some("CI-BOT"), &tokens, NOW).map(|e| e.user.as_str()),
            Ok("ci-bot")
        );
    }

    #[test]
    fn unknown_expired_and_wrong_user_tokens_are_refused() {
        let token = mint(&[3; 32]);
        assert_eq!(
            authenticate(&token, None, &[], NOW),
            Err(AuthError::ApiTokenUnknown)
        );
        let expired = [entry(&token, "bot", Some(NOW.as_secs()))];
        assert_eq!(
            authenticate(&token, None, &expired, NOW),
            Err(AuthError::ApiTokenExpired)
        );
        let live = [entry(&token, "bot", Some(NOW.as_secs() + 1))];
        assert_eq!(
            authenticate(&token, Some("admin"), &live, NOW),
            Err(AuthError::ApiTokenWrongUser)
        );
    }
}
