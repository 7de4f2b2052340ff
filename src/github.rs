//! GitHub's token format: a prefix naming the kind, then base62 text whose last six characters
//! are a checksum of the rest, so a malformed token is refused without asking GitHub.
//!
//! The checksum is the CRC-32 (IEEE) of the random part, written in base62 (`0-9A-Za-z`) and
//! zero-padded to six characters (github.blog, 2021-04-05, "Behind GitHub's new authentication
//! token formats"). Fine-grained tokens (`github_pat_`) publish no checksum and are not checked.

use crate::api_token::BASE62;

/// Prefixes whose tokens carry the checksum (OAuth, personal, user-to-server, server, refresh).
const CHECKSUMMED: [&str; 5] = ["gho_", "ghp_", "ghu_", "ghs_", "ghr_"];
/// Characters of the checksum at the end of the token.
const CHECKSUM_LEN: usize = 6;

/// Whether `token` may be a GitHub token: one with a checksummed prefix must carry a base62 body
/// whose checksum holds; any other token is not this module's to judge.
pub(crate) fn well_formed(token: &str) -> bool {
    let Some(body) = CHECKSUMMED
        .iter()
        .find_map(|prefix| token.strip_prefix(prefix))
    else {
        return true;
    };
    if body.len() <= CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, checksum) = body.split_at(body.len() - CHECKSUM_LEN);
    checksum.as_bytes() == base62_6(crc32(random.as_bytes()))
}

/// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), bit by bit: tokens are short.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `n` in six base62 digits, most significant first (62^6 > 2^32, so six always suffice).
fn base62_6(mut n: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of kind `prefix` built here: `random` (base62) and its checksum.
    fn token(prefix: &str, random: &str) -> String {
        let checksum = base62_6(crc32(random.as_bytes()));
        format!(
            "{prefix}{random}{}",
            std::str::from_utf8(&checksum).unwrap()
        )
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The check value of CRC-32/ISO-HDLC (zlib's crc32): "123456789" → 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn checksum_is_base62_zero_padded_to_six() {
        assert_eq!(&base62_6(0), b"000000");
        assert_eq!(&base62_6(61), b"00000z");
        assert_eq!(&base62_6(62), b"000010");
        assert_eq!(&base62_6(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn token_with_its_checksum_is_well_formed() {
        for prefix in CHECKSUMMED {
            assert!(
                well_formed(&token(prefix, "abcdefghijklmnopqrstuvwxyzABCD")),
                "{prefix}"
            );
        }
    }

    #[test]
    fn token_with_a_wrong_checksum_or_character_is_malformed() {
        let good = token("gho_", "aW5ZtaBn9DwXkp0L3tGqRu7NcVe1Yf");
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let swapped = good.replacen("gho_aW", "gho_Wa", 1);
        for bad in [
            flipped.as_str(),
            swapped.as_str(),
            "gho_abc",
            "gho_",
            "ghp_abcdefghijklmnopqrstuvwxyz-BCD123456",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
        assert!(well_formed(&good));
    }

    #[test]
    fn other_tokens_are_not_judged() {
        for other in ["github_pat_11ABC_def", "ya29.x", "xoxp-1", "gh_abc", ""] {
            assert!(well_formed(other), "{other}");
        }
    }
}
