//! SHA-256 fingerprints of secrets: what logs and cache keys carry instead of the secret.

use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of a token; `Display` prints the first 8 hex digits, safe for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        TokenDigest(Sha256::digest(secret).into())
    }

    /// The full 32-byte digest.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::api_token::parse_sha256_hex(text).map(TokenDigest)
    }

    /// The full digest as 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        hex
    }
}

impl fmt::Display for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_only_the_first_eight_hex_digits() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(TokenDigest::of(b"abc").to_string(), "ba7816bf");
        assert!(TokenDigest::of(b"abc").to_hex().starts_with("ba7816bf8f01cfea"));
    }
}
