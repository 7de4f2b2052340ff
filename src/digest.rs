//! Digests of secrets: the plain SHA-256 that cache keys carry (never logged), and the keyed
//! fingerprint that logs carry instead (issue 11: an unsalted hash lets a log reader test guesses).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// Lowercase hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// SHA-256 of a token: the cache key. Deliberately not `Display`: logs print a `Fingerprint`.
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
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TokenDigest(out))
    }

    /// The full digest as 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 15)]));
        }
        hex
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// The secret key of log fingerprints: random per Envoy, shared by its workers, never logged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogKey([u8; 32]);

impl LogKey {
    /// A fresh random key; `None` when the system has no randomness to give.
    pub fn generate() -> Option<Self> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).ok()?;
        Some(LogKey(key))
    }

    /// The key stored as `bytes` (exactly 32).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(LogKey)
    }

    /// The stored form.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// The log fingerprint of the token whose digest is `digest`.
    pub fn fingerprint(self, digest: TokenDigest) -> Fingerprint {
        Fingerprint {
            digest,
            key: Some(self),
            shown: None,
        }
    }
}

impl fmt::Debug for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogKey(..)")
    }
}

/// What a log line shows of a token: the first 8 hex digits of HMAC-SHA256(key, SHA-256(token)).
///
/// Comparable between the lines of one Envoy; worthless to whoever lacks the key. Computed only
/// when printed, unless `shown` computed it ahead. Without a key it prints `?`.
#[derive(Clone, Copy)]
pub struct Fingerprint {
    digest: TokenDigest,
    key: Option<LogKey>,
    /// What it prints, when already computed.
    shown: Option<[u8; 4]>,
}

/// The same token under the same key, whether or not what it prints is computed yet.
impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.key == other.key
    }
}

impl Eq for Fingerprint {}

impl Fingerprint {
    /// The fingerprint of `digest` under `key` (`None`: no key, nothing to show).
    pub(crate) fn new(digest: TokenDigest, key: Option<LogKey>) -> Self {
        Fingerprint {
            digest,
            key,
            shown: None,
        }
    }

    /// This fingerprint with what it prints computed now, for one kept to be printed often (a
    /// worker's memo: an HMAC costs about 3 µs in V8, on every cache hit otherwise).
    pub(crate) fn shown(self) -> Self {
        let shown = self.mac().map(|mac| [mac[0], mac[1], mac[2], mac[3]]);
        Fingerprint { shown, ..self }
    }

    fn mac(&self) -> Option<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key?.0).ok()?;
        mac.update(&self.digest.0);
        Some(mac.finalize().into_bytes().into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(mac) = self
            .shown
            .or_else(|| self.mac().map(|m| [m[0], m[1], m[2], m[3]]))
        else {
            return f.write_str("?");
        };
        // One write of eight digits, not four formatted ones: printed on every allowed request.
        let mut hex = [0u8; 8];
        for (pair, b) in hex.chunks_exact_mut(2).zip(mac) {
            pair.copy_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        f.write_str(std::str::from_utf8(&hex).unwrap_or("?"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_computed_ahead_prints_and_compares_as_one_computed_when_printed() {
        let key = LogKey::from_bytes(&[7u8; 32]).unwrap();
        let lazy = key.fingerprint(TokenDigest::of(b"token"));
        let ahead = lazy.shown();
        assert_eq!(ahead.to_string(), lazy.to_string());
        assert_eq!(ahead.to_string().len(), 8);
        assert_eq!(ahead, lazy);
        assert_ne!(ahead, key.fingerprint(TokenDigest::of(b"other")).shown());
        assert_eq!(
            Fingerprint::new(TokenDigest::of(b"t"), None)
                .shown()
                .to_string(),
            "?"
        );
    }

    #[test]
    fn digest_is_plain_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert!(TokenDigest::of(b"abc")
            .to_hex()
            .starts_with("ba7816bf8f01cfea"));
    }

    #[test]
    fn hex_is_parsed_strictly() {
        assert_eq!(
            TokenDigest::from_hex(&"ab".repeat(32)).map(TokenDigest::to_bytes),
            Some([0xab; 32])
        );
        assert_eq!(TokenDigest::from_hex(&"zz".repeat(32)), None);
        assert_eq!(TokenDigest::from_hex("abc"), None);
        let digest = TokenDigest::of(b"abc");
        assert_eq!(TokenDigest::from_hex(&digest.to_hex()), Some(digest));
    }

    #[test]
    fn fingerprint_is_hmac_sha256_of_the_digest_truncated_to_eight_hex_digits() {
        // RFC 4231 test case 2 shape, with the digest as the message: HMAC-SHA256 recomputed by
        // hand from its definition, so the crate is checked, not trusted.
        let key = LogKey([7u8; 32]);
        let digest = TokenDigest::of(b"abc");
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key.0);
        let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).chain(digest.0).collect();
        let outer: Vec<u8> = block
            .iter()
            .map(|b| b ^ 0x5c)
            .chain(Sha256::digest(&inner))
            .collect();
        let expected: String = Sha256::digest(&outer)[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(key.fingerprint(digest).to_string(), expected);
    }

    #[test]
    fn fingerprint_shows_nothing_of_the_plain_digest() {
        let digest = TokenDigest::of(b"password");
        let shown = LogKey([1u8; 32]).fingerprint(digest).to_string();
        assert_eq!(shown.len(), 8);
        assert!(!digest.to_hex().starts_with(&shown));
        assert!(!format!("{digest:?}").contains(&digest.to_hex()[..8]));
    }

    #[test]
    fn fingerprints_agree_under_one_key_and_differ_under_another() {
        let digest = TokenDigest::of(b"token");
        let (a, b) = (LogKey::generate().unwrap(), LogKey::generate().unwrap());
        assert_eq!(
            a.fingerprint(digest).to_string(),
            a.fingerprint(digest).to_string()
        );
        assert_ne!(
            a.fingerprint(digest).to_string(),
            b.fingerprint(digest).to_string()
        );
        assert_ne!(
            a.fingerprint(digest).to_string(),
            a.fingerprint(TokenDigest::of(b"other")).to_string()
        );
    }

    #[test]
    fn keys_never_show_in_debug_and_need_32_bytes() {
        let key = LogKey([0xab; 32]);
        assert_eq!(format!("{key:?}"), "LogKey(..)");
        assert_eq!(LogKey::from_bytes(&key.to_bytes()), Some(key));
        assert_eq!(LogKey::from_bytes(&[1u8; 31]), None);
        assert_eq!(
            Fingerprint::new(TokenDigest::of(b"t"), None).to_string(),
            "?"
        );
    }
}
